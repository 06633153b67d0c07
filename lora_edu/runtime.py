"""Device choice, seeding and fast mode: the few knobs every notebook and test shares."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "fast_mode", "pick"]

_DEVICES = ("cpu", "cuda", "mps")


def get_device(device=None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU; `device` or env LORA_EDU_DEVICE overrides."""
    choice = device if device is not None else os.environ.get("LORA_EDU_DEVICE") or None
    if choice is not None:
        dev = torch.device(choice)
        if dev.type not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {choice!r}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was asked for but CUDA is not available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {choice!r} was asked for but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); returns a CPU torch.Generator with that seed."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def fast_mode() -> bool:
    """True when env LORA_EDU_FAST is set to 1/true/yes: CI runs every notebook this way."""
    return os.environ.get("LORA_EDU_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, fast):
    """`fast` in fast mode, else `full`: e.g. steps = pick(600, 60)."""
    return fast if fast_mode() else full

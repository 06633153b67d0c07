"""Device choice, seeding and fast mode: the few knobs every notebook and test shares."""

from __future__ import annotations

import math
import numbers
import os
import random
import reprlib

import numpy as np
import torch

__all__ = ["get_device", "device_of", "seed_everything", "fast_mode", "pick", "check_number", "brief"]

_DEVICES = ("cpu", "cuda", "mps")


_brief = reprlib.Repr()  # repr for messages: short, shallow, never failing (a 5,000-digit int, lists 10⁴ deep)
_brief.maxstring = _brief.maxother = 60
_brief.repr_int = lambda x, level: repr(x) if x.bit_length() < 128 else f"<int of {x.bit_length()} bits>"
brief = _brief.repr


def check_number(name: str, value, lo: float = -math.inf, hi: float = math.inf, integer: bool = False,
                 bounds: str = "[]"):
    """`value` (an int, or a float unless `integer`) if it is finite and within lo..hi, else a TypeError or
    ValueError naming `name`. `bounds` "[]", "(]", "[)" or "()" says which ends are allowed; never OverflowError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise TypeError(f"{name} must be {'an int' if integer else 'a number'}, got {type(value).__name__}")
    try:
        f = float(value)
    except OverflowError:  # an int beyond float range: outside every range we allow
        f = math.inf
    ok = (f > lo if bounds[0] == "(" else f >= lo) and (f < hi if bounds[1] == ")" else f <= hi)
    if not (ok and math.isfinite(f)):
        show = [f"{v:g}" if not integer or math.isinf(v) else str(int(v)) for v in (lo, hi)]
        raise ValueError(f"{name} must be a finite {'int' if integer else 'number'} in {bounds[0]}{show[0]}, "
                         f"{show[1]}{bounds[1]}, got {brief(value)}")
    return int(value) if integer else f


def get_device(device=None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU; `device` or env LORA_EDU_DEVICE overrides."""
    env = os.environ.get("LORA_EDU_DEVICE") or None
    choice, name = (device, "device") if device is not None else (env, "LORA_EDU_DEVICE")
    if choice is not None:
        if isinstance(choice, bool) or not isinstance(choice, (str, int, torch.device)):
            raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda', got {type(choice).__name__}")
        try:
            dev = torch.device(choice)
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"{name} must be one of {_DEVICES} (optionally with ':N'), got {brief(choice)}") from e
        if dev.type not in _DEVICES:
            raise ValueError(f"{name} must be one of {_DEVICES}, got {brief(choice)}")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{name}={brief(choice)} was asked for but CUDA is not available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"{name}={brief(choice)} was asked for but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_of(model) -> torch.device:
    """Where a model's parameters live (the CPU for a model without any)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); returns a CPU torch.Generator with that seed."""
    seed = check_number("seed", seed, 0, 2**63 - 1, integer=True)
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

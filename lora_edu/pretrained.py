"""The shipped pretrained toy transformer (safetensors, a few hundred KB) and how it was made."""

from __future__ import annotations

import json
from pathlib import Path

from .model import ToyConfig, ToyTransformer
from .runtime import get_device

__all__ = ["load_pretrained", "CHECKPOINT", "pretrained_info"]

CHECKPOINT = Path(__file__).parent / "data" / "toy_pretrained.safetensors"


def pretrained_info(path=CHECKPOINT) -> dict:
    """The checkpoint's metadata: config, training recipe and the pretraining accuracy it reached."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "lora_edu_config" not in meta:
        raise ValueError(f"{path} is not a lora_edu toy checkpoint")
    return {k: json.loads(v) for k, v in meta.items() if k.startswith("lora_edu_")}


def load_pretrained(device=None, path=CHECKPOINT) -> ToyTransformer:
    """The pretrained ToyTransformer in eval mode on `device` (default: get_device())."""
    from safetensors.torch import load_file

    info = pretrained_info(path)
    model = ToyTransformer(ToyConfig(**info["lora_edu_config"]))
    model.load_state_dict(load_file(str(path)))
    return model.to(get_device(device)).eval()

"""The shipped pretrained toy transformer (safetensors, a few hundred KB) and how it was made."""

from __future__ import annotations

from pathlib import Path

import torch

from .adapters import as_path, parse_json, parse_safetensors, read_bounded
from .model import ToyConfig, ToyTransformer
from .runtime import get_device

__all__ = ["load_pretrained", "CHECKPOINT", "pretrained_info"]

CHECKPOINT = Path(__file__).parent / "data" / "toy_pretrained.safetensors"
MAX_CHECKPOINT_BYTES = 1 << 28  # the shipped checkpoint is ~0.4 MB


def _read(path) -> tuple[dict, dict]:
    """(tensors, metadata) of a checkpoint: read whole (bounded), parsed strictly, refused with a ValueError."""
    path = as_path(path, "path")
    flat, meta = parse_safetensors(read_bounded(path, MAX_CHECKPOINT_BYTES), path.name)
    if "lora_edu_config" not in meta:
        raise ValueError(f"{path} is not a lora_edu toy checkpoint (no lora_edu_config in its metadata)")
    return flat, {k: parse_json(v.encode(), f"{path.name} metadata {k}", kind=object)
                  for k, v in meta.items() if k.startswith("lora_edu_")}


def pretrained_info(path=CHECKPOINT) -> dict:
    """The checkpoint's metadata: config, training recipe and the pretraining accuracy it reached."""
    return _read(path)[1]


def load_pretrained(device=None, path=CHECKPOINT) -> ToyTransformer:
    """The pretrained ToyTransformer in eval mode on `device` (default: get_device()).

    A corrupt, foreign or oversized file, a config out of range, tensors that do not fit the config or that
    hold NaN/inf: each is a ValueError naming the file, before any model is built."""
    device = get_device(device)
    flat, info = _read(path)
    name = Path(path).name
    cfg = info["lora_edu_config"]
    try:
        if not isinstance(cfg, dict):
            raise TypeError(f"expected a JSON object, got {type(cfg).__name__}")
        config = ToyConfig(**cfg)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: lora_edu_config: {e}") from e
    with torch.device("meta"):  # the shapes this config implies, without allocating them
        want = {k: tuple(v.shape) for k, v in ToyTransformer(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in flat.items()}
    if got != want:
        raise ValueError(f"{name}: tensors do not fit lora_edu_config: missing {sorted(want.keys() - got.keys())}, "
                         f"unexpected {sorted(got.keys() - want.keys())}, "
                         f"other shapes {sorted(k for k in want.keys() & got.keys() if want[k] != got[k])}")
    bad = [k for k, v in flat.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{name}: tensors {bad} hold NaN or inf")
    model = ToyTransformer(config)
    model.load_state_dict(flat)
    return model.to(device).eval()

"""Adapters as values: the (A, B) pairs of a fine-tune, saved, loaded, switched and stacked.

§4.1: to switch task, "subtract BA and add B'A'". An `Adapter` is that BA as data; it is stored
as `adapter_model.safetensors` + `adapter_config.json` (the layout PEFT uses) and never unpickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .inject import _check_model, _matches, add_lora, linear_names, lora_layers
from .layer import LoRALinear

__all__ = ["Adapter", "extract_adapter", "load_adapter", "merge_adapter", "unmerge_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "lora_edu.adapter"
FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


def _dtype_name(dtype: torch.dtype) -> str:
    for k, v in _DTYPES.items():
        if v == dtype:
            return k
    raise ValueError(f"dtype {dtype} is not a supported adapter dtype ({list(_DTYPES)})")


@dataclass
class Adapter:
    """A LoRA fine-tune as a value: config (r, alpha, targets, rslora) and {layer name: (A, B)}."""

    r: int
    alpha: float
    targets: tuple[str, ...]
    rslora: bool = False
    tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.targets, list):
            self.targets = tuple(self.targets)
        self.validate()

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)

    @property
    def dtype(self) -> torch.dtype:
        first = next(iter(self.tensors.values()), None)
        return torch.float32 if first is None else first[0].dtype

    def validate(self) -> None:
        """Check types, rank and shapes: A is r×k, B is d×r, one dtype throughout."""
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"r must be a positive int, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha) or self.alpha <= 0:
            raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        if not isinstance(self.rslora, bool):
            raise TypeError(f"rslora must be a bool, got {type(self.rslora).__name__}")
        if not isinstance(self.targets, tuple) or not self.targets \
                or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"targets must be a non-empty tuple of layer-name suffixes, got {self.targets!r}")
        if not isinstance(self.tensors, dict):
            raise TypeError("tensors must be a dict {layer name: (A, B)}")
        dtypes = set()
        for name, pair in self.tensors.items():
            if not isinstance(name, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"tensors[{name!r}] must be an (A, B) pair")
            A, B = pair
            if not (isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor)):
                raise TypeError(f"tensors[{name!r}]: A and B must be tensors")
            if A.ndim != 2 or B.ndim != 2 or A.shape[0] != self.r or B.shape[1] != self.r:
                raise ValueError(f"tensors[{name!r}]: expected A of shape (r={self.r}, k) and B of "
                                 f"shape (d, r={self.r}), got A {tuple(A.shape)} and B {tuple(B.shape)}")
            if not A.is_floating_point() or A.dtype != B.dtype:
                raise ValueError(f"tensors[{name!r}]: A and B must share one floating dtype, "
                                 f"got {A.dtype} and {B.dtype}")
            dtypes.add(A.dtype)
        if len(dtypes) > 1:
            raise ValueError(f"all adapter tensors must share one dtype, got {sorted(map(str, dtypes))}")

    def delta(self, name: str) -> torch.Tensor:
        """ΔW of one layer, scaling · B @ A, in float32 (float64 for float64 adapters)."""
        A, B = self.tensors[name]
        work = torch.promote_types(A.dtype, torch.float32)
        return (B.to(work) @ A.to(work)) * self.scaling

    def num_parameters(self) -> int:
        return sum(A.numel() + B.numel() for A, B in self.tensors.values())

    def to(self, device=None, dtype=None) -> Adapter:
        t = {n: (A.to(device=device, dtype=dtype), B.to(device=device, dtype=dtype))
             for n, (A, B) in self.tensors.items()}
        return Adapter(self.r, self.alpha, self.targets, self.rslora, t)

    # ---- files -------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "r": self.r, "alpha": self.alpha,
                "targets": list(self.targets), "rslora": self.rslora,
                "dtype": _dtype_name(self.dtype), "layers": sorted(self.tensors)}

    def save(self, directory) -> Path:
        """Write adapter_model.safetensors + adapter_config.json into `directory` (created if needed)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        flat = {}
        for n, (A, B) in self.tensors.items():
            flat[f"{n}.A"] = A.detach().cpu().contiguous()
            flat[f"{n}.B"] = B.detach().cpu().contiguous()
        save_file(flat, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT})
        (directory / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory, device=None) -> Adapter:
        """Read and validate an adapter directory; refuses foreign, truncated or inconsistent files."""
        from safetensors import SafetensorError, safe_open

        directory = Path(directory)
        cfg_path, w_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (cfg_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"directory: {directory} has no {p.name}")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{CONFIG_NAME} is not valid JSON: {e}") from e
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise ValueError(f"{CONFIG_NAME} is not a lora_edu adapter config (format != {FORMAT!r})")
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported adapter format_version {cfg.get('format_version')!r}")
        missing = {"r", "alpha", "targets", "rslora", "dtype", "layers"} - set(cfg)
        if missing:
            raise ValueError(f"{CONFIG_NAME} lacks {sorted(missing)}")
        if cfg["dtype"] not in _DTYPES:
            raise ValueError(f"{CONFIG_NAME}: dtype {cfg['dtype']!r} not one of {list(_DTYPES)}")
        dtype = _DTYPES[cfg["dtype"]]
        layers = cfg["layers"]
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ValueError(f"{CONFIG_NAME}: layers must be a list of names")
        try:
            with safe_open(str(w_path), framework="pt", device="cpu") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"{WEIGHTS_NAME} was not written by lora_edu (metadata format "
                                     f"{meta.get('format')!r})")
                keys = set(f.keys())
                expected = {f"{n}.{m}" for n in layers for m in ("A", "B")}
                if keys != expected:
                    raise ValueError(f"{WEIGHTS_NAME} tensor names do not match the config's layers: "
                                     f"missing {sorted(expected - keys)}, unexpected {sorted(keys - expected)}")
                flat = {k: f.get_tensor(k) for k in sorted(keys)}
        except SafetensorError as e:
            raise ValueError(f"{WEIGHTS_NAME} is not a readable safetensors file: {e}") from e
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{WEIGHTS_NAME} could not be read (truncated or corrupt?): {e}") from e
        for k, t in flat.items():
            if t.dtype != dtype:
                raise ValueError(f"{WEIGHTS_NAME}: tensor {k} has dtype {t.dtype}, config says {dtype}")
        tensors = {n: (flat[f"{n}.A"].to(device), flat[f"{n}.B"].to(device)) for n in layers}
        return cls(cfg["r"], cfg["alpha"], cfg["targets"], cfg["rslora"], tensors)


def extract_adapter(model: nn.Module) -> Adapter:
    """Copy the (A, B) of every LoRALinear in `model` into an Adapter (detached clones)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layers to extract; call add_lora first")
    configs = {(m.r, m.alpha, m.rslora) for m in layers.values()}
    if len(configs) > 1:
        raise ValueError(f"LoRA layers disagree on (r, alpha, rslora): {sorted(configs)}")
    r, alpha, rslora = configs.pop()
    targets = tuple(sorted({n.rsplit(".", 1)[-1] for n in layers}))
    tensors = {n: (m.A.detach().clone(), m.B.detach().clone()) for n, m in layers.items()}
    return Adapter(r, alpha, targets, rslora, tensors)


def _check_adapter(adapter) -> None:
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be a lora_edu.Adapter, got {type(adapter).__name__}")
    adapter.validate()


def load_adapter(model: nn.Module, adapter: Adapter) -> list[str]:
    """Copy an adapter's A, B into the model's LoRA layers (adding them with its config if there are none).

    Names, shapes and rank are checked first; on any mismatch the model is left untouched.
    """
    _check_adapter(adapter)
    layers = lora_layers(model)
    if not layers:
        modules = dict(model.named_modules())
        _check_plain_targets(modules, adapter)
        if sorted(_layers_for_targets(model, adapter.targets)) != sorted(adapter.tensors):
            raise ValueError("adapter layers do not match the layers its targets select in this model")
        add_lora(model, adapter.targets, adapter.r, adapter.alpha, rslora=adapter.rslora)
        layers = lora_layers(model)
    if set(layers) != set(adapter.tensors):
        raise ValueError(f"adapter layers {sorted(adapter.tensors)} do not match the model's LoRA "
                         f"layers {sorted(layers)}")
    for n, m in layers.items():
        A, B = adapter.tensors[n]
        if m.merged:
            raise RuntimeError(f"LoRA layer {n!r} is merged; unmerge before loading another adapter")
        if A.shape != m.A.shape or B.shape != m.B.shape:
            raise ValueError(f"adapter shapes for {n!r} (A {tuple(A.shape)}, B {tuple(B.shape)}) do not "
                             f"match the layer (A {tuple(m.A.shape)}, B {tuple(m.B.shape)})")
        if (m.alpha, m.rslora) != (float(adapter.alpha), adapter.rslora):
            raise ValueError(f"layer {n!r} has alpha={m.alpha}, rslora={m.rslora}; adapter has "
                             f"alpha={adapter.alpha}, rslora={adapter.rslora}")
    with torch.no_grad():
        for n, m in layers.items():
            A, B = adapter.tensors[n]
            m.A.copy_(A)
            m.B.copy_(B)
    return list(layers)


def _layers_for_targets(model: nn.Module, targets) -> list[str]:
    return [n for n in linear_names(model) if any(_matches(n, t) for t in targets)]


def _check_plain_targets(modules: dict, adapter: Adapter) -> None:
    for n, (A, B) in adapter.tensors.items():
        m = modules.get(n)
        if isinstance(m, LoRALinear):
            raise ValueError(f"layer {n!r} has LoRA layers; merge_adapter works on a plain model "
                             "(use remove_lora first, or load_adapter for unmerged LoRA)")
        if not isinstance(m, nn.Linear):
            raise ValueError(f"adapter layer {n!r} is not an nn.Linear in this model")
        if (B.shape[0], A.shape[1]) != tuple(m.weight.shape):
            raise ValueError(f"adapter ΔW for {n!r} is {B.shape[0]}×{A.shape[1]}, but the weight is "
                             f"{tuple(m.weight.shape)}")


def _apply(model: nn.Module, adapter: Adapter, weight: float, sign: float) -> list[str]:
    _check_model(model)
    _check_adapter(adapter)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ValueError(f"weight must be a finite number, got {weight!r}")
    modules = dict(model.named_modules())
    _check_plain_targets(modules, adapter)
    new = {}  # every new weight is computed and checked before any is written: all or nothing
    with torch.no_grad():
        for n in adapter.tensors:
            w = modules[n].weight
            d = adapter.delta(n).to(device=w.device, dtype=torch.promote_types(w.dtype, torch.float32))
            if not torch.isfinite(d).all():
                raise ValueError(f"refusing to merge: ΔW of {n!r} contains NaN or inf (model untouched)")
            new[n] = (w.to(d.dtype) + d * (sign * weight)).to(w.dtype)
            if not torch.isfinite(new[n]).all() and torch.isfinite(w).all():
                raise ValueError(f"refusing to merge: W ± ΔW of {n!r} overflows {w.dtype} (model untouched)")
        for n, w_new in new.items():
            modules[n].weight.copy_(w_new)
    return list(new)


def merge_adapter(model: nn.Module, adapter: Adapter, weight: float = 1.0) -> list[str]:
    """W ← W + weight·scaling·B@A on each matching nn.Linear of a plain model (float32 arithmetic)."""
    return _apply(model, adapter, weight, +1.0)


def unmerge_adapter(model: nn.Module, adapter: Adapter, weight: float = 1.0) -> list[str]:
    """W ← W − weight·scaling·B@A: undo merge_adapter, so adapters can be switched or stacked."""
    return _apply(model, adapter, weight, -1.0)

"""Adapters as values: the (A, B) pairs of a fine-tune, saved, loaded, switched and stacked.

§4.1: to switch task, "subtract BA and add B'A'". An `Adapter` is that BA as data; it is stored
as `adapter_model.safetensors` + `adapter_config.json` and never unpickled. PEFT uses the same two file names
but its own tensor names and config fields: `save(dir, format="peft")` writes PEFT's layout (peft_format.py),
and `load` reads either, so `le.load_adapter(model, dir)` takes a directory from lora_edu or from PEFT.
Files are written atomically and read strictly (bounded sizes, no duplicate JSON keys, finite tensors).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .inject import add_lora, check_model, linear_names, lora_layers, target_matches
from .layer import ALPHA_MAX, LoRALinear
from .peft_format import from_peft, is_peft_config, to_peft
from .runtime import brief, check_number, get_device

__all__ = ["Adapter", "extract_adapter", "load_adapter", "merge_adapter", "unmerge_adapter"]

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT = "lora_edu.adapter"
FORMAT_VERSION = 2  # 2: the config holds the weights file's SHA-256
MAX_CONFIG_BYTES = 1 << 20  # a config lists names, never tensors
MAX_WEIGHTS_BYTES = 1 << 31
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
_NAME = re.compile(r"[^.\s]+(\.[^.\s]+)*")  # a module path: non-empty parts, no spaces


def as_path(path, name: str = "directory") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(path).__name__}")
    return Path(path)


# ---- file helpers (format-independent) ---------------------------------------------------------------------
def write_atomic(directory, files: dict[str, bytes], overwrite: bool = False) -> Path:
    """Write {file name: bytes} into `directory` so that readers never see a mix of old and new files.

    The files go into a fresh temporary directory beside their targets (mode 0666 less the umask, both
    alike; created, never opened through a symlink) and are renamed into place: a new directory in one
    rename, an existing one file by file in the order given (the last file should vouch for the others,
    as our config does with the weights' SHA-256). Existing files are replaced only with overwrite=True.
    """
    directory = as_path(directory)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
    for name in files:
        if os.path.lexists(directory / name) and not overwrite:
            raise FileExistsError(f"{directory / name} exists; pass overwrite=True to replace it")
    fresh = not os.path.lexists(directory)
    parent = directory.parent if fresh else directory
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{directory.name or 'adapter'}.tmp-{secrets.token_hex(6)}"
    os.mkdir(tmp, 0o777)
    try:
        for name, data in files.items():
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if fresh:
            os.rename(tmp, directory)
        else:
            for name in files:
                os.replace(tmp / name, directory / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path` (symlinks followed), at most `limit` of them: FileNotFoundError if
    it is missing, ValueError if it is a directory, device or pipe, unreadable, or too large."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # O_NONBLOCK: a FIFO must not hang us
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except OSError as e:
        raise ValueError(f"{path.name} could not be opened: {e}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1) if st.st_size <= limit else b""
    except OSError as e:
        raise ValueError(f"{path.name} could not be read: {e}") from e
    finally:
        os.close(fd)
    if len(data) > limit or st.st_size > limit:
        raise ValueError(f"{path.name} is over the {limit:,} bytes allowed")
    return data


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {brief(next(k for k in keys if keys.count(k) > 1))}")
    return dict(pairs)


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes, name: str, kind: type = dict):
    """A JSON value of type `kind` from bytes, strictly: UTF-8, no duplicate keys, no NaN/Infinity, bounded nesting."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError(f"{name} is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a duplicate key, an int of > 4300 digits
        raise ValueError(f"{name} is not valid JSON: {e}") from e
    if not isinstance(obj, kind):
        raise ValueError(f"{name} must hold a JSON {'object' if kind is dict else kind.__name__}, "
                         f"got {type(obj).__name__}")
    return obj


def parse_safetensors(data: bytes, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """({tensor name: tensor}, metadata) from the bytes of a safetensors file; only our four float dtypes.

    Every tensor owns its memory (no view of `data`, no memory map of a file)."""
    from safetensors import SafetensorError, deserialize

    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    if not 2 <= n <= len(data) - 8:
        raise ValueError(f"{name} is not a safetensors file (header length {n} for {len(data)} bytes)")
    header = parse_json(data[8:8 + n], f"{name} header")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ValueError(f"{name}: __metadata__ must map names to strings")
    try:
        views = deserialize(data)
    except SafetensorError as e:
        raise ValueError(f"{name} is not a readable safetensors file: {e}") from e
    flat = {}
    for k, v in views:
        if v["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{name}: tensor {k} has dtype {v['dtype']}, not one of {list(_ST_DTYPES)}")
        dtype = _ST_DTYPES[v["dtype"]]
        flat[k] = (torch.frombuffer(bytearray(v["data"]), dtype=dtype) if v["data"]
                   else torch.empty(0, dtype=dtype)).reshape(v["shape"])
    return flat, meta


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
        """Check types and ranges, shapes (A is r×k, B is d×r, r ≤ min(d, k)), one supported dtype,
        finite values, and that the targets select exactly the layers (each layer matches a target, each
        target a layer)."""
        check_number("r", self.r, 1, 2**31, integer=True)
        check_number("alpha", self.alpha, 0, ALPHA_MAX, bounds="(]")
        if not isinstance(self.rslora, bool):
            raise TypeError(f"rslora must be a bool, got {type(self.rslora).__name__}")
        if not isinstance(self.targets, tuple) or not self.targets or len(set(self.targets)) != len(self.targets) \
                or not all(isinstance(t, str) and len(t) < 1024 and _NAME.fullmatch(t) for t in self.targets):
            raise ValueError(f"targets must be a non-empty tuple of distinct layer-name suffixes, "
                             f"got {brief(self.targets)}")
        if not isinstance(self.tensors, dict):
            raise TypeError("tensors must be a dict {layer name: (A, B)}")
        dtypes = set()
        for name, pair in self.tensors.items():
            if not isinstance(name, str) or len(name) >= 1024 or not _NAME.fullmatch(name):
                raise ValueError(f"tensors: layer name {brief(name)} is not a module path like 'blocks.0.q_proj'")
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"tensors[{name!r}] must be an (A, B) pair")
            A, B = pair
            if not (isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor)):
                raise TypeError(f"tensors[{name!r}]: A and B must be tensors")
            if A.ndim != 2 or B.ndim != 2 or A.shape[0] != self.r or B.shape[1] != self.r \
                    or self.r > min(A.shape[1], B.shape[0]):
                raise ValueError(f"tensors[{name!r}]: expected A of shape (r={self.r}, k) and B of shape "
                                 f"(d, r={self.r}) with r ≤ min(d, k), got A {tuple(A.shape)} and B {tuple(B.shape)}")
            if A.dtype != B.dtype or A.dtype not in _DTYPES.values():
                raise ValueError(f"tensors[{name!r}]: A and B must share one floating dtype of "
                                 f"{list(_DTYPES)}, got {A.dtype} and {B.dtype}")
            if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
                raise ValueError(f"tensors[{name!r}]: A or B contains NaN or inf")
            dtypes.add(A.dtype)
        if len(dtypes) > 1:
            raise ValueError(f"all adapter tensors must share one dtype, got {sorted(map(str, dtypes))}")
        if self.tensors:
            stray = [n for n in self.tensors if not any(target_matches(n, t) for t in self.targets)]
            idle = [t for t in self.targets if not any(target_matches(n, t) for n in self.tensors)]
            if stray or idle:
                raise ValueError(f"targets {list(self.targets)} do not fit the layers: layers no target selects "
                                 f"{brief(stray)}, targets selecting no layer {brief(idle)}")

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
                "dtype": {v: k for k, v in _DTYPES.items()}[self.dtype], "layers": sorted(self.tensors)}

    def save(self, directory, overwrite: bool = False, format: str = "lora_edu") -> Path:
        """Write adapter_model.safetensors + adapter_config.json into `directory` (created if needed), atomically.

        format="peft" writes PEFT's layout, which `peft.PeftModel.from_pretrained(model, directory)` loads.
        An existing adapter there is replaced only with overwrite=True (else FileExistsError)."""
        from safetensors.torch import save

        if format not in ("lora_edu", "peft"):
            raise ValueError(f"format must be 'lora_edu' or 'peft', got {brief(format)}")
        self.validate()
        peft = format == "peft"
        cfg, flat = to_peft(self) if peft else (self.config_dict(), {
            f"{n}.{m}": t for n, pair in self.tensors.items() for m, t in zip("AB", pair)})
        weights = save({k: t.detach().cpu().contiguous() for k, t in flat.items()},
                       metadata={"format": "pt" if peft else FORMAT})
        if not peft:
            cfg["weights_sha256"] = hashlib.sha256(weights).hexdigest()
        config = (json.dumps(cfg, indent=2) + "\n").encode()
        return write_atomic(directory, {WEIGHTS_NAME: weights, CONFIG_NAME: config}, overwrite)

    @classmethod
    def load(cls, directory, device=None) -> Adapter:
        """Read and check an adapter directory, lora_edu's or PEFT's (told apart by the config). Foreign, torn,
        oversized, corrupt or inconsistent files, and PEFT features lora_edu lacks, are refused with a ValueError
        naming the file and field (FileNotFoundError for a missing one). The tensors are copied into memory the
        adapter owns: the files may change or vanish afterwards."""
        directory = as_path(directory)
        device = None if device is None else get_device(device)
        if not directory.is_dir():
            if directory.exists():
                raise ValueError(f"directory: {directory} is not a directory")
            raise FileNotFoundError(f"directory: {directory} does not exist")
        if not os.path.lexists(directory / WEIGHTS_NAME) and os.path.lexists(directory / "adapter_model.bin"):
            raise ValueError(f"{directory} holds adapter_model.bin, a pickle file, which lora_edu never unpickles; "
                             "save it with safetensors (PEFT: save_pretrained(..., safe_serialization=True))")
        cfg = parse_json(read_bounded(directory / CONFIG_NAME, MAX_CONFIG_BYTES), CONFIG_NAME)
        if is_peft_config(cfg):
            flat, _ = parse_safetensors(read_bounded(directory / WEIGHTS_NAME, MAX_WEIGHTS_BYTES), WEIGHTS_NAME)
            try:
                adapter = cls(**from_peft(cfg, flat))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{directory}: {e}") from e
            return adapter if device is None else adapter.to(device)
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{CONFIG_NAME} is neither a lora_edu adapter config (format != {FORMAT!r}) nor "
                             "PEFT's (no peft_type)")
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{CONFIG_NAME}: unsupported format_version {brief(cfg.get('format_version'))} "
                             f"(this lora_edu reads {FORMAT_VERSION}; save the adapter again)")
        fields = {"format", "format_version", "r", "alpha", "targets", "rslora", "dtype", "layers", "weights_sha256"}
        if set(cfg) != fields:
            raise ValueError(f"{CONFIG_NAME} lacks {sorted(fields - set(cfg))} / has unknown fields "
                             f"{brief(sorted(set(cfg) - fields))}")
        dtype, layers = cfg["dtype"], cfg["layers"]
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise ValueError(f"{CONFIG_NAME}: dtype {brief(dtype)} not one of {list(_DTYPES)}")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers) \
                or len(set(layers)) != len(layers):
            raise ValueError(f"{CONFIG_NAME}: layers must be a list of distinct names, got {brief(layers)}")
        data = read_bounded(directory / WEIGHTS_NAME, MAX_WEIGHTS_BYTES)
        if hashlib.sha256(data).hexdigest() != cfg["weights_sha256"]:
            raise ValueError(f"{WEIGHTS_NAME} does not match {CONFIG_NAME} (weights_sha256): the two were not "
                             "saved together, or a file changed since")
        flat, meta = parse_safetensors(data, WEIGHTS_NAME)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{WEIGHTS_NAME} was not written by lora_edu "
                             f"(metadata format {brief(meta.get('format'))})")
        expected = {f"{n}.{m}" for n in layers for m in "AB"}
        if set(flat) != expected:
            raise ValueError(f"{WEIGHTS_NAME} tensor names do not match the config's layers: missing "
                             f"{brief(sorted(expected - set(flat)))}, unexpected {brief(sorted(set(flat) - expected))}")
        for k, t in flat.items():
            if t.dtype != _DTYPES[dtype]:
                raise ValueError(f"{WEIGHTS_NAME}: tensor {k} has dtype {t.dtype}, config says {dtype}")
        try:
            adapter = cls(cfg["r"], cfg["alpha"], cfg["targets"], cfg["rslora"],
                          {n: (flat[f"{n}.A"], flat[f"{n}.B"]) for n in layers})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{directory}: {e}") from e
        return adapter if device is None else adapter.to(device)


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


def load_adapter(model: nn.Module, adapter) -> list[str]:
    """Copy an adapter's A, B into the model's LoRA layers (adding them with its config if there are none).

    `adapter` is an Adapter or a directory in lora_edu's or PEFT's format: ``le.load_adapter(model, "my_dir")``.
    Names, shapes and rank are checked first; on any mismatch the model is left untouched.
    """
    check_model(model)
    if isinstance(adapter, (str, os.PathLike)):
        adapter = Adapter.load(adapter)
    _check_adapter(adapter)
    layers = lora_layers(model)
    if not layers:  # a plain model: LoRA layers with the adapter's config are added once everything is checked
        like = {n: m.weight for n, m in _check_plain_targets(model, adapter).items()}
        if sorted(_layers_for_targets(model, adapter.targets)) != sorted(adapter.tensors):
            raise ValueError("adapter layers do not match the layers its targets select in this model")
    elif set(layers) != set(adapter.tensors):
        raise ValueError(f"adapter layers {sorted(adapter.tensors)} do not match the model's LoRA "
                         f"layers {sorted(layers)}")
    else:
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
        like = {n: m.A for n, m in layers.items()}
    new = {n: tuple(t.to(like[n]) for t in adapter.tensors[n]) for n in like}  # the layers' dtype and device
    for n, pair in new.items():
        if not all(torch.isfinite(t).all() for t in pair):
            raise ValueError(f"adapter values for {n!r} overflow the layer's dtype {like[n].dtype} (model untouched)")
    if not layers:
        add_lora(model, adapter.targets, adapter.r, adapter.alpha, rslora=adapter.rslora)
        layers = lora_layers(model)
    with torch.no_grad():
        for n, m in layers.items():
            m.A.copy_(new[n][0])
            m.B.copy_(new[n][1])
    return list(layers)


def _layers_for_targets(model: nn.Module, targets) -> list[str]:
    return [n for n in linear_names(model) if any(target_matches(n, t) for t in targets)]


def _check_plain_targets(model: nn.Module, adapter: Adapter) -> dict:
    """{name: nn.Linear} of the adapter's layers: plain nn.Linear (not LoRA, nor inside one) of ΔW's shape."""
    modules, plain = dict(model.named_modules()), set(linear_names(model))
    for n, (A, B) in adapter.tensors.items():
        m = modules.get(n)
        if isinstance(m, LoRALinear) or (isinstance(m, nn.Linear) and n not in plain):
            raise ValueError(f"layer {n!r} has (or is inside) a LoRA layer; merge_adapter works on a plain model "
                             "(use remove_lora first, or load_adapter for unmerged LoRA)")
        if not isinstance(m, nn.Linear):
            raise ValueError(f"adapter layer {n!r} is not an nn.Linear in this model")
        if (B.shape[0], A.shape[1]) != tuple(m.weight.shape):
            raise ValueError(f"adapter ΔW for {n!r} is {B.shape[0]}×{A.shape[1]}, but the weight is "
                             f"{tuple(m.weight.shape)}")
    return {n: modules[n] for n in adapter.tensors}


def _apply(model: nn.Module, adapter: Adapter, weight: float, sign: float) -> list[str]:
    check_model(model)
    _check_adapter(adapter)
    weight = check_number("weight", weight, -ALPHA_MAX, ALPHA_MAX)
    modules = _check_plain_targets(model, adapter)
    new = {}  # every new weight is computed and checked before any is written: all or nothing
    with torch.no_grad():
        for n, m in modules.items():
            w = m.weight
            d = adapter.delta(n).to(device=w.device, dtype=torch.promote_types(w.dtype, torch.float32))
            d = d * (sign * weight)
            if not torch.isfinite(d).all():
                raise ValueError(f"refusing to merge: weight·ΔW of {n!r} contains NaN or inf (model untouched)")
            # W0 must survive the round trip: beyond max|W|/eps every entry of W0 is below the rounding step of
            # W0 + weight·ΔW and unmerging returns noise (8.4e6× in float32, 128× in bfloat16, 1024× in float16)
            limit = w.detach().abs().max().item() / torch.finfo(w.dtype).eps
            if d.abs().max().item() > limit:
                raise ValueError(f"refusing to merge: weight·ΔW of {n!r} exceeds max|W|/eps = {limit:.3g}, so "
                                 f"unmerging could not restore W (weight={weight:g}; model untouched)")
            new[n] = (w.to(d.dtype) + d).to(w.dtype)
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

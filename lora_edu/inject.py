"""Model-level LoRA: put LoRALinear layers into any nn.Module by name, merge, unmerge and remove them."""

from __future__ import annotations

import torch
from torch import nn

from .layer import LoRALinear, check_lora_args

__all__ = [
    "add_lora",
    "merge_lora",
    "unmerge_lora",
    "remove_lora",
    "lora_layers",
    "lora_state_dict",
    "count_parameters",
    "linear_names",
    "mark_only_lora_trainable",
]


def check_model(model) -> None:
    """A TypeError naming `model` unless it is an nn.Module (every model-level function starts with this)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def linear_names(model: nn.Module) -> list[str]:
    """Qualified names of the plain nn.Linear modules (not inside a LoRALinear)."""
    check_model(model)
    inside = {f"{n}.base" for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in inside]


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{qualified name: LoRALinear} in module order."""
    check_model(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def target_matches(name: str, target: str) -> bool:
    """Whether layer `name` is what target names: the full name, or its last dotted parts ("q_proj")."""
    return name == target or name.endswith("." + target)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def normalize_targets(targets) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = (targets,)
    try:
        targets = tuple(targets)
    except TypeError as e:
        raise TypeError(f"targets must be a string or a sequence of strings, got {targets!r}") from e
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"targets must be a non-empty sequence of non-empty strings, got {targets!r}")
    return targets


def add_lora(model: nn.Module, targets=("q_proj", "v_proj"), r: int = 4, alpha: float | None = None,
             **layer_kwargs) -> list[str]:
    """Wrap every nn.Linear whose qualified name ends with a target in a LoRALinear, in place.

    Every other parameter is frozen, so only the A and B matrices train (§4.2). Returns the
    replaced names. All arguments are checked before anything changes: on error the model is untouched.
    """
    check_model(model)
    targets = normalize_targets(targets)
    linears = linear_names(model)
    chosen = [n for n in linears if any(target_matches(n, t) for t in targets)]
    for t in targets:
        if not any(target_matches(n, t) for n in chosen):
            wrapped = [n for n in lora_layers(model) if target_matches(n, t)]
            hint = f" ({len(wrapped)} such layers already have LoRA)" if wrapped else ""
            raise ValueError(f"targets: {t!r} matches no nn.Linear in the model{hint}; "
                             f"Linear layers are: {linears}")
    unknown = set(layer_kwargs) - {"dropout", "init", "rslora"}
    if unknown:
        raise TypeError(f"add_lora got unexpected keyword arguments {sorted(unknown)}")
    for n in chosen:
        check_lora_args(model.get_submodule(n), r, alpha, **layer_kwargs)
    keep = {id(p) for m in lora_layers(model).values() for p in (m.A, m.B)}  # earlier add_lora calls
    for p in model.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
    for n in chosen:
        _set_submodule(model, n, LoRALinear(model.get_submodule(n), r, alpha, **layer_kwargs))
    return chosen


def mark_only_lora_trainable(model: nn.Module) -> None:
    """requires_grad only on the A and B matrices of the LoRA layers (what add_lora already does)."""
    keep = {id(p) for m in lora_layers(model).values() for p in (m.A, m.B)}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)


def _check_each(layers: dict[str, LoRALinear], check) -> None:
    """check(layer) for every layer before any is touched (all or nothing); the error names the layer."""
    for n, m in layers.items():
        try:
            check(m)
        except (ValueError, RuntimeError) as e:
            raise type(e)(f"layer {n!r}: {e} (model untouched)") from e


def merge_lora(model: nn.Module, keep_original: bool = False) -> list[str]:
    """Merge every unmerged LoRALinear (W ← W0 + ΔW). Refuses, untouched, if any W0 + ΔW would not be finite."""
    if not isinstance(keep_original, bool):
        raise TypeError(f"keep_original must be a bool, got {type(keep_original).__name__}")
    layers = lora_layers(model)
    todo = {n: m for n, m in layers.items() if not m.merged}
    if layers and not todo:
        raise RuntimeError("every LoRA layer is already merged")
    _check_each(todo, LoRALinear._check_mergeable)
    for m in todo.values():
        m._merge(keep_original)
    return list(todo)


def unmerge_lora(model: nn.Module) -> list[str]:
    """Unmerge every merged LoRALinear (W ← W − ΔW, or the exact W0 when it was kept)."""
    layers = lora_layers(model)
    todo = {n: m for n, m in layers.items() if m.merged}
    if layers and not todo:
        raise RuntimeError("no LoRA layer is merged; there is nothing to unmerge")
    _check_each(todo, LoRALinear._check_unmergeable)
    for m in todo.values():
        m._unmerge()
    return list(todo)


def remove_lora(model: nn.Module, merge: bool) -> list[str]:
    """Replace each LoRALinear by its plain nn.Linear: with ΔW folded in (merge=True) or with W0 (False).

    The returned model costs exactly what the original did at inference. Its parameters stay frozen.
    """
    if not isinstance(merge, bool):
        raise TypeError(f"merge must be a bool, got {type(merge).__name__}")
    layers = lora_layers(model)
    if merge:
        _check_each({n: m for n, m in layers.items() if not m.merged}, LoRALinear._check_mergeable)
    else:
        _check_each(layers, LoRALinear._check_unmergeable)
    for n, m in layers.items():
        if merge and not m.merged:
            m._merge(False)
        elif not merge and m.merged:
            m._unmerge()
        _set_submodule(model, n, m.base)
    return list(layers)


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors: {'<layer>.A': A, '<layer>.B': B} (what a LoRA checkpoint needs)."""
    out = {}
    for n, m in lora_layers(model).items():
        out[f"{n}.A"] = m.A.detach()
        out[f"{n}.B"] = m.B.detach()
    return out


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) number of scalar parameters, each shared tensor counted once."""
    check_model(model)
    trainable = total = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total

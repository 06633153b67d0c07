"""PEFT's LoRA files ↔ lora_edu's Adapter: the same A and B under other names, and what PEFT stores that we refuse.

PEFT writes adapter_config.json (``peft_type: "LORA"``, r, lora_alpha, …) and adapter_model.safetensors with keys
``base_model.model.<layer>.lora_A.weight`` (A, r×k) and ``….lora_B.weight`` (B, d×r) — our A and B, same layout.
A config field either maps to ours, or does not change what trained weights compute (bookkeeping, dropout, how A
started), or must hold its plain-LoRA default: otherwise the file means something lora_edu does not compute, and
reading it is refused with the field's name, never silently ignored. Plain data in and out; no file I/O here.
"""

from __future__ import annotations

import re

__all__ = ["PREFIX", "is_peft_config", "to_peft", "peft_layers", "from_peft"]

PREFIX = "base_model.model."
_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")
_MAPPED = {"peft_type", "r", "lora_alpha", "use_rslora", "target_modules", "bias", "init_lora_weights"}
_HARMLESS = {"task_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision", "inference_mode",
             "lora_dropout", "megatron_core", "qalora_group_size", "eva_config", "runtime_config",
             "ensure_weight_tying", "exclude_modules", "layers_to_transform", "layers_pattern"}
# inits that only choose where A and B start (W0 untouched): trained weights still mean W0 + scaling·B·A
_PLAIN_INITS = (True, False, "gaussian", "eva", "orthogonal", "mica")
_WHY = {"use_dora": "DoRA also learns a magnitude for every output column",
        "lora_bias": "lora_B carries a trained bias",
        "modules_to_save": "whole modules were trained and stored beside the adapter",
        "trainable_token_indices": "embedding rows were trained too",
        "rank_pattern": "layers have their own r, an Adapter has one",
        "alpha_pattern": "layers have their own lora_alpha, an Adapter has one",
        "fan_in_fan_out": "the base layers are Conv1D with W stored transposed; lora_edu adapts nn.Linear",
        "use_qalora": "QALoRA pools the input in groups before A",
        "loftq_config": "LoftQ replaced W0 by a quantized copy",
        "layer_replication": "the base model's layers were duplicated",
        "target_parameters": "LoRA on bare nn.Parameters, not nn.Linear layers"}


def is_peft_config(cfg) -> bool:
    """True for a PEFT adapter_config.json (PEFT always writes peft_type)."""
    return isinstance(cfg, dict) and "peft_type" in cfg


def to_peft(adapter) -> tuple[dict, dict]:
    """(adapter_config.json dict, safetensors dict) that peft.PeftModel.from_pretrained loads as this adapter."""
    cfg = {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": None, "inference_mode": True,
           "r": adapter.r, "lora_alpha": adapter.alpha, "use_rslora": adapter.rslora,
           "target_modules": list(adapter.targets), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
           "init_lora_weights": True, "use_dora": False, "modules_to_save": None, "rank_pattern": {},
           "alpha_pattern": {}}
    flat = {f"{PREFIX}{n}.lora_{w}.weight": t for n, pair in adapter.tensors.items() for w, t in zip("AB", pair)}
    return cfg, flat


def peft_layers(keys) -> list[str]:
    """The adapted layer names of a PEFT LoRA weights file; refuses any tensor a plain LoRA does not have."""
    found: dict[str, set] = {}
    extra = []
    for k in keys:
        m = _KEY.fullmatch(k)
        if m:
            found.setdefault(m[1], set()).add(m[2])
        else:
            extra.append(k)
    if extra:
        raise ValueError(f"adapter_model.safetensors holds tensors a plain LoRA does not have (DoRA magnitudes, "
                         f"biases, modules_to_save?): {sorted(extra)[:4]}")
    unpaired = sorted(n for n, s in found.items() if s != {"A", "B"})
    if unpaired or not found:
        raise ValueError(f"adapter_model.safetensors needs lora_A and lora_B for every layer; incomplete: "
                         f"{unpaired or 'no LoRA tensors at all'}")
    return sorted(found)


def _check(cfg: dict) -> None:
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"adapter_config.json: peft_type={cfg.get('peft_type')!r}; only PEFT's 'LORA' maps to "
                         "a lora_edu Adapter")
    for key, value in cfg.items():
        if value and key not in _MAPPED | _HARMLESS:
            raise ValueError(f"adapter_config.json: {key}={value!r} is a PEFT feature lora_edu does not implement "
                             f"({_WHY.get(key, 'it changes what the adapter computes')}); refusing, not ignoring it")
    if cfg.get("bias", "none") != "none":
        raise ValueError(f"adapter_config.json: bias={cfg['bias']!r} means biases were trained and saved; "
                         "lora_edu adapters train A and B only (bias='none')")
    init = cfg.get("init_lora_weights", True)
    if not any(init is v or (isinstance(v, str) and init == v) for v in _PLAIN_INITS):
        raise ValueError(f"adapter_config.json: init_lora_weights={init!r} rewrites W0 when the adapter is created, "
                         "so B·A only fits that rewritten base; convert it to a plain LoRA in PEFT first "
                         "(save_pretrained(..., path_initial_model_for_weight_conversion=...))")
    for key, kind in (("r", int), ("lora_alpha", (int, float)), ("use_rslora", bool)):
        if key in cfg and (not isinstance(cfg[key], kind) or (kind is not bool and isinstance(cfg[key], bool))):
            raise ValueError(f"adapter_config.json: {key}={cfg[key]!r} has the wrong type")


def from_peft(cfg: dict, flat: dict) -> dict:
    """Adapter(**from_peft(cfg, tensors)): checks the config, maps its fields and renames the tensors.

    Defaults are PEFT's (r = lora_alpha = 8). Targets are PEFT's target_modules when that is a list of name
    suffixes selecting exactly the stored layers; otherwise (a regex, "all-linear", layers_to_transform,
    exclusions) the stored layers' own names.
    """
    _check(cfg)
    layers = peft_layers(flat)
    tm = cfg.get("target_modules")
    narrowed = any(cfg.get(k) not in (None, [], "") for k in ("layers_to_transform", "layers_pattern",
                                                              "exclude_modules"))
    # PEFT (like add_lora) selects a module whose name equals an entry or ends with "." + entry
    plain = isinstance(tm, list) and tm and all(isinstance(t, str) and t for t in tm)
    hits = [(n, t) for n in layers for t in tm if n == t or n.endswith("." + t)] if plain else []
    if narrowed or not plain or {t for _, t in hits} != set(tm) or {n for n, _ in hits} != set(layers):
        tm = layers  # select exactly the stored layers
    tensors = {n: (flat[f"{PREFIX}{n}.lora_A.weight"], flat[f"{PREFIX}{n}.lora_B.weight"]) for n in layers}
    return {"r": cfg.get("r", 8), "alpha": cfg.get("lora_alpha", 8), "targets": tuple(sorted(set(tm))),
            "rslora": cfg.get("use_rslora", False), "tensors": tensors}

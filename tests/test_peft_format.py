"""Adapters that round-trip with PEFT: the name/field mapping, every refusal, and real PEFT loading our files."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import lora_edu as le
from lora_edu.peft_format import PREFIX, from_peft, is_peft_config, peft_layers, to_peft

peft = pytest.importorskip("peft")
QV = [f"blocks.{i}.attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]


def make_adapter(seed=0, r=4, alpha=8.0, rslora=False, dtype=torch.float32, targets=("q_proj", "v_proj")):
    """An Adapter for the toy with random A and B (ΔW ≠ 0), seeded."""
    g = torch.Generator().manual_seed(seed)
    names = [f"blocks.{i}.attn.{t}" for i in range(2) for t in targets]
    t = {n: ((torch.randn(r, 64, generator=g) / 8).to(dtype), (torch.randn(64, r, generator=g) * 0.1).to(dtype))
         for n in names}
    return le.Adapter(r, alpha, tuple(targets), rslora, t)


def peft_config(**changes) -> dict:
    """What PEFT 0.21 itself writes for LoraConfig(r=4, lora_alpha=8, target_modules=[q_proj, v_proj])."""
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]).to_dict()
    cfg["target_modules"] = sorted(cfg["target_modules"])
    cfg["peft_type"] = "LORA"
    cfg.update(changes)
    return json.loads(json.dumps(cfg, default=str))


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


# ---- the mapping, no files ------------------------------------------------------------------------------

def test_to_peft_names_and_fields():
    a = make_adapter(r=3, alpha=6.0, rslora=True)
    cfg, flat = to_peft(a)
    assert is_peft_config(cfg) and not is_peft_config({"format": "lora_edu.adapter"})
    assert (cfg["peft_type"], cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == ("LORA", 3, 6.0, True)
    assert cfg["target_modules"] == ["q_proj", "v_proj"] and cfg["bias"] == "none" and not cfg["use_dora"]
    assert sorted(flat) == sorted(f"{PREFIX}{n}.lora_{w}.weight" for n in QV for w in "AB")
    for n, (A, B) in a.tensors.items():
        assert flat[f"{PREFIX}{n}.lora_A.weight"] is A and flat[f"{PREFIX}{n}.lora_B.weight"] is B


def test_from_peft_inverts_to_peft():
    a = make_adapter(r=2, alpha=5.0, dtype=torch.bfloat16)
    b = le.Adapter(**from_peft(*to_peft(a)))
    assert (b.r, b.alpha, b.targets, b.rslora, b.dtype) == (a.r, a.alpha, a.targets, a.rslora, torch.bfloat16)
    assert all(b.tensors[n][i] is a.tensors[n][i] for n in a.tensors for i in (0, 1))


def test_peft_defaults_are_used_for_missing_fields():
    cfg = {"peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]}  # PEFT's defaults: r = lora_alpha = 8
    kw = from_peft(cfg, to_peft(make_adapter(r=8))[1])
    assert (kw["r"], kw["alpha"], kw["rslora"]) == (8, 8, False)


@pytest.mark.parametrize("changes", [
    {"target_modules": "all-linear"},
    {"target_modules": r".*\.(q_proj|v_proj)"},
    {"target_modules": None},
    {"layers_to_transform": [0, 1]},
    {"exclude_modules": ["k_proj"]},
    {"target_modules": ["q_proj"]},  # does not select every stored layer
])
def test_targets_are_exact_layer_names_unless_a_plain_list_selects_them(changes):
    kw = from_peft(peft_config(**changes), to_peft(make_adapter())[1])
    assert kw["targets"] == tuple(sorted(QV))


@pytest.mark.parametrize("changes", [
    {"init_lora_weights": v} for v in (True, False, "gaussian", "eva", "orthogonal", "mica")] + [
    {"lora_dropout": 0.1}, {"task_type": "CAUSAL_LM"}, {"inference_mode": False},
    {"base_model_name_or_path": "org/model"}, {"revision": "main"}, {"peft_version": "0.99.0"},
    {"auto_mapping": {"base_model_class": "ToyTransformer"}},
])
def test_fields_that_do_not_change_trained_weights_are_accepted(changes):
    kw = from_peft(peft_config(**changes), to_peft(make_adapter())[1])
    assert kw["r"] == 4


@pytest.mark.parametrize("field, value", [
    ("use_dora", True), ("lora_bias", True), ("modules_to_save", ["lm_head"]), ("rank_pattern", {"q_proj": 8}),
    ("alpha_pattern", {"q_proj": 16}), ("fan_in_fan_out", True), ("use_qalora", True),
    ("layer_replication", [[0, 2]]), ("trainable_token_indices", [1, 2]), ("target_parameters", ["w"]),
    ("loftq_config", {"loftq_bits": 4}), ("megatron_config", {"tp": 2}), ("alora_invocation_tokens", [5]),
    ("use_bdlora", {"x": 1}), ("some_future_variant", True),
    ("bias", "all"), ("bias", "lora_only"),
    ("init_lora_weights", "pissa"), ("init_lora_weights", "pissa_niter_4"), ("init_lora_weights", "olora"),
    ("init_lora_weights", "corda"), ("init_lora_weights", "loftq"), ("init_lora_weights", "lora_ga"),
    ("init_lora_weights", "something new"), ("init_lora_weights", 1),
    ("peft_type", "IA3"), ("r", "4"), ("r", True), ("lora_alpha", "8"), ("use_rslora", "yes"),
])
def test_peft_features_lora_edu_lacks_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        from_peft(peft_config(**{field: value}), to_peft(make_adapter())[1])


@pytest.mark.parametrize("extra, match", [
    ({f"{PREFIX}blocks.0.attn.q_proj.lora_magnitude_vector": torch.ones(64)}, "plain LoRA does not have"),
    ({f"{PREFIX}blocks.0.attn.q_proj.base_layer.bias": torch.ones(64)}, "plain LoRA does not have"),
    ({f"{PREFIX}blocks.0.attn.k_proj.lora_A.default.weight": torch.ones(4, 64)}, "plain LoRA does not have"),
    ({f"{PREFIX}blocks.0.attn.k_proj.lora_A.weight": torch.ones(4, 64)}, "incomplete.*k_proj"),
])
def test_tensors_a_plain_lora_lacks_are_refused(extra, match):
    flat = {**to_peft(make_adapter())[1], **extra}
    with pytest.raises(ValueError, match=match):
        peft_layers(flat)
    with pytest.raises(ValueError, match=match):
        from_peft(peft_config(), flat)
    with pytest.raises(ValueError, match="no LoRA tensors"):
        peft_layers({})

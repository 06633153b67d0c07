"""Adapters that round-trip with PEFT: the name/field mapping, every refusal, and real PEFT loading our files."""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lora_edu as le
from lora_edu.peft_format import PREFIX, from_peft, is_peft_config, peft_layers, to_peft

peft = pytest.importorskip("peft")
QV = [f"blocks.{i}.attn.{p}" for i in range(3) for p in ("q_proj", "v_proj")]


def make_adapter(seed=0, r=4, alpha=8.0, rslora=False, dtype=torch.float32, targets=("q_proj", "v_proj")):
    """An Adapter for the toy with random A and B (ΔW ≠ 0), seeded."""
    g = torch.Generator().manual_seed(seed)
    names = [f"blocks.{i}.attn.{t}" for i in range(3) for t in targets]
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
    {"target_modules": ["q_proj", "v_proj", "k_proj"]},  # k_proj selects no stored layer
    {"target_modules": ["q_proj", 3]},
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


# ---- files: lora_edu ↔ PEFT -----------------------------------------------------------------------------

class TwoLayer(nn.Module):
    """Not the toy: any nn.Module whose Linear layers carry the same names (here attn.q_proj, attn.v_proj)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.attn = nn.Module()
        self.attn.q_proj, self.attn.v_proj = nn.Linear(16, 24), nn.Linear(24, 8)

    def forward(self, x):
        return self.attn.v_proj(torch.tanh(self.attn.q_proj(x)))


def peft_from_dir(model, directory):
    return quiet(peft.PeftModel.from_pretrained, copy.deepcopy(model), str(directory)).eval()


def peft_trained(model, seed=0, std=0.05, **cfg):
    """A PeftModel of a copy of `model` with random non-zero A and B (as if trained)."""
    cfg = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **cfg}
    pm = quiet(peft.get_peft_model, copy.deepcopy(model), peft.LoraConfig(**cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return pm.eval()


def tol(dtype, ref, roundings=4):
    """Two correct implementations differ by a few roundings of the output's size in its dtype (PEFT keeps
    low-precision adapters in float32, lora_edu in the model's dtype: 8 bfloat16 ulps of the logits measured).
    Merged weights round W0 + ΔW once per adapted layer, so merged-vs-unmerged allows more roundings."""
    return roundings * torch.finfo(dtype).eps * float(ref.abs().max())


@pytest.fixture(scope="module")
def toy():
    return le.load_pretrained(device="cpu")


@pytest.fixture(scope="module")
def toy_tokens():
    return le.get_task("plus3").batch(8, torch.Generator().manual_seed(0))[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lora_edu_to_peft_outputs_equal_on_the_toy(toy, toy_tokens, tmp_path, dtype):
    base = copy.deepcopy(toy).to(dtype)
    a = make_adapter(seed=1, r=3, alpha=5.0, dtype=dtype)
    a.save(tmp_path / "ad", format="peft")
    ours = copy.deepcopy(base)
    le.load_adapter(ours, a)
    pm = peft_from_dir(base, tmp_path / "ad")
    with torch.no_grad():
        want, got = ours.eval()(toy_tokens), pm(toy_tokens)
        plain = base(toy_tokens)
    assert float((want - plain).abs().max()) > 10 * tol(dtype, want)  # the adapter changes the outputs a lot
    assert float((got.float() - want.float()).abs().max()) <= tol(dtype, want)
    assert set(peft_layers_of(pm)) == set(a.tensors)


def peft_layers_of(pm):
    return {n.removeprefix(PREFIX): m for n, m in pm.named_modules()
            if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


@pytest.mark.parametrize("rslora", [False, True])
def test_lora_edu_to_peft_on_any_module_with_the_same_names(tmp_path, rslora):
    net = TwoLayer()
    ours = copy.deepcopy(net)
    le.add_lora(ours, ("q_proj", "v_proj"), r=2, alpha=3, rslora=rslora)
    le_randomize(ours)
    le.extract_adapter(ours).save(tmp_path, overwrite=True, format="peft")
    pm = peft_from_dir(net, tmp_path)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ours.eval()(x)
        torch.testing.assert_close(pm(x), want, rtol=0, atol=tol(torch.float32, want))
    assert pm.peft_config["default"].use_rslora is rslora


def le_randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in le.lora_layers(model).values():
            m.A.copy_(torch.randn(m.A.shape, generator=g) * 0.2)
            m.B.copy_(torch.randn(m.B.shape, generator=g) * 0.2)


@pytest.mark.parametrize("cfg", [
    {}, {"use_rslora": True, "r": 2, "lora_alpha": 3}, {"target_modules": "all-linear"},
    {"target_modules": r".*\.q_proj"}, {"lora_dropout": 0.1, "init_lora_weights": "gaussian"},
    {"layers_to_transform": [1], "layers_pattern": "blocks"}])
def test_peft_to_lora_edu_merged_outputs_equal(toy, toy_tokens, tmp_path, cfg):
    pm = peft_trained(toy, **cfg)
    quiet(pm.save_pretrained, str(tmp_path))
    ours = copy.deepcopy(toy)
    assert le.load_adapter(ours, tmp_path) == sorted(peft_layers_of(pm), key=list(le.linear_names(toy)).index)
    with torch.no_grad():
        want = pm(toy_tokens)
        torch.testing.assert_close(ours.eval()(toy_tokens), want, rtol=0, atol=tol(torch.float32, want))
        le.merge_lora(ours)
        torch.testing.assert_close(ours(toy_tokens), want, rtol=0, atol=tol(torch.float32, want, 32))
        plain = copy.deepcopy(toy)
        le.merge_adapter(plain, le.Adapter.load(str(tmp_path)))
        torch.testing.assert_close(plain(toy_tokens), want, rtol=0, atol=tol(torch.float32, want, 32))


def bits(t):
    return t.view(torch.int16 if t.element_size() == 2 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trips_give_bit_identical_tensors(tmp_path, dtype):
    a = make_adapter(seed=2, r=3, alpha=7.5, rslora=True, dtype=dtype)
    a.save(tmp_path / "peft", format="peft")
    b = le.Adapter.load(tmp_path / "peft")
    b.save(tmp_path / "ours")
    c = le.Adapter.load(tmp_path / "ours")
    for x in (b, c):
        assert (x.r, x.alpha, x.targets, x.rslora, x.dtype) == (a.r, a.alpha, a.targets, a.rslora, dtype)
        for n, (A, B) in a.tensors.items():
            assert torch.equal(bits(x.tensors[n][0]), bits(A)) and torch.equal(bits(x.tensors[n][1]), bits(B))
    c.save(tmp_path / "peft2", format="peft")
    f1, f2 = load_file(str(tmp_path / "peft" / "adapter_model.safetensors")), \
        load_file(str(tmp_path / "peft2" / "adapter_model.safetensors"))
    assert f1.keys() == f2.keys() and all(torch.equal(bits(f1[k]), bits(f2[k])) for k in f1)


def test_peft_file_round_trip_through_lora_edu_is_bit_identical(toy, tmp_path):
    pm = peft_trained(toy, r=2, lora_alpha=6)
    pm.save_pretrained(str(tmp_path / "orig"))
    le.Adapter.load(tmp_path / "orig").save(tmp_path / "again", format="peft")
    f1, f2 = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("orig", "again"))
    assert f1.keys() == f2.keys() and all(torch.equal(bits(f1[k]), bits(f2[k])) for k in f1)
    c1, c2 = (json.loads((tmp_path / d / "adapter_config.json").read_text()) for d in ("orig", "again"))
    assert {k: c2[k] for k in ("peft_type", "r", "lora_alpha", "use_rslora", "bias", "use_dora")} == \
        {k: c1[k] for k in ("peft_type", "r", "lora_alpha", "use_rslora", "bias", "use_dora")}
    assert sorted(c2["target_modules"]) == sorted(c1["target_modules"])


@pytest.mark.parametrize("cfg, field", [
    ({"use_dora": True}, "use_dora"), ({"bias": "lora_only"}, "bias"), ({"bias": "all"}, "bias"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"), ({"rank_pattern": {"q_proj": 2}}, "rank_pattern"),
    ({"alpha_pattern": {"v_proj": 2}}, "alpha_pattern"), ({"lora_bias": True}, "lora_bias"),
    ({"init_lora_weights": "olora"}, "init_lora_weights"), ({"init_lora_weights": "pissa"}, "init_lora_weights"),
])
def test_peft_directories_with_features_lora_edu_lacks_are_refused(toy, tmp_path, snapshot, cfg, field):
    pm = peft_trained(toy, **cfg)
    quiet(pm.save_pretrained, str(tmp_path))
    with pytest.raises(ValueError, match=field):
        le.Adapter.load(tmp_path)
    model = copy.deepcopy(toy)
    snap = snapshot(model)
    with pytest.raises(ValueError, match=field):
        le.load_adapter(model, str(tmp_path))
    snap.assert_unchanged(model)


def test_pickled_peft_weights_are_refused_unread(toy, tmp_path, monkeypatch):
    peft_trained(toy).save_pretrained(str(tmp_path), safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").exists() and not (tmp_path / "adapter_model.safetensors").exists()

    def boom(*a, **k):
        raise AssertionError("a pickle was opened")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    with pytest.raises(ValueError, match="adapter_model.bin.*never unpickles"):
        le.Adapter.load(tmp_path)


def test_save_format_is_checked_before_writing(tmp_path):
    a = make_adapter()
    for bad in ("PEFT", "pt", None, 1):
        with pytest.raises(ValueError, match="format"):
            a.save(tmp_path / "x", format=bad)
    assert not (tmp_path / "x").exists()
    a.save(tmp_path / "x", format="peft")
    with pytest.raises(FileExistsError):
        a.save(tmp_path / "x", format="peft")
    assert is_peft_config(json.loads((tmp_path / "x" / "adapter_config.json").read_text()))


def test_a_config_of_neither_format_is_refused(tmp_path):
    make_adapter().save(tmp_path, format="peft")
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 4}))
    with pytest.raises(ValueError, match="neither"):
        le.Adapter.load(tmp_path)


def test_load_adapter_takes_a_directory_of_either_format(toy, toy_tokens, tmp_path):
    a = make_adapter(seed=4)
    a.save(tmp_path / "ours")
    a.save(tmp_path / "peft", format="peft")
    outs = []
    for path in (tmp_path / "ours", str(tmp_path / "peft")):
        m = copy.deepcopy(toy)
        assert le.load_adapter(m, path) == [n for n in le.linear_names(toy) if n in a.tensors]
        with torch.no_grad():
            outs.append(m.eval()(toy_tokens))
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(TypeError, match="model"):
        le.load_adapter("not a model", tmp_path / "ours")

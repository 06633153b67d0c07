"""Notebook 10's plumbing (lora_edu/course/nb10.py): PEFT on the toy computes what lora_edu computes, and the
helpers measure what the notebook says they measure."""

from __future__ import annotations

import copy
import inspect
import subprocess
import sys
import warnings

import pytest
import torch

import lora_edu as le

peft = pytest.importorskip("peft")
from lora_edu.course import nb10  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT: "the toy is not a transformers model"
        yield


@pytest.fixture(scope="module")
def base():
    return le.load_pretrained(device="cpu")


@pytest.fixture(scope="module")
def tokens():
    return le.get_task("plus3").batch(8, torch.Generator().manual_seed(0))[0]


def randomize(model, seed=0, std=0.05):
    """Non-zero lora_A and lora_B (as if trained) in every adapter of a PeftModel."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def test_importing_the_module_does_not_import_peft():
    code = "import sys, lora_edu.course.nb10; assert 'peft' not in sys.modules, 'peft imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_peft_toy_is_seeded_and_wraps_a_copy(base):
    a, b = nb10.peft_toy(3, base), nb10.peft_toy(3, base)
    la, lb = nb10.peft_layers(a), nb10.peft_layers(b)
    layers = range(le.ToyConfig().n_layer)
    assert sorted(la) == sorted(f"blocks.{i}.attn.{p}" for i in layers for p in ("q_proj", "v_proj"))
    assert all(torch.equal(nb10.layer_parts(la[n])["A"], nb10.layer_parts(lb[n])["A"]) for n in la)
    assert not any(torch.equal(nb10.layer_parts(la[n])["A"], nb10.layer_parts(nb10.peft_layers(
        nb10.peft_toy(4, base))[n])["A"]) for n in la)
    assert not nb10.peft_layers(base) and isinstance(base.blocks[0].attn.q_proj, torch.nn.Linear)


def test_layer_parts_give_notebook_02s_function(base):
    pm = randomize(nb10.peft_toy(0, base, r=3, alpha=5))
    layer = nb10.peft_layers(pm)["blocks.1.attn.v_proj"]
    p = nb10.layer_parts(layer)
    assert (p["r"], p["alpha"], p["scaling"]) == (3, 5, 5 / 3)
    assert p["A"].shape == (3, 64) and p["B"].shape == (64, 3)
    x = torch.randn(5, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = x @ p["W0"].T + p["b"] + p["scaling"] * (x @ p["A"].T) @ p["B"].T
        got = layer(x)
    torch.testing.assert_close(got, want, rtol=0, atol=16 * torch.finfo(torch.float32).eps * float(want.abs().max()))
    assert float((want - layer.base_layer(x)).abs().max()) > 0.01  # the update is not negligible


def test_copy_start_and_one_step_side_by_side(base):
    pm = randomize(nb10.peft_toy(0, base))
    ours = nb10.copy_start(pm, base)
    for n, m in le.lora_layers(ours).items():
        p = nb10.layer_parts(nb10.peft_layers(pm)[n])
        assert torch.equal(m.A, p["A"]) and torch.equal(m.B, p["B"]) and m.scaling == p["scaling"]
    step = nb10.one_step_side_by_side(base, "plus3", seed=1, batch_size=16)
    assert step["loss_peft"] == pytest.approx(step["loss_lora_edu"], rel=1e-6)
    assert step["max_grad"] > 0
    assert max(step["max_grad_diff_A"], step["max_grad_diff_B"]) <= 1e-5 * step["max_grad"]


def test_head_to_head_rows_models_and_spread(base):
    rows, models = nb10.head_to_head(base, "plus3", seeds=(0, 1), steps=2, eval_examples=8)
    assert [(r["library"], r["seed"]) for r in rows] == [("PEFT", 0), ("lora_edu", 0), ("PEFT", 1), ("lora_edu", 1)]
    assert all(0 <= r["accuracy"] <= r["token_accuracy"] <= 1 and r["seconds"] > 0 for r in rows)
    for (lib, seed), m in models.items():  # accuracy is the exact-answer metric of the trained model
        assert next(r for r in rows if (r["library"], r["seed"]) == (lib, seed))["accuracy"] == le.evaluate(
            m, "plus3", 8, metric="sequence")
    assert isinstance(models[("PEFT", 0)], peft.PeftModel) and le.lora_layers(models[("lora_edu", 1)])
    assert all(m.alpha == 8 and m.r == 4 for m in le.lora_layers(models[("lora_edu", 0)]).values())
    s = nb10.spread([{"a": 1, "k": "x"}, {"a": 3, "k": "x"}, {"a": 10, "k": "y"}], "a", k="x")
    assert s == {"mean": 2, "min": 1, "max": 3, "n": 2}
    with pytest.raises(ValueError, match="steps"):
        nb10.head_to_head(base, steps=0)
    from lora_edu.course.common import LORA_RECIPE

    for f in (nb10.head_to_head, nb10.train_adapters):  # the course recipe, weight decay on A and B included
        params = inspect.signature(f).parameters
        assert params["weight_decay"].default == LORA_RECIPE["weight_decay"] == 1.0
        assert params["lr"].default == LORA_RECIPE["lr"]


def test_max_logit_diff(base, tokens):
    assert nb10.max_logit_diff(base, copy.deepcopy(base), tokens) == 0.0
    pm = randomize(nb10.peft_toy(0, base))
    assert nb10.max_logit_diff(base, pm, tokens) > 0.1


def two_adapter_model(base):
    pm = nb10.peft_toy(0, base, adapter_name="one")
    pm.add_adapter("two", nb10.peft_config())
    return randomize(pm)


def adapters_of(pm, names, tmp_path):
    pm.save_pretrained(str(tmp_path))
    pm.save_pretrained(str(tmp_path))  # PEFT replaces its own files without a word (name_map's save row says so)
    return {n: le.Adapter.load(tmp_path / n) for n in names}


@pytest.mark.parametrize("method", ["cat", "linear", "svd"])
def test_peft_combinations_are_notebook_08s_arithmetic(base, tmp_path, method):
    pm = two_adapter_model(base)
    adapters = adapters_of(pm, ("one", "two"), tmp_path)
    name, rank = nb10.combine_in_peft(pm, ["one", "two"], method)
    assert rank == {"cat": 8, "linear": 4, "svd": 4}[method]
    got, want = nb10.peft_adapter_delta(pm, name), nb10.notebook08_delta(list(adapters.values()), method)
    assert set(got) == set(want)
    for k in want:
        scale = float(want[k].abs().max())
        assert float((got[k] - want[k]).abs().max()) <= 1e-5 * scale
    k = "blocks.0.attn.q_proj"
    own = sum(a.delta(k).double() for a in adapters.values())  # the exact sum Σ s·B·A
    close_to_sum = torch.allclose(got[k], own, rtol=0, atol=1e-5 * float(own.abs().max()))
    assert close_to_sum == (method == "cat")  # linear adds cross terms, svd truncates


def test_notebook08_delta_refuses_other_methods(base, tmp_path):
    adapters = adapters_of(two_adapter_model(base), ("one", "two"), tmp_path)
    with pytest.raises(ValueError, match="method"):
        nb10.notebook08_delta(list(adapters.values()), "ties")


def test_combination_rows(base, tmp_path):
    pm = nb10.peft_toy(0, base, adapter_name="plus3")
    pm.add_adapter("minus5", nb10.peft_config())
    randomize(pm)
    adapters = adapters_of(pm, ("plus3", "minus5"), tmp_path)
    rows = nb10.combination_rows(pm, adapters, eval_examples=8)
    assert [r["method"] for r in rows] == ["cat", "linear", "svd", "set_adapter"]
    assert all(r["rel_gap_to_nb08"] < 1e-5 for r in rows[:3]) and rows[3]["rel_gap_to_nb08"] is None
    skill = nb10.BASE_SKILL
    for r in rows:
        assert r["mean_task"] == pytest.approx((r["plus3"] + r["minus5"]) / 2) and 0 <= r[skill] <= 1
    assert set(pm.peft_config) == {"plus3", "minus5"}  # the combined adapters were deleted again
    assert rows[3][skill] == le.evaluate(base, skill, 8, metric="sequence")  # adapters disabled: the base model
    pm.set_adapter("minus5")
    assert rows[3]["minus5"] == le.evaluate(pm, "minus5", 8, metric="sequence")


def test_train_adapters_trains_only_the_active_one_and_never_w0(base):
    pm = nb10.peft_toy(0, base, adapter_name="plus3")
    before = nb10.base_weights(pm)
    acc = nb10.train_adapters(pm, ["minus5", "rminus1"], nb10.peft_config(), steps=2, eval_examples=8)
    assert list(acc) == ["minus5", "rminus1"] and list(pm.peft_config) == ["plus3", "minus5", "rminus1"]
    assert acc["rminus1"] == le.evaluate(pm, "rminus1", 8, metric="sequence")
    assert nb10.max_change(pm, before) == 0.0
    layer = nb10.peft_layers(pm)["blocks.0.attn.q_proj"]
    assert all(float(layer.lora_B[t].weight.abs().max()) > 0 for t in ("minus5", "rminus1"))
    assert float(layer.lora_B["plus3"].weight.abs().max()) == 0  # not trained while another adapter was active
    assert {n for n, p in pm.named_parameters() if p.requires_grad} == {
        n for n in dict(pm.named_parameters()) if ".rminus1." in n}


def test_switch_drift_merge_vs_set_adapter(base):
    pm = two_adapter_model(base)
    assert nb10.peft_switch_drift(pm, ["one", "two"], torch.bfloat16, switches=20, merge=False) == 0.0
    assert nb10.peft_switch_drift(pm, ["one", "two"], torch.bfloat16, switches=20, merge=True) > 0.0
    with pytest.raises(ValueError, match="switches"):
        nb10.peft_switch_drift(pm, ["one"], switches=0)


def test_describe_both_formats(tmp_path):
    g = torch.Generator().manual_seed(0)
    a = le.Adapter(2, 4.0, ("q_proj",), False, {"blocks.0.attn.q_proj": (torch.randn(2, 64, generator=g),
                                                                           torch.randn(64, 2, generator=g))})
    a.save(tmp_path / "ours")
    a.save(tmp_path / "peft", format="peft")
    with pytest.raises(FileExistsError, match="overwrite"):  # why notebook 10's save cells pass overwrite=True
        a.save(tmp_path / "peft", format="peft")
    a.save(tmp_path / "peft", format="peft", overwrite=True)  # re-running the cell: same files, no error
    ours, theirs = nb10.describe(tmp_path / "ours"), nb10.describe(tmp_path / "peft")
    assert ours["format"] == "lora_edu" and ours["config"]["alpha"] == 4.0 and ours["tensors"] == 2
    assert theirs["format"] == "PEFT" and theirs["config"]["lora_alpha"] == 4.0
    assert theirs["first_keys"] == ["base_model.model.blocks.0.attn.q_proj.lora_A.weight",
                                    "base_model.model.blocks.0.attn.q_proj.lora_B.weight"]


def test_name_map_reads_the_defaults_from_the_code():
    rows = nb10.name_map()
    text = " ".join(" ".join(r.values()) for r in rows)
    d = peft.LoraConfig()
    alpha_row = next(r for r in rows if r["PEFT"].startswith("lora_alpha default"))
    assert f"lora_alpha default: {d.lora_alpha} (r = 4 → scaling {d.lora_alpha / 4:g})" == alpha_row["PEFT"]
    assert "scaling 1)" in alpha_row["lora_edu"] and "differs" in alpha_row["note"]
    save_row = next(r for r in rows if r["PEFT"] == "model.save_pretrained(dir)")
    assert "overwrite=True" in save_row["lora_edu"] and "FileExistsError" in save_row["note"]
    for name in ("merge_and_unload", "set_adapter", "add_weighted_adapter", "save_pretrained", "from_pretrained"):
        assert name in text and hasattr(peft.PeftModel, name) or hasattr(peft.LoraModel, name)
    table = nb10.markdown_table([{"a": "x|y", "b": 1}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_neox_like_names_and_forward():
    m = nb10.NeoXLike()
    assert le.linear_names(m) == [f"layers.{i}.{n}" for i in range(2) for n in (
        "attention.query_key_value", "attention.dense", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h")] + ["embed_out"]
    assert m(torch.tensor([[1, 2, 3]])).shape == (1, 3, 20)

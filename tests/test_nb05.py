"""Notebook 05's module: LoRA vs full fine-tuning rows, Table 5/6 ablations, costs and figures."""

import copy

import matplotlib
import pytest

import lora_edu as le
from lora_edu.course import common, nb05

matplotlib.use("Agg")

from .conftest import figure_done, same_state, state_of

FAST = {"steps": 3, "eval_examples": 16, "progress": False}


def test_lora_params_at_scale_matches_toy_and_paper(base):
    toy = nb05.lora_params_at_scale(64, 2, 4)
    assert toy["total"] == le.count_parameters(base)[1]
    m = copy.deepcopy(base)
    le.add_lora(m, ("q_proj", "v_proj"), r=4)
    assert toy["lora"] == le.count_parameters(m)[0]
    gpt3 = nb05.lora_params_at_scale(**nb05.GPT3_175B, r=4)
    assert gpt3["lora"] == 2 * 192 * 12288 * 4  # the paper's |Θ| = 2·L̂·d_model·r with L̂ = 2×96
    assert 170e9 < gpt3["total"] < 180e9
    assert 5_000 < gpt3["ratio"] < 20_000

@pytest.mark.parametrize("kw", [{"d_model": 0}, {"r": 65}, {"n_adapted": 5}, {"n_layer": 1.5}, {"d_ff": -1}])
def test_lora_params_at_scale_rejects(kw):
    args = {"d_model": 64, "n_layer": 2, "r": 4} | kw
    with pytest.raises(TypeError if kw == {"n_layer": 1.5} else ValueError, match=next(iter(kw))):
        nb05.lora_params_at_scale(**args)

# ---- notebook 05 -----------------------------------------------------------------------------
def test_training_memory_lora_vs_full(base):
    full = nb05.training_memory(base)
    total = le.count_parameters(base)[1]
    assert full["optimizer_bytes"] == 2 * total * 4
    assert full["grad_bytes"] == total * 4
    assert full["weight_bytes"] == total * 4
    m = copy.deepcopy(base)
    le.add_lora(m, ("q_proj", "v_proj"), r=4)
    lora = nb05.training_memory(m)
    trainable, total2 = le.count_parameters(m)
    assert lora["optimizer_bytes"] == 2 * trainable * 4 and lora["grad_bytes"] == trainable * 4
    assert lora["weight_bytes"] == total2 * 4
    assert lora["total_bytes"] < full["total_bytes"]
    frozen = copy.deepcopy(base).requires_grad_(False)
    with pytest.raises(ValueError):
        nb05.training_memory(frozen)

def test_time_train_step_leaves_model_alone(base):
    before = state_of(base)
    t = nb05.time_train_step(base, steps=2, warmup=1, batch_size=4)
    assert t > 0
    assert same_state(before, state_of(base))
    for kw in ({"steps": 0}, {"warmup": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            nb05.time_train_step(base, **kw)

def test_checkpoint_bytes(base):
    full = nb05.checkpoint_bytes(base)
    assert full > le.count_parameters(base)[1] * 4  # the weights plus a header
    m = copy.deepcopy(base)
    le.add_lora(m, ("q_proj", "v_proj"), r=4)
    lora = nb05.checkpoint_bytes(m)
    assert le.count_parameters(m)[0] * 4 < lora < full / 10

def test_finetune_lora_and_full_rows(base):
    before = state_of(base)
    m, row = nb05.finetune("increment", "lora", r=2, model=base, **FAST)
    assert same_state(before, state_of(base))  # a copy was trained
    assert row["method"] == "lora" and row["targets"] == ("q_proj", "v_proj") and row["r"] == 2
    assert row["trainable"] == 2 * 2 * 2 * 128 and row["total"] == row["trainable"] + le.count_parameters(base)[1]
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["seq_accuracy"] <= row["accuracy"] + 1e-9
    assert row["optimizer_bytes"] == 2 * row["trainable"] * 4
    assert len(row["history"]["loss"]) == 3 and row["step_ms"] > 0 and row["checkpoint_bytes"] > 0
    assert set(le.lora_layers(m)) == {f"blocks.{i}.attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")}
    mf, rf = nb05.finetune("increment", "full", model=base, **FAST)
    assert rf["trainable"] == rf["total"] == le.count_parameters(base)[1]
    assert rf["optimizer_bytes"] > row["optimizer_bytes"] and rf["checkpoint_bytes"] > row["checkpoint_bytes"]
    assert rf["lr"] == 3e-3 and row["lr"] == 1e-2
    assert not le.lora_layers(mf)

def test_finetune_is_deterministic(base):
    _, a = nb05.finetune("reverse", model=base, measure=False, **FAST)
    _, b = nb05.finetune("reverse", model=base, measure=False, **FAST)
    assert a["history"]["loss"] == b["history"]["loss"] and a["accuracy"] == b["accuracy"]

@pytest.mark.parametrize("kw", [{"method": "half"}, {"steps": 0}, {"r": 0}, {"r": 65}, {"targets": ("nope",)},
                                {"eval_examples": 0}, {"task": "nope"}, {"targets": ()}])
def test_finetune_rejects(base, kw):
    before = state_of(base)
    with pytest.raises(ValueError):
        nb05.finetune(**({"model": base, "progress": False, "steps": 2} | kw))
    assert same_state(before, state_of(base))

def test_finetune_rejects_lora_model(base):
    m = copy.deepcopy(base)
    le.add_lora(m)
    with pytest.raises(ValueError):
        nb05.finetune(model=m, **FAST)

def test_budget_configs_equal_budget(base):
    configs = nb05.budget_configs(8)
    assert [(t, r) for t, r in configs] == [(p["targets"], p["r"]) for p in nb05.PAPER_TABLE5]
    counts = set()
    for targets, r in configs:
        m = copy.deepcopy(base)
        le.add_lora(m, targets, r=r)
        counts.add(le.count_parameters(m)[0])
    assert counts == {2 * 8 * 128}  # 2 blocks × r·(d + k) at r = 8
    for bad in (6, 0, -4):
        with pytest.raises(ValueError):
            nb05.budget_configs(bad)

def test_compare_targets_rows(base):
    rows = nb05.compare_targets("increment", steps=2, configs=[(("q_proj",), 8), (("q_proj", "v_proj"), 4),
                                                             (("up_proj",), 2)], progress=False)
    assert [r["r"] for r in rows] == [8, 4, 2]
    assert rows[0]["trainable"] == rows[1]["trainable"] == 2048
    assert rows[0]["paper_WikiSQL"] == 70.4 and rows[1]["paper_MultiNLI"] == 91.3
    assert "paper_WikiSQL" not in rows[2]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    with pytest.raises(ValueError):
        nb05.compare_targets(configs=[], progress=False)

def test_rank_sweep_rows(base):
    rows = nb05.rank_sweep("increment", ranks=(1, 3), target_sets=(("q_proj",),), steps=2, progress=False,
                         eval_examples=32)
    assert [(r["targets"], r["r"], r["trainable"]) for r in rows] == [(("q_proj",), 1, 256), (("q_proj",), 3, 768)]
    assert rows[0]["paper_WikiSQL"] == 68.8 and "paper_WikiSQL" not in rows[1]
    assert rows[0]["acc_min"] == rows[0]["acc_max"] == rows[0]["accuracy"]
    two = nb05.rank_sweep("reverse", ranks=(2,), target_sets=(("q_proj",),), steps=3, seeds=(0, 1), progress=False,
                        eval_examples=32)[0]
    assert len(two["accuracies"]) == 2
    assert two["acc_min"] <= two["accuracy"] <= two["acc_max"]
    assert two["accuracy"] == pytest.approx(sum(two["accuracies"]) / 2)
    _, single = nb05.finetune("reverse", "lora", ("q_proj",), 2, 8, 3, seed=1, model=base, progress=False,
                            measure=False, eval_examples=32)
    assert two["accuracies"][1] == single["accuracy"]
    for kw in ({"ranks": ()}, {"ranks": (0,)}, {"target_sets": ()}, {"ranks": (100,)}, {"seeds": ()},
               {"seeds": (0.5,)}):
        with pytest.raises(ValueError):
            nb05.rank_sweep(**({"steps": 1, "progress": False} | kw))

def test_target_label_and_human_bytes():
    assert nb05.target_label(("q_proj", "v_proj")) == "W_q+W_v"
    assert nb05.target_label("o_proj") == "W_o"
    assert common.human_bytes(999) == "999 B"
    assert common.human_bytes(9214) == "9.21 kB"
    assert common.human_bytes(350e9) == "350 GB"
    assert common.human_bytes(37.7e6) == "37.7 MB"
    assert common.human_bytes(5e15) == "5e+03 TB"
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValueError):
            common.human_bytes(bad)
    with pytest.raises(ValueError):
        nb05.target_label(())

def test_finetune_figures(base):
    kw = {"steps": 3, "model": base, "progress": False, "eval_examples": 8}
    _, lora = nb05.finetune("increment", **kw)
    _, full = nb05.finetune("increment", "full", **kw)
    figure_done(nb05.plot_loss_curves([lora, full]))
    figure_done(nb05.plot_cost_comparison(lora, full))
    t5 = nb05.compare_targets("increment", steps=1, configs=[(("q_proj",), 8), (("q_proj", "v_proj"), 4)],
                            progress=False, eval_examples=8)
    fig = nb05.plot_target_budget({"increment": t5, "again": t5})
    assert len(fig.axes) == 2
    figure_done(fig)
    figure_done(nb05.plot_target_budget(t5))
    sweep = nb05.rank_sweep("increment", ranks=(1, 2), steps=1, progress=False, eval_examples=8)
    figure_done(nb05.plot_rank_sweep(sweep))
    for f in (nb05.plot_loss_curves, nb05.plot_target_budget, nb05.plot_rank_sweep):
        with pytest.raises(ValueError):
            f([])

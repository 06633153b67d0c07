"""Notebook 05's module: fine-tuning runs, the Lab that remembers them, seed tables, the lr sweep, Tables 5/6,
ΔW summaries, costs and figures."""

import copy

import matplotlib
import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb05

matplotlib.use("Agg")

from .conftest import figure_done, same_state, state_of

QV = ("q_proj", "v_proj")
N_LAYER = le.ToyConfig().n_layer


@pytest.fixture(scope="module")
def lab():
    """A Lab with tiny runs (3 steps, 16 held-out examples), shared by the module's tests."""
    return nb05.Lab(steps=3, eval_examples=16, device="cpu", workers=1)


def test_lora_params_at_scale_matches_toy_and_paper(base):
    toy = nb05.lora_params_at_scale(64, N_LAYER, 4)
    assert toy["total"] == le.count_parameters(base)[1]
    m = copy.deepcopy(base)
    le.add_lora(m, QV, r=4)
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


def test_training_memory_lora_vs_full(base):
    full = nb05.training_memory(base)
    total = le.count_parameters(base)[1]
    assert full["optimizer_bytes"] == 2 * total * 4
    assert full["grad_bytes"] == total * 4
    assert full["weight_bytes"] == total * 4
    m = copy.deepcopy(base)
    le.add_lora(m, QV, r=4)
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
    le.add_lora(m, QV, r=4)
    lora = nb05.checkpoint_bytes(m)
    assert le.count_parameters(m)[0] * 4 < lora < full / 10


# ---- scoring ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def half_trained(base):
    """A LoRA model partway through learning plus3, so that some answers are right and some wrong."""
    m, _ = nb05.finetune("plus3", steps=12, model=base, eval_examples=16)
    return m


def test_exact_accuracy_is_evaluate_sequence(half_trained):
    for n, bs in ((64, 512), (40, 16)):  # one chunk, and several chunks with a short last one
        ours = nb05.exact_accuracy(half_trained, "plus3", n, batch_size=bs)
        assert ours == le.evaluate(half_trained, "plus3", n, metric="sequence", batch_size=bs)
    assert 0 < nb05.exact_accuracy(half_trained, "plus3", 64) < 1  # a case where right and wrong both occur


def test_exact_accuracy_rejects(base):
    with pytest.raises(ValueError, match="mixture"):
        nb05.exact_accuracy(base, le.PRETRAIN_TASK)
    for kw in ({"n_examples": 0}, {"batch_size": 0}, {"seed": -1}):
        with pytest.raises(ValueError):
            nb05.exact_accuracy(base, "plus3", **kw)
    with pytest.raises(TypeError):
        nb05.exact_accuracy("model", "plus3")


def test_known_word_twin():
    assert [nb05.known_word_twin(t) for t in le.DOWNSTREAM_TASKS] == ["add3", "sub5", "rsub1"]
    for t in le.DOWNSTREAM_TASKS:
        assert torch.equal(le.get_task(t).fn(le.tasks.encode("314159")), le.get_task(nb05.known_word_twin(t)).fn(
            le.tasks.encode("314159")))
    with pytest.raises(ValueError, match="downstream"):
        nb05.known_word_twin("add3")


def test_random_init_is_seeded_and_leaves_the_rng_alone(base):
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a, b, c = nb05.random_init(0), nb05.random_init(0), nb05.random_init(1)
    assert torch.equal(torch.rand(1), before)
    assert same_state(state_of(a), state_of(b)) and not same_state(state_of(a), state_of(c))
    assert state_of(a).keys() == state_of(base).keys() and not same_state(state_of(a), state_of(base))
    with pytest.raises(ValueError):
        nb05.random_init(-1)


# ---- runs ------------------------------------------------------------------------------------------
def test_finetune_lora_and_full_rows(base):
    before = state_of(base)
    m, row = nb05.finetune("plus3", "lora", r=2, steps=3, model=base, eval_examples=16, measure=True)
    assert same_state(before, state_of(base))  # a copy was trained
    assert row["method"] == "lora" and row["targets"] == QV and row["r"] == 2 and row["scale"] == 4.0
    assert row["trainable"] == N_LAYER * 2 * 2 * 128 and row["total"] == row["trainable"] + le.count_parameters(base)[1]
    assert row["lr"] == common.LORA_RECIPE["lr"] and row["weight_decay"] == common.LORA_RECIPE["weight_decay"]
    assert row["accuracy"] == nb05.exact_accuracy(m, "plus3", 16)
    assert row["optimizer_bytes"] == 2 * row["trainable"] * 4
    assert len(row["history"]["loss"]) == 3 and row["step_ms"] > 0 and row["checkpoint_bytes"] > 0
    assert set(le.lora_layers(m)) == {f"blocks.{i}.attn.{p}" for i in range(N_LAYER) for p in QV}
    mf, rf = nb05.finetune("plus3", "full", steps=3, model=base, eval_examples=16, measure=True)
    assert rf["trainable"] == rf["total"] == le.count_parameters(base)[1]
    assert rf["optimizer_bytes"] > row["optimizer_bytes"] and rf["checkpoint_bytes"] > row["checkpoint_bytes"]
    assert rf["lr"] == 3e-3 and rf["weight_decay"] == 0.0 and rf["targets"] == ("all",)
    assert not le.lora_layers(mf)


def test_finetune_is_deterministic(base):
    _, a = nb05.finetune("minus5", model=base, steps=3, eval_examples=16)
    _, b = nb05.finetune("minus5", model=base, steps=3, eval_examples=16)
    _, c = nb05.finetune("minus5", model=base, steps=3, eval_examples=16, seed=1)
    assert a["history"]["loss"] == b["history"]["loss"] and a["accuracy"] == b["accuracy"]
    assert a["history"]["loss"] != c["history"]["loss"]


@pytest.mark.parametrize("kw", [{"method": "half"}, {"steps": 0}, {"r": 0}, {"r": 65}, {"targets": ("nope",)},
                                {"eval_examples": 0}, {"task": "nope"}, {"targets": ()}, {"task": "pretrain"}])
def test_finetune_rejects(base, kw):
    before = state_of(base)
    with pytest.raises(ValueError):
        nb05.finetune(**({"model": base, "steps": 2} | kw))
    assert same_state(before, state_of(base))


def test_finetune_rejects_lora_model(base):
    m = copy.deepcopy(base)
    le.add_lora(m)
    with pytest.raises(ValueError):
        nb05.finetune(model=m, steps=2)


def test_lab_remembers_each_run(lab):
    a = lab.run("plus3", seed=0)
    n = len(lab.runs)
    assert lab.run("plus3", seed=0) is a and len(lab.runs) == n  # asked again: not trained again
    b = lab.run("plus3", seed=1)
    c = lab.run("plus3", seed=0, weight_decay=0.0)
    assert len(lab.runs) == n + 2 and b is not a and c is not a
    assert a["init"] == "pretrained" and a["steps"] == 3 and isinstance(a["model"], torch.nn.Module)
    assert lab.seconds >= a["train_seconds"] + b["train_seconds"]


def test_lab_random_init_and_full(lab):
    r = lab.run("plus3", init="random", seed=2)
    assert r["init"] == "random"
    key = "blocks.0.mlp.up_proj.weight"  # frozen by LoRA: still the random init's
    assert torch.equal(r["model"].state_dict()[key], nb05.random_init(2).state_dict()[key])
    f = lab.run("plus3", full=True, lr=1e-3)
    assert f["method"] == "full" and f["lr"] == 1e-3
    with pytest.raises(ValueError, match="lr"):
        lab.run("plus3", full=True)
    with pytest.raises(ValueError, match="init"):
        lab.run("plus3", init="imagenet")
    with pytest.raises(TypeError):
        lab.run("plus3", full=1)
    for kw in ({"steps": 0}, {"eval_examples": 0}, {"workers": 0}):
        with pytest.raises(ValueError):
            nb05.Lab(**kw)


def test_prefetch_in_two_processes_gives_the_same_runs(lab):
    jobs = [{"task": "plus3", "seed": 5}, {"task": "minus5", "r": 1, "seed": 6}, {"task": "plus3", "seed": 5}]
    par = nb05.Lab(steps=3, eval_examples=16, device="cpu", workers=2)
    assert par.prefetch(jobs, progress=False) == 2  # the repeated job is trained once
    assert par.prefetch(jobs, progress=False) == 0  # and nothing twice
    for kw in jobs[:2]:
        a, b = par.run(**kw), lab.run(**kw)  # two processes vs this one
        assert a["accuracy"] == b["accuracy"] and a["history"]["loss"] == b["history"]["loss"]
        assert same_state(state_of(a["model"]), state_of(b["model"]))
    with pytest.raises(ValueError, match="init"):
        par.prefetch([{"init": "imagenet"}])


def test_seed_table(lab):
    rows = nb05.seed_table(lab, ("plus3", "minus5"), (0, 1), label="x", progress=False)
    assert [(r["task"], r["config"], r["seeds"]) for r in rows] == [("plus3", "x", (0, 1)), ("minus5", "x", (0, 1))]
    for r in rows:
        accs = [lab.run(r["task"], seed=s)["accuracy"] for s in (0, 1)]
        assert r["accuracies"] == accs and r["mean"] == pytest.approx(sum(accs) / 2)
        assert r["min"] == min(accs) and r["max"] == max(accs)
    own = nb05.seed_table(lab, ("plus3", "minus5"), {"plus3": (1,), "minus5": (2,)}, init="random", progress=False)
    assert [r["seeds"] for r in own] == [(1,), (2,)]
    assert own[0]["accuracies"] == [lab.run("plus3", seed=1, init="random")["accuracy"]]
    for bad in ((), (0.5,), (-1,)):
        with pytest.raises(ValueError, match="seeds"):
            nb05.seed_table(lab, ("plus3",), bad, progress=False)
    with pytest.raises(ValueError):
        nb05.seed_table(lab, (), (0,), progress=False)
    with pytest.raises(TypeError, match="lab"):
        nb05.seed_table("lab", ("plus3",), (0,), progress=False)


def test_lr_sweep_picks_best_then_lowest_loss(lab):
    rows, best = nb05.lr_sweep(lab, "plus3", lrs=(1e-4, 1e-3), seed=0, progress=False)
    assert [r["lr"] for r in rows] == [1e-4, 1e-3]
    assert best == min(rows, key=lambda r: (-r["accuracy"], r["final_loss"]))["lr"]
    for r in rows:
        assert r["accuracy"] == lab.run("plus3", full=True, lr=r["lr"], seed=0)["accuracy"]
    with pytest.raises(ValueError):
        nb05.lr_sweep(lab, lrs=(), progress=False)


def test_budget_configs_equal_budget(base):
    configs = nb05.budget_configs(8)
    assert [(t, r) for t, r in configs] == [(p["targets"], p["r"]) for p in nb05.PAPER_TABLE5]
    counts = set()
    for targets, r in configs:
        m = copy.deepcopy(base)
        le.add_lora(m, targets, r=r)
        counts.add(le.count_parameters(m)[0])
    assert counts == {N_LAYER * 8 * 128}  # blocks × r·(d + k) at r = 8
    for bad in (6, 0, -4):
        with pytest.raises(ValueError):
            nb05.budget_configs(bad)


def test_table5_rows(lab):
    rows = nb05.table5(lab, "plus3", (0,), configs=[(("q_proj",), 8), (QV, 4), (nb05.ATTENTION_TARGETS, 2),
                                                    (("up_proj",), 2)], progress=False)
    assert [r["r"] for r in rows] == [8, 4, 2, 2]
    assert [r["scale"] for r in rows] == [1.0, 2.0, 4.0, 4.0]  # α = 8 fixed: α/r differs between columns
    assert rows[0]["trainable"] == rows[1]["trainable"] == rows[2]["trainable"] == N_LAYER * 8 * 128
    assert rows[0]["paper_WikiSQL"] == 70.4 and rows[1]["paper_MultiNLI"] == 91.3 and rows[2]["paper_WikiSQL"] == 73.7
    assert "paper_WikiSQL" not in rows[3]
    assert rows[1]["accuracies"] == [lab.run("plus3", targets=QV, r=4, seed=0)["accuracy"]]  # the same run
    with pytest.raises(ValueError):
        nb05.table5(lab, configs=[], progress=False)


def test_table6_rows_and_cell(lab):
    rows = nb05.table6(lab, "plus3", (0, 1), ranks=(1, 3), target_sets=(("q_proj",),), progress=False)
    assert [(r["targets"], r["r"], r["trainable"]) for r in rows] == [(("q_proj",), 1, N_LAYER * 128),
                                                                      (("q_proj",), 3, N_LAYER * 384)]
    assert rows[0]["paper_WikiSQL"] == 68.8 and "paper_WikiSQL" not in rows[1]
    r = nb05.cell(rows, targets="q_proj", r=3)
    assert r is rows[1] and r["min"] <= r["mean"] <= r["max"] and len(r["accuracies"]) == 2
    assert r["accuracies"][1] == lab.run("plus3", targets=("q_proj",), r=3, seed=1)["accuracy"]
    with pytest.raises(ValueError, match="0 rows"):
        nb05.cell(rows, r=2)
    with pytest.raises(ValueError, match="2 rows"):
        nb05.cell(rows, targets=("q_proj",))
    for kw in ({"ranks": ()}, {"ranks": (0,)}, {"target_sets": ()}, {"seeds": ()}):
        with pytest.raises(ValueError):
            nb05.table6(lab, **({"progress": False} | kw))


def test_delta_summary(base):
    m = copy.deepcopy(base)
    le.add_lora(m, QV, r=2)
    with torch.no_grad():
        for i, layer in enumerate(le.lora_layers(m).values()):
            layer.B.copy_(torch.randn(layer.B.shape, generator=torch.Generator().manual_seed(i)) * 0.1)
    rows = nb05.delta_summary(m)
    assert [r["layer"] for r in rows] == list(le.lora_layers(m))
    for r, layer in zip(rows, le.lora_layers(m).values()):
        dw = layer.delta_weight().detach().double()
        assert r["rel_norm"] == pytest.approx(float(dw.norm() / layer.base.weight.double().norm()), rel=1e-9)
        assert r["rank_1pct"] <= 2 and len(r["singular_values"]) == 64
        assert 0.5 <= r["top1_share"] <= 1  # two directions: the larger holds at least half
    one = copy.deepcopy(base)
    le.add_lora(one, ("q_proj",), r=1)
    with torch.no_grad():
        for layer in le.lora_layers(one).values():
            layer.B.fill_(0.1)
    assert all(r["rank_1pct"] == 1 and r["top1_share"] == pytest.approx(1) for r in nb05.delta_summary(one))
    with pytest.raises(ValueError, match="LoRA"):
        nb05.delta_summary(base)


def test_target_label_and_human_bytes():
    assert nb05.target_label(QV) == "W_q+W_v"
    assert nb05.target_label("o_proj") == "W_o"
    assert common.human_bytes(999) == "999 B"
    assert common.human_bytes(9214) == "9.21 kB"
    assert common.human_bytes(350e9) == "350 GB"
    assert common.human_bytes(5e15) == "5e+03 TB"
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValueError):
            common.human_bytes(bad)
    with pytest.raises(ValueError):
        nb05.target_label(())


def test_figures(lab):
    a = nb05.seed_table(lab, ("plus3", "minus5"), (0, 1), label="LoRA", progress=False)
    b = nb05.seed_table(lab, ("plus3", "minus5"), {"plus3": (0,), "minus5": (1,)}, label="random", init="random",
                        progress=False)
    figure_done(nb05.plot_seed_tables({"LoRA": a, "random": b}))
    rows, _ = nb05.lr_sweep(lab, "plus3", lrs=(1e-4, 1e-3), progress=False)
    figure_done(nb05.plot_loss_curves(rows, ["a", "b"], chance=2.3))
    lora_cost = nb05.costs(lab.run("plus3")["model"])
    full_cost = nb05.costs(lab.run("plus3", full=True, lr=1e-3)["model"])
    assert full_cost["trainable"] > lora_cost["trainable"] and lora_cost["step_ms"] > 0
    figure_done(nb05.plot_cost_comparison(lora_cost, full_cost))
    t5 = nb05.table5(lab, "plus3", (0,), configs=[(("q_proj",), 8), (QV, 4)], progress=False)
    figure_done(nb05.plot_target_budget(t5))
    t6 = nb05.table6(lab, "plus3", (0, 1), ranks=(1, 2), target_sets=(QV,), progress=False)
    figure_done(nb05.plot_rank_sweep(t6))
    s = nb05.delta_summary(lab.run("plus3")["model"])
    fig = nb05.plot_delta_spectra({"one": s, "two": s})
    assert len(fig.axes) == 2
    figure_done(fig)
    figure_done(nb05.plot_delta_spectra({"one": s}))
    for f in (nb05.plot_target_budget, nb05.plot_rank_sweep):
        with pytest.raises(ValueError):
            f([])
    for f in (nb05.plot_seed_tables, nb05.plot_delta_spectra):
        with pytest.raises(ValueError):
            f({})
    with pytest.raises(ValueError, match="labels"):
        nb05.plot_loss_curves(rows, ["only one"])
    with pytest.raises(ValueError):
        nb05.plot_cost_comparison({}, {})

"""Notebook 04's module: parameter tables, the task family and pretraining mixture, zero-shot, attention reads."""

import math

import matplotlib
import pytest
import torch

import lora_edu as le
from lora_edu.course import nb04

matplotlib.use("Agg")

from .conftest import figure_done


# ---- §1 parameters -------------------------------------------------------------------------------
def test_parameter_table_sums_to_model_and_groups(base):
    table = nb04.parameter_table(base)
    assert sum(r["params"] for r in table) == le.count_parameters(base)[1]
    q = next(r for r in table if r["name"] == "blocks.0.attn.q_proj.weight")
    d, L, f = base.cfg.d_model, base.cfg.n_layer, base.cfg.d_ff
    assert q["shape"] == (d, d) and q["params"] == d * d and q["group"] == "attention"
    groups = nb04.parameter_groups(base)
    assert sum(groups.values()) == le.count_parameters(base)[1]
    assert groups["attention"] == L * 4 * (d * d + d)
    assert groups["mlp"] == L * (2 * d * f + f + d)


def test_shapes_are_printed_as_shapes(base):
    assert nb04.format_shape((20, 64)) == "20 × 64" and nb04.format_shape(torch.Size([64])) == "64"
    text = nb04.format_parameter_table(nb04.parameter_table(base))
    line = next(li for li in text.splitlines() if li.startswith("tok_emb.weight"))
    assert f"{base.cfg.vocab_size} × {base.cfg.d_model}" in line and "+" not in text
    with pytest.raises(ValueError):
        nb04.format_parameter_table([])


# ---- §2–3 tasks and the pretraining mixture --------------------------------------------------------
def test_mixture_grid_holds_out_the_downstream_pairs():
    by_op = nb04.skills_by_op()
    assert set(by_op) == {"rot", "add", "sub", "rsub"}
    assert all(w == 1 for w in by_op["rot"].values()) and all(w == 2 for w in by_op["add"].values())
    grid = {r["op"]: r for r in nb04.route_grid()}
    for t in le.DOWNSTREAM_TASKS:
        twin = nb04.known_word_twin(t)
        task = le.get_task(twin)
        assert grid[task.op][f"k={task.k}"] == "HELD OUT" and twin not in by_op[task.op]
    assert grid["sub"]["k=0"] == "—" and all(grid["rot"][f"k={k}"] == "train" for k in range(6))
    assert sum(v == "train" for r in grid.values() for v in r.values()) == sum(map(len, by_op.values()))
    with pytest.raises(ValueError):
        nb04.skills_by_op("add2")
    with pytest.raises(ValueError):
        nb04.known_word_twin("add3")


def test_exact_accuracy_equals_greedy_whole_answers(base):
    for t in ("rot1", "plus3", "minus5"):
        assert nb04.exact_accuracy(base, t, 96) == le.evaluate(base, t, 96, metric="sequence")
    acc = nb04.skill_accuracy(base, ["add2", "sub5"], n_examples=32)
    assert set(acc) == {"add2", "sub5"} and all(0 <= v <= 1 for v in acc.values())
    assert nb04.per_op({"add2": 1.0, "add4": 0.5, "rot0": 0.0}) == {"add": [1.0, 0.5], "rot": [0.0]}
    with pytest.raises(ValueError):
        nb04.exact_accuracy(base, le.PRETRAIN_TASK)
    with pytest.raises(ValueError):
        nb04.exact_accuracy(base, "rot1", 0)


def test_pretrain_demo_logs_loss_per_op_and_repeats():
    a = nb04.pretrain_demo(3, ["rot1", "add2"], log_every=1)
    b = nb04.pretrain_demo(3, ["rot1", "add2"], log_every=1)
    assert a["step"] == [1, 2, 3] and set(a["loss"]) == {"rot", "add"} and a["steps"] == 3
    assert a["loss"] == b["loss"], "same seed, same run"
    assert all(0 < v < 10 for vs in a["loss"].values() for v in vs)
    assert abs(a["loss"]["add"][0] - math.log(20)) < 1.0, "an untrained model guesses among the vocabulary"
    assert not a["model"].training
    m = nb04.pretrain_demo(2, log_every=5)
    assert m["step"] == [2] and set(m["loss"]) == {"rot", "add", "sub", "rsub"}
    for bad in (0, -1, 1.5):
        with pytest.raises((ValueError, TypeError)):
            nb04.pretrain_demo(bad)
    with pytest.raises(ValueError):
        nb04.pretrain_demo(2, [])


# ---- §4 zero-shot -----------------------------------------------------------------------------
def test_baseline_and_answered_as(base):
    acc = nb04.baseline_accuracy(base, n_examples=32)
    assert set(acc) == set(le.DOWNSTREAM_TASKS) and all(0 <= v <= 1 for v in acc.values())
    assert nb04.baseline_accuracy(base, "add2", n_examples=32)["add2"] >= 0.9
    with pytest.raises(ValueError):
        nb04.baseline_accuracy(base, ("nope",))
    known = nb04.answered_as(base, "add2", n_examples=64)
    assert set(known) == {"rot", "add", "sub", "rsub"} and max(known, key=known.get) == "add"
    assert known["add"] == le.evaluate(base, "add2", 64), "the share following add2's rule is its token accuracy"
    with pytest.raises(ValueError):
        nb04.answered_as(base, le.PRETRAIN_TASK)


# ---- §5 attention ----------------------------------------------------------------------------
def test_answer_queries_point_at_the_operands():
    task = le.get_task("add2")
    x = le.tasks.encode("314159")
    inputs, targets = task.make(x)
    y = task.fn(x)[0]
    for i, (q, xi, xk) in enumerate(nb04.answer_queries(task)):
        assert targets[0, q] == y[i], "the token at q predicts y_i"
        assert inputs[0, xi] == x[0, i] and inputs[0, xk] == x[0, (i + task.k) % task.n]


def test_attention_reads_and_summary(base):
    rows = nb04.attention_reads(base, ["rot0", "add2"], layer=0, n_examples=16)
    assert len(rows) == 2 * base.cfg.n_head
    for r in rows:
        parts = [r["x_i"], r["route k"], r["op word"]] + ([] if r["k"] == 0 else [r["x_(i+k)"]])
        assert all(0 <= v <= 1 for v in parts) and sum(parts) <= 1 + 1e-5
        if r["k"] == 0:
            assert r["x_i"] == r["x_(i+k)"]
    with pytest.raises(ValueError):
        nb04.attention_reads(base, ["rot0"], layer=base.cfg.n_layer)
    made = [{"head": 0, "k": 1, "x_i": 0.9, "x_(i+k)": 0.2, "route k": 0.1},
            {"head": 0, "k": 2, "x_i": 0.7, "x_(i+k)": 0.6, "route k": 0.3},
            {"head": 0, "k": 2, "x_i": 0.8, "x_(i+k)": 0.4, "route k": 0.2},
            {"head": 1, "k": 0, "x_i": 0.1, "x_(i+k)": 0.1, "route k": 0.9}]
    s = nb04.head_summary(made)
    assert s[0] == {"head": 0, "min x_i": 0.7, "min route k": 0.1, "x_(i+1)": 0.2, "x_(i+2)": pytest.approx(0.5)}
    assert s[1] == {"head": 1, "min x_i": 0.1, "min route k": 0.9}, "k = 0 has no separate partner"
    with pytest.raises(ValueError):
        nb04.head_summary([])


def test_figures(base):
    figure_done(nb04.plot_param_breakdown(nb04.parameter_table(base)))
    figure_done(nb04.plot_zero_shot({"plus3": 0.0}, {"add3": 1.0}))
    demo = nb04.pretrain_demo(2, ["rot1"], log_every=1)
    figure_done(nb04.plot_pretrain_demo({"rot1": demo}))
    task = le.get_task("add2")
    tokens, _ = task.make(le.tasks.encode("314159"))
    _, atts = base(tokens, return_attn=True)
    qs = nb04.answer_queries(task)
    fig = nb04.plot_attention(atts, le.tasks.decode(tokens[0]).split(), layer=0,
                              marks={"x_i": [(q, a) for q, a, _ in qs]})
    assert len(fig.axes) == base.cfg.n_head
    figure_done(fig)
    with pytest.raises(ValueError):
        nb04.plot_attention(atts, layer=5)
    for bad in (lambda: nb04.plot_param_breakdown([]), lambda: nb04.plot_zero_shot({}, {}),
                lambda: nb04.plot_pretrain_demo({})):
        with pytest.raises(ValueError):
            bad()

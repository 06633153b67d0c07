"""Notebook 02's module: α/r schemes, learning-rate sweeps, figures, the scaling widget and the reference check."""

from __future__ import annotations

import math

import pytest
import torch

from lora_edu.course import common, matrix_fit, nb02, nb03

from .conftest import is_figure


@pytest.mark.parametrize("r,alpha", [(1, 0.25), (1, 64.0), (64, 0.25), (64, 64.0), (4, 4.0)])
def test_scaling_curves_at_slider_ends(r, alpha):
    res = nb02.scaling_curves(r, alpha, steps=30)
    assert set(res["curves"]) == {"alpha/r", "alpha", "alpha/sqrt(r)"}
    for c in res["curves"].values():
        assert c.shape == (30,)
    assert math.isclose(res["scaling"]["alpha/r"], alpha / r)
    assert math.isclose(res["scaling"]["alpha/sqrt(r)"], alpha / math.sqrt(r))
    assert is_figure(nb02.scaling_figure(r, alpha, steps=30))

def test_scaling_curves_coincide_at_r1_and_cache():
    res = nb02.scaling_curves(1, 2.0, steps=20)
    c = res["curves"]
    assert torch.equal(c["alpha/r"], c["alpha"]) and torch.equal(c["alpha"], c["alpha/sqrt(r)"])
    assert nb02.scaling_curves(1, 2.0, steps=20)["curves"]["alpha"] is c["alpha"]  # cached

@pytest.mark.parametrize("r,alpha", [(0, 4.0), (65, 4.0), (4, 0.0), (4, -1.0), (4, float("nan")), (4, float("inf")),
                                     (2.5, 4.0)])
def test_scaling_bad_input_gives_message(r, alpha):
    assert isinstance(nb02.scaling_curves(r, alpha, steps=10), str)
    assert isinstance(nb02.scaling_figure(r, alpha, steps=10), str)

@pytest.mark.parametrize("kw,match", [({"steps": 0}, "steps"), ({"steps": -1}, "steps"), ({"steps": 10**400}, "steps"),
                                      ({"steps": 2.5}, "steps"), ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"),
                                      ({"lr": "1e-2"}, "lr"), ({"alpha": 10**400}, "α"), ({"alpha": None}, "α"),
                                      ({"r": 10**400}, "r = "), ({"target_rank": 65}, "target_rank"),
                                      ({"batch": 0}, "batch")])
def test_scaling_settings_out_of_range_give_message(kw, match):
    args = {"r": 4, "alpha": 4.0, **kw}
    res = nb02.scaling_curves(args.pop("r"), args.pop("alpha"), **args)
    assert isinstance(res, str) and match in res
    if set(kw) <= {"steps", "lr", "alpha", "r"}:
        assert nb02.scaling_figure(kw.get("r", 4), kw.get("alpha", 4.0), kw.get("lr", 1e-2), kw.get("steps", 10)) == res


def test_scaling_smallest_run_draws():
    res = nb02.scaling_curves(64, 64.0, steps=1)  # one step at both slider ends: no empty curve
    assert all(c.shape == (1,) for c in res["curves"].values())
    assert is_figure(nb02.scaling_figure(1, 0.25, steps=1))


def test_sweep_and_rank_plots(tmp_path):
    T = matrix_fit.planted_update(8, 8, 2)
    sw = nb02.lr_sweep(T, [2, 4], [1e-3, 1e-2], steps=5)
    fig, ax = common.figure(3, 1)
    nb02.plot_lr_sweep(ax[0], sw)
    nb02.plot_best_lr(ax[1], [sw], [nb02.best_lr(sw)])
    res = nb03.rank_sweep(T, [1, 2, 3], steps=5)
    nb03.plot_error_vs_rank(ax[2], res, true_rank=2)
    assert len(ax[0].lines) == 2 and list(ax[1].lines[0].get_xdata()) == [2, 4]
    common.save(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000

def test_loss_curves_one_line_per_label():
    fig, ax = common.figure()
    nb02.plot_loss_curves(ax, {"a": [1.0, 0.5], "b": torch.tensor([2.0, 1.0, 0.1])}, colors={"a": "red"})
    assert [ln.get_label() for ln in ax.lines] == ["a", "b"]
    assert len(ax.lines[1].get_xdata()) == 3

def test_scaling_schemes():
    assert nb02.scaling_for("alpha/r", 8, 4) == 2.0
    assert nb02.scaling_for("alpha", 8, 4) == 8.0
    assert nb02.scaling_for("alpha/sqrt(r)", 8, 4) == 4.0
    with pytest.raises(ValueError, match="scheme"):
        nb02.scaling_for("alpha*r", 8, 4)
    with pytest.raises(ValueError, match="alpha"):
        nb02.scaling_for("alpha/r", 0, 4)

def test_alpha_over_r_keeps_best_lr_and_no_division_shifts_it():
    T = matrix_fit.planted_update(32, 32, 2)
    lrs = torch.logspace(-4, -0.5, 8).tolist()
    ranks = [2, 32]
    best = {s: nb02.best_lr(nb02.lr_sweep(T, ranks, lrs, steps=80, scheme=s, alpha=2.0)) for s in nb02.SCHEMES}
    assert best["alpha"][1] < best["alpha"][0]  # without α/r, larger r wants a smaller learning rate
    assert best["alpha/r"][1] >= best["alpha"][1]


def test_init_comparison_helpers():
    """compare_inits runs make_model/train_fn per (init, seed); bands, early loss and the pretraining probe."""
    import lora_edu as le
    from lora_edu.course import common

    calls = []

    def make(seed, **kw):
        calls.append((seed, kw))
        return le.load_pretrained("cpu")

    def train_fn(model, task, steps, seed):
        return [float(steps - i + seed) for i in range(steps)]

    runs = nb02.compare_inits(make, train_fn, "rot0", {"a": {}, "b": {"x": 1}}, steps=4, seeds=(0, 1), n_examples=8)
    assert calls == [(0, {}), (1, {}), (0, {"x": 1}), (1, {"x": 1})]
    assert runs["a"]["loss"][1] == [5.0, 4.0, 3.0, 2.0] and runs["a"]["accuracy"] == [1.0, 1.0]
    assert nb02.early_loss([3.0, 1.0, 1.0]) == 3.0 and nb02.early_loss([4.0, 2.0, 0.0, 0.0, 0.0, 0.0]) == 3.0
    fig, ax = common.figure()
    nb02.plot_seed_bands(ax, runs, k=2)
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    with pytest.raises(ValueError, match="seeds"):
        nb02.compare_inits(make, train_fn, "rot0", {"a": {}}, steps=2, seeds=())
    assert nb02.pretrain_accuracy(le.load_pretrained("cpu"), n_examples=16) == 1.0


def test_lr_sweep_plot_marks_what_it_caps():
    sw = {"ranks": [4], "lrs": [1e-3, 1e-2, 1e-1], "scheme": "alpha",
          "final": torch.tensor([[0.5, 5e2, float("nan")]])}
    fig, ax = common.figure()
    assert nb02.plot_lr_sweep(ax, sw) == 2
    assert list(ax.lines[0].get_ydata()) == [0.5, 1e2, 1e2] and list(ax.lines[1].get_xdata()) == [1e-2, 1e-1]
    assert any("drawn at 100" in t.get_text() for t in ax.texts)
    fig, ax = common.figure()
    assert nb02.plot_lr_sweep(ax, {**sw, "final": torch.tensor([[0.5, 0.1, 0.2]])}) == 0 and not ax.texts

"""Notebook 01's module: SVD explorers, their figures and widget callbacks at both ends of every slider."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb00, nb01, nb02

from .conftest import is_figure


@pytest.fixture(scope="module")
def svds():
    return nb01.WeightSVDs(le.load_pretrained("cpu"))


def test_grace_hopper_is_grayscale_in_unit_range():
    img = nb01.grace_hopper(4)
    assert img.ndim == 2 and img.shape == (150, 128)
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    with pytest.raises(ValueError, match="downsample"):
        nb01.grace_hopper(0)

@pytest.mark.parametrize("r", [0, 1, 10, 128])
def test_image_rank_figure_at_slider_values(hopper, r):
    fig = nb01.low_rank_figure(hopper, r, image=True)
    assert is_figure(fig)
    res = nb01.low_rank_summary(hopper, r)
    # measured error equals the Eckart–Young prediction
    assert math.isclose(res["error"], res["predicted_error"], rel_tol=1e-6, abs_tol=1e-8)
    assert res["stored"] == r * sum(hopper.shape)

def test_rank_summary_ends(hopper):
    zero = nb01.low_rank_summary(hopper, 0)
    assert torch.count_nonzero(zero["approx"]) == 0
    assert math.isclose(zero["relative_error"], 1.0, rel_tol=1e-9)
    assert "zero matrix" in zero["note"]
    full = nb01.low_rank_summary(hopper, hopper.max_rank)
    assert full["relative_error"] < 1e-10 and math.isclose(full["energy"], 1.0)
    errs = [nb01.low_rank_summary(hopper, r)["error"] for r in range(0, 20)]
    assert all(a >= b for a, b in zip(errs, errs[1:]))  # more rank, never more error

@pytest.mark.parametrize("r", [129, 10_000, -1, 2.5, "3", None, True])
def test_bad_rank_gives_message_not_exception(hopper, r):
    for result in (nb01.low_rank_summary(hopper, r), nb01.low_rank_figure(hopper, r, image=True)):
        assert isinstance(result, str) and "r" in result
    if isinstance(r, int) and not isinstance(r, bool) and r > 128:
        assert "128" in nb01.low_rank_figure(hopper, r)

def test_rank_deficient_matrix_note():
    M = nb01.MatrixSVD(torch.ones(5, 4))
    assert M.rank == 1
    res = nb01.low_rank_summary(M, 2)
    assert "rank(W) = 1" in res["note"] and res["error"] < 1e-12

@pytest.mark.parametrize("name", ["blocks.0.attn.q_proj", "blocks.1.mlp.up_proj", "lm_head"])
def test_weight_rank_figure_ends(svds, name):
    m = svds.get(name)
    for r in (0, 1, m.max_rank):
        assert is_figure(nb01.weight_rank_figure(svds, name, r))
    msg = nb01.weight_rank_figure(svds, name, m.max_rank + 1)
    assert isinstance(msg, str) and str(m.max_rank) in msg
    assert nb01.weight_rank_summary(svds, name, m.max_rank)["relative_error"] < 1e-10

def test_weight_svds_cover_every_linear_and_cache(svds):
    assert set(svds.names) == set(le.linear_names(le.load_pretrained("cpu")))
    assert svds.get("lm_head") is svds.get("lm_head")
    assert svds.get("lm_head").shape == (le.tasks.VOCAB_SIZE, 64)
    msg = nb01.weight_rank_figure(svds, "blocks.9.attn.q_proj", 3)
    assert isinstance(msg, str) and "lm_head" in msg

@pytest.mark.parametrize("d,k,r", [(1, 1, 1), (4096, 4096, 1), (4096, 4096, 256), (64, 64, 4), (1, 4096, 1),
                                   (64, 64, 32), (64, 64, 64), (64, 64, 256)])
def test_param_count_ends(d, k, r):
    res = common.param_count_summary(d, k, r)
    assert res["full"] == d * k and res["lora"] == r * (d + k)
    assert math.isclose(res["ratio"], d * k / (r * (d + k)))
    assert is_figure(nb01.param_count_figure(d, k, r))
    if r > min(d, k):
        assert "min(d, k)" in res["note"]
    elif r * (d + k) >= d * k:
        assert "no saving" in res["note"]
    else:
        assert res["note"] == ""

@pytest.mark.parametrize("d,k,r", [(64, 64, 0), (0, 64, 4), (64, 0, 4), (64, 64, -3), (64.0, 64, 4)])
def test_param_count_bad_input_gives_message(d, k, r):
    for result in (common.param_count_summary(d, k, r), nb01.param_count_figure(d, k, r)):
        assert isinstance(result, str) and len(result) > 10

def test_nan_weight_gives_message_not_linalg_error():
    model = le.load_pretrained("cpu")
    with torch.no_grad():
        model.blocks[0].attn.q_proj.weight[0, 0] = math.nan
        model.lm_head.weight[1, 1] = math.inf
    svds = nb01.WeightSVDs(model)
    for name in ("blocks.0.attn.q_proj", "lm_head"):
        for r in (0, 1, 64):
            for result in (nb01.weight_rank_figure(svds, name, r), nb01.weight_rank_summary(svds, name, r)):
                assert isinstance(result, str) and name in result and "NaN or inf" in result
    assert is_figure(nb01.weight_rank_figure(svds, "blocks.0.attn.k_proj", 1))  # the others still draw
    assert isinstance(nb01.weight_rank_figure(svds, ["lm_head"], 1), str)  # not a name: a message too
    with pytest.raises(ValueError, match="W must be finite"):
        nb01.MatrixSVD(torch.tensor([[1.0, math.nan]]))
    pytest.importorskip("ipywidgets")
    box = nb01.weight_rank_widget(model, r=8)  # the first weight is the NaN one: a message, a usable slider
    dd, slider, out = box.children
    assert isinstance(out.last_result, str) and "NaN or inf" in out.last_result and slider.value == 8
    dd.value = "blocks.0.attn.k_proj"
    assert is_figure(out.last_result) and slider.max == 64


@pytest.mark.parametrize("d,k,r", [(1, 1, 1), (1, 1, 256), (nb01.MAX_DIM, nb01.MAX_DIM, 1),
                                   (nb01.MAX_DIM, nb01.MAX_DIM, 256), (1, nb01.MAX_DIM, 256), (10**7, 10**7, 4)])
def test_param_count_figure_is_cheap_at_any_size(d, k, r):
    """The ratio curve is drawn at ≤ 100 log-spaced ranks (it used to draw one point per rank: 10⁷ points)."""
    fig = nb01.param_count_figure(d, k, r)
    assert is_figure(fig)
    xs = fig.axes[1].lines[0].get_xdata()
    assert len(xs) <= 100 and xs[0] == 1 and xs[-1] == max(min(d, k), r)
    assert all(a < b for a, b in zip(xs, xs[1:]))


@pytest.mark.parametrize("kw", [{}, {"d": 4096, "k": 4096, "r": 8}, {"d": 1, "k": 300, "r": 0},
                                {"d": 64, "k": 64, "max_dim": 65}])
def test_param_count_sliders_start_inside_their_range(kw):
    pytest.importorskip("ipywidgets")
    sd, sk, sr, out = nb01.param_count_widget(**kw).children
    for s in (sd, sk):
        assert s.min < s.max <= nb01.MAX_DIM and s.value < s.max  # can move right
    assert sd.value == kw.get("d", 64) and sk.value == kw.get("k", 64) and sr.min <= sr.value <= sr.max
    assert kw or sd.min < sd.value  # the defaults can move left too
    sd.value, sk.value = sd.max, sk.max  # the far end still draws (or gives a message for r = 0)
    assert is_figure(out.last_result) or (sr.value == 0 and isinstance(out.last_result, str))


@pytest.mark.parametrize("kw,match", [({"d": 0}, "d must"), ({"k": nb01.MAX_DIM}, "k must"), ({"r": 257}, "r must"),
                                      ({"d": 64, "max_dim": 64}, "max_dim must"), ({"max_dim": 10**7}, "max_dim"),
                                      ({"d": 2.5}, "d must")])
def test_param_count_widget_refuses_bad_ranges(kw, match):
    pytest.importorskip("ipywidgets")
    with pytest.raises((ValueError, TypeError), match=match):
        nb01.param_count_widget(**kw)


def test_builders_render_and_respond(hopper):
    pytest.importorskip("ipywidgets")
    box = nb01.image_rank_widget(r=5, msvd=hopper)
    slider, out = box.children
    first = out.last_result
    slider.value = 0
    at_zero = out.last_result
    slider.value = slider.max
    assert slider.max == 128 and is_figure(first) and is_figure(at_zero) and out.last_result is not at_zero
    wbox = nb01.weight_rank_widget(le.load_pretrained("cpu"), r=8)
    dd, s, wout = wbox.children
    dd.value = "lm_head"
    assert s.max == le.tasks.VOCAB_SIZE and s.value <= le.tasks.VOCAB_SIZE and is_figure(wout.last_result)
    pbox = nb01.param_count_widget()
    pbox.children[2].value = 0  # r = 0: a message, not an exception
    assert isinstance(pbox.children[3].last_result, str)
    sbox = nb02.scaling_widget(steps=10)
    sbox.children[0].value = 64
    assert is_figure(sbox.children[2].last_result)
    assert nb00.hello_slider().children[1].value == "x = 3, x² = 9"

def test_spectrum_marks_kept_and_dropped():
    fig, ax = common.figure()
    s = torch.tensor([4.0, 2.0, 1.0, 0.5])
    nb01.plot_spectrum(ax, s, r=2)
    kept = [ln for ln in ax.lines if ln.get_label().startswith("kept")][0]
    dropped = [ln for ln in ax.lines if ln.get_label() == "dropped"][0]
    assert np.allclose(kept.get_ydata(), [4.0, 2.0]) and np.allclose(dropped.get_ydata(), [1.0, 0.5])
    assert ax.get_yscale() == "log"

def test_energy_curve_is_cumulative():
    fig, ax = common.figure()
    nb01.plot_energy(ax, torch.tensor([3.0, 1.0]), r=1)
    y = ax.lines[0].get_ydata()
    assert np.allclose(y, [0.0, 0.9, 1.0])

def test_show_matrix_symmetric_limits():
    fig, ax = common.figure()
    im = nb01.show_matrix(ax, torch.tensor([[-2.0, 1.0], [0.5, 0.0]]))
    assert im.get_clim() == (-2.0, 2.0)
    im2 = nb01.show_matrix(ax, torch.tensor([[0.2, 1.0]]))
    assert im2.get_cmap().name == "gray"


def test_eckart_young_competitors_never_beat_the_bound():
    """Random, nudged and optimized rank-r competitors: none below √(Σ_{i>r} σ_i²); the optimizer reaches it."""
    W = torch.randn(20, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    res = nb01.eckart_young_competitors(W, 3, n_random=20, n_perturbed=20, n_optimized=5, als_steps=60)
    tol = 1e-9 * res["bound"]
    assert abs(res["svd"] - res["bound"]) <= tol
    assert [len(res[k]) for k in ("random", "perturbed", "optimized")] == [20, 20, 5]
    assert min(res["random"] + res["perturbed"] + res["optimized"]) >= res["bound"] - tol
    assert min(res["perturbed"]) > res["bound"]  # W_r is a strict local minimum here (distinct σ)
    assert min(res["optimized"]) <= res["bound"] * (1 + 1e-6)  # alternating least squares finds the optimum
    assert min(res["random"]) > 1.01 * res["bound"]  # a random row space is a poor guess
    with pytest.raises(ValueError, match="r must be"):
        nb01.eckart_young_competitors(W, 13)
    with pytest.raises(ValueError, match="n_random"):
        nb01.eckart_young_competitors(W, 2, n_random=-1)

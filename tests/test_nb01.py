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
    assert svds.get("lm_head").shape == (16, 64)
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
    assert s.max == 16 and s.value <= 16 and is_figure(wout.last_result)
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

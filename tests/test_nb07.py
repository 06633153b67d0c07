"""Notebook 07's module (lora_edu/course/nb07.py): adapters as data, φ heatmaps, random control, Table 7."""

from __future__ import annotations

import math

import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb07


@pytest.fixture(scope="module")
def adapters():
    a = nb07.train_adapter("increment", r=4, seed=0, alpha=8, steps=30)
    b = nb07.train_adapter("increment", r=8, seed=1, alpha=8, steps=30)
    return a, b


def test_layer_name():
    assert nb07.layer_name(1, "v") == "blocks.1.attn.v_proj" == nb07.layer_name(1, "v_proj")
    with pytest.raises(ValueError, match="block"):
        nb07.layer_name(2, "q")
    with pytest.raises(ValueError, match="matrix"):
        nb07.layer_name(0, "up")
    with pytest.raises(TypeError, match="block"):
        nb07.layer_name("1", "q")


def test_train_adapter_keeps_A_B_delta_and_W0(adapters):
    a, _ = adapters
    pre = le.load_pretrained("cpu")
    assert a.layers == [f"blocks.{b}.attn.{m}_proj" for b in (0, 1) for m in ("q", "v")]
    assert a.alpha == 8 and a.r == 4 and 0 <= a.accuracy <= 1 and len(a.history["loss"]) == 30
    for name in a.layers:
        assert a.A[name].shape == (4, 64) and a.B[name].shape == (64, 4)
        torch.testing.assert_close(a.delta[name], a.B[name] @ a.A[name] * (8 / 4))
        assert torch.equal(a.W0[name], pre.get_submodule(name).weight.detach())
        assert a.delta[name].abs().max() > 0  # trained: B moved away from zero


def test_train_adapter_is_seeded():
    a = nb07.train_adapter("increment", r=2, seed=3, steps=5)
    b = nb07.train_adapter("increment", r=2, seed=3, steps=5)
    c = nb07.train_adapter("increment", r=2, seed=4, steps=5)
    assert a.alpha == 2  # alpha=None means α = r
    name = a.layers[0]
    assert torch.equal(a.A[name], b.A[name]) and not torch.equal(a.A[name], c.A[name])


@pytest.mark.parametrize("kw, exc, word", [({"r": 0}, ValueError, "r"), ({"r": 65}, ValueError, "r"),
                                           ({"steps": 0}, ValueError, "steps"), ({"seed": 1.5}, TypeError, "seed"),
                                           ({"task": "nope"}, ValueError, "task"),
                                           ({"targets": ("nope",)}, ValueError, "targets")])
def test_train_adapter_rejects_bad_input(kw, exc, word):
    with pytest.raises(exc, match=word):
        nb07.train_adapter(**{"steps": 1, **kw})


def test_similarity_grid(adapters):
    a, b = adapters
    name = nb07.layer_name(1, "q")
    g = nb07.similarity_grid(a, b, name)
    assert g.shape == (4, 8) and float(g.min()) >= -1e-12 and float(g.max()) <= 1 + 1e-12
    assert math.isclose(float(g[1, 5]), le.subspace_similarity(a.A[name], b.A[name], 2, 6), rel_tol=1e-9)
    self_g = nb07.similarity_grid(a, a, name)
    torch.testing.assert_close(self_g.diag(), torch.ones(4, dtype=self_g.dtype))
    with pytest.raises(ValueError, match="layer"):
        nb07.similarity_grid(a, b, "blocks.0.mlp.up_proj")


def test_random_control_matches_theory():
    assert nb07.random_phi_expected(4, 16, 64) == 0.25 and nb07.random_phi_expected(64, 64, 64) == 1.0
    with pytest.raises(ValueError, match="k"):
        nb07.random_phi_expected(8, 70, 64)
    grids = torch.stack([nb07.random_control_grid((64, 64), (64, 64), 64, 64, seed=s) for s in range(20)])
    mean = grids.mean(0)
    for i, j in [(1, 1), (8, 8), (4, 32), (32, 32)]:
        assert abs(float(mean[i - 1, j - 1]) - nb07.random_phi_expected(i, j, 64)) < 0.05
    assert torch.allclose(mean[:, -1], torch.ones(64, dtype=mean.dtype))  # j = k: the whole space
    g1 = nb07.random_control_grid((8, 64), (64, 64), seed=1)
    assert g1.shape == (8, 64) and not torch.equal(g1, nb07.random_control_grid((8, 64), (64, 64), seed=2))


def test_random_orthonormal():
    Q = nb07.random_orthonormal(64, 5, seed=3)
    torch.testing.assert_close(Q.T @ Q, torch.eye(5, dtype=Q.dtype))
    with pytest.raises(ValueError, match="r"):
        nb07.random_orthonormal(4, 5)


def test_projection_norms_small_and_full_rank():
    g = torch.Generator().manual_seed(11)
    W = torch.randn(16, 12, generator=g, dtype=torch.float64)
    dW = torch.randn(16, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 12, generator=g, dtype=torch.float64)
    row = common.projection_norms(W, dW, 3)
    assert math.isclose(row["amplification"], le.amplification_factor(W, dW, 3), rel_tol=1e-9)
    s = torch.linalg.svdvals(W)
    assert math.isclose(row["W_dirs"], float(s[:3].norm()), rel_tol=1e-9)  # W's own top-r: √(σ1²+σ2²+σ3²)
    assert row["delta_dirs"] < row["W_dirs"] and row["random_dirs"] < row["W_dirs"]
    assert math.isclose(row["W_norm"], float(torch.linalg.matrix_norm(W)), rel_tol=1e-12)
    Wsq, dWsq = W[:12], dW[:12]
    full = common.projection_norms(Wsq, dWsq, 12)  # square W, r = d = k: U, V orthogonal, so all of W is kept
    for key in ("delta_dirs", "W_dirs", "random_dirs"):
        assert math.isclose(full[key], full["W_norm"], rel_tol=1e-9)
    assert common.projection_norms(W, dW, 12)["random_dirs"] < row["W_norm"]  # 16×12: 12 of 16 output directions
    # ΔW inside W's own top directions has amplification ‖ΔW‖/‖W_r‖, and its projection equals W's own
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    same = common.projection_norms(W, U[:, :2] @ torch.diag(S[:2]) @ Vh[:2], 2)
    assert math.isclose(same["delta_dirs"], same["W_dirs"], rel_tol=1e-9)
    with pytest.raises(ValueError, match="shape"):
        common.projection_norms(W, dW.T, 3)
    with pytest.raises(ValueError, match="r"):
        common.projection_norms(W, dW, 13)


def test_amplification_table(adapters):
    rows = nb07.amplification_table(list(adapters), nb07.layer_name(1, "q"))
    assert [r["r"] for r in rows] == [4, 8] and all(r["layer"] == "blocks.1.attn.q_proj" for r in rows)
    a = adapters[0]
    name = rows[0]["layer"]
    assert math.isclose(rows[0]["amplification"], le.amplification_factor(a.W0[name], a.delta[name], 4),
                        rel_tol=1e-9)
    assert set(nb07.PAPER_TABLE7) == {4, 64} and nb07.PAPER_TABLE7[4]["delta_dirs"] == 0.32


def test_effective_rank():
    M = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0]))
    assert le.effective_rank(M, 1.0) == 3
    assert le.effective_rank(M, 0.9) == 2  # (9 + 4) / 14 = 0.93
    assert le.effective_rank(M, 0.5) == 1
    assert le.effective_rank(torch.zeros(3, 3)) == 0
    with pytest.raises(ValueError, match="fraction"):
        le.effective_rank(M, 0)


def test_figures(adapters):
    a, b = adapters
    name = nb07.layer_name(1, "v")
    g = nb07.similarity_grid(a, b, name)
    fig = nb07.similarity_heatmaps({"ΔW_v": g, "random": nb07.random_control_grid((4, 64), (8, 64))})
    assert len(fig.axes) == 3  # two panels and a colorbar
    assert common.to_png(fig).startswith(b"\x89PNG")
    fig = nb07.similarity_diagonals({"seeds": g.diag()}, k=64)
    assert len(fig.axes[0].lines) == 2
    fig = nb07.spectra_figure({"r=4": le.singular_values(a.delta[name])})
    xs = fig.axes[0].lines[0].get_ydata()
    assert int((~torch.tensor(xs).isnan()).sum()) <= 4  # rank ≤ r: the round-off values are not drawn
    with pytest.raises(ValueError, match="grids"):
        nb07.similarity_heatmaps({})


def test_heatmaps_minus_chance_show_overlap_beyond_random():
    """With k, each cell is φ − max(i, j)/k, so a random control sits at ≈ 0 (chance) instead of rising with j."""
    g = torch.full((2, 3), 0.5)
    fig = nb07.similarity_heatmaps({"g": g}, k=4)
    shown = fig.axes[0].images[0].get_array()
    expected = [[0.5 - 1 / 4, 0.5 - 2 / 4, 0.5 - 3 / 4], [0.5 - 2 / 4, 0.5 - 2 / 4, 0.5 - 3 / 4]]
    assert torch.allclose(torch.tensor(shown.tolist()), torch.tensor(expected))
    assert fig.axes[1].get_ylabel() == "φ(i, j) − max(i, j)/4"
    rand = nb07.random_control_grid((64, 64), (64, 64), seed=0)
    centred = nb07.similarity_heatmaps({"random": rand}, k=64).axes[0].images[0].get_array()
    assert abs(float(centred.mean())) < 0.05  # a random control sits at chance: ≈ 0 everywhere
    with pytest.raises(ValueError, match="ℝ\\^4"):
        nb07.similarity_heatmaps({"too big": torch.zeros(2, 5)}, k=4)
    with pytest.raises(TypeError, match="k"):
        nb07.similarity_heatmaps({"g": g}, k=4.0)


def test_cpu_threads_sets_and_restores():
    before = torch.get_num_threads()
    with common.cpu_threads(2, "cpu"):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with common.cpu_threads(None, "cpu"):
        assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), common.cpu_threads(3, "cpu"):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), common.cpu_threads(0, "cpu"):
        pass

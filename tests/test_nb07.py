"""Notebook 07's module (lora_edu/course/nb07.py): adapters as data, φ over seed pairs, Table 7 rows, figures."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb07

LAYERS = [f"blocks.{b}.attn.{m}_proj" for b in range(3) for m in ("q", "v")]


@pytest.fixture(scope="module")
def adapters():
    a = nb07.train_adapter("plus3", r=4, seed=0, steps=20, eval_examples=32)
    b = nb07.train_adapter("plus3", r=8, seed=1, steps=20, eval_examples=32)
    return a, b


@pytest.fixture(scope="module")
def runs():
    return nb07.train_runs("plus3", ranks=(2, 4), seeds=(0, 1), steps=8, eval_examples=16, verbose=False)


def test_layer_name():
    assert nb07.layer_name(1, "v") == "blocks.1.attn.v_proj" == nb07.layer_name(1, "v_proj")
    assert nb07.layer_name(2, "q") == "blocks.2.attn.q_proj"  # the toy has 3 blocks
    assert nb07.short("blocks.2.attn.v_proj") == "b2.v"
    with pytest.raises(ValueError, match="block"):
        nb07.layer_name(3, "q")
    with pytest.raises(ValueError, match="matrix"):
        nb07.layer_name(0, "up")
    with pytest.raises(TypeError, match="block"):
        nb07.layer_name("1", "q")


def test_train_adapter_keeps_A_B_delta_and_W0(adapters):
    a, _ = adapters
    pre = le.load_pretrained("cpu")
    assert a.layers == LAYERS and a.task == "plus3"
    assert a.alpha == 8 and a.r == 4 and a.weight_decay == 1.0 and len(a.history["loss"]) == 20
    assert 0 <= a.accuracy <= 1 and 0 <= a.exact <= 1
    for name in a.layers:
        assert a.A[name].shape == (4, 64) and a.B[name].shape == (64, 4)
        torch.testing.assert_close(a.delta[name], a.B[name] @ a.A[name] * (8 / 4))
        assert torch.equal(a.W0[name], pre.get_submodule(name).weight.detach())
        assert a.delta[name].abs().max() > 0  # trained: B moved away from zero


def test_train_adapter_is_seeded_and_decays():
    a = nb07.train_adapter("plus3", r=2, seed=3, steps=5, alpha=None, eval_examples=8)
    b = nb07.train_adapter("plus3", r=2, seed=3, steps=5, alpha=None, eval_examples=8)
    c = nb07.train_adapter("plus3", r=2, seed=4, steps=5, alpha=None, eval_examples=8)
    nd = nb07.train_adapter("plus3", r=2, seed=3, steps=5, alpha=None, eval_examples=8, weight_decay=0.0)
    assert a.alpha == 2 and nd.weight_decay == 0.0  # alpha=None means α = r
    name = a.layers[0]
    assert torch.equal(a.A[name], b.A[name]) and not torch.equal(a.A[name], c.A[name])
    # decoupled weight decay 1.0 at lr 1e-2 shrinks A by ≈ 1 % a step; without it A keeps its size
    assert float(a.A[name].norm()) < 0.97 * float(nd.A[name].norm())


@pytest.mark.parametrize("kw, exc, word", [({"r": 0}, ValueError, "r"), ({"r": 65}, ValueError, "r"),
                                           ({"steps": 0}, ValueError, "steps"), ({"seed": 1.5}, TypeError, "seed"),
                                           ({"task": "nope"}, ValueError, "task"),
                                           ({"targets": ("nope",)}, ValueError, "targets"),
                                           ({"eval_examples": 0}, ValueError, "eval_examples")])
def test_train_adapter_rejects_bad_input(kw, exc, word):
    with pytest.raises(exc, match=word):
        nb07.train_adapter(**{"steps": 1, **kw})


def test_train_runs(runs, capsys):
    assert sorted(runs) == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert runs[4, 1].r == 4 and runs[4, 1].seed == 1 and runs[4, 1].steps == 8
    with pytest.raises(ValueError, match="empty"):
        nb07.train_runs("plus3", ranks=(), seeds=(0,))
    with pytest.raises(TypeError, match="seeds"):
        nb07.train_runs("plus3", ranks=(2,), seeds=(0.5,))


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


def test_seed_pairs_leave_out_same_seed():
    assert nb07.seed_pairs((0, 1, 2)) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    with pytest.raises(ValueError, match="two different seeds"):
        nb07.seed_pairs((3,))


def test_top_phi_and_mean_grid(runs):
    phi = nb07.top_phi(runs, (0, 1), 2, 4)
    assert list(phi) == LAYERS and all(len(v) == 2 for v in phi.values())
    L = LAYERS[3]
    want = [le.subspace_similarity(runs[2, s].A[L], runs[4, t].A[L], 1, 1) for s, t in ((0, 1), (1, 0))]
    assert phi[L] == pytest.approx(want, rel=1e-9)
    g = nb07.mean_grid(runs, L, (0, 1), 2, 4)
    assert g.shape == (2, 4) and float(g[0, 0]) == pytest.approx(sum(want) / 2, rel=1e-9)
    assert nb07.top_phi(runs, (0, 1), 2, 4, i=2, j=3)[L] == pytest.approx(
        [float(nb07.similarity_grid(runs[2, s], runs[4, t], L)[1, 2]) for s, t in ((0, 1), (1, 0))], rel=1e-9)
    with pytest.raises(ValueError, match="no adapter"):
        nb07.top_phi(runs, (0, 1), 2, 8)
    with pytest.raises(ValueError, match="two different seeds"):
        nb07.mean_grid(runs, L, (0,), 2, 4)


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


def test_table7_row():
    g = torch.Generator().manual_seed(11)
    W = torch.randn(64, 48, generator=g, dtype=torch.float64)
    u, v = torch.randn(64, 1, generator=g, dtype=torch.float64), torch.randn(1, 48, generator=g, dtype=torch.float64)
    dW = 0.1 * u @ v  # rank 1
    row = nb07.table7_row(W, dW, 4, draws=64)
    s = torch.linalg.svdvals(W)
    assert row["W_dirs"] == pytest.approx(float(s[:4].norm()), rel=1e-9)  # W's own top-4: √(σ1² + … + σ4²)
    assert row["amplification"] == pytest.approx(le.amplification_factor(W, dW, 4), rel=1e-9)
    assert row["amplification"] == pytest.approx(row["delta_norm"] / row["delta_dirs"], rel=1e-9)
    assert row["rel"] == pytest.approx(row["delta_norm"] / float(torch.linalg.matrix_norm(W)), rel=1e-12)
    assert row["vs_random"] == pytest.approx(row["delta_dirs"] / row["random_dirs"], rel=1e-12)
    assert row["top1"] == pytest.approx(1.0, abs=1e-9)
    # random directions keep about r/√(dk) of ‖W‖ (E‖UᵀWVᵀ‖² = ‖W‖²·r²/(dk))
    assert row["random_dirs"] == pytest.approx(row["W_norm"] * 4 / math.sqrt(64 * 48), rel=0.15)
    # ΔW inside W's own top direction: its projection is σ1 (plus the leftovers of 3 arbitrary directions)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    inside = nb07.table7_row(W, U[:, :4] @ torch.diag(S[:4]) @ Vh[:4], 4)
    assert inside["delta_dirs"] == pytest.approx(inside["W_dirs"], rel=1e-9) and inside["vs_random"] > 5
    with pytest.raises(ValueError, match="shape"):
        nb07.table7_row(W, dW.T, 4)
    with pytest.raises(ValueError, match="r"):
        nb07.table7_row(W, dW, 49)
    with pytest.raises(ValueError, match="draws"):
        nb07.table7_row(W, dW, 4, draws=0)


def test_amplification_table_and_paper_row(adapters):
    rows = nb07.amplification_table(list(adapters))
    assert len(rows) == 2 * len(LAYERS) and [r["r"] for r in rows[::len(LAYERS)]] == [4, 8]
    a = adapters[0]
    one = nb07.amplification_table([a], layers=LAYERS[2], r=2)
    assert len(one) == 1 and one[0]["layer"] == LAYERS[2] and one[0]["seed"] == 0 and one[0]["r"] == 2
    assert one[0]["amplification"] == pytest.approx(le.amplification_factor(a.W0[LAYERS[2]], a.delta[LAYERS[2]], 2),
                                                    rel=1e-9)
    with pytest.raises(ValueError, match="empty"):
        nb07.amplification_table([])
    p = nb07.paper_table7_row(4)
    assert p["amplification"] == pytest.approx(6.91 / 0.32) and p["vs_random"] == pytest.approx(16.0)
    assert p["rel"] == pytest.approx(6.91 / 61.95)
    with pytest.raises(ValueError, match="Table 7"):
        nb07.paper_table7_row(8)


def test_input_alignment_finds_the_word_a_delta_reads(adapters):
    a = adapters[0]
    model = le.load_pretrained("cpu")
    L = nb07.layer_name(0, "v")
    ln = model.blocks[0].ln1
    with torch.no_grad():
        x = ln(model.tok_emb.weight[le.tasks.OPS["plus"]] + model.pos_emb.weight[1]).double()
    reads_plus = dataclasses.replace(a, delta={**a.delta, L: torch.randn(64, 1, dtype=torch.float64) @ x[None]})
    out = nb07.input_alignment(reads_plus, model, L)
    assert out["plus"] == pytest.approx(1.0, abs=1e-6) and out["task_word"] == "plus"
    assert all(out[w] < 0.999 for w in ("rot", "add", "sub", "rsub"))
    with pytest.raises(ValueError, match="block 0"):
        nb07.input_alignment(a, model, nb07.layer_name(1, "v"))


def test_top1_energy():
    assert nb07.top1_energy(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(0.9)
    assert math.isnan(nb07.top1_energy(torch.zeros(3, 3)))


def test_effective_rank():
    M = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0]))
    assert le.effective_rank(M, 1.0) == 3
    assert le.effective_rank(M, 0.9) == 2  # (9 + 4) / 14 = 0.93
    assert le.effective_rank(M, 0.5) == 1
    assert le.effective_rank(torch.zeros(3, 3)) == 0
    with pytest.raises(ValueError, match="fraction"):
        le.effective_rank(M, 0)


def test_figures(adapters, runs):
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
    phi = nb07.top_phi(runs, (0, 1), 2, 4)
    fig = nb07.phi_strip({"decay": phi, "none": phi}, chance=1 / 64)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * len(LAYERS)  # one bar per layer and group
    assert [t.get_text() for t in ax.get_xticklabels()] == [nb07.short(L) for L in LAYERS]
    assert {h.get_ydata()[0] for h in ax.lines if len(h.get_ydata()) == 2} >= {1 / 64, 0.5}  # the two lines
    assert common.to_png(fig).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="grids"):
        nb07.similarity_heatmaps({})
    with pytest.raises(ValueError, match="groups"):
        nb07.phi_strip({})


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


def test_projection_norms_small_and_full_rank():
    g = torch.Generator().manual_seed(11)
    W = torch.randn(16, 12, generator=g, dtype=torch.float64)
    dW = torch.randn(16, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 12, generator=g, dtype=torch.float64)
    row = common.projection_norms(W, dW, 3)
    assert math.isclose(row["amplification"], le.amplification_factor(W, dW, 3), rel_tol=1e-9)
    s = torch.linalg.svdvals(W)
    assert math.isclose(row["W_dirs"], float(s[:3].norm()), rel_tol=1e-9)
    Wsq, dWsq = W[:12], dW[:12]
    full = common.projection_norms(Wsq, dWsq, 12)  # square W, r = d = k: U, V orthogonal, so all of W is kept
    for key in ("delta_dirs", "W_dirs", "random_dirs"):
        assert math.isclose(full[key], full["W_norm"], rel_tol=1e-9)

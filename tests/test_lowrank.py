"""lora_edu.lowrank: Eckart–Young, energies, parameter counts, subspace similarity (Eq. 4), amplification (§7.3)."""

from __future__ import annotations

import math

import pytest
import torch

import lora_edu as le


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def orthonormal(n, seed=0):
    q, _ = torch.linalg.qr(randn(n, n, seed=seed))
    return q


@pytest.fixture
def W(device):
    """A 40×30 matrix with a decaying spectrum (so low rank approximations mean something)."""
    U, V = orthonormal(40, 1)[:, :30], orthonormal(30, 2)
    s = torch.tensor([2.0 ** (-i / 3) for i in range(30)], dtype=torch.float64) * 10
    return ((U * s) @ V.T).to(device)


# ---- Eckart–Young --------------------------------------------------------------------------------------

@pytest.mark.parametrize("r", [0, 1, 2, 5, 15, 29, 30])
def test_low_rank_error_is_the_dropped_singular_values(W, r):
    Wr = le.low_rank_approx(W, r)
    assert Wr.shape == W.shape and Wr.dtype == W.dtype and Wr.device == W.device
    s = torch.linalg.svdvals(W.cpu())
    predicted = math.sqrt(float((s[r:] ** 2).sum()))
    err = torch.linalg.matrix_norm(W - Wr).item()
    assert err == pytest.approx(predicted, rel=1e-9, abs=1e-12)
    assert le.eckart_young_error(W, r) == pytest.approx(predicted, rel=1e-12, abs=1e-12)
    assert le.numerical_rank(Wr) == r
    assert le.relative_error(W, r) == pytest.approx(predicted / torch.linalg.matrix_norm(W).item(), abs=1e-12)
    assert le.energy(W, r) + le.relative_error(W, r) ** 2 == pytest.approx(1.0, abs=1e-12)


def test_low_rank_approx_beats_other_rank_r_matrices(W):
    r = 4
    best = le.eckart_young_error(W, r)
    Wc = W.cpu()
    for seed in range(20):
        B, A = randn(40, r, seed=seed), randn(r, 30, seed=100 + seed)
        # random rank-r candidates, and the best rank-r matrix inside a random r-dim column space
        assert torch.linalg.matrix_norm(Wc - B @ A).item() > best
        Q, _ = torch.linalg.qr(B)
        assert torch.linalg.matrix_norm(Wc - Q @ (Q.T @ Wc)).item() > best
    # perturbing the optimum in any rank-preserving way only makes it worse
    U, S, Vh = torch.linalg.svd(Wc, full_matrices=False)
    perturbed = (U[:, :r] * (S[:r] * 1.01)) @ Vh[:r]
    assert torch.linalg.matrix_norm(Wc - perturbed).item() > best


def test_low_rank_approx_float32_and_full_rank(W):
    W32 = W.float()
    assert le.low_rank_approx(W32, 3).dtype == torch.float32
    torch.testing.assert_close(le.low_rank_approx(W, 30), W, rtol=1e-10, atol=1e-10)
    assert le.eckart_young_error(W, 30) == pytest.approx(0.0, abs=1e-12)


def test_singular_values_and_energy(W):
    s = le.singular_values(W)
    assert s.shape == (30,)
    assert torch.all(s[:-1] >= s[1:])
    torch.testing.assert_close(s.cpu(), torch.linalg.svdvals(W.cpu()), rtol=1e-10, atol=1e-12)
    energies = [le.energy(W, r) for r in range(31)]
    assert energies[0] == 0.0 and energies[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(energies, energies[1:]))
    assert le.energy(torch.zeros(3, 4), 1) == 1.0
    assert le.relative_error(torch.zeros(3, 4), 1) == 0.0


def test_numerical_rank():
    B, A = randn(50, 3, seed=1), randn(3, 40, seed=2)
    assert le.numerical_rank(B @ A) == 3
    assert le.numerical_rank((B @ A).float()) == 3
    assert le.numerical_rank(torch.zeros(5, 5)) == 0
    assert le.numerical_rank(torch.eye(6)) == 6
    assert le.numerical_rank(torch.eye(6), tol=2.0) == 0
    assert le.numerical_rank([[1.0, 2.0], [2.0, 4.0]]) == 1  # nested lists are accepted


def test_lora_param_count_and_compression():
    assert le.lora_param_count(64, 64, 4) == 4 * 128
    assert le.lora_param_count(12288, 12288, 4) == 4 * 2 * 12288
    assert le.compression_ratio(64, 64, 4) == pytest.approx(64 * 64 / 512)
    assert le.compression_ratio(1000, 10, 10) == pytest.approx(10000 / 10100)
    for bad, exc in (((-1, 4, 2), ValueError), ((4, 4, 2.0), TypeError), ((4, True, 2), TypeError)):
        with pytest.raises(exc):
            le.lora_param_count(*bad)
    assert le.compression_ratio(10**300, 10**300, 1) == pytest.approx(5e299)  # big ints, float result
    with pytest.raises(ValueError, match="k must be"):
        le.compression_ratio(4, 10**400, 1)  # beyond float range: a clear error, not OverflowError
    with pytest.raises(ValueError, match="r must be"):
        le.compression_ratio(4, 4, 0)


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda W: le.low_rank_approx(W, -1), ValueError, "r must be"),
    (lambda W: le.low_rank_approx(W, 31), ValueError, "r must be"),
    (lambda W: le.low_rank_approx(W, 2.0), TypeError, "r must be"),
    (lambda W: le.low_rank_approx(W, True), TypeError, "r must be"),
    (lambda W: le.low_rank_approx(W[None], 2), ValueError, "W must be a 2-D"),
    (lambda W: le.low_rank_approx(W[0], 1), ValueError, "W must be a 2-D"),
    (lambda W: le.low_rank_approx("W", 1), TypeError, "W must be a 2-D"),
    (lambda W: le.low_rank_approx(object(), 1), TypeError, "W must be"),
    (lambda W: le.energy(W, 40), ValueError, "r must be"),
    (lambda W: le.eckart_young_error(W, -2), ValueError, "r must be"),
    (lambda W: le.amplification_factor(W, W[:5], 1), ValueError, "same shape"),
    (lambda W: le.amplification_factor(W, W, 0), ValueError, "r must be"),
])
def test_bad_arguments(W, call, exc, match):
    before = W.clone()
    with pytest.raises(exc, match=match):
        call(W)
    assert torch.equal(W, before)


# ---- subspace similarity, Eq. (4) ----------------------------------------------------------------------

def test_phi_is_one_for_identical_subspaces():
    A = randn(8, 64, seed=3)
    for i in range(1, 9):
        assert le.subspace_similarity(A, A, i, i) == pytest.approx(1.0, abs=1e-10)
        assert le.subspace_similarity(A, A, i, 8) == pytest.approx(1.0, abs=1e-10)  # nested subspaces
    mixed = orthonormal(8, 4) @ torch.diag(torch.arange(1.0, 9.0, dtype=torch.float64)) @ A  # same row space
    assert le.subspace_similarity(A, mixed, 8, 8) == pytest.approx(1.0, abs=1e-10)


def test_phi_is_small_for_random_and_zero_for_orthogonal_subspaces():
    k = 512
    A1, A2 = randn(8, k, seed=5), randn(8, k, seed=6)
    phi = le.subspace_similarity(A1, A2, 8, 8)
    assert 0.0 <= phi < 0.1  # expected ≈ 8 / 512 for random subspaces
    Q = orthonormal(64, 7)
    assert le.subspace_similarity(Q[:4], Q[4:12], 4, 8) == pytest.approx(0.0, abs=1e-12)
    assert le.subspace_similarity(Q[:4], Q[2:12], 4, 10) == pytest.approx(0.5, abs=1e-10)  # 2 of 4 shared


def test_phi_grid_agrees_with_pointwise_and_stays_in_unit_interval(device):
    A1 = randn(6, 40, seed=8).float().to(device)
    A2 = torch.cat([A1[:3], randn(5, 40, seed=9).float().to(device)])  # shares part of its row space
    grid = le.subspace_similarity_grid(A1, A2)
    assert grid.shape == (6, 8)
    assert grid.min() >= -1e-6 and grid.max() <= 1 + 1e-6
    for i in range(1, 7):
        for j in range(1, 9):
            assert grid[i - 1, j - 1].item() == pytest.approx(le.subspace_similarity(A1, A2, i, j), abs=1e-6)
            assert le.subspace_similarity(A2, A1, j, i) == pytest.approx(grid[i - 1, j - 1].item(), abs=1e-6)
    assert le.subspace_similarity_grid(A1, A2, 2, 3).shape == (2, 3)
    torch.testing.assert_close(le.subspace_similarity_grid(A1, A2, 2, 3), grid[:2, :3])


def test_phi_bad_arguments():
    A = randn(4, 10)
    with pytest.raises(ValueError, match="same input dimension"):
        le.subspace_similarity(A, randn(4, 11), 1, 1)
    with pytest.raises(ValueError, match="i must be"):
        le.subspace_similarity(A, A, 0, 1)
    with pytest.raises(ValueError, match="j must be"):
        le.subspace_similarity(A, A, 1, 5)
    with pytest.raises(ValueError, match="max_i must be"):
        le.subspace_similarity_grid(A, A, max_i=9)


# ---- amplification factor, §7.3 ------------------------------------------------------------------------

def test_amplification_factor_on_a_constructed_case():
    # W acts strongly on e1, weakly on e4; ΔW = 3·e4·e4ᵀ boosts the direction W hardly uses
    W = torch.diag(torch.tensor([10.0, 5.0, 1.0, 0.1, 0.0], dtype=torch.float64))
    E = torch.eye(5, dtype=torch.float64)
    weak = 3.0 * torch.outer(E[3], E[3])
    strong = 3.0 * torch.outer(E[0], E[0])
    assert le.amplification_factor(W, weak, 1) == pytest.approx(3.0 / 0.1, rel=1e-10)
    assert le.amplification_factor(W, strong, 1) == pytest.approx(3.0 / 10.0, rel=1e-10)
    # rank 2: U, V span e3, e4, so ‖UᵀWVᵀ‖_F = sqrt(1² + 0.1²) and ‖ΔW‖_F = sqrt(3² + 2²)
    two = 3.0 * torch.outer(E[2], E[2]) + 2.0 * torch.outer(E[3], E[3])
    assert le.amplification_factor(W, two, 2) == pytest.approx(math.sqrt(13) / math.sqrt(1.01), rel=1e-10)
    assert le.lowrank.projection_norm(W, E[:, 2:4], E[2:4]) == pytest.approx(math.sqrt(1.01), rel=1e-12)
    # rotating both by the same orthogonal maps changes nothing
    P, Q = orthonormal(5, 10), orthonormal(5, 11)
    assert le.amplification_factor(P @ W @ Q.T, P @ two @ Q.T, 2) == pytest.approx(math.sqrt(13 / 1.01), rel=1e-8)
    # a ΔW in the null space of W: infinite amplification
    assert le.amplification_factor(W, torch.outer(E[4], E[4]), 1) == math.inf

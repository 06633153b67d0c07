"""The matrix experiments behind notebooks 02–03 compute what the notebooks claim."""

from __future__ import annotations

import math

import pytest
import torch

from lora_edu.course import matrix_fit, nb02, nb03


def test_planted_update_has_the_asked_rank_and_spectrum():
    T = matrix_fit.planted_update(32, 24, 5, top=2.0, bottom=1.0)
    s = torch.linalg.svdvals(T.double())
    assert T.shape == (32, 24)
    assert torch.allclose(s[:5], torch.linspace(2.0, 1.0, 5, dtype=torch.float64), atol=1e-5)
    assert float(s[5:].max()) < 1e-5
    assert torch.equal(T, matrix_fit.planted_update(32, 24, 5, top=2.0, bottom=1.0))
    with pytest.raises(ValueError, match="rank"):
        matrix_fit.planted_update(4, 4, 5)


def test_scaling_schemes():
    assert nb02.scaling_for("alpha/r", 8, 4) == 2.0
    assert nb02.scaling_for("alpha", 8, 4) == 8.0
    assert nb02.scaling_for("alpha/sqrt(r)", 8, 4) == 4.0
    with pytest.raises(ValueError, match="scheme"):
        nb02.scaling_for("alpha*r", 8, 4)
    with pytest.raises(ValueError, match="alpha"):
        nb02.scaling_for("alpha/r", 0, 4)


def test_fit_lora_starts_at_zero_update_and_learns():
    T = matrix_fit.planted_update(16, 16, 2)
    res = matrix_fit.fit_lora(T, 2, [1e-2, 3e-2], steps=200, scaling=1.0)
    assert res["loss"].shape == (2, 200)
    assert torch.allclose(res["loss"][:, 0], torch.ones(2), atol=1e-6)  # B = 0: ΔW = 0, error 1 at step 1
    assert float(res["loss"][:, -1].max()) < 1e-2


def test_fit_lora_matches_torch_adam_for_one_run():
    T = matrix_fit.planted_update(8, 6, 2)
    res = matrix_fit.fit_lora(T, 3, [5e-3], steps=10, scaling=0.5)
    g = torch.Generator().manual_seed(0)
    A = (torch.randn(3, 6, generator=g) / math.sqrt(6)).requires_grad_()
    B = torch.zeros(8, 3, requires_grad=True)
    opt = torch.optim.Adam([A, B], lr=5e-3)
    for _ in range(10):
        loss = (0.5 * B @ A - T).pow(2).sum() / T.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(res["delta"][0], (0.5 * B @ A).detach(), atol=1e-6)


def test_rank_sweep_reaches_eckart_young_below_and_zero_above():
    T = matrix_fit.planted_update(16, 16, 4)
    res = nb03.rank_sweep(T, [1, 2, 4, 8], steps=400)
    for r, got, floor in zip(res["ranks"], res["lora"], res["eckart_young"]):
        assert got >= floor - 1e-6  # never beats the theorem
        assert got < floor + 1e-3, (r, got, floor)
    assert res["lora"][2] < 1e-4 and res["full"] < 1e-6


def test_alpha_over_r_keeps_best_lr_and_no_division_shifts_it():
    T = matrix_fit.planted_update(32, 32, 2)
    lrs = torch.logspace(-4, -0.5, 8).tolist()
    ranks = [2, 32]
    best = {s: nb02.best_lr(nb02.lr_sweep(T, ranks, lrs, steps=80, scheme=s, alpha=2.0)) for s in nb02.SCHEMES}
    assert best["alpha"][1] < best["alpha"][0]  # without α/r, larger r wants a smaller learning rate
    assert best["alpha/r"][1] >= best["alpha"][1]


def test_bad_arguments_named():
    T = matrix_fit.planted_update(8, 8, 2)
    with pytest.raises(ValueError, match="r must"):
        matrix_fit.fit_lora(T, 9, [1e-2], 3, 1.0)
    with pytest.raises(ValueError, match="lrs"):
        matrix_fit.fit_lora(T, 2, [], 3, 1.0)
    with pytest.raises(ValueError, match="target"):
        matrix_fit.fit_full(torch.ones(3), [1e-2], 3)


def test_per_run_scalings_match_separate_runs():
    T = matrix_fit.planted_update(8, 8, 2)
    both = matrix_fit.fit_lora(T, 2, [1e-2, 1e-2], 15, [0.5, 2.0], batch=4)
    for i, s in enumerate((0.5, 2.0)):
        one = matrix_fit.fit_lora(T, 2, [1e-2], 15, s, batch=4)
        assert torch.allclose(both["loss"][i], one["loss"][0], atol=1e-6)
    with pytest.raises(ValueError, match="scaling"):
        matrix_fit.fit_lora(T, 2, [1e-2, 1e-2], 3, [1.0, 2.0, 3.0])

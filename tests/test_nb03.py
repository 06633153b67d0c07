"""Notebook 03's module: the rank sweep on planted updates and its figure."""

from __future__ import annotations

from lora_edu.course import matrix_fit, nb03


def test_rank_sweep_reaches_eckart_young_below_and_zero_above():
    T = matrix_fit.planted_update(16, 16, 4)
    res = nb03.rank_sweep(T, [1, 2, 4, 8], steps=400)
    for r, got, floor in zip(res["ranks"], res["lora"], res["eckart_young"]):
        assert got >= floor - 1e-6  # never beats the theorem
        assert got < floor + 1e-3, (r, got, floor)
    assert res["lora"][2] < 1e-4 and res["full"] < 1e-6

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


def test_plot_error_vs_rank_says_when_it_clamps():
    from lora_edu.course import common

    res = {"ranks": [1, 2, 4], "lora": [0.5, 1e-3, 0.0], "eckart_young": [0.5, 1e-3, 0.0], "full": 1e-14}
    fig, ax = common.figure()
    assert nb03.plot_error_vs_rank(ax, res, true_rank=4) == 3  # lora 0, floor 0 and full 1e-14
    assert any("drawn at 1e-12" in t.get_text() for t in ax.texts) and ax.get_ylim()[0] < 1e-12
    fig, ax = common.figure()
    assert nb03.plot_error_vs_rank(ax, {**res, "lora": [0.5, 0.1, 0.01], "eckart_young": [0.5, 0.1, 0.01],
                                        "full": 1e-3}) == 0
    assert not any("drawn at" in t.get_text() for t in ax.texts)

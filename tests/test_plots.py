"""The shared plot helpers draw what they claim on real data."""

from __future__ import annotations

import numpy as np
import torch

from lora_edu.course import common, matrix_fit, nb01, nb02, nb03


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

"""Notebook 03 (LoRA generalizes full fine-tuning): the rank sweep on planted updates and its figure."""

from __future__ import annotations

import math

import torch

from .common import check_int
from .matrix_fit import as_target, fit_full, fit_lora
from .nb02 import scaling_for


def rank_sweep(target: torch.Tensor, ranks, steps: int, lrs=(3e-3, 1e-2, 3e-2), alpha: float = 1.0,
               seed: int = 0) -> dict:
    """Best-over-lrs final error of LoRA at each r (α/r scaling, exact gradients) and of full fine-tuning.

    Returns {"ranks", "lora": [error per r], "full": error, "eckart_young": [best possible error per r]}.
    """
    target = as_target(target)
    ranks = [check_int(r, "ranks") for r in ranks]
    s = torch.linalg.svdvals(target.double().cpu())
    total = float(s.pow(2).sum())
    lora, deltas = [], {}
    for r in ranks:
        res = fit_lora(target, r, list(lrs), steps, scaling_for("alpha/r", alpha, r), seed=seed)
        fin = torch.nan_to_num(res["loss"][:, -1], nan=math.inf)
        j = int(fin.argmin())
        lora.append(float(fin[j]))
        deltas[r] = res["delta"][j]
    full = fit_full(target, list(lrs), steps, seed=seed)
    ey = [float(s[r:].pow(2).sum()) / total for r in ranks]
    return {"ranks": ranks, "lora": lora, "full": float(full["loss"][:, -1].min()), "eckart_young": ey,
            "deltas": deltas}


FLOOR = 1e-12  # errors below this are float round-off; a log axis cannot draw 0


def plot_error_vs_rank(ax, result: dict, true_rank: int | None = None, title: str = "", floor: float = FLOOR):
    """LoRA's fitted error at each r, the Eckart–Young floor, and full fine-tuning (a rank_sweep result).

    Values below `floor` (float round-off, or an exact 0 that a log axis cannot show) are drawn AT the floor with a
    downward triangle, and the axes say so. Returns the number of values drawn that way.
    """
    ranks = result["ranks"]
    ey, lora, full = result["eckart_young"], result["lora"], result["full"]
    ax.plot(ranks, [max(v, floor) for v in ey], "k--", lw=1, label="best possible at rank r (Eckart–Young)")
    ax.plot(ranks, [max(v, floor) for v in lora], "-", color="tab:blue")
    above = [(r, v) for r, v in zip(ranks, lora) if v >= floor]
    below = [r for r, v in zip(ranks, lora) if v < floor]
    ax.plot([r for r, _ in above], [v for _, v in above], "o", color="tab:blue", label="LoRA, trained")
    if below:
        ax.plot(below, [floor] * len(below), "v", color="tab:blue", ms=8)
    ax.axhline(max(full, floor), color="tab:orange", lw=2, alpha=0.7, label="full fine-tuning")
    clamped = len(below) + sum(v < floor for v in ey) + (full < floor)
    if clamped:
        ax.set_ylim(bottom=floor / 1e3)
        ax.text(0.99, 0.015, f"values below {floor:.0e} (round-off, or exactly 0) are drawn at {floor:.0e} (▼)",
                transform=ax.transAxes, ha="right", va="bottom", fontsize=7, color="0.3")
    if true_rank is not None:
        ax.axvline(true_rank, color="gray", ls=":", lw=1)
        ax.annotate(f"rank of ΔW* = {true_rank}", (true_rank, 0.5), textcoords="offset points",
                    xytext=(4, 0), fontsize=8, xycoords=("data", "axes fraction"))
    ax.set_yscale("log")
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("‖ΔW − ΔW*‖² / ‖ΔW*‖²")
    ax.set_title(title or "Error of the fitted update", fontsize=10)
    ax.legend(fontsize=8)
    return clamped

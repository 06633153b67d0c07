"""Shared matplotlib helpers for the notebooks and widgets: one look for matrices, spectra and loss curves.

Every function draws on an Axes it is given (or returns a new Figure) and never calls plt.show(), so the
same code serves notebook cells, widget callbacks and tests. matplotlib is imported lazily.
"""

from __future__ import annotations

import math

import torch

__all__ = ["figure", "show_matrix", "plot_spectrum", "plot_energy", "plot_loss_curves", "plot_lr_sweep",
           "plot_best_lr", "plot_error_vs_rank", "save", "close"]

SCHEME_COLORS = {"alpha/r": "tab:blue", "alpha": "tab:red", "alpha/sqrt(r)": "tab:green"}
SCHEME_LABELS = {"alpha/r": "α/r (LoRA)", "alpha": "α, no division", "alpha/sqrt(r)": "α/√r (rsLoRA)"}


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    import numpy as np

    return np.asarray(x, dtype=float)


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.0, height: float = 3.2, **kw):
    """A new (fig, axes) pair, sized per panel, with constrained layout. Not attached to pyplot's state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained", dpi=kw.pop("dpi", 90))
    axes = fig.subplots(nrows, ncols, squeeze=True, **kw)
    return fig, axes


def show_matrix(ax, M, title: str = "", cmap: str | None = None, symmetric: bool | None = None,
                vmax: float | None = None, colorbar: bool = False):
    """Heat map of a matrix. Signed data get a symmetric diverging colour map; images get gray."""
    A = _np(M)
    if symmetric is None:
        symmetric = bool((A < 0).any())
    if symmetric:
        v = vmax if vmax is not None else float(abs(A).max()) or 1.0
        im = ax.imshow(A, cmap=cmap or "RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
    else:
        im = ax.imshow(A, cmap=cmap or "gray", vmin=0 if vmax is None else None, vmax=vmax,
                       interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)
    return im


def plot_spectrum(ax, s, r: int | None = None, label: str = "singular values", log: bool = True,
                  color: str = "tab:blue", title: str = "Singular-value spectrum"):
    """σ₁ ≥ σ₂ ≥ … as dots; the first r (what a rank-r approximation keeps) filled, the rest hollow."""
    s = _np(s)
    i = range(1, len(s) + 1)
    if r is None:
        ax.plot(i, s, "o-", ms=3, color=color, label=label)
    else:
        r = max(0, min(int(r), len(s)))
        ax.plot(i, s, "-", color=color, lw=1, alpha=0.5)
        ax.plot(list(i)[:r], s[:r], "o", ms=4, color=color, label=f"kept (r = {r})")
        ax.plot(list(i)[r:], s[r:], "o", ms=4, mfc="none", color="gray", label="dropped")
        if 0 < r < len(s):
            ax.axvline(r + 0.5, color="k", ls=":", lw=1)
    if log:
        pos = s[s > 0]
        if len(pos):
            ax.set_yscale("log")
            ax.set_ylim(max(pos.min() * 0.5, pos.max() * 1e-8), pos.max() * 2)
    ax.set_xlabel("index i")
    ax.set_ylabel("σᵢ")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_energy(ax, s, r: int | None = None, label: str | None = None, color: str = "tab:purple"):
    """Cumulative energy Σ_{i≤r} σᵢ² / Σ σᵢ² against r (r = 0 … rank)."""
    s2 = _np(s) ** 2
    total = s2.sum() or 1.0
    cum = [0.0] + list(s2.cumsum() / total)
    ax.plot(range(len(cum)), cum, "-", color=color, label=label)
    if r is not None:
        r = max(0, min(int(r), len(cum) - 1))
        ax.plot([r], [cum[r]], "o", color=color)
        ax.annotate(f"{cum[r]:.1%}", (r, cum[r]), textcoords="offset points", xytext=(6, -12), fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("rank r")
    ax.set_ylabel("energy kept")
    ax.set_title("Energy Σᵢ≤ᵣ σᵢ² / Σ σᵢ²", fontsize=10)


def plot_loss_curves(ax, curves: dict, log: bool = True, xlabel: str = "step", ylabel: str = "loss",
                     title: str = "", colors: dict | None = None, styles: dict | None = None):
    """One line per {label: sequence of losses}."""
    for label, ys in curves.items():
        ys = _np(ys)
        kw = {}
        if colors and label in colors:
            kw["color"] = colors[label]
        if styles and label in styles:
            kw["ls"] = styles[label]
        ax.plot(range(1, len(ys) + 1), ys, label=str(label), **kw)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_lr_sweep(ax, sweep: dict, title: str | None = None):
    """Final error against learning rate, one curve per rank (an lr_sweep result)."""
    import matplotlib as mpl

    final = _np(sweep["final"])
    cmap = mpl.colormaps["viridis"]
    n = len(sweep["ranks"])
    for i, r in enumerate(sweep["ranks"]):
        ys = [min(v, 1e3) if math.isfinite(v) else 1e3 for v in final[i]]
        ax.plot(sweep["lrs"], ys, "o-", ms=3, color=cmap(i / max(1, n - 1)), label=f"r = {r}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final relative error")
    ax.set_title(title or SCHEME_LABELS.get(sweep["scheme"], sweep["scheme"]), fontsize=10)
    ax.legend(fontsize=7)


def plot_best_lr(ax, sweeps: list, best: list):
    """Best learning rate against r for several scaling schemes (log–log)."""
    for sw, b in zip(sweeps, best):
        sch = sw["scheme"]
        ax.plot(sw["ranks"], b, "o-", color=SCHEME_COLORS.get(sch), label=SCHEME_LABELS.get(sch, sch))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("rank r")
    ax.set_ylabel("best learning rate")
    ax.set_title("Which learning rate is best at each r?", fontsize=10)
    ax.legend(fontsize=8)


def plot_error_vs_rank(ax, result: dict, true_rank: int | None = None, title: str = ""):
    """LoRA's fitted error at each r, the Eckart–Young floor, and full fine-tuning (a rank_sweep result)."""
    floor = 1e-12
    ranks = result["ranks"]
    ax.plot(ranks, [max(v, floor) for v in result["eckart_young"]], "k--", lw=1,
            label="best possible at rank r (Eckart–Young)")
    ax.plot(ranks, [max(v, floor) for v in result["lora"]], "o-", color="tab:blue", label="LoRA, trained")
    ax.axhline(max(result["full"], floor), color="tab:orange", lw=2, alpha=0.7, label="full fine-tuning")
    if true_rank is not None:
        ax.axvline(true_rank, color="gray", ls=":", lw=1)
        ax.annotate(f"rank of ΔW* = {true_rank}", (true_rank, 0.5), textcoords="offset points",
                    xytext=(4, 0), fontsize=8, xycoords=("data", "axes fraction"))
    ax.set_yscale("log")
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("‖ΔW − ΔW*‖² / ‖ΔW*‖²")
    ax.set_title(title or "Error of the fitted update", fontsize=10)
    ax.legend(fontsize=8)


def save(fig, path, dpi: int = 90) -> None:
    """Save a figure to a file (PNG, SVG, … from the suffix)."""
    fig.savefig(path, dpi=dpi)


def close(fig) -> None:
    """Release a figure made with pyplot (figures from `figure()` need no closing)."""
    import matplotlib.pyplot as plt

    plt.close(fig)

"""Figures for notebook 08 (LoRA myths and facts), drawn from the numbers `lora_edu.myths` returns.

Each function returns a new matplotlib Figure (not attached to pyplot, so a cell shows it once) and never
calls plt.show(). matplotlib is imported lazily.
"""

from __future__ import annotations

import math

import torch

__all__ = ["plot_merged_vs_unmerged", "plot_shift", "plot_drift", "plot_merge_sweep", "plot_spectra",
           "plot_delta_images", "plot_bias", "plot_correction_sweep", "METHOD_STYLE"]

METHOD_STYLE = {
    "sum": ("tab:red", "o", "exact sum Σ sᵢBᵢAᵢ (PEFT 'cat')"),
    "scaled": ("tab:orange", "s", "scaled sum, weights 1/N"),
    "svd": ("tab:purple", "^", "SVD of the sum, truncated to rank r"),
    "avg_AB": ("tab:brown", "v", "naive: mean A, mean B"),
    "switch": ("tab:green", "D", "switch: one adapter at a time"),
}
_FLOOR = 1e-12  # where exact zeros are drawn on a log axis


def _figure(ncols=1, nrows=1, width=4.2, height=3.3):
    from .plots import figure

    return figure(ncols, nrows, width=width, height=height)


def _np(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    import numpy as np

    return np.asarray(x, dtype=float)


def plot_merged_vs_unmerged(logits_unmerged, logits_merged, latency_rows: list[dict],
                            title: str = "Claim 1: one function, two ways to compute it"):
    """Left: merged vs unmerged logits (on the diagonal = equal). Right: forward time of base / merged /
    unmerged per batch size (median, with 10–90 % whiskers)."""
    import numpy as np

    fig, (a1, a2) = _figure(2, width=4.6)
    u, m = _np(logits_unmerged).ravel(), _np(logits_merged).ravel()
    k = min(len(u), 20000)
    a1.scatter(u[:k], m[:k], s=2, alpha=0.3)
    lim = [min(u.min(), m.min()), max(u.max(), m.max())]
    a1.plot(lim, lim, "k--", lw=0.8)
    a1.set_xlabel("logit, unmerged  W0·x + B·A·x")
    a1.set_ylabel("logit, merged  (W0 + BA)·x")
    a1.set_title(f"max |difference| = {np.abs(u - m).max():.1e}")
    names = [("base", "tab:gray"), ("merged", "tab:blue"), ("unmerged", "tab:red")]
    x = np.arange(len(latency_rows))
    w = 0.27
    for i, (key, color) in enumerate(names):
        med = np.array([r[f"{key}_ms"] for r in latency_rows])
        lo = med - np.array([r[f"{key}_p10_ms"] for r in latency_rows])
        hi = np.array([r[f"{key}_p90_ms"] for r in latency_rows]) - med
        a2.bar(x + (i - 1) * w, med, w, yerr=[lo, hi], color=color, label=key, capsize=2)
    a2.set_xticks(x, [f"batch {r['batch']}" for r in latency_rows])
    a2.set_ylabel("ms per forward pass (median)")
    a2.set_yscale("log")
    a2.legend(fontsize=8)
    a2.set_title("inference time on this device")
    fig.suptitle(title)
    return fig


def plot_shift(h_delta, h_base=None, n_show: int = 40, title: str = "What the LoRA path adds: Δh = s·B·A·x"):
    """Heat map of Δh for `n_show` input tokens (rows) — a different shift for every token — next to the
    singular values of the whole N×d matrix Δh (at most r nonzero: outputs move in r directions only)."""
    import numpy as np

    fig, (a1, a2) = _figure(2, width=4.4)
    hd = _np(h_delta)
    v = np.abs(hd[:n_show]).max()
    im = a1.imshow(hd[:n_show], cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=a1, shrink=0.8)
    a1.set_xlabel("output feature")
    a1.set_ylabel("token (input x)")
    a1.set_title("Δh per token: not one constant shift")
    s = np.linalg.svd(hd, compute_uv=False)
    s = np.maximum(s / s[0], _FLOOR)
    a2.semilogy(np.arange(1, len(s) + 1), s, "o-", ms=3)
    a2.set_xlabel("singular value index")
    a2.set_ylabel("σᵢ / σ₁ of Δh over all tokens")
    a2.set_title("Δh lives in r directions")
    a2.set_ylim(bottom=1e-9)
    fig.suptitle(title)
    return fig


def plot_drift(rows: list[dict], title: str = "Claim 2: base-weight drift after n task switches"):
    """max |W − W0| against the number of switches, one line per (dtype, strategy) that drifts; the
    (dtype, strategy) pairs whose drift is exactly zero are drawn as one line at the bottom edge."""
    fig, ax = _figure(1, width=6.5, height=3.8)
    groups = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["strategy"]), []).append(r)
    colors = {"float32": "tab:blue", "bfloat16": "tab:red", "float16": "tab:orange"}
    zero = []
    for (dtype, strategy), rs in groups.items():
        if all(r["max_abs"] == 0 for r in rs):
            zero.append((dtype, strategy))
            continue
        ax.loglog([r["switches"] for r in rs], [max(r["max_abs"], _FLOOR) for r in rs], "-o",
                  color=colors.get(dtype, "k"), label=f"{dtype}, {strategy}")
    if zero:
        xs = sorted({r["switches"] for r in rows})
        ax.loglog(xs, [_FLOOR] * len(xs), "--o", color="tab:green", mfc="none")
        strategies = ", ".join(dict.fromkeys(s for _, s in zero))
        dtypes = ", ".join(dict.fromkeys(d for d, _ in zero))
        ax.text(xs[0], _FLOOR * 4, f"exactly 0: {strategies}\n({dtypes})", fontsize=8, color="tab:green")
    ax.set_xlabel("task switches (merge then unmerge)")
    ax.set_ylabel("max |W − W0| over adapted weights")
    ax.set_ylim(_FLOOR / 3, None)
    ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.12))
    ax.set_title(title)
    return fig


def plot_merge_sweep(rows: list[dict], cross_norms=None, chance: float = 0.1,
                     title: str = "Claim 3: merging N adapters at once"):
    """Pretraining-task accuracy and mean adapted-task accuracy versus N, one line per combining method;
    with `cross_norms`, a third panel: the N×N norms ‖sBᵢAⱼ‖ (off-diagonal = cross terms of averaging)."""
    ncols = 3 if cross_norms is not None else 2
    fig, axes = _figure(ncols, width=4.2)
    a1, a2 = axes[0], axes[1]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        color, marker, label = METHOD_STYLE.get(m, ("k", "o", m))
        ns = [r["n"] for r in rs]
        a1.plot(ns, [r["pretrain"] for r in rs], marker=marker, color=color, label=label)
        a2.plot(ns, [r["mean_task"] for r in rs], marker=marker, color=color, label=label)
    for a, t in ((a1, "pretraining task (copy) accuracy"), (a2, "mean accuracy on the N adapted tasks")):
        a.axhline(chance, color="k", ls=":", lw=0.8)
        a.set_xlabel("N adapters merged")
        a.set_ylim(-0.02, 1.02)
        a.set_xticks(sorted({r["n"] for r in rows}))
        a.set_title(t, fontsize=10)
    a1.text(1, chance + 0.02, "chance", fontsize=7)
    a2.legend(fontsize=7)
    if cross_norms is not None:
        a3 = axes[2]
        M = _np(cross_norms)
        im = a3.imshow(M, cmap="viridis")
        fig.colorbar(im, ax=a3, shrink=0.8)
        labels = [r["tasks"] for r in rows if r["n"] == len(M)][0] if rows else list(range(len(M)))
        a3.set_xticks(range(len(M)), [f"A_{t[:3]}" for t in labels], fontsize=7)
        a3.set_yticks(range(len(M)), [f"B_{t[:3]}" for t in labels], fontsize=7)
        for i in range(len(M)):
            for j in range(len(M)):
                a3.text(j, i, f"{M[i, j]:.1f}", ha="center", va="center", fontsize=7, color="w")
        a3.set_title("‖s·Bᵢ·Aⱼ‖: off-diagonal = cross terms", fontsize=10)
    fig.suptitle(title)
    return fig


def plot_spectra(anatomies: dict, r: int, title: str = "Claim 4: singular values of ΔW"):
    """Normalized singular values σᵢ/σ₁ of each ΔW in {label: delta_anatomy(...) dict}, with the rank r marked."""
    import numpy as np

    fig, ax = _figure(1, width=5.5, height=3.6)
    for label, a in anatomies.items():
        s = _np(a["singular_values"])
        s = np.maximum(s / s[0], _FLOOR)
        ax.semilogy(np.arange(1, len(s) + 1), s, "o-", ms=3,
                    label=f"{label}: rank {a['rank']}, 90 % energy in {a['effective_rank']}")
    ax.axvline(r, color="k", ls=":", lw=0.8)
    ax.text(r + 0.5, 1e-6, f"r = {r}", fontsize=8)
    ax.set_ylim(1e-9, 2)
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("σᵢ / σ₁")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def plot_delta_images(W0, deltas: dict, layer: str = "", title: str | None = None):
    """W0 next to each ΔW in {label: matrix}, each on its own symmetric colour scale (printed in the title)."""
    import numpy as np

    mats = {"W0": W0, **deltas}
    fig, axes = _figure(len(mats), width=3.3, height=3.3)
    for ax, (label, M) in zip(axes, mats.items()):
        A = _np(M)
        v = float(np.abs(A).max()) or 1.0
        im = ax.imshow(A, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7)
        ax.set_title(f"{label}\n‖·‖_F = {np.linalg.norm(A):.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"Claim 4: the weight and its updates ({layer})")
    return fig


def plot_bias(rows: list[dict], title: str = "Claim 5: a toy bias, corrected by LoRAs"):
    """Grouped bars per configuration: skew (share of biased digits written as the wrong digit) and quality
    (copy accuracy on all positions and on the unbiased digits only)."""
    import numpy as np

    fig, ax = _figure(1, width=max(6.0, 1.1 * len(rows)), height=3.8)
    x = np.arange(len(rows))
    w = 0.27
    series = [("skew", "tab:red", "skew (biased digits → wrong digit)"),
              ("quality", "tab:blue", "quality: copy accuracy"),
              ("quality_other", "tab:cyan", "copy accuracy on unbiased digits")]
    for i, (key, color, label) in enumerate(series):
        vals = [r[key] for r in rows]
        bars = ax.bar(x + (i - 1) * w, vals, w, color=color, label=label)
        for b, v in zip(bars, vals):
            if not math.isnan(v):
                ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
    ax.set_xticks(x, [r["config"] for r in rows], fontsize=8, rotation=15)
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    ax.set_title(title)
    return fig


def plot_correction_sweep(rows: list[dict], title: str = "Claim 5: how much correction? W_biased + w·ΔW_fix"):
    """Skew and quality against the weight w of a corrective LoRA (0 = the biased model, 1 = as trained)."""
    fig, ax = _figure(1, width=5.5, height=3.6)
    ws = [r["weight"] for r in rows]
    ax.plot(ws, [r["skew"] for r in rows], "o-", color="tab:red", label="skew")
    ax.plot(ws, [r["quality"] for r in rows], "s-", color="tab:blue", label="quality: copy accuracy")
    ax.plot(ws, [r["quality_other"] for r in rows], "^--", color="tab:cyan", label="copy accuracy, unbiased digits")
    ax.axvline(1.0, color="k", ls=":", lw=0.8)
    ax.text(1.02, 0.5, "as trained", fontsize=8)
    ax.set_xlabel("weight w of the corrective LoRA")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig

"""Figures for notebook 07 (what LoRA learns, §7) and the rank lab of notebook 09.

Every function returns a `matplotlib.figure.Figure` built without pyplot (no global state, nothing shown
twice): in a notebook, make it the last expression of a cell or pass it to `display`. `to_png` turns a
figure into PNG bytes for an `ipywidgets.Image`. matplotlib is imported lazily.
"""

from __future__ import annotations

import io
import math

__all__ = [
    "similarity_heatmaps",
    "similarity_diagonals",
    "spectra_figure",
    "lab_curves_figure",
    "lab_spectra_figure",
    "placeholder_figure",
    "to_png",
]

ZERO_TOL = 1e-6  # singular values below ZERO_TOL·σ₁ are float round-off, not directions ΔW uses


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _grid(x):
    import numpy as np

    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)


def similarity_heatmaps(grids: dict, suptitle: str | None = None, width_per_panel: float = 3.6):
    """One heatmap per {title: φ grid (i × j)} — rows i, columns j, colour 0…1 (paper Figures 3 and 4)."""
    if not grids:
        raise ValueError("grids must contain at least one {title: grid}")
    n = len(grids)
    fig = _figure(width_per_panel * n + 0.8, 3.4)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for ax, (title, g) in zip(axes, grids.items()):
        g = _grid(g)
        im = ax.imshow(g, vmin=0, vmax=1, cmap="viridis", aspect="auto", interpolation="nearest",
                       extent=(0.5, g.shape[1] + 0.5, g.shape[0] + 0.5, 0.5))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("j")
        ax.set_ylabel("i")
    fig.colorbar(im, ax=list(axes), shrink=0.9, label="φ(i, j)")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def similarity_diagonals(curves: dict, k: int | None = None, title: str = "φ(i, i): how much the top-i "
                         "directions agree"):
    """Lines of φ(i, i) per {label: 1-D values}; with k, the random expectation i/k as a dashed line."""
    import numpy as np

    fig = _figure(6.0, 3.4)
    ax = fig.subplots()
    n = 1
    for label, v in curves.items():
        v = _grid(v).ravel()
        n = max(n, len(v))
        ax.plot(np.arange(1, len(v) + 1), v, marker="o", ms=3, label=label)
    if k:
        i = np.arange(1, n + 1)
        ax.plot(i, i / k, "k--", lw=1, label=f"random subspaces: i/{k}")
    ax.set_xlabel("i (number of top directions compared)")
    ax.set_ylabel("φ(i, i)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def spectra_figure(spectra: dict, title: str = "singular values of ΔW", normalize: bool = False):
    """Singular values σ₁ ≥ σ₂ ≥ … per {label: values}, log scale (optionally divided by σ₁).

    Values below ZERO_TOL·σ₁ are round-off (a rank-r ΔW has only r non-zero ones) and are not drawn."""
    import numpy as np

    fig = _figure(6.0, 3.4)
    ax = fig.subplots()
    for label, s in spectra.items():
        s = _grid(s).ravel()
        if normalize and s.size and s[0] > 0:
            s = s / s[0]
        s = np.where(s > ZERO_TOL * (np.nanmax(s) if s.size else 0), s, np.nan)
        ax.semilogy(np.arange(1, s.size + 1), s, marker="o", ms=3, label=label)
    ax.set_xlabel("index i")
    ax.set_ylabel("σᵢ / σ₁" if normalize else "σᵢ")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def placeholder_figure(text: str = "No runs yet: press Train."):
    fig = _figure(6.0, 1.2)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.4")
    return fig


def _smooth(y, window: int):
    import numpy as np

    y = np.asarray(y, dtype=float)
    if window <= 1 or y.size < window:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    out = (c[window:] - c[:-window]) / window
    return np.concatenate([y[: window - 1], out])


def lab_curves_figure(curves: list[dict]):
    """Overlay of every run's training loss (smoothed, log scale) and held-out accuracy versus step."""
    if not curves:
        return placeholder_figure()
    fig = _figure(11.0, 3.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for c in curves:
        window = max(1, len(c["loss"]) // 25)
        line, = ax_loss.plot(c["step"], _smooth(c["loss"], window), lw=1.3, label=c["label"])
        ax_acc.plot(c["eval_step"], c["accuracy"], marker="o", ms=3, color=line.get_color(), label=c["label"])
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (smoothed)")
    ax_loss.set_title("loss", fontsize=10)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("token accuracy (held out)")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_title("accuracy", fontsize=10)
    ax_acc.legend(fontsize=7, loc="best")
    return fig


def lab_spectra_figure(spectra: list[dict], max_panels: int = 12):
    """One panel per adapted matrix (union over runs), one line per run: singular values of that run's ΔW.

    `spectra`: [{"label": str, "r": int, "spectra": {layer name: 1-D singular values}}].
    """
    import numpy as np

    layers = []
    for s in spectra:
        for name in s["spectra"]:
            if name not in layers:
                layers.append(name)
    if not layers:
        return placeholder_figure("No ΔW spectra yet: press Train.")
    layers = layers[:max_panels]
    ncols = min(4, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = _figure(2.9 * ncols + 0.6, 2.5 * nrows + 0.5)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = [f"C{i % 10}" for i in range(len(spectra))]
    for ax, name in zip(axes, layers):
        for color, s in zip(colors, spectra):
            sv = s["spectra"].get(name)
            if sv is None or len(sv) == 0:
                continue
            sv = np.asarray(sv, dtype=float)
            sv = np.where(sv > ZERO_TOL * np.nanmax(sv), sv, np.nan)
            ax.semilogy(np.arange(1, sv.size + 1), sv, marker="o", ms=2.5, lw=1, color=color, label=s["label"])
        ax.set_title(name.replace("blocks.", "block ").replace(".attn.", " ").replace(".mlp.", " "), fontsize=9)
        ax.set_xlabel("i", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(layers):]:
        ax.axis("off")
    axes[0].set_ylabel("σᵢ of ΔW", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=min(3, len(labels)))
    fig.suptitle("singular values of each run's ΔW = (α/r)·B·A (values below 1e-6·σ₁ are zero: not drawn)",
                 fontsize=10)
    return fig


def to_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (for an ipywidgets.Image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()

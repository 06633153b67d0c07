"""Notebook 01 (low-rank matrices): SVD explorers, their figures and widgets."""

from __future__ import annotations

import math

import torch

from ..lowrank import as_matrix
from ..runtime import check_number
from .common import check_int, figure, param_count_summary, show_in, to_numpy

MAX_DIM = 10**6  # param_count_widget's largest d and k: beyond any real layer (GPT-3's d_model is 12,288)


def show_matrix(ax, M, title: str = "", cmap: str | None = None, symmetric: bool | None = None,
                vmax: float | None = None, colorbar: bool = False):
    """Heat map of a matrix. Signed data get a symmetric diverging colour map; images get gray."""
    A = to_numpy(M)
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
    s = to_numpy(s)
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
    s2 = to_numpy(s) ** 2
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


# --------------------------------------------------------------------------------------------- matrices
class MatrixSVD:
    """A matrix and its SVD, computed once: ``approx(r)`` is then one small matrix product.

    Everything is float64 on the CPU (teaching-size matrices; exact comparisons with Eckart–Young).
    """

    def __init__(self, W, name: str = "W"):
        W = as_matrix(W)  # a finite 2-D matrix, else a ValueError / TypeError naming W
        if min(W.shape) == 0:
            raise ValueError(f"W must be a non-empty 2-D matrix, got shape {tuple(W.shape)}")
        self.name = name
        self.W = W.detach().to("cpu", torch.float64)
        self.U, self.S, self.Vh = torch.linalg.svd(self.W, full_matrices=False)
        s2 = self.S**2
        self.total_energy = float(s2.sum())
        self.norm = math.sqrt(self.total_energy)
        tail = s2.flip(0).cumsum(0).flip(0)
        self._tail = torch.cat([tail, torch.zeros(1, dtype=s2.dtype, device=s2.device)])  # Σ_{i≥r} σᵢ²
        tol = max(self.W.shape) * torch.finfo(torch.float64).eps * float(self.S[0]) if len(self.S) else 0.0
        self.rank = int((self.S > tol).sum())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.W.shape)

    @property
    def max_rank(self) -> int:
        """min(d, k): the largest rank a d×k matrix can have (the slider's right end)."""
        return min(self.shape)

    def approx(self, r: int) -> torch.Tensor:
        """Best rank-r approximation W_r = U_r Σ_r V_rᵀ (no new SVD)."""
        return (self.U[:, :r] * self.S[:r]) @ self.Vh[:r]

    def predicted_error(self, r: int) -> float:
        """Eckart–Young: ‖W − W_r‖_F = sqrt(Σ_{i>r} σᵢ²)."""
        return math.sqrt(max(float(self._tail[r]), 0.0))

    def energy(self, r: int) -> float:
        return 1.0 if self.total_energy == 0 else 1.0 - float(self._tail[r]) / self.total_energy


def grace_hopper(downsample: int = 2) -> torch.Tensor:
    """The grayscale portrait of Grace Hopper shipped with matplotlib (offline), values in [0, 1].

    downsample=2 gives a 300×256 matrix: its SVD takes a fraction of a second.
    """
    import matplotlib.cbook as cbook
    import matplotlib.image as mimage

    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ValueError(f"downsample must be an int ≥ 1, got {downsample!r}")
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = mimage.imread(f, format="jpg")
    gray = torch.as_tensor(img[..., :3].mean(-1), dtype=torch.float64) / 255.0
    return gray[::downsample, ::downsample].contiguous()


def rank_message(r, max_rank: int) -> str | None:
    """None if r is a usable rank for a matrix whose largest possible rank is max_rank; else why not."""
    if isinstance(r, bool) or not isinstance(r, int):
        return f"r must be a whole number, got {r!r}."
    if r < 0:
        return f"r = {r} is negative: a rank counts kept directions, so it is 0 or more."
    if r > max_rank:
        return (f"r = {r} is beyond this matrix's largest possible rank, min(d, k) = {max_rank}: "
                f"there are only {max_rank} singular values to keep. Pick r between 0 and {max_rank}.")
    return None


def low_rank_summary(msvd: MatrixSVD, r) -> dict | str:
    """Numbers for the rank slider: the approximation W_r and how good it is, or a message for a bad r.

    Keys: r, approx, error (measured ‖W − W_r‖_F), predicted_error (Eckart–Young), relative_error,
    energy, stored (numbers stored by the factors, r·(d + k)), full (d·k), note (a remark or "").
    """
    msg = rank_message(r, msvd.max_rank)
    if msg:
        return msg
    d, k = msvd.shape
    approx = msvd.approx(r)
    err = float(torch.linalg.matrix_norm(msvd.W - approx))
    note = ""
    if r == 0:
        note = "r = 0 keeps nothing: the approximation is the zero matrix and the error is all of ‖W‖."
    elif r >= msvd.rank:
        note = (f"r ≥ rank(W) = {msvd.rank}: every nonzero singular value is kept, so W_r equals W "
                f"(up to rounding).")
    return {"r": r, "approx": approx, "error": err, "predicted_error": msvd.predicted_error(r),
            "relative_error": 0.0 if msvd.norm == 0 else err / msvd.norm, "energy": msvd.energy(r),
            "stored": r * (d + k), "full": d * k, "note": note}


def low_rank_figure(msvd: MatrixSVD, r, image: bool = False):
    """Four panels: W, its best rank-r approximation, the error W − W_r, and the spectrum with r marked.

    Returns a matplotlib Figure, or a message string for a bad r.
    """
    res = low_rank_summary(msvd, r)
    if isinstance(res, str):
        return res
    fig, ax = figure(4, 1, width=3.3, height=3.1)
    if image:
        show_matrix(ax[0], msvd.W, "original", symmetric=False, vmax=1.0)
        show_matrix(ax[1], res["approx"].clamp(0, 1), f"rank {r} approximation", symmetric=False, vmax=1.0)
    else:
        v = float(msvd.W.abs().max()) or 1.0
        show_matrix(ax[0], msvd.W, f"{msvd.name} {msvd.shape[0]}×{msvd.shape[1]}", vmax=v)
        show_matrix(ax[1], res["approx"], f"rank {r} approximation", vmax=v)
    E = msvd.W - res["approx"]
    show_matrix(ax[2], E, f"error W − W_r\n‖·‖_F = {res['error']:.3g} ({res['relative_error']:.1%})",
                      symmetric=True, vmax=float(E.abs().max()) or 1.0)  # own scale: structure stays visible
    plot_spectrum(ax[3], msvd.S, r)
    ax[3].set_title(f"spectrum: energy kept {res['energy']:.1%}", fontsize=10)
    fig.suptitle(f"r = {r}: stores {res['stored']:,} numbers instead of {res['full']:,}"
                 + (f"\n{res['note']}" if res["note"] else ""), fontsize=10)
    return fig


class WeightSVDs:
    """Lazily computed, cached SVDs of every nn.Linear weight of a model (for the weight dropdown)."""

    def __init__(self, model):
        from torch import nn

        self.weights = {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}
        if not self.weights:
            raise ValueError("model has no nn.Linear layers")
        self._cache: dict[str, MatrixSVD] = {}

    @property
    def names(self) -> list[str]:
        return list(self.weights)

    def get(self, name: str) -> MatrixSVD | str:
        """The SVD of weight `name`, or a message: an unknown name, or a weight holding NaN or inf."""
        if not isinstance(name, str) or name not in self.weights:
            return f"{name!r} is not a Linear weight of this model; choose one of: {', '.join(self.weights)}."
        if name not in self._cache and not torch.isfinite(self.weights[name].detach()).all():
            return (f"{name} holds NaN or inf values, so it has no singular values to show. A weight usually "
                    f"gets them from a diverged training run (a learning rate too large); reload the model.")
        if name not in self._cache:
            self._cache[name] = MatrixSVD(self.weights[name], name)
        return self._cache[name]


def weight_rank_summary(svds: WeightSVDs, name: str, r) -> dict | str:
    """low_rank_summary for one weight of the model (a message for an unknown name or a bad r)."""
    msvd = svds.get(name)
    return msvd if isinstance(msvd, str) else low_rank_summary(msvd, r)


def weight_rank_figure(svds: WeightSVDs, name: str, r):
    """low_rank_figure for one weight of the model, or a message string."""
    msvd = svds.get(name)
    if isinstance(msvd, str):
        return msvd
    if isinstance(r, int) and not isinstance(r, bool) and r > msvd.max_rank:
        return (f"{name} is {msvd.shape[0]}×{msvd.shape[1]}, so its rank is at most {msvd.max_rank}; "
                f"r = {r} is beyond that. Pick r between 0 and {msvd.max_rank}.")
    return low_rank_figure(msvd, r)


def param_count_figure(d, k, r):
    """Bar chart of d·k vs r·(d + k) and the compression ratio as a function of r. Figure or message."""
    res = param_count_summary(d, k, r)
    if isinstance(res, str):
        return res
    fig, ax = figure(2, 1, width=4.2, height=3.2)
    ax[0].bar(["full ΔW\nd·k", "LoRA B, A\nr·(d + k)"], [res["full"], res["lora"]],
              color=["tab:orange", "tab:blue"])
    ax[0].set_yscale("log")
    ax[0].set_ylabel("trainable numbers")
    for i, v in enumerate((res["full"], res["lora"])):
        ax[0].annotate(f"{v:,}", (i, v), ha="center", va="bottom", fontsize=9)
    ax[0].set_title(f"d = {d}, k = {k}, r = {r}: {res['ratio']:.3g}× fewer", fontsize=10)
    rmax = max(min(d, k), r)
    rs = sorted({round(rmax ** (i / 99)) for i in range(100)})  # 100 log-spaced ranks: cheap for any d, k
    ax[1].plot(rs, [d * k / (x * (d + k)) for x in rs], "-", color="tab:blue")
    ax[1].plot([r], [res["ratio"]], "o", color="tab:red")
    ax[1].axhline(1, color="gray", ls=":", lw=1)
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("rank r")
    ax[1].set_ylabel("compression d·k / (r·(d + k))")
    ax[1].set_title("Compression ratio against r", fontsize=10)
    for a in ax:
        a.minorticks_off()  # a log axis over 12 decades has hundreds of minor ticks: seconds per redraw
    if res["note"]:
        fig.suptitle(res["note"], fontsize=9)
    return fig


def _rank_slider(max_rank: int, value: int, description: str = "rank r"):
    import ipywidgets as w

    return w.IntSlider(value=min(value, max_rank), min=0, max=max_rank, step=1, description=description,
                       continuous_update=False, layout=w.Layout(width="480px"))


def image_rank_widget(r: int = 20, downsample: int = 2, msvd: MatrixSVD | None = None):
    """Rank slider over the Grace Hopper portrait: approximation, error and spectrum."""
    import ipywidgets as w

    msvd = msvd or MatrixSVD(grace_hopper(downsample), "Grace Hopper")
    slider = _rank_slider(msvd.max_rank, r)
    out = w.Output()

    def update(change=None):
        show_in(out, lambda: low_rank_figure(msvd, slider.value, image=True))

    slider.observe(update, names="value")
    update()
    return w.VBox([slider, out])


def weight_rank_widget(model, r: int = 8, name: str | None = None):
    """Dropdown over the model's Linear weights and a rank slider: approximation, error and spectrum."""
    import ipywidgets as w

    svds = WeightSVDs(model)
    dd = w.Dropdown(options=svds.names, value=name or svds.names[0], description="weight",
                    layout=w.Layout(width="480px"))
    first = svds.get(dd.value)
    slider = _rank_slider(getattr(first, "max_rank", r), r)  # a message instead of an SVD: keep r's range
    out = w.Output()

    def update(change=None):
        m = svds.get(dd.value)
        if not isinstance(m, str) and slider.max != m.max_rank:
            slider.max = m.max_rank  # the slider's range follows the chosen matrix (lm_head is vocabulary × 64)
        show_in(out, lambda: weight_rank_figure(svds, dd.value, slider.value))

    dd.observe(update, names="value")
    slider.observe(update, names="value")
    update()
    return w.VBox([dd, slider, out])


def param_count_widget(d: int = 64, k: int = 64, r: int = 4, max_dim: int | None = None):
    """Sliders d, k, r: trainable numbers of full ΔW versus LoRA, and the compression ratio.

    The d and k sliders reach max_dim (default: twice the larger of d and k, at least 256, at most MAX_DIM),
    so each starts inside its range and can move both ways.
    """
    import ipywidgets as w

    for name, v in (("d", d), ("k", k)):
        check_number(name, v, 1, MAX_DIM - 1, integer=True)
    check_number("r", r, 0, 256, integer=True)
    max_dim = min(max(2 * max(d, k), 256), MAX_DIM) if max_dim is None else max_dim
    check_number("max_dim", max_dim, max(d, k) + 1, MAX_DIM, integer=True)
    kw = dict(continuous_update=False, layout=w.Layout(width="480px"))
    sd = w.IntSlider(value=d, min=1, max=max_dim, description="d (out)", **kw)
    sk = w.IntSlider(value=k, min=1, max=max_dim, description="k (in)", **kw)
    sr = w.IntSlider(value=r, min=0, max=256, description="rank r", **kw)
    out = w.Output()

    def update(change=None):
        show_in(out, lambda: param_count_figure(sd.value, sk.value, sr.value))

    for s in (sd, sk, sr):
        s.observe(update, names="value")
    update()
    return w.VBox([sd, sk, sr, out])


# ------------------------------------------------------------------------------- Eckart–Young, checked (nb 01 §3)
def eckart_young_competitors(W: torch.Tensor, r: int, n_random: int = 200, n_perturbed: int = 200,
                             n_optimized: int = 20, als_steps: int = 50, eps: float = 1e-3, seed: int = 0) -> dict:
    """‖W − M‖_F for three kinds of rank-r competitors M of the truncated SVD W_r (float64).

    "random":    a random row space A (r×k Gaussian) with the best B for it (least squares) — how bad a guess is;
    "perturbed": W_r's own factors (U_rΣ_r, V_rᵀ) nudged by relative noise `eps` — is W_r a local minimum?;
    "optimized": alternating least squares (B = W A⁺, then A = B⁺ W) for `als_steps` rounds from random starts —
                 the best that an optimizer finds, with no SVD in it.
    Returns {"bound": √(Σ_{i>r} σ_i²), "svd": ‖W − W_r‖_F, "random": [...], "perturbed": [...], "optimized": [...]}.
    """
    W = as_matrix(W).detach().cpu().double()
    d, k = W.shape
    r = check_int(r, "r")
    if r > min(d, k):
        raise ValueError(f"r must be ≤ min(d, k) = {min(d, k)}, got {r}")
    for name, v in (("n_random", n_random), ("n_perturbed", n_perturbed), ("n_optimized", n_optimized),
                    ("als_steps", als_steps)):
        check_int(v, name, 0)
    g = torch.Generator().manual_seed(seed)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    B0, A0 = U[:, :r] * S[:r], Vh[:r]

    def err(B, A):
        return float(torch.linalg.matrix_norm(W - B @ A))

    def best_B(A):
        return W @ torch.linalg.pinv(A)

    out = {"bound": float(S[r:].pow(2).sum().sqrt()), "svd": err(B0, A0), "random": [], "perturbed": [],
           "optimized": []}
    for _ in range(n_random):
        A = torch.randn(r, k, generator=g, dtype=torch.float64, device="cpu")
        out["random"].append(err(best_B(A), A))
    for _ in range(n_perturbed):
        dB = torch.randn(B0.shape, generator=g, dtype=torch.float64, device="cpu") * eps * B0.norm() / B0.numel() ** 0.5
        dA = torch.randn(A0.shape, generator=g, dtype=torch.float64, device="cpu") * eps * A0.norm() / A0.numel() ** 0.5
        out["perturbed"].append(err(B0 + dB, A0 + dA))
    for _ in range(n_optimized):
        A = torch.randn(r, k, generator=g, dtype=torch.float64, device="cpu")
        for _ in range(als_steps):
            B = best_B(A)
            A = torch.linalg.pinv(B) @ W
        out["optimized"].append(err(best_B(A), A))
    return out

"""Notebook 07 (what LoRA learns, §7): subspace similarity, amplification and their figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..inject import lora_layers
from ..lowrank import subspace_similarity_grid
from ..tasks import get_task
from .common import ZERO_TOL, check_int, figure, projection_norms, train_lora

ATTENTION_MATRICES = ("q", "k", "v", "o")


# Paper Table 7 (GPT-3 175B, layer 48 of 96): ‖UᵀW_qVᵀ‖_F for U, V the top-r singular directions of
# ΔW_q, of W_q itself, or of a random matrix; and ‖ΔW_q‖_F. ‖W_q‖_F = 61.95. (Hu et al. 2021, §7.3)
PAPER_TABLE7 = {
    4: {"delta_dirs": 0.32, "W_dirs": 21.67, "random_dirs": 0.02, "delta_norm": 6.91},
    64: {"delta_dirs": 1.90, "W_dirs": 37.71, "random_dirs": 0.33, "delta_norm": 3.57},
}


PAPER_WQ_NORM = 61.95


@dataclass
class TrainedAdapter:
    """One LoRA fine-tune, kept as data on the CPU: its A, B, ΔW and the frozen W0 of every adapted layer."""

    task: str
    r: int
    alpha: float
    seed: int
    targets: tuple[str, ...]
    lr: float
    steps: int
    accuracy: float
    history: dict = field(repr=False)
    A: dict[str, torch.Tensor] = field(repr=False)
    B: dict[str, torch.Tensor] = field(repr=False)
    delta: dict[str, torch.Tensor] = field(repr=False)
    W0: dict[str, torch.Tensor] = field(repr=False)

    @property
    def layers(self) -> list[str]:
        return list(self.A)

    def _layer(self, layer: str) -> str:
        if layer not in self.A:
            raise ValueError(f"layer {layer!r} has no adapter here; adapted layers are {self.layers}")
        return layer


def layer_name(block: int = 1, matrix: str = "q", n_layer: int = 2) -> str:
    """'blocks.{block}.attn.{matrix}_proj', checked: layer_name(1, 'v') → 'blocks.1.attn.v_proj'."""
    if isinstance(block, bool) or not isinstance(block, int):
        raise TypeError(f"block must be an int, got {type(block).__name__}")
    if not 0 <= block < n_layer:
        raise ValueError(f"block must be in [0, {n_layer - 1}], got {block}")
    m = matrix[:-5] if isinstance(matrix, str) and matrix.endswith("_proj") else matrix
    if m not in ATTENTION_MATRICES:
        raise ValueError(f"matrix must be one of {ATTENTION_MATRICES}, got {matrix!r}")
    return f"blocks.{block}.attn.{m}_proj"


def train_adapter(task="increment", r: int = 8, seed: int = 0, targets=("q_proj", "v_proj"),
                  alpha: float | None = None, lr: float = 1e-2, steps: int = 300, batch_size: int = 64,
                  device=None, progress: bool = False, threads: int | None = 1) -> TrainedAdapter:
    """Fine-tune a fresh copy of the pretrained toy model with LoRA and keep the result as a TrainedAdapter.

    `seed` fixes both the random init of A and the order of the training data, so two seeds give two
    independent runs (the paper's Figure 4). alpha=None means α = r (scaling 1). On the CPU the run uses
    `threads` intra-op threads (see `cpu_threads`; None keeps torch's setting).
    """
    task = get_task(task)
    check_int(r, "r", 1)
    check_int(seed, "seed", 0)
    check_int(steps, "steps", 1)
    model, hist = train_lora(task, targets=targets, r=r, alpha=alpha, lr=lr, steps=steps, seed=seed, device=device,
                             threads=threads, batch_size=batch_size, progress=progress)
    A, B, delta, W0 = {}, {}, {}, {}
    for name, layer in lora_layers(model).items():
        A[name] = layer.A.detach().float().cpu().clone()
        B[name] = layer.B.detach().float().cpu().clone()
        delta[name] = layer.delta_weight().detach().float().cpu()
        W0[name] = layer.base.weight.detach().float().cpu().clone()
    first = next(iter(lora_layers(model).values()))
    return TrainedAdapter(task=task.name, r=r, alpha=first.alpha, seed=seed, targets=tuple(
        [targets] if isinstance(targets, str) else targets), lr=lr, steps=steps, accuracy=hist["accuracy"][-1],
        history=hist, A=A, B=B, delta=delta, W0=W0)


def similarity_grid(a1: TrainedAdapter, a2: TrainedAdapter, layer: str, max_i: int | None = None,
                    max_j: int | None = None) -> torch.Tensor:
    """φ(A1, A2, i, j) of Eq. 4 for i ≤ max_i, j ≤ max_j, from the right-singular vectors of the two A's."""
    return subspace_similarity_grid(a1.A[a1._layer(layer)], a2.A[a2._layer(layer)], max_i, max_j)




def random_control_grid(shape1, shape2, max_i: int | None = None, max_j: int | None = None,
                        seed: int = 0) -> torch.Tensor:
    """φ between two independent random Gaussian matrices of the given shapes (r×k): what 'no shared
    structure' looks like. On average φ(i, j) ≈ max(i, j) / k (see `random_phi_expected`)."""
    g = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    G1 = torch.randn(tuple(shape1), generator=g, dtype=torch.float64, device="cpu")
    G2 = torch.randn(tuple(shape2), generator=g, dtype=torch.float64, device="cpu")
    return subspace_similarity_grid(G1, G2, max_i, max_j)


def random_phi_expected(i: int, j: int, k: int) -> float:
    """E[φ] for two uniformly random subspaces of dimensions i and j in ℝ^k: (i·j/k) / min(i, j) = max(i, j)/k."""
    for name, v in (("i", i), ("j", j), ("k", k)):
        check_int(v, name, 1)
    if i > k or j > k:
        raise ValueError(f"i and j must be ≤ k = {k}, got i={i}, j={j}")
    return max(i, j) / k


def random_orthonormal(n: int, r: int, seed: int = 0) -> torch.Tensor:
    """n×r matrix with orthonormal columns spanning a random r-dimensional subspace (QR of a Gaussian)."""
    check_int(n, "n", 1)
    check_int(r, "r", 1)
    if r > n:
        raise ValueError(f"r must be ≤ n = {n}, got {r}")
    g = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    Q, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64, device="cpu"))
    return Q




def amplification_table(adapters, layer: str, seed: int = 0) -> list[dict]:
    """One `projection_norms` row per adapter (r taken from the adapter): the Table 7 analogue."""
    rows = []
    for a in adapters:
        name = a._layer(layer)
        row = projection_norms(a.W0[name], a.delta[name], a.r, seed)
        row["layer"] = name
        rows.append(row)
    return rows






def _grid(x):
    import numpy as np

    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)


def similarity_heatmaps(grids: dict, suptitle: str | None = None, width_per_panel: float = 3.6,
                        k: int | None = None):
    """One heatmap per {title: φ grid (i × j)} — rows i, columns j (paper Figures 3 and 4).

    Colour is φ on 0…1; with `k` (the dimension the subspaces live in) it is φ − max(i, j)/k instead, the overlap
    *beyond chance* (random subspaces give max(i, j)/k on average, which is far from 0 when k is small).
    """
    if not grids:
        raise ValueError("grids must contain at least one {title: grid}")
    if k is not None:
        check_int(k, "k", 1)
    n = len(grids)
    fig = figure(width=width_per_panel * n + 0.8, height=3.4, axes=False)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for ax, (title, g) in zip(axes, grids.items()):
        g = _grid(g)
        if k is not None:
            if max(g.shape) > k:
                raise ValueError(f"a grid of shape {g.shape} cannot come from subspaces of ℝ^{k}")
            g = g - np.maximum.outer(np.arange(1, g.shape[0] + 1), np.arange(1, g.shape[1] + 1)) / k
        im = ax.imshow(g, vmin=-1 if k else 0, vmax=1, cmap="RdBu_r" if k else "viridis", aspect="auto",
                       interpolation="nearest", extent=(0.5, g.shape[1] + 0.5, g.shape[0] + 0.5, 0.5))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("j")
        ax.set_ylabel("i")
    fig.colorbar(im, ax=list(axes), shrink=0.9, label=f"φ(i, j) − max(i, j)/{k}" if k else "φ(i, j)")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def similarity_diagonals(curves: dict, k: int | None = None, title: str = "φ(i, i): how much the top-i "
                         "directions agree"):
    """Lines of φ(i, i) per {label: 1-D values}; with k, the random expectation i/k as a dashed line."""
    import numpy as np

    fig = figure(width=6.0, height=3.4, axes=False)
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

    fig = figure(width=6.0, height=3.4, axes=False)
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

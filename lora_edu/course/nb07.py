"""Notebook 07 (what LoRA learns, §7): subspace similarity across ranks and seeds, ΔW against W, their figures."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np
import torch

from ..inject import lora_layers
from ..lowrank import amplification_factor, projection_norm, subspace_similarity_grid
from ..model import ToyConfig
from ..tasks import get_task
from ..train import evaluate
from .common import LORA_RECIPE, ZERO_TOL, check_int, figure, train_lora

ATTENTION_MATRICES = ("q", "k", "v", "o")
N_LAYER = ToyConfig().n_layer  # the shipped toy's blocks


# Paper Table 7 (GPT-3 175B, layer 48 of 96): ‖UᵀW_qVᵀ‖_F for U, V the top-r singular directions of
# ΔW_q, of W_q itself, or of a random matrix; and ‖ΔW_q‖_F. ‖W_q‖_F = 61.95. (Hu et al. 2021, §7.3)
PAPER_TABLE7 = {
    4: {"delta_dirs": 0.32, "W_dirs": 21.67, "random_dirs": 0.02, "delta_norm": 6.91},
    64: {"delta_dirs": 1.90, "W_dirs": 37.71, "random_dirs": 0.33, "delta_norm": 3.57},
}
PAPER_WQ_NORM = 61.95
PAPER_D_MODEL = 12288
PAPER_PHI = 0.5  # §7.2, Figure 3: the top directions of A_{r=8} and A_{r=64} share φ > 0.5


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
    weight_decay: float
    accuracy: float  # token accuracy at the end of training (train()'s history)
    exact: float  # whole-answer accuracy: every answer digit right
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


def layer_name(block: int = 1, matrix: str = "q", n_layer: int = N_LAYER) -> str:
    """'blocks.{block}.attn.{matrix}_proj', checked: layer_name(1, 'v') → 'blocks.1.attn.v_proj'."""
    if isinstance(block, bool) or not isinstance(block, int):
        raise TypeError(f"block must be an int, got {type(block).__name__}")
    if not 0 <= block < n_layer:
        raise ValueError(f"block must be in [0, {n_layer - 1}], got {block}")
    m = matrix[:-5] if isinstance(matrix, str) and matrix.endswith("_proj") else matrix
    if m not in ATTENTION_MATRICES:
        raise ValueError(f"matrix must be one of {ATTENTION_MATRICES}, got {matrix!r}")
    return f"blocks.{block}.attn.{m}_proj"


def short(layer: str) -> str:
    """'blocks.1.attn.v_proj' → 'b1.v' (table labels)."""
    parts = layer.split(".")
    return f"b{parts[1]}.{parts[-1].removesuffix('_proj')}" if len(parts) == 4 else layer


def train_adapter(task="plus3", r: int = 8, seed: int = 0, targets=("q_proj", "v_proj"),
                  alpha: float | None = LORA_RECIPE["alpha"], lr: float = LORA_RECIPE["lr"],
                  steps: int = LORA_RECIPE["steps"], batch_size: int = LORA_RECIPE["batch_size"],
                  weight_decay: float | None = None, device=None, progress: bool = False,
                  threads: int | None = 1, eval_examples: int = 256) -> TrainedAdapter:
    """Fine-tune a fresh copy of the pretrained toy model with the course's LoRA recipe; keep it as data.

    `seed` fixes both the random init of A and the order of the training data, so two seeds give two
    independent runs (the paper's Figure 4). α stays 8 while r changes, as in the paper; alpha=None means α = r.
    weight_decay=None is the recipe's 1.0 (`common.train_lora`). On the CPU the run uses `threads` threads.
    """
    task = get_task(task)
    check_int(r, "r", 1)
    check_int(seed, "seed", 0)
    check_int(steps, "steps", 1)
    check_int(eval_examples, "eval_examples", 1)
    model, hist = train_lora(task, targets=targets, r=r, alpha=alpha, lr=lr, steps=steps, seed=seed, device=device,
                             threads=threads, batch_size=batch_size, weight_decay=weight_decay, progress=progress,
                             eval_examples=eval_examples)
    exact = evaluate(model, task, eval_examples, metric="sequence")
    A, B, delta, W0 = {}, {}, {}, {}
    for name, layer in lora_layers(model).items():
        A[name] = layer.A.detach().float().cpu().clone()
        B[name] = layer.B.detach().float().cpu().clone()
        delta[name] = layer.delta_weight().detach().float().cpu()
        W0[name] = layer.base.weight.detach().float().cpu().clone()
    first = next(iter(lora_layers(model).values()))
    wd = LORA_RECIPE["weight_decay"] if weight_decay is None else float(weight_decay)
    return TrainedAdapter(task=task.name, r=r, alpha=first.alpha, seed=seed, targets=tuple(
        [targets] if isinstance(targets, str) else targets), lr=lr, steps=steps, weight_decay=wd,
        accuracy=hist["accuracy"][-1], exact=exact, history=hist, A=A, B=B, delta=delta, W0=W0)


def train_runs(task, ranks, seeds, steps: int = LORA_RECIPE["steps"], weight_decay: float | None = None,
               device=None, verbose: bool = True, **kw) -> dict[tuple[int, int], TrainedAdapter]:
    """One `train_adapter` per (r, seed), as {(r, seed): adapter}; prints one line per run when verbose."""
    ranks, seeds = tuple(ranks), tuple(seeds)
    if not ranks or not seeds:
        raise ValueError("ranks and seeds must not be empty")
    for r in ranks:
        check_int(r, "ranks", 1)
    for s in seeds:
        check_int(s, "seeds", 0)
    runs = {}
    for r in ranks:
        for s in seeds:
            a = runs[r, s] = train_adapter(task, r=r, seed=s, steps=steps, weight_decay=weight_decay, device=device,
                                           **kw)
            if verbose:
                print(f"r = {r:2d}, seed {s}, weight decay {a.weight_decay:g}: whole-answer accuracy {a.exact:.3f} "
                      f"after {steps} steps ({a.history['seconds']:.1f} s)")
    return runs


def similarity_grid(a1: TrainedAdapter, a2: TrainedAdapter, layer: str, max_i: int | None = None,
                    max_j: int | None = None) -> torch.Tensor:
    """φ(A1, A2, i, j) of Eq. 4 for i ≤ max_i, j ≤ max_j, from the right-singular vectors of the two A's."""
    return subspace_similarity_grid(a1.A[a1._layer(layer)], a2.A[a2._layer(layer)], max_i, max_j)


def seed_pairs(seeds) -> list[tuple[int, int]]:
    """Every (s, t) with s ≠ t: an r = 8 run of seed s against an r = 64 run of another seed t.

    Same-seed pairs are left out: with one seed, A_{r=8} starts as the first rows of A_{r=64}'s random init in
    block 0, an overlap the runs did not learn."""
    seeds = tuple(seeds)
    pairs = [(s, t) for s in seeds for t in seeds if s != t]
    if not pairs:
        raise ValueError(f"seeds must hold at least two different seeds, got {seeds!r}")
    return pairs


def _check_runs(runs, ranks, seeds):
    missing = [(r, s) for r in ranks for s in seeds if (r, s) not in runs]
    if missing:
        raise ValueError(f"runs has no adapter for (r, seed) {missing}; it holds {sorted(runs)}")


def top_phi(runs: dict, seeds, r_small: int = 8, r_large: int = 64, i: int = 1, j: int = 1) -> dict[str, list]:
    """{layer: [φ(A_{r_small} seed s, A_{r_large} seed t, i, j) for every seed pair s ≠ t]} over every layer."""
    pairs = seed_pairs(seeds)
    _check_runs(runs, (r_small, r_large), seeds)
    check_int(i, "i", 1)
    check_int(j, "j", 1)
    layers = runs[r_small, pairs[0][0]].layers
    return {L: [float(similarity_grid(runs[r_small, s], runs[r_large, t], L, i, j)[i - 1, j - 1]) for s, t in pairs]
            for L in layers}


def mean_grid(runs: dict, layer: str, seeds, r_small: int = 8, r_large: int = 64, max_i: int | None = None,
              max_j: int | None = None) -> torch.Tensor:
    """φ(A_{r_small}, A_{r_large}, i, j) averaged over every seed pair s ≠ t (Figure 3 without one pair's luck)."""
    pairs = seed_pairs(seeds)
    _check_runs(runs, (r_small, r_large), seeds)
    return torch.stack([similarity_grid(runs[r_small, s], runs[r_large, t], layer, max_i, max_j)
                        for s, t in pairs]).mean(0)


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


def top1_energy(M) -> float:
    """σ₁² / Σσᵢ²: the share of ‖M‖_F² in its top singular direction (1.0 for a rank-1 matrix)."""
    s = torch.linalg.svdvals(torch.as_tensor(M).double())
    tot = float((s ** 2).sum())
    return float(s[0] ** 2) / tot if tot > 0 else float("nan")


def table7_row(W, delta_W, r: int, draws: int = 16) -> dict:
    """The Table 7 numbers for one matrix, ‖UᵀWVᵀ‖_F with U (d×r), V (r×k) from

    delta_dirs   the top-r singular vectors of ΔW,
    W_dirs       W's own top-r (the largest value any r directions can give: √(σ₁² + … + σ_r²) of W),
    random_dirs  random orthonormal U, V — the mean over `draws` draws (the paper's random matrix);
    and W_norm, delta_norm, rel = ‖ΔW‖_F/‖W‖_F, vs_random = delta_dirs/random_dirs (how much more of W lives in
    ΔW's directions than in random ones: §7.3's first conclusion), amplification = ‖ΔW‖_F / delta_dirs, top1.
    """
    W = torch.as_tensor(W).double().cpu()
    dW = torch.as_tensor(delta_W).double().cpu()
    if W.ndim != 2 or W.shape != dW.shape:
        raise ValueError(f"W and delta_W must be matrices of one shape, got {tuple(W.shape)} and {tuple(dW.shape)}")
    check_int(r, "r", 1)
    check_int(draws, "draws", 1)
    if r > min(W.shape):
        raise ValueError(f"r must be ≤ min(d, k) = {min(W.shape)}, got {r}")
    out = {"r": r}
    for key, M in (("delta_dirs", dW), ("W_dirs", W)):
        U, _, Vh = torch.linalg.svd(M, full_matrices=False)
        out[key] = projection_norm(W, U[:, :r], Vh[:r])
    d, k = W.shape
    out["random_dirs"] = statistics.fmean(projection_norm(W, random_orthonormal(d, r, 2 * s),
                                                          random_orthonormal(k, r, 2 * s + 1).T) for s in range(draws))
    out["W_norm"] = float(torch.linalg.matrix_norm(W))
    out["delta_norm"] = float(torch.linalg.matrix_norm(dW))
    out["rel"] = out["delta_norm"] / out["W_norm"]
    out["vs_random"] = out["delta_dirs"] / out["random_dirs"]
    out["amplification"] = amplification_factor(W, dW, r)  # = delta_norm / delta_dirs
    out["top1"] = top1_energy(dW)
    return out


def amplification_table(adapters, layers=None, r: int | None = None, draws: int = 16) -> list[dict]:
    """One `table7_row` per (adapter, layer) — the Table 7 analogue; r defaults to each adapter's rank."""
    adapters = list(adapters)
    if not adapters:
        raise ValueError("adapters must not be empty")
    rows = []
    for a in adapters:
        for name in (a.layers if layers is None else [a._layer(L) for L in ([layers] if isinstance(layers, str)
                                                                            else layers)]):
            row = table7_row(a.W0[name], a.delta[name], a.r if r is None else r, draws)
            row.update(layer=name, seed=a.seed, task=a.task)
            rows.append(row)
    return rows


def paper_table7_row(r: int = 4) -> dict:
    """Table 7's row for r (4 or 64) with the same derived columns as `table7_row`."""
    if r not in PAPER_TABLE7:
        raise ValueError(f"the paper's Table 7 has rows r = {sorted(PAPER_TABLE7)}, got {r!r}")
    p = dict(PAPER_TABLE7[r], r=r, W_norm=PAPER_WQ_NORM)
    p.update(rel=p["delta_norm"] / PAPER_WQ_NORM, vs_random=p["delta_dirs"] / p["random_dirs"],
             amplification=p["delta_norm"] / p["delta_dirs"])
    return p


def input_alignment(adapter: TrainedAdapter, model, layer: str | None = None, position: int = 1) -> dict:
    """How well ΔW's top input direction (its first right-singular vector) matches what block 0's attention reads
    at `position` (1: the op word) for each op word: |cos(v₁, LayerNorm(word + position embedding))|.

    A large value for the task's own word, and smaller ones for the other words, says ΔW reads that word."""
    task = get_task(adapter.task)
    from ..tasks import OPS

    layer = adapter._layer(layer or layer_name(0, "v"))
    if not layer.startswith("blocks.0."):
        raise ValueError(f"layer must be in block 0 (the only block that reads the embeddings), got {layer!r}")
    _, _, Vh = torch.linalg.svd(adapter.delta[layer].double(), full_matrices=False)
    v1 = Vh[0]
    with torch.no_grad():
        emb = model.tok_emb.weight.detach().cpu().double() + model.pos_emb.weight[position].detach().cpu().double()
        ln = model.blocks[0].ln1
        x = torch.nn.functional.layer_norm(emb, emb.shape[-1:], ln.weight.detach().cpu().double(),
                                           ln.bias.detach().cpu().double(), ln.eps)
    out = {}
    for word, tok in OPS.items():
        out[word] = abs(float(x[tok] @ v1 / x[tok].norm()))
    out["task_word"] = task.op
    return out


# --------------------------------------------------------------------------------------------- figures
def _grid(x):
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


def phi_strip(groups: dict, chance: float | None = None, paper: float | None = PAPER_PHI,
              title: str = "φ(A_r=8, A_r=64, 1, 1) per layer, one dot per seed pair"):
    """Dots of φ per layer for each {label: {layer: [values]}} (e.g. with and without weight decay), the mean as a
    bar, the chance level and the paper's 0.5 as lines."""
    if not groups:
        raise ValueError("groups must contain at least one {label: {layer: values}}")
    layers = list(next(iter(groups.values())))
    fig = figure(width=max(6.0, 1.0 * len(layers) + 2), height=3.4, axes=False)
    ax = fig.subplots()
    n = len(groups)
    width = 0.8 / n
    colors = ["#c44e52", "#4c72b0", "#55a868", "#8172b3"]
    for g, (label, by_layer) in enumerate(groups.items()):
        for x, L in enumerate(layers):
            v = _grid(by_layer[L]).ravel()
            pos = x - 0.4 + width * (g + 0.5)
            ax.bar(pos, v.mean(), width * 0.9, color=colors[g % 4], alpha=0.35, label=label if x == 0 else None)
            ax.plot(np.full(v.size, pos), v, "o", ms=3, color=colors[g % 4])
    if chance is not None:
        ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance {chance:.3f}")
    if paper is not None:
        ax.axhline(paper, color="0.4", ls=":", lw=1, label=f"paper's threshold {paper}")
    ax.set_xticks(range(len(layers)), [short(L) for L in layers])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("φ(1, 1)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def similarity_diagonals(curves: dict, k: int | None = None, title: str = "φ(i, i): how much the top-i "
                         "directions agree"):
    """Lines of φ(i, i) per {label: 1-D values}; with k, the random expectation i/k as a dashed line."""
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


def mean(values) -> float:
    v = [float(x) for x in values]
    if not v:
        raise ValueError("values must not be empty")
    return math.fsum(v) / len(v)

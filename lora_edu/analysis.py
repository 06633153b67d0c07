"""§7 of the paper on the toy transformer: what the learned update ΔW = (α/r)·B·A looks like.

Pure computation (no plotting): train adapters at a given rank / seed / targets and keep their A, B
and ΔW per layer; subspace-similarity heatmaps (Eq. 4) between two adapters, with random Gaussian
matrices as the control; and the Table 7 projections ‖UᵀWVᵀ‖_F behind the amplification factor.
The figures for these numbers live in `lora_edu.plots_analysis`.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .inject import add_lora, lora_layers
from .lowrank import _as_matrix, projection_norm, singular_values, subspace_similarity_grid
from .pretrained import load_pretrained
from .runtime import get_device, seed_everything
from .tasks import get_task
from .train import train

__all__ = [
    "TrainedAdapter",
    "train_adapter",
    "layer_name",
    "similarity_grid",
    "random_gaussian_like",
    "random_control_grid",
    "random_phi_expected",
    "random_orthonormal",
    "projection_norms",
    "amplification_table",
    "effective_rank",
    "PAPER_TABLE7",
    "PAPER_WQ_NORM",
    "ATTENTION_MATRICES",
    "cpu_threads",
]

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


@contextmanager
def cpu_threads(n: int | None, device):
    """Run the block with `n` torch intra-op threads when `device` is the CPU (None: leave torch's setting).

    The toy model's matrices are 64×64: a second thread buys little, and on a shared or oversubscribed CPU two
    OpenMP threads spin-wait on each other (measured here: one default lab run 5 s with 1 thread, 30–60 s with 2).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive int or None, got {n!r}")
    if n is None or torch.device(device).type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


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


def _check_int(v, name: str, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be ≥ {lo}, got {v}")
    return v


def train_adapter(task="increment", r: int = 8, seed: int = 0, targets=("q_proj", "v_proj"),
                  alpha: float | None = None, lr: float = 1e-2, steps: int = 300, batch_size: int = 64,
                  device=None, progress: bool = False, threads: int | None = 1) -> TrainedAdapter:
    """Fine-tune a fresh copy of the pretrained toy model with LoRA and keep the result as a TrainedAdapter.

    `seed` fixes both the random init of A and the order of the training data, so two seeds give two
    independent runs (the paper's Figure 4). alpha=None means α = r (scaling 1). On the CPU the run uses
    `threads` intra-op threads (see `cpu_threads`; None keeps torch's setting).
    """
    task = get_task(task)
    _check_int(r, "r", 1)
    _check_int(seed, "seed", 0)
    _check_int(steps, "steps", 1)
    seed_everything(seed)
    model = load_pretrained(get_device(device))
    add_lora(model, targets, r=r, alpha=alpha)  # validates targets, r, alpha before touching the model
    with cpu_threads(threads, model.lm_head.weight.device):
        hist = train(model, task, steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress)
    A, B, delta, W0 = {}, {}, {}, {}
    for name, layer in lora_layers(model).items():
        A[name] = layer.A.detach().float().cpu().clone()
        B[name] = layer.B.detach().float().cpu().clone()
        delta[name] = layer._delta_fp32().cpu()
        W0[name] = layer.base.weight.detach().float().cpu().clone()
    first = next(iter(lora_layers(model).values()))
    return TrainedAdapter(task=task.name, r=r, alpha=first.alpha, seed=seed, targets=tuple(
        [targets] if isinstance(targets, str) else targets), lr=lr, steps=steps, accuracy=hist["accuracy"][-1],
        history=hist, A=A, B=B, delta=delta, W0=W0)


def similarity_grid(a1: TrainedAdapter, a2: TrainedAdapter, layer: str, max_i: int | None = None,
                    max_j: int | None = None) -> torch.Tensor:
    """φ(A1, A2, i, j) of Eq. 4 for i ≤ max_i, j ≤ max_j, from the right-singular vectors of the two A's."""
    return subspace_similarity_grid(a1.A[a1._layer(layer)], a2.A[a2._layer(layer)], max_i, max_j)


def random_gaussian_like(M, seed: int = 0) -> torch.Tensor:
    """A matrix of the same shape with i.i.d. N(0, 1) entries (the paper's control in Figure 4)."""
    M = _as_matrix(M, "M")
    g = torch.Generator().manual_seed(_check_int(seed, "seed", 0))
    return torch.randn(tuple(M.shape), generator=g, dtype=torch.float64)


def random_control_grid(shape1, shape2, max_i: int | None = None, max_j: int | None = None,
                        seed: int = 0) -> torch.Tensor:
    """φ between two independent random Gaussian matrices of the given shapes (r×k): what 'no shared
    structure' looks like. On average φ(i, j) ≈ max(i, j) / k (see `random_phi_expected`)."""
    g = torch.Generator().manual_seed(_check_int(seed, "seed", 0))
    G1 = torch.randn(tuple(shape1), generator=g, dtype=torch.float64)
    G2 = torch.randn(tuple(shape2), generator=g, dtype=torch.float64)
    return subspace_similarity_grid(G1, G2, max_i, max_j)


def random_phi_expected(i: int, j: int, k: int) -> float:
    """E[φ] for two uniformly random subspaces of dimensions i and j in ℝ^k: (i·j/k) / min(i, j) = max(i, j)/k."""
    for name, v in (("i", i), ("j", j), ("k", k)):
        _check_int(v, name, 1)
    if i > k or j > k:
        raise ValueError(f"i and j must be ≤ k = {k}, got i={i}, j={j}")
    return max(i, j) / k


def random_orthonormal(n: int, r: int, seed: int = 0) -> torch.Tensor:
    """n×r matrix with orthonormal columns spanning a random r-dimensional subspace (QR of a Gaussian)."""
    _check_int(n, "n", 1)
    _check_int(r, "r", 1)
    if r > n:
        raise ValueError(f"r must be ≤ n = {n}, got {r}")
    g = torch.Generator().manual_seed(_check_int(seed, "seed", 0))
    Q, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=torch.float64))
    return Q


def projection_norms(W, delta_W, r: int, seed: int = 0) -> dict:
    """The Table 7 numbers for one matrix: ‖UᵀWVᵀ‖_F with U (d×r), V (r×k) taken from the top-r singular
    vectors of ΔW, of W itself, or of a random Gaussian matrix; plus ‖W‖_F, ‖ΔW‖_F and the amplification
    factor ‖ΔW‖_F / ‖UᵀWVᵀ‖_F (U, V from ΔW), as in §7.3.
    """
    W = _as_matrix(W).to(torch.float64).cpu()
    delta_W = _as_matrix(delta_W, "delta_W").to(torch.float64).cpu()
    if W.shape != delta_W.shape:
        raise ValueError(f"W and delta_W must have the same shape, got {tuple(W.shape)} and {tuple(delta_W.shape)}")
    _check_int(r, "r", 1)
    if r > min(W.shape):
        raise ValueError(f"r must be ≤ min(d, k) = {min(W.shape)}, got {r}")
    out = {"r": r}
    sources = {"delta_dirs": delta_W, "W_dirs": W, "random_dirs": random_gaussian_like(W, seed)}
    for key, M in sources.items():
        U, _, Vh = torch.linalg.svd(M, full_matrices=False)
        out[key] = projection_norm(W, U[:, :r], Vh[:r])
    out["W_norm"] = float(torch.linalg.matrix_norm(W))
    out["delta_norm"] = float(torch.linalg.matrix_norm(delta_W))
    out["amplification"] = math.inf if out["delta_dirs"] == 0 else out["delta_norm"] / out["delta_dirs"]
    return out


def amplification_table(adapters, layer: str, seed: int = 0) -> list[dict]:
    """One `projection_norms` row per adapter (r taken from the adapter): the Table 7 analogue."""
    rows = []
    for a in adapters:
        name = a._layer(layer)
        row = projection_norms(a.W0[name], a.delta[name], a.r, seed)
        row["layer"] = name
        rows.append(row)
    return rows


def effective_rank(M, fraction: float = 0.9) -> int:
    """Smallest number of singular directions holding `fraction` of ‖M‖_F² (e.g. 90 % of the energy)."""
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    s2 = singular_values(_as_matrix(M, "M")) ** 2
    total = float(s2.sum())
    if total == 0:
        return 0
    cum = (s2.cumsum(0) / total).tolist()
    return next(i + 1 for i, c in enumerate(cum) if c >= fraction - 1e-12)

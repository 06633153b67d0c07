"""Pure low-rank linear algebra: SVD, Eckart–Young, and the paper's §7 measurements.

Everything here takes and returns torch tensors and knows nothing about LoRA layers,
so the notebooks can teach the mathematics before any neural network appears.
"""

from __future__ import annotations

import math

import torch

from .runtime import check_number

__all__ = [
    "low_rank_approx",
    "singular_values",
    "energy",
    "relative_error",
    "eckart_young_error",
    "numerical_rank",
    "lora_param_count",
    "compression_ratio",
    "subspace_similarity",
    "subspace_similarity_grid",
    "amplification_factor",
    "as_matrix",
    "effective_rank",
    "projection_norm",
]


def as_matrix(W, name: str = "W", vector: bool = False) -> torch.Tensor:
    """W as a finite floating 2-D tensor (or 1-D if `vector`), else a TypeError / ValueError naming `name`."""
    if not isinstance(W, torch.Tensor):
        try:
            W = torch.as_tensor(W)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"{name} must be a 2-D tensor or array, got {type(W).__name__}") from e
    if W.ndim != 2 and not (vector and W.ndim == 1):
        raise ValueError(f"{name} must be a 2-D matrix{' or 1-D' if vector else ''}, got shape {tuple(W.shape)}")
    if not W.is_floating_point():
        W = W.to(torch.float32)
    if not torch.isfinite(W).all():  # the SVD would fail with torch's _LinAlgError, naming nothing
        raise ValueError(f"{name} must be finite, but it holds NaN or inf")
    return W


def _check_rank(r, W: torch.Tensor, name: str = "r", allow_zero: bool = True) -> int:
    if isinstance(r, bool) or not isinstance(r, int):
        raise TypeError(f"{name} must be an int, got {type(r).__name__}")
    lo = 0 if allow_zero else 1
    if r < lo or r > min(W.shape):
        raise ValueError(f"{name} must be in [{lo}, {min(W.shape)}] for a {tuple(W.shape)} matrix, got {r}")
    return r


def _svd(W: torch.Tensor):
    """SVD in float64 on the CPU-or-same device: exact enough for teaching comparisons."""
    work = W.to(torch.float64) if W.device.type != "mps" else W.to(torch.float32)
    return torch.linalg.svd(work, full_matrices=False)


def singular_values(W) -> torch.Tensor:
    """Singular values σ1 ≥ σ2 ≥ … of W (float64 for accuracy)."""
    W = as_matrix(W)
    return torch.linalg.svdvals(W.to(torch.float64) if W.device.type != "mps" else W)


def low_rank_approx(W, r: int) -> torch.Tensor:
    """Best rank-r approximation of W (truncated SVD), optimal in Frobenius and spectral norm (Eckart–Young)."""
    W = as_matrix(W)
    r = _check_rank(r, W)
    U, S, Vh = _svd(W)
    return ((U[:, :r] * S[:r]) @ Vh[:r]).to(W.dtype)


def energy(W, r: int) -> float:
    """Fraction of ‖W‖_F² captured by the top r singular values: Σ_{i≤r} σᵢ² / Σ σᵢ²."""
    W = as_matrix(W)
    r = _check_rank(r, W)
    s2 = singular_values(W) ** 2
    total = s2.sum()
    return 1.0 if total == 0 else float(s2[:r].sum() / total)


def eckart_young_error(W, r: int) -> float:
    """‖W − W_r‖_F predicted by Eckart–Young: sqrt of the sum of the dropped σᵢ²."""
    W = as_matrix(W)
    r = _check_rank(r, W)
    return float(torch.sqrt((singular_values(W)[r:] ** 2).sum()))


def relative_error(W, r: int) -> float:
    """‖W − W_r‖_F / ‖W‖_F for the best rank-r approximation W_r."""
    W = as_matrix(W)
    norm = float(torch.linalg.matrix_norm(W.to(torch.float64)))
    return 0.0 if norm == 0 else eckart_young_error(W, r) / norm


def numerical_rank(W, tol: float | None = None) -> int:
    """Number of singular values above tol (default: max(d, k) · eps · σ1, as numpy's matrix_rank)."""
    W = as_matrix(W)
    tol = None if tol is None else check_number("tol", tol, lo=0)
    s = singular_values(W)
    if s.numel() == 0 or s[0] == 0:
        return 0
    if tol is None:
        tol = max(W.shape) * torch.finfo(W.dtype).eps * float(s[0])
    return int((s > tol).sum())


def effective_rank(W, fraction: float = 0.9) -> int:
    """Fewest singular directions holding `fraction` of ‖W‖_F² (W a matrix, or its singular values); 0 if W = 0."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    s = as_matrix(W, vector=True)
    s2 = (s if s.ndim == 1 else singular_values(s)).to(torch.float64) ** 2
    total = float(s2.sum())
    return 0 if total == 0 else int((s2.cumsum(0) / total < fraction - 1e-12).sum()) + 1


def lora_param_count(d: int, k: int, r: int) -> int:
    """Trainable numbers in B (d×r) and A (r×k): r·(d + k)."""
    for name, v in (("d", d), ("k", k), ("r", r)):
        check_number(name, v, lo=0, integer=True)  # ints beyond float range too: no OverflowError in the ratio
    return r * (d + k)


def compression_ratio(d: int, k: int, r: int) -> float:
    """d·k / (r·(d + k)): how many times fewer numbers a rank-r factorisation stores."""
    n = lora_param_count(d, k, r)
    if n == 0:
        raise ValueError("r must be ≥ 1 for a compression ratio")
    return d * k / n


def _top_right_singular(M: torch.Tensor, i: int) -> torch.Tensor:
    """Top-i right-singular vectors of M as the columns of a (k × i) matrix."""
    _, _, Vh = _svd(M)
    return Vh[:i].T


def subspace_similarity(A1, A2, i: int, j: int) -> float:
    """Paper Eq. 4: φ(A1, A2, i, j) = ‖U1^{i⊤} U2^{j}‖_F² / min(i, j), in [0, 1].

    For A of shape r×k we use the top right-singular vectors (the k-dimensional row space
    that A reads the input through), as in the paper's §7.2; Appendix G phrases the same
    quantity with left-singular vectors of Aᵀ. 1 means one subspace contains the other,
    0 means they are orthogonal.
    """
    A1 = as_matrix(A1, "A1")
    A2 = as_matrix(A2, "A2")
    if A1.shape[1] != A2.shape[1]:
        raise ValueError(
            f"A1 and A2 must read the same input dimension k, got {A1.shape[1]} and {A2.shape[1]}"
        )
    _check_rank(i, A1, "i", allow_zero=False)
    _check_rank(j, A2, "j", allow_zero=False)
    U1 = _top_right_singular(A1, i)
    U2 = _top_right_singular(A2.to(A1.device), j)
    return float(torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j))


def subspace_similarity_grid(A1, A2, max_i: int | None = None, max_j: int | None = None) -> torch.Tensor:
    """φ(A1, A2, i, j) for every i ≤ max_i, j ≤ max_j (one SVD each): the Figure 3/4 heatmaps."""
    A1 = as_matrix(A1, "A1")
    A2 = as_matrix(A2, "A2")
    max_i = min(A1.shape) if max_i is None else _check_rank(max_i, A1, "max_i", allow_zero=False)
    max_j = min(A2.shape) if max_j is None else _check_rank(max_j, A2, "max_j", allow_zero=False)
    if A1.shape[1] != A2.shape[1]:
        raise ValueError(
            f"A1 and A2 must read the same input dimension k, got {A1.shape[1]} and {A2.shape[1]}"
        )
    U1 = _top_right_singular(A1, max_i)
    U2 = _top_right_singular(A2.to(A1.device), max_j)
    M = (U1.T @ U2) ** 2  # M[a, b] = <u1_a, u2_b>²
    cum = M.cumsum(0).cumsum(1)
    ii = torch.arange(1, max_i + 1, dtype=cum.dtype, device=cum.device)[:, None]
    jj = torch.arange(1, max_j + 1, dtype=cum.dtype, device=cum.device)[None, :]
    return (cum / torch.minimum(ii, jj)).cpu()


def projection_norm(W, U: torch.Tensor, V: torch.Tensor) -> float:
    """‖Uᵀ W Vᵀ‖_F: how much of W lives in the r-dimensional subspaces spanned by U (d×r) and V (r×k)."""
    W, U, V = as_matrix(W), as_matrix(U, "U"), as_matrix(V, "V")
    if U.shape[0] != W.shape[0] or V.shape[1] != W.shape[1] or U.shape[1] != V.shape[0]:
        raise ValueError(f"U (d×r) and V (r×k) must fit W {tuple(W.shape)}, got U {tuple(U.shape)}, V {tuple(V.shape)}")
    return float(torch.linalg.matrix_norm(U.to(torch.float64).T @ W.to(torch.float64) @ V.to(torch.float64).T))


def amplification_factor(W, delta_W, r: int) -> float:
    """§7.3: ‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F with U, V the top-r left/right singular vectors of ΔW.

    Large values mean ΔW amplifies directions that W itself barely uses.
    """
    W = as_matrix(W)
    delta_W = as_matrix(delta_W, "delta_W")
    if W.shape != delta_W.shape:
        raise ValueError(f"W and delta_W must have the same shape, got {tuple(W.shape)} and {tuple(delta_W.shape)}")
    r = _check_rank(r, delta_W, allow_zero=False)
    U, _, Vh = _svd(delta_W)
    denom = projection_norm(W, U[:, :r], Vh[:r])
    num = float(torch.linalg.matrix_norm(delta_W.to(torch.float64)))
    return math.inf if denom == 0 else num / denom

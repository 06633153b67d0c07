"""Self-checks for notebook 07 (what LoRA learns, §7). Each prints what is right or what is wrong; never raises."""

from __future__ import annotations

import math

import torch

from .feedback import fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3"]


def _close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-6) -> bool:
    return math.isfinite(a) and abs(a - b) <= max(abs_, rel * abs(b))


def _phi_variants(A1, A2, i, j) -> dict:
    """Eq. 4 and the usual ways of getting it wrong (a variant whose shapes do not fit is left out)."""
    U1, _, Vh1 = torch.linalg.svd(A1, full_matrices=False)
    U2, _, Vh2 = torch.linalg.svd(A2, full_matrices=False)
    R1, R2 = Vh1[:i].T, Vh2[:j].T  # right-singular vectors as columns (k × i), (k × j)
    fro2 = float(torch.linalg.matrix_norm(R1.T @ R2) ** 2)
    out = {
        "right": fro2 / min(i, j),
        "not squared": math.sqrt(fro2) / min(i, j),
        "divided by max": fro2 / max(i, j),
        "not divided": fro2,
    }
    for name, (M1, M2) in {"columns of Vh": (Vh1[:, :i], Vh2[:, :j]), "left": (U1[:, :i], U2[:, :j])}.items():
        if M1.shape[0] == M2.shape[0] and M1.shape[1] == i and M2.shape[1] == j:
            out[name] = float(torch.linalg.matrix_norm(M1.T @ M2) ** 2) / min(i, j)
    return out


_HINTS = {
    "not squared": "you forgot to square the Frobenius norm: Eq. 4 is ‖U₁ᵀU₂‖_F² / min(i, j).",
    "divided by max": "divide by min(i, j), not max(i, j): φ = 1 must mean one subspace contains the other.",
    "not divided": "you forgot to divide by min(i, j); without it φ is not in [0, 1].",
    "columns of Vh": "torch.linalg.svd returns Vh = Vᵀ: the right-singular vectors are the ROWS of Vh, so take "
                     "Vh[:i].T, not Vh[:, :i].",
    "left": "you used left-singular vectors (U of the r×k matrix A, which live in ℝ^r); Eq. 4 compares the "
            "k-dimensional row spaces, i.e. the right-singular vectors (rows of Vh).",
}


def ex1(fn, seed: int = 0) -> bool:
    """A function my_phi(A1, A2, i, j) implementing Eq. 4 with right-singular vectors of A1 (r1×k) and A2 (r2×k)."""
    if fn is None:
        return not_answered("U1 = top-i right-singular vectors of A1 as columns (torch.linalg.svd(A1).Vh[:i].T); "
                            "φ = ‖U1ᵀ U2‖_F² / min(i, j).")
    if not callable(fn):
        return fail(f"pass your function itself (my_phi), not {type(fn).__name__}.")
    g = torch.Generator().manual_seed(seed)
    k = 12
    pairs = [(torch.randn(3, k, generator=g, dtype=torch.float64), torch.randn(k, k, generator=g, dtype=torch.float64),
              [(1, 1), (2, 5), (3, 12)]),
             (torch.randn(k, k, generator=g, dtype=torch.float64), torch.randn(k, k, generator=g, dtype=torch.float64),
              [(2, 2), (4, 7)])]
    wrong = None
    for A1, A2, ijs in pairs:
        for i, j in ijs:
            try:
                got = float(fn(A1.clone(), A2.clone(), i, j))
            except Exception as e:  # noqa: BLE001
                return fail(f"my_phi(A1, A2, {i}, {j}) with A1 {tuple(A1.shape)} and A2 {tuple(A2.shape)} raised "
                            f"{type(e).__name__}: {e}. Remember A is r×k: its right-singular vectors live in ℝ^k.")
            v = _phi_variants(A1, A2, i, j)
            if _close(got, v["right"]):
                continue
            wrong = next((name for name, val in v.items() if name != "right" and _close(got, val)), None)
            if wrong:
                return fail(_HINTS[wrong])
            return fail(f"for A1 {tuple(A1.shape)}, A2 {tuple(A2.shape)}, i={i}, j={j} you got {got:.4f}, expected "
                        f"{v['right']:.4f}. Check: U1 = Vh1[:i].T, U2 = Vh2[:j].T, φ = ‖U1ᵀU2‖_F² / min(i, j).")
    return ok("your φ matches Eq. 4 (and lora_edu's subspace_similarity) on every test case.")


def ex2(answer, i: int = 4, j: int = 16, k: int = 64) -> bool:
    """Predicted average φ(i, j) between two random Gaussian matrices' top directions in ℝ^k."""
    if answer is None:
        return not_answered("a random unit vector has, on average, a squared overlap of 1/k with any fixed unit "
                            "vector. Add that up over i·j pairs of directions, then divide by min(i, j).")
    try:
        a = float(answer)
    except Exception:  # noqa: BLE001
        return fail(f"give a single number, got {answer!r}.")
    want = max(i, j) / k
    if abs(a - want) <= 0.03:
        return ok(f"E[φ] = (i·j/k) / min(i, j) = max(i, j)/k = {want:.4g}: random subspaces overlap only by chance, "
                  "and that chance grows as the subspaces fill ℝ^k.")
    if abs(a - min(i, j) / k) <= 0.01:
        return fail(f"{a:.4g} = min(i, j)/k. The sum ‖U1ᵀU2‖_F² ≈ i·j/k is divided by min(i, j), "
                    "which leaves max(i, j)/k.")
    if abs(a - i * j / k) <= 0.05:
        return fail(f"{a:.4g} = i·j/k is the expected ‖U1ᵀU2‖_F²; Eq. 4 also divides by min(i, j).")
    if abs(a) < 1e-3:
        return fail("random subspaces are not orthogonal: in ℝ^64, every pair of random directions overlaps a "
                    "little (squared cosine 1/k on average).")
    return fail(f"{a:.4g} is off. Each of the i·j pairs of random unit vectors contributes about 1/k to ‖U1ᵀU2‖_F².")


def ex3(answer, W, delta_W, r: int = 4) -> bool:
    """The amplification factor ‖ΔW‖_F / ‖UᵀWVᵀ‖_F with U, V the top-r singular vectors of ΔW (§7.3)."""
    if answer is None:
        return not_answered("U, S, Vh = torch.linalg.svd(dW); take U[:, :r] and Vh[:r]; "
                            "factor = ‖dW‖_F / ‖U_rᵀ W Vh_rᵀ‖_F.")
    try:
        a = float(answer)
    except Exception:  # noqa: BLE001
        return fail(f"give a single number, got {answer!r}.")
    W = torch.as_tensor(W, dtype=torch.float64).cpu()
    dW = torch.as_tensor(delta_W, dtype=torch.float64).cpu()
    fro = torch.linalg.matrix_norm
    U, _, Vh = torch.linalg.svd(dW, full_matrices=False)
    Uw, _, Vhw = torch.linalg.svd(W, full_matrices=False)
    proj = float(fro(U[:, :r].T @ W @ Vh[:r].T))
    want = float(fro(dW)) / proj
    if _close(a, want, rel=1e-3):
        return ok(f"{want:.3g}: ΔW is {want:.3g}× larger than what W already does in ΔW's own directions — it "
                  "amplifies directions W barely uses (§7.3).")
    wrong = {
        "inverse": (1 / want, "you inverted the ratio: ‖ΔW‖_F goes on top."),
        "squared": (want ** 2, "use Frobenius norms, not squared norms."),
        "W dirs": (float(fro(dW)) / float(fro(Uw[:, :r].T @ W @ Vhw[:r].T)),
                   "you projected W onto W's own top directions; the factor uses ΔW's singular vectors."),
        "whole W": (float(fro(dW)) / float(fro(W)), "you divided by ‖W‖_F; divide by ‖U_rᵀ W V_rᵀ‖_F, the part of W "
                                                    "inside ΔW's top-r directions."),
        "Vh cols": (float(fro(dW)) / float(fro(U[:, :r].T @ W @ Vh[:, :r])),
                    "torch.linalg.svd returns Vh = Vᵀ: use Vh[:r] (rows), so the projection is U_rᵀ W Vh[:r].T."),
        "delta proj": (float(fro(dW)) / float(fro(U[:, :r].T @ dW @ Vh[:r].T)),
                       "you projected ΔW itself; project the pretrained W onto ΔW's directions."),
    }
    for val, msg in wrong.values():
        if _close(a, val, rel=1e-3):
            return fail(msg)
    return fail(f"{a:.4g} is not the factor (expected about {want:.3g}). Recipe: U, S, Vh = svd(ΔW); "
                f"‖ΔW‖_F / ‖U[:, :{r}]ᵀ · W · Vh[:{r}]ᵀ‖_F.")

"""Self-checks for notebook 07 (what LoRA learns, §7). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import functools
import math

import torch

from .feedback import Exercises, call, fail, judge_prediction, library_calls, not_answered, ok, read_number

__all__ = ["ex1", "ex2", "ex3", "hint"]

EX = Exercises("nb07", hints={
    1: ["A is r×k and reads the input x ∈ ℝ^k: the directions it reads are its right-singular vectors, which live "
        "in ℝ^k.",
        "torch.linalg.svd returns U, S, Vh with Vh = Vᵀ: the right-singular vectors are the *rows* of Vh. Stack the "
        "top i of them as the columns of a k×i matrix.",
        "Eq. (4): the squared Frobenius norm of U1ᵀU2, divided by min(i, j)."],
    2: ["Every row of M·A1 is a combination of the rows of A1.",
        "The row space of A — the subspace of ℝ^k it reads x through — is spanned by its right-singular vectors.",
        "φ(A1, A2, r, r) compares the whole r-dimensional row spaces. Are they the same subspace?"],
    3: ["The amplification factor is ‖ΔW‖_F divided by ‖Uᵀ W Vᵀ‖_F, the part of W that lies in ΔW's top-r "
        "directions.",
        "U: the top-r left-singular vectors of ΔW (columns of U, d×r); V: the top-r right-singular vectors as rows "
        "(Vh[:r], r×k).",
        "W here is the pretrained weight, not ΔW; the directions come from ΔW."],
})
hint = EX.hint


def _close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-7) -> bool:
    return math.isfinite(a) and abs(a - b) <= max(abs_, rel * abs(b))


def _phi_variants(A1, A2, i, j) -> dict:
    """Eq. 4 and the usual ways of getting it wrong (a variant whose shapes do not fit is left out)."""
    U1, _, Vh1 = torch.linalg.svd(A1, full_matrices=False)
    U2, _, Vh2 = torch.linalg.svd(A2, full_matrices=False)
    fro2 = float(torch.linalg.matrix_norm(Vh1[:i] @ Vh2[:j].T) ** 2)
    out = {"right": fro2 / min(i, j), "not squared": math.sqrt(fro2) / min(i, j),
           "divided by max": fro2 / max(i, j), "not divided": fro2}
    for name, (M1, M2) in {"columns of Vh": (Vh1[:, :i], Vh2[:, :j]), "left": (U1[:, :i], U2[:, :j])}.items():
        if M1.shape[0] == M2.shape[0] and M1.shape[1] == i and M2.shape[1] == j:
            out[name] = float(torch.linalg.matrix_norm(M1.T @ M2) ** 2) / min(i, j)
    return out


_HINTS1 = {
    "not squared": "Eq. 4 uses the *squared* Frobenius norm of U1ᵀU2.",
    "divided by max": "divide by min(i, j), not max(i, j): φ = 1 must mean that one subspace contains the other.",
    "not divided": "you left out the division by min(i, j); without it φ is not in [0, 1].",
    "columns of Vh": "torch.linalg.svd returns Vh = Vᵀ: the right-singular vectors are the ROWS of Vh, not its "
                     "columns.",
    "left": "you used left-singular vectors (U of the r×k matrix A, which live in ℝ^r); Eq. 4 compares the "
            "k-dimensional row spaces, i.e. the right-singular vectors.",
}


@EX.check(1)
def ex1(fn, seed: int = 0) -> bool:
    """A function my_phi(A1, A2, i, j) implementing Eq. 4 with right-singular vectors of A1 (r1×k) and A2 (r2×k)."""
    if fn is None:
        return not_answered("write my_phi in the cell above, then pass the function itself: checks.nb07.ex1(my_phi).")
    if not callable(fn):
        return fail(f"pass your function itself (my_phi, without brackets), not a {type(fn).__name__}.")
    used = library_calls(fn, {"subspace_similarity", "subspace_similarity_grid"})
    if used:
        return fail(f"your function uses le.{sorted(used)[0]}, which is Eq. (4) already; write it yourself with "
                    "torch.linalg.svd.")
    g = torch.Generator().manual_seed(seed)
    k = 12
    cases = [(torch.randn(k, k, generator=g, dtype=torch.float64), torch.randn(k, k, generator=g, dtype=torch.float64),
              [(2, 2), (4, 7)]),  # square first: a mix-up of U, V or Vh's rows and columns still runs there
             (torch.randn(3, k, generator=g, dtype=torch.float64), torch.randn(k, k, generator=g, dtype=torch.float64),
              [(1, 1), (2, 5), (3, 12)]),
             (torch.randn(5, k, generator=g, dtype=torch.float64), torch.randn(2, k, generator=g, dtype=torch.float64),
              [(4, 1), (5, 2)])]
    for A1, A2, ijs in cases:
        for i, j in ijs:
            out, problem = call(fn, A1, A2, i, j, name="my_phi")
            if problem:
                return fail(problem + f" (A1 is {tuple(A1.shape)}, A2 is {tuple(A2.shape)}). A is r×k: its "
                            "right-singular vectors live in ℝ^k.")
            got, problem = read_number(out)
            if problem:
                return fail(f"my_phi should return one number: {problem}")
            v = _phi_variants(A1, A2, i, j)
            if _close(got, v["right"]):
                continue
            wrong = next((name for name, val in v.items() if name != "right" and _close(got, val)), None)
            if wrong:
                return fail(_HINTS1[wrong])
            return fail(f"for A1 {tuple(A1.shape)}, A2 {tuple(A2.shape)}, i = {i}, j = {j} your φ is {got:.4f}, which "
                        "is not Eq. (4)'s value.")
    return ok("your φ follows Eq. (4) on matrices of three shapes, square and not.")


@functools.lru_cache(maxsize=1)
def _same_rowspace() -> tuple[float, float, float]:
    """φ(A, M·A, 4, 4), φ(A, M·A, 1, 1) and φ(A, A', 4, 4) for an independent A' (mean over 20 random pairs)."""
    from ...lowrank import subspace_similarity

    g = torch.Generator().manual_seed(7)
    full, top, indep = [], [], []
    for _ in range(20):
        A, M = torch.randn(4, 64, generator=g, dtype=torch.float64), torch.randn(4, 4, generator=g, dtype=torch.float64)
        full.append(subspace_similarity(A, M @ A, 4, 4))
        top.append(subspace_similarity(A, M @ A, 1, 1))
        indep.append(subspace_similarity(A, torch.randn(4, 64, generator=g, dtype=torch.float64), 4, 4))
    return tuple(sum(x) / len(x) for x in (full, top, indep))


REASONS2 = {
    "a": "",
    "b": "M is random, but M·A1 is not independent of A1 — compare the measurement with the chance level printed "
         "next to it.",
    "c": "φ(i, i) is 1 only when the two top-i subspaces coincide; for two independent matrices it is near the "
         "chance level (measured above).",
    "d": "M does change the individual singular vectors: φ(A1, M·A1, 1, 1), measured above, is not 1. What stays "
         "the same is something larger than one vector.",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict φ(A1, M·A1, 4, 4) for a random 4×64 A1 and a random invertible 4×4 M; then explain."""
    if prediction is None:
        return not_answered("write your prediction of φ(A1, M·A1, 4, 4) (a number between 0 and 1) into "
                            "`prediction` before anything is measured, and run the cell.")
    v, problem = read_number(prediction)
    if problem:
        return fail(problem)
    if not 0 <= v <= 1:
        return fail(f"{v:g} is outside [0, 1], where φ always lies.")
    first = EX.first_prediction(2, v)
    full, top, indep = _same_rowspace()
    good = abs(v - full) <= 0.01
    if abs(v - 4 / 64) <= 0.02:
        diag = "that is the chance level for two *independent* random subspaces; M·A1 is built from A1."
    elif v <= 0.01:
        diag = "0 would mean the two subspaces are orthogonal; M·A1 is built from A1."
    else:
        diag = "think about which vectors the rows of M·A1 are made of."
    return judge_prediction(v, first, f"φ(A1, M·A1, 4, 4) = {full:.4f}; φ(A1, M·A1, 1, 1) = {top:.3f}; two "
                            f"independent A's: φ = {indep:.3f} (chance 4/64 = {4 / 64:.3f}), means over 20 draws",
                            good, diag, why, REASONS2, "a",
                            "every row of M·A1 is a combination of the rows of A1 (and back, M being invertible), so "
                            "both read x through the same 4-dimensional subspace. The same ΔW = B·A = (B·M⁻¹)(M·A) "
                            "has many factorizations with different A's — which is why §7.2 compares subspaces, "
                            "not the entries of A.")


FORBIDDEN3 = {"amplification_factor", "projection_norm"}


def _amp_variants(W, dW, r) -> dict:
    fro = torch.linalg.matrix_norm
    U, _, Vh = torch.linalg.svd(dW, full_matrices=False)
    Uw, _, Vhw = torch.linalg.svd(W, full_matrices=False)
    want = float(fro(dW) / fro(U[:, :r].T @ W @ Vh[:r].T))
    out = {"right": want, "inverse": 1 / want, "squared": want ** 2,
           "W dirs": float(fro(dW) / fro(Uw[:, :r].T @ W @ Vhw[:r].T)), "whole W": float(fro(dW) / fro(W)),
           "delta proj": float(fro(dW) / fro(U[:, :r].T @ dW @ Vh[:r].T))}
    if Vh.shape[0] >= r and W.shape[1] == Vh.shape[0]:
        out["Vh cols"] = float(fro(dW) / fro(U[:, :r].T @ W @ Vh[:, :r]))
    return out


_MSG3 = {
    "inverse": "you inverted the ratio: ‖ΔW‖_F goes on top.",
    "squared": "use Frobenius norms, not squared norms.",
    "W dirs": "you projected W onto W's own top directions; the factor uses ΔW's singular vectors.",
    "whole W": "you divided by ‖W‖_F; the denominator is only the part of W inside ΔW's top-r directions.",
    "delta proj": "you projected ΔW itself; project the pretrained W onto ΔW's directions.",
    "Vh cols": "torch.linalg.svd returns Vh = Vᵀ: the right-singular vectors are the rows of Vh, not its columns.",
}


@EX.check(3)
def ex3(fn) -> bool:
    """A function amplification(W, dW, r) = ‖ΔW‖_F / ‖UᵀWVᵀ‖_F with U, V the top-r singular vectors of ΔW (§7.3)."""
    if fn is None:
        return not_answered("write amplification(W, dW, r) in the cell above, then pass the function itself: "
                            "checks.nb07.ex3(amplification).")
    if not callable(fn):
        return fail(f"pass your function itself (amplification, without brackets), not a {type(fn).__name__}.")
    used = library_calls(fn, FORBIDDEN3)
    if used:
        return fail(f"your function uses le.{sorted(used)[0]}; the exercise is to compute the factor yourself with "
                    "torch.linalg.svd.")
    g = torch.Generator().manual_seed(73)
    for d, k, r in ((10, 10, 2), (12, 7, 3), (6, 11, 1), (9, 9, 4)):
        W = torch.randn(d, k, generator=g, dtype=torch.float64)
        dW = torch.randn(d, r, generator=g, dtype=torch.float64) @ torch.randn(r, k, generator=g, dtype=torch.float64)
        out, problem = call(fn, W, dW, r, name="amplification")
        if problem:
            return fail(problem + f" (W and dW are {d}×{k}, r = {r}).")
        got, problem = read_number(out)
        if problem:
            return fail(f"amplification should return one number: {problem}")
        v = _amp_variants(W, dW, r)
        if _close(got, v["right"], rel=1e-5):
            continue
        wrong = next((n for n, x in v.items() if n != "right" and _close(got, x, rel=1e-5)), None)
        if wrong:
            return fail(_MSG3[wrong] + f" (seen with {d}×{k} matrices, r = {r})")
        return fail(f"for {d}×{k} matrices and r = {r} your function returns {got:.4g}, which is not §7.3's factor.")
    return ok("your factor matches §7.3 on square and non-square matrices and several r. Apply it to ΔW_v and "
              "compare with ΔW_q's row of the table.")

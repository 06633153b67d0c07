"""Self-checks for notebook 08 (LoRA myths and facts)."""

from __future__ import annotations

import torch

from ...lowrank import numerical_rank, singular_values
from .feedback import as_int, fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3", "ex4"]




def ex1(answer, n: int) -> bool:
    """How many cross terms Bᵢ·Aⱼ (i ≠ j) appear when the A's and the B's of n adapters are averaged separately?"""
    if answer is None:
        return not_answered("expand (B₁ + … + Bₙ)(A₁ + … + Aₙ) and count the products with i ≠ j")
    k = as_int(answer)
    if k is None:
        return fail(f"the answer should be a whole number, got {answer!r}")
    right = n * (n - 1)
    if k == right:
        return ok(f"(ΣBᵢ)(ΣAⱼ) has n² = {n * n} products: {n} wanted ones BᵢAᵢ and {right} cross terms BᵢAⱼ "
                  "that no adapter ever learned. They grow quadratically with n.")
    if k == right // 2:
        return fail("you counted unordered pairs {i, j}; but BᵢAⱼ and BⱼAᵢ are different matrices, so each pair "
                    "gives two cross terms.")
    if k == n * n:
        return fail(f"{n * n} counts every product, including the {n} diagonal terms BᵢAᵢ, which are the adapters' "
                    "own updates, not cross terms.")
    if k == n:
        return fail(f"{n} is the number of wanted terms BᵢAᵢ; count the products with i ≠ j.")
    return fail(f"{k} is not it. Hint: n² products in all, minus the n with i = j.")


def ex2(answer, pair1, pair2, scaling: float) -> bool:
    """ΔW of naively averaging two adapters (A₁, B₁) and (A₂, B₂): scaling · mean(B) · mean(A)."""
    if answer is None:
        return not_answered("average the B's, average the A's, then multiply (and scale)")
    if not isinstance(answer, torch.Tensor):
        return fail(f"give a tensor, got {type(answer).__name__}")
    (A1, B1), (A2, B2) = ((a.detach().cpu().double(), b.detach().cpu().double()) for a, b in (pair1, pair2))
    ans = answer.detach().cpu().double()
    right = scaling * ((B1 + B2) / 2) @ ((A1 + A2) / 2)
    if ans.shape != right.shape:
        return fail(f"your ΔW has shape {tuple(ans.shape)}; B is {tuple(B1.shape)} and A is {tuple(A1.shape)}, "
                    f"so B @ A is {tuple(right.shape)}")

    def close(x):
        return torch.allclose(ans, x, atol=1e-6, rtol=1e-4)

    if close(right):
        cross = scaling * (B1 @ A2 + B2 @ A1) / 4
        return ok(f"s·B̄·Ā = (s/4)(B₁A₁ + B₂A₂ + B₁A₂ + B₂A₁). The cross terms alone have norm "
                  f"{float(cross.norm()):.3g} next to {float(right.norm()):.3g} for the whole update.")
    if close(scaling * (B1 @ A1 + B2 @ A2) / 2):
        return fail("that is the mean of the two ΔW's (a scaled sum). Naive averaging averages the factors first: "
                    "B̄ = (B₁ + B₂)/2, Ā = (A₁ + A₂)/2, then ΔW = s·B̄·Ā.")
    if scaling != 1 and close(right / scaling):
        return fail(f"you left out the scaling s = α/r = {scaling:g}.")
    if close(scaling * (B1 + B2) @ (A1 + A2)):
        return fail("you summed the factors instead of averaging them: divide each sum by 2 (that is 4× too big).")
    return fail(f"max difference from s·mean(B)·mean(A) is {float((ans - right).abs().max()):.3g}.")


def ex3(answer, delta_sum, r: int, n: int, rank_tol: float = 1e-4) -> bool:
    """The numerical rank (σ > rank_tol·σ₁) of the exact sum of n rank-r adapters' ΔW in one layer."""
    if answer is None:
        return not_answered("le.numerical_rank(M, tol=1e-4 * σ₁), or count the singular values yourself")
    k = as_int(answer)
    if k is None:
        return fail(f"a rank is a whole number, got {answer!r}")
    M = torch.as_tensor(delta_sum).detach().cpu().double()
    right = numerical_rank(M, tol=rank_tol * float(singular_values(M)[0]))
    if k == right:
        return ok(f"rank {right}: {n} adapters of rank {r} can span at most {n * r} directions together — the exact "
                  "sum keeps every one of them, which a single rank-r adapter (or an SVD to rank r) cannot.")
    if k == r:
        return fail(f"{r} is one adapter's rank. Each adapter adds its own r directions; measure the sum's rank.")
    if k == min(M.shape):
        return fail(f"{k} is the full rank of a {tuple(M.shape)} matrix; a sum of {n} rank-{r} matrices has rank at "
                    f"most {n * r}.")
    return fail(f"{k} is not it: count the singular values of the sum above {rank_tol:g}·σ₁.")


def ex4(rows) -> bool:
    """switch_drift rows for a strategy of the learner's choice in bfloat16 with ≥ 100 switches: drift must be 0."""
    if rows is None:
        return not_answered("rows = myths.switch_drift(base, adapters, 'bfloat16', strategy=...)")
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return fail("pass the list of rows that myths.switch_drift returns")
    if any(r.get("dtype") != "bfloat16" for r in rows):
        return fail("run it in bfloat16 (dtype='bfloat16'): float32 hides the problem.")
    if max(r.get("switches", 0) for r in rows) < 100:
        return fail("run at least 100 switches (checkpoints=(1, 10, 100)); drift builds up slowly.")
    worst = max(r.get("max_abs", float("inf")) for r in rows)
    strategy = rows[0].get("strategy")
    if worst == 0:
        return ok(f"'{strategy}' gives W0 back bit for bit after {max(r['switches'] for r in rows)} switches: "
                  "nothing is ever subtracted in low precision.")
    if strategy == "subtract":
        return fail(f"'subtract' drifts (max |W − W0| = {worst:.3g}): subtracting ΔW after a rounded add does not "
                    "undo the rounding. Try a strategy that restores or never overwrites W0.")
    return fail(f"max |W − W0| = {worst:.3g} is not zero; pick a strategy that restores W0 exactly.")

"""Self-checks for notebook 03 (LoRA generalizes full fine-tuning). Print what is right or wrong; never raise."""

from __future__ import annotations

import math

import torch

from .feedback import as_int, as_number, fail, not_answered, ok, svals

__all__ = ["ex1", "ex2", "ex3"]








def ex1(answer, target) -> bool:
    """Smallest LoRA rank r that can represent `target` exactly: its rank."""
    if answer is None:
        return not_answered("B·A has rank at most r, so r must be at least rank(ΔW*). Count the nonzero σᵢ.")
    s = svals(target)
    tol = max(target.shape) * torch.finfo(torch.float32).eps * float(s[0])
    truth = int((s > tol).sum())
    v = as_int(answer)
    if v is None:
        return fail(f"the answer should be a whole number, got {answer!r}.")
    if v == truth:
        return ok(f"rank(ΔW*) = {truth}: at r = {truth} B·A can equal ΔW* exactly; below it, it cannot.")
    if v == min(target.shape):
        return fail(f"r = {v} = min(d, k) always suffices, but it is not the smallest; look at how many σᵢ are "
                    "nonzero.")
    if v > truth:
        return fail(f"r = {v} works but is not the smallest; {v - truth} of those directions would be unused.")
    return fail(f"with r = {v}, B·A has rank at most {v}, but ΔW* has {truth} nonzero singular values.")


def ex2(answer, target, r: int = 3) -> bool:
    """Predicted best relative squared error ‖ΔW − ΔW*‖²/‖ΔW*‖² of LoRA at rank r (Eckart–Young)."""
    if answer is None:
        return not_answered("(sum of the dropped σᵢ²) / (sum of all σᵢ²).")
    s2 = svals(target) ** 2
    truth = float(s2[r:].sum() / s2.sum())
    v = as_number(answer)
    if v is None:
        return fail(f"the answer should be one number, got {answer!r}.")
    close = lambda x: math.isclose(v, x, rel_tol=1e-3, abs_tol=1e-9)  # noqa: E731
    if close(truth):
        return ok(f"{truth:.4f}: no rank-{r} update can do better, and training LoRA gets there.")
    if close(1 - truth):
        return fail("that is the energy LoRA *captures*; the error is the part it drops: 1 − energy.")
    if close(math.sqrt(truth)):
        return fail("that is the relative error in the Frobenius norm itself; the question asks for its square.")
    s = svals(target)
    if close(float(s[r:].sum() / s.sum())):
        return fail("square the singular values first: energies are σᵢ², not σᵢ.")
    if close(float(s2[r - 1:].sum() / s2.sum())) or close(float(s2[r + 1:].sum() / s2.sum())):
        return fail(f"off by one: LoRA at r = {r} keeps σ₁…σ_{r}, i.e. s[:{r}]; the error is s[{r}:].")
    return fail(f"got {v:.6g}; use s = le.singular_values(target) and compute (s[{r}:]**2).sum() / (s**2).sum().")


def ex3(answer, d: int = 64, k: int = 64) -> bool:
    """Smallest r at which LoRA's r·(d + k) trainable numbers reach full fine-tuning's d·k."""
    if answer is None:
        return not_answered("solve r·(d + k) ≥ d·k for the smallest whole r.")
    truth = math.ceil(d * k / (d + k))
    v = as_int(answer)
    if v is None:
        return fail(f"the answer should be a whole number, got {answer!r}.")
    if v == truth:
        return ok(f"at r = {truth}, r·(d + k) = {truth * (d + k):,} ≥ d·k = {d * k:,}; beyond that LoRA stores "
                  "*more* than the full matrix, yet still cannot exceed rank min(d, k).")
    if v == min(d, k):
        return fail(f"r = {v} = min(d, k) is where LoRA reaches full *expressiveness*; the parameter count "
                    "catches up much earlier.")
    if v == truth - 1 or v == math.floor(d * k / (d + k)) and v != truth:
        return fail(f"at r = {v}, r·(d + k) = {v * (d + k):,} is still below d·k = {d * k:,}.")
    return fail(f"got {v}; compare r·(d + k) with d·k = {d * k:,}.")

"""Self-checks for notebook 01 (low-rank matrices). Each prints what is right or what is wrong; never raises."""

from __future__ import annotations

import math

from .feedback import as_number, fail, not_answered, ok, svals

__all__ = ["ex1", "ex2", "ex3"]






def ex1(answer, W, target: float = 0.9) -> bool:
    """Smallest r whose best rank-r approximation keeps at least `target` of W's energy Σσᵢ²."""
    if answer is None:
        return not_answered("accumulate σᵢ² from the largest down until the running sum reaches "
                            f"{target:.0%} of the total.")
    s2 = svals(W) ** 2
    frac = (s2.cumsum(0) / s2.sum()).tolist()
    truth = next(i + 1 for i, f in enumerate(frac) if f >= target - 1e-12)
    v = as_number(answer)
    if v is None or v != int(v):
        return fail(f"the answer should be a whole number r, got {answer!r}.")
    r = int(v)
    if r == truth:
        return ok(f"r = {r} keeps {frac[r - 1]:.1%} of the energy; r = {r - 1} would keep only "
                  f"{(frac[r - 2] if r > 1 else 0.0):.1%}.")
    s = svals(W)
    frac_plain = (s.cumsum(0) / s.sum()).tolist()
    plain = next(i + 1 for i, f in enumerate(frac_plain) if f >= target - 1e-12)
    if r == plain:
        return fail(f"r = {r} is where Σσᵢ (not squared) reaches {target:.0%}. Energy is the sum of "
                    "*squared* singular values: ‖W‖_F² = Σσᵢ².")
    if r == truth - 1:
        return fail(f"off by one: r = {r} keeps only {frac[r - 1]:.1%}. r counts how many σᵢ you keep, "
                    "starting at 1.")
    if 1 <= r <= len(frac):
        more_less = "more" if frac[r - 1] >= target else "less"
        return fail(f"r = {r} keeps {frac[r - 1]:.1%} of the energy ({more_less} than needed); find the "
                    f"*smallest* r that reaches {target:.0%}.")
    return fail(f"r must be between 1 and {len(frac)} for this matrix, got {r}.")


def ex2(answer, W, r: int = 8) -> bool:
    """‖W − W_r‖_F for the best rank-r approximation, predicted from the singular values alone."""
    if answer is None:
        return not_answered("Eckart–Young: the error is the square root of the sum of the *dropped* σᵢ².")
    s = svals(W)
    truth = float(s[r:].pow(2).sum().sqrt())
    v = as_number(answer)
    if v is None:
        return fail(f"the answer should be one number, got {answer!r}.")
    close = lambda x: math.isclose(v, x, rel_tol=1e-4, abs_tol=1e-8)  # noqa: E731
    if close(truth):
        return ok(f"‖W − W_{r}‖_F = {truth:.4f}, and no other rank-{r} matrix comes closer (Eckart–Young).")
    if close(truth**2):
        return fail("that is the *squared* error Σ_{i>r} σᵢ²; take its square root for ‖W − W_r‖_F.")
    if close(float(s[r:].sum())):
        return fail("you summed the dropped σᵢ themselves; the Frobenius error squares them first: "
                    "sqrt(Σ_{i>r} σᵢ²).")
    if close(float(s[r - 1:].pow(2).sum().sqrt())) or close(float(s[r + 1:].pow(2).sum().sqrt())):
        return fail(f"off by one: keep σ₁…σ_{r} (Python s[:{r}]) and drop the rest (s[{r}:]).")
    if close(float(s[r])):
        return fail(f"σ_{r + 1} = {float(s[r]):.4f} is the error in the *spectral* norm; the question asks "
                    "for the Frobenius norm.")
    return fail(f"got {v:.6g}; expected sqrt(Σ_{{i>{r}}} σᵢ²). Compute s = le.singular_values(W) and use s[{r}:].")


def ex3(answer, d: int = 12288, k: int = 12288, r: int = 4) -> bool:
    """Trainable numbers of a rank-r LoRA update of one d×k matrix: r·(d + k)."""
    if answer is None:
        return not_answered("B is d×r and A is r×k; count both.")
    v = as_number(answer)
    truth = r * (d + k)
    if v is None:
        return fail(f"the answer should be one whole number, got {answer!r}.")
    if v == truth:
        return ok(f"{truth:,} numbers instead of {d * k:,}: {d * k / truth:,.0f}× fewer.")
    if v == d * k:
        return fail(f"{d * k:,} = d·k is the full update ΔW; LoRA stores B (d×r) and A (r×k) instead.")
    if v in (r * d, r * k):
        return fail(f"{int(v):,} counts only one factor; B has d·r = {d * r:,} numbers and A has r·k = {r * k:,}.")
    if v == d * k / truth:
        return fail("that is the compression ratio; the question asks for the number of trainable numbers.")
    return fail(f"got {v:,.0f}; expected B's d·r plus A's r·k numbers.")

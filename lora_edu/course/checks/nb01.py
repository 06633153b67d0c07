"""Self-checks for notebook 01 (low-rank matrices). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import math

import torch

from .feedback import Exercises, call, fail, library_calls, not_answered, ok, read_number, svals

__all__ = ["ex1", "ex2", "ex3", "hint"]

EX = Exercises("nb01", hints={
    1: ["Energy is measured with squared singular values: ‖W‖_F² = Σ σᵢ².",
        "Keeping the top r pieces keeps the energy σ₁² + … + σ_r²; divide by the total to get a fraction.",
        "Accumulate the fractions from the largest σ down (torch.cumsum) and find the first r where the running "
        "fraction reaches 0.9. r counts pieces, starting at 1."],
    2: ["W − W_r is the sum of the rank-one pieces that truncation drops: σᵢ uᵢ vᵢᵀ for i > r.",
        "Those pieces are orthogonal to each other, so their squared Frobenius norms add up; one piece has norm σᵢ.",
        "The first r entries of s are kept by W_r; the error is made of all the others, combined as in the last "
        "hint."],
    3: ["W_up maps k = 12288 inputs to d = 49152 outputs: W0 is d×k and not square.",
        "B is d×r and A is r×k.",
        "Add B's d·r entries to A's r·k entries."],
})
hint = EX.hint


def _smallest(fracs, target) -> int:
    return next(i + 1 for i, f in enumerate(fracs) if f >= target - 1e-12)


@EX.check(1)
def ex1(answer, W, target: float = 0.9) -> bool:
    """Smallest r whose best rank-r approximation keeps at least `target` of W's energy Σσᵢ²."""
    if answer is None:
        return not_answered(f"give the smallest rank r (a whole number) that keeps at least {target:.0%} of the "
                            "image's energy.")
    r, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    s = svals(W)
    frac = (s.pow(2).cumsum(0) / s.pow(2).sum()).tolist()
    truth = _smallest(frac, target)
    if r == truth:
        return ok(f"r = {r} keeps {frac[r - 1]:.1%} of the energy with {r} of {len(frac)} singular values, "
                  f"and r = {r - 1} would keep less than {target:.0%}.")
    if not 1 <= r <= len(frac):
        return fail(f"r counts kept singular values: between 1 and {len(frac)} for this {tuple(W.shape)} matrix.")
    if r == _smallest((s.cumsum(0) / s.sum()).tolist(), target):
        return fail(f"that is where the plain σᵢ reach {target:.0%}. Energy adds up *squared* singular values.")
    if r == truth - 1:
        return fail("off by one: that r falls just short. r counts how many σᵢ you keep, starting at 1 — check "
                    "how your index maps to a count.")
    if frac[r - 1] >= target:
        return fail(f"r = {r} keeps enough energy, but it is not the *smallest* r that does.")
    return fail(f"r = {r} keeps less than {target:.0%} of the energy.")


FORBIDDEN2 = {"eckart_young_error", "low_rank_approx", "relative_error", "energy"}


def _spectra():
    """Fresh singular-value lists (largest first) and ranks the learner has not seen."""
    g = torch.Generator().manual_seed(2021)
    out = []
    for n, rs in ((5, (0, 2, 4)), (12, (3, 7, 12)), (30, (1, 8, 29))):
        s = torch.rand(n, generator=g, dtype=torch.float64).mul(3).add(0.1).sort(descending=True).values
        out += [(s, r) for r in rs]
    return out


def _variants2(s, r):
    sq = s.pow(2)
    v = {"squared": float(sq[r:].sum()), "unsquared": float(s[r:].sum()),
         "kept": float(sq[:r].sum().sqrt()), "relative": float(sq[r:].sum().sqrt() / sq.sum().sqrt())}
    if r < len(s):
        v["spectral"] = float(s[r])
        v["one more"] = float(sq[r + 1:].sum().sqrt())
    if r > 0:
        v["one less"] = float(sq[r - 1:].sum().sqrt())
    return v


_MSG2 = {
    "squared": "that is the *squared* error; ‖W − W_r‖_F itself is its square root.",
    "unsquared": "you added the dropped σᵢ themselves; Frobenius norms add up in squares.",
    "kept": "that measures the part truncation *keeps*; the error is made of the part it drops.",
    "relative": "that is the error relative to ‖W‖_F; the exercise asks for ‖W − W_r‖_F itself.",
    "spectral": "that is the error in the spectral norm (the largest dropped σ); the question asks for the Frobenius "
                "norm, which counts every dropped piece.",
    "one more": "off by one: you dropped one piece too few — W_r keeps σ₁ … σ_r, so the first dropped one is "
                "σ_{r+1}, which has index r (Python counts from 0).",
    "one less": "off by one: you dropped one piece too many — W_r keeps σ₁ … σ_r.",
}


@EX.check(2)
def ex2(fn) -> bool:
    """A function predict_error(s, r) = ‖W − W_r‖_F from W's singular values s alone (Eckart–Young)."""
    if fn is None:
        return not_answered("write predict_error(s, r) in the cell, then pass the function itself: "
                            "checks.nb01.ex2(predict_error).")
    if not callable(fn):
        return fail(f"pass your function itself (predict_error, without brackets), not a {type(fn).__name__}.")
    used = library_calls(fn, FORBIDDEN2)
    if used:
        return fail(f"your function uses le.{sorted(used)[0]}, which already does what the exercise asks you to "
                    "write. Compute the prediction from s yourself.")
    for s, r in _spectra():
        out, problem = call(fn, s, r, name="predict_error")
        if problem:
            return fail(problem + " — it receives s (a 1-D tensor of singular values, largest first) and an int r.")
        got, problem = read_number(out)
        if problem:
            return fail(f"predict_error(s, {r}) should return one number: " + problem)
        truth = float(s[r:].pow(2).sum().sqrt())
        if math.isclose(got, truth, rel_tol=1e-6, abs_tol=1e-9):
            continue
        wrong = next((k for k, v in _variants2(s, r).items() if math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-9)),
                     None)
        if wrong:
            return fail(_MSG2[wrong] + f" (seen with {len(s)} singular values and r = {r})")
        return fail(f"for {len(s)} singular values and r = {r} your function returns {got:.6g}, which is not "
                    "the Frobenius error of the best rank-r approximation.")
    return ok("on spectra your function had never seen, it predicts ‖W − W_r‖_F exactly, without forming W_r: "
              "the error of the best rank-r approximation is fixed by the singular values alone (Eckart–Young).")


@EX.check(3)
def ex3(answer, d: int = 49152, k: int = 12288, r: int = 8) -> bool:
    """Trainable numbers of a rank-r LoRA update of one d×k matrix (not square): r·(d + k)."""
    if answer is None:
        return not_answered(f"give the number of trainable numbers (a whole number) of LoRA with r = {r} on one "
                            f"{d}×{k} matrix.")
    n, problem = read_number(answer)
    if problem:
        return fail(problem)
    truth = r * (d + k)
    if math.isclose(n, d * k / truth, rel_tol=1e-3):
        return fail("that is the compression ratio d·k / (r(d + k)); the question asks for the number of "
                    "trainable numbers.")
    n, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    if n == truth:
        return ok(f"B ({d}×{r}) and A ({r}×{k}) hold {truth:,} numbers instead of d·k = {d * k:,}: "
                  f"{d * k / truth:,.0f}× fewer, against {k / (2 * r):,.0f}× for a square {k}×{k} matrix at the "
                  "same r — the saving grows with both sides of the matrix.")
    if n == d * k:
        return fail("that is d·k, the size of the full update ΔW; LoRA stores B and A instead.")
    if n in (r * d, r * k):
        return fail("that counts only one of the two factors; LoRA trains both B and A.")
    if n in (2 * r * d, 2 * r * k):
        return fail("that treats the matrix as square; here d and k differ, so B and A have different sizes.")
    if n == r * r:
        return fail("B and A each have one side of length r and the other of length d or k, not r.")
    return fail(f"{n:,} is not it; count the entries of B and of A.")

"""Self-checks for notebook 03 (LoRA generalizes full fine-tuning). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import math

import torch

from .feedback import Exercises, call, fail, library_calls, not_answered, ok, read_number, svals

__all__ = ["ex1", "ex2", "ex3", "hint"]

EX = Exercises("nb03", hints={
    1: ["B·A has rank at most r, and every matrix of rank ≤ r can be written as B·A (section 1).",
        "So the question is: what is the rank of `mystery`? Its construction in the code is not the answer — measure "
        "the matrix itself.",
        "Print le.singular_values(mystery): count the values that are clearly above float rounding (≈ 1e-6 of the "
        "largest), or use le.numerical_rank."],
    2: ["Training LoRA at rank r lands on the best rank-r approximation (Eckart–Young, notebook 01).",
        "The squared error of the best rank-r approximation is the sum of the squared singular values it drops.",
        "Divide that by ‖ΔW*‖_F², the sum of all squared singular values."],
    3: ["LoRA trains r·(d + k) numbers; full fine-tuning trains d·k.",
        "Solve r·(d + k) ≥ d·k for r.",
        "r must be a whole number: round the solution up."],
})
hint = EX.hint


@EX.check(1)
def ex1(answer, target) -> bool:
    """Smallest LoRA rank r that can represent `target` exactly: its rank."""
    if answer is None:
        return not_answered("give the smallest rank r (a whole number) at which B·A can equal `mystery` exactly.")
    v, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    s = svals(target)
    truth = int((s > max(target.shape) * torch.finfo(torch.float32).eps * float(s[0])).sum())
    if v == truth:
        return ok(f"rank(mystery) = {truth}: at r = {truth} B·A can equal it exactly (take B = U_rΣ_r, A = V_rᵀ), "
                  "and below that no B·A can.")
    if v <= 0:
        return fail("with r = 0 there is no update at all; `mystery` is not zero.")
    if v >= min(target.shape):
        return fail(f"r = min(d, k) = {min(target.shape)} always suffices — for any matrix of this shape — but it is "
                    "not the smallest for this one. Float rounding makes tiny σᵢ that are not directions.")
    if v > truth:
        return fail(f"r = {v} works, but it is not the smallest rank that does.")
    return fail(f"with r = {v}, B·A has rank at most {v}, and `mystery` uses more independent directions than "
                "that. Measure its rank rather than reading it off the code that built it.")


FORBIDDEN2 = {"eckart_young_error", "relative_error", "energy", "low_rank_approx"}


def _spectra():
    g = torch.Generator().manual_seed(1106)
    out = []
    for n, rs in ((6, (1, 3, 5)), (16, (0, 4, 9)), (40, (2, 20, 39))):
        s = torch.rand(n, generator=g, dtype=torch.float64).pow(2).mul(4).add(0.05).sort(descending=True).values
        out += [(s, r) for r in rs]
    return out


_MSG2 = {
    "captured": "that is the share of the energy LoRA *captures*; the error is the part it leaves out.",
    "not squared": "that is the relative error of the norm; the question asks for the relative *squared* error.",
    "plain": "square the singular values first: the energy of a direction is σᵢ², not σᵢ.",
    "absolute": "that is the squared error itself; the exercise asks for it relative to ‖ΔW*‖_F².",
    "one more": "off by one: LoRA at rank r keeps σ₁ … σ_r, so the error starts at σ_{r+1}, which has index r "
                "(Python counts from 0).",
    "one less": "off by one: LoRA at rank r keeps r singular values, σ₁ … σ_r.",
}


def _variants2(s, r):
    s2 = s.pow(2)
    v = {"captured": float(s2[:r].sum() / s2.sum()), "not squared": float((s2[r:].sum() / s2.sum()).sqrt()),
         "plain": float(s[r:].sum() / s.sum()), "absolute": float(s2[r:].sum())}
    if r < len(s):
        v["one more"] = float(s2[r + 1:].sum() / s2.sum())
    if r > 0:
        v["one less"] = float(s2[r - 1:].sum() / s2.sum())
    return v


@EX.check(2)
def ex2(fn) -> bool:
    """A function predicted_error(s, r): LoRA's best relative squared error at rank r, from singular values s."""
    if fn is None:
        return not_answered("write predicted_error(s, r) in the cell, then pass the function itself: "
                            "checks.nb03.ex2(predicted_error).")
    if not callable(fn):
        return fail(f"pass your function itself (predicted_error, without brackets), not a {type(fn).__name__}.")
    used = library_calls(fn, FORBIDDEN2)
    if used:
        return fail(f"your function uses le.{sorted(used)[0]}, which computes the floor for you. Predict it from the "
                    "singular values yourself.")
    for s, r in _spectra():
        out, problem = call(fn, s, r, name="predicted_error")
        if problem:
            return fail(problem + " — it receives s (a 1-D tensor of singular values, largest first) and an int r.")
        got, problem = read_number(out)
        if problem:
            return fail(f"predicted_error(s, {r}) should return one number: " + problem)
        truth = float(s[r:].pow(2).sum() / s.pow(2).sum())
        if math.isclose(got, truth, rel_tol=1e-6, abs_tol=1e-12):
            continue
        wrong = next((k for k, v in _variants2(s, r).items() if math.isclose(got, v, rel_tol=1e-6, abs_tol=1e-12)),
                     None)
        if wrong:
            return fail(_MSG2[wrong] + f" (seen with {len(s)} singular values and r = {r})")
        if any(math.isclose(got, round(truth, n), abs_tol=1e-12) for n in range(1, 6)):
            return fail("your function rounds its result; return the full value (round only when you print).")
        return fail(f"for {len(s)} singular values and r = {r} your function returns {got:.6g}, which is not "
                    "the relative squared error of the best rank-r update.")
    return ok("on spectra it had never seen, your function predicts the floor exactly. Training cannot beat it "
              "(Eckart–Young), and the sweep in the solution shows training reaching it.")


@EX.check(3)
def ex3(answer, d: int = 64, k: int = 64) -> bool:
    """Smallest r at which LoRA's r·(d + k) trainable numbers reach full fine-tuning's d·k."""
    if answer is None:
        return not_answered(f"give the smallest rank r (a whole number) at which LoRA trains at least as many "
                            f"numbers as full fine-tuning of a {d}×{k} matrix.")
    v, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    truth = math.ceil(d * k / (d + k))
    if v == truth:
        return ok(f"at r = {truth}, r·(d + k) = {truth * (d + k):,} ≥ d·k = {d * k:,}. Beyond that LoRA stores "
                  "*more* than the full matrix, yet still cannot exceed rank min(d, k).")
    if v == min(d, k):
        return fail(f"r = min(d, k) = {min(d, k)} is where LoRA reaches full *expressiveness*; the count of trainable "
                    "numbers catches up much earlier.")
    if 0 < v < truth:
        return fail(f"at r = {v}, r·(d + k) = {v * (d + k):,} is still below d·k = {d * k:,}.")
    if v > truth:
        return fail(f"at r = {v} LoRA already trains more than d·k, but a smaller r gets there too.")
    return fail("r must be a positive whole number.")

"""Self-checks for notebook 08 (LoRA myths and facts). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import torch
from torch import nn

from ...lowrank import numerical_rank, singular_values
from .feedback import (
    Exercises,
    call,
    fail,
    judge_prediction,
    not_answered,
    ok,
    read_choice,
    read_number,
    read_tensor,
    short,
)

__all__ = ["ex1", "ex2", "ex3", "ex4", "hint"]

EX = Exercises("nb08", hints={
    1: ["(B₁ + … + Bₙ)(A₁ + … + Aₙ) multiplies every Bᵢ with every Aⱼ.",
        "How many products BᵢAⱼ are there in all? How many of them have i = j?",
        "BᵢAⱼ and BⱼAᵢ are different matrices: count ordered pairs."],
    2: ["pairs is a list of (A, B) tuples, one per adapter, all of the same shapes.",
        "Average the A's into one r×k matrix and the B's into one d×r matrix first; only then multiply.",
        "The update is scaled like any LoRA update: multiply by `scaling` (α/r) once."],
    3: ["Each adapter's ΔW has rank at most r: it lives in r directions of its own.",
        "Adapters trained separately, with different seeds and tasks, find different directions.",
        "A sum of matrices has rank at most the sum of their ranks — and at most min(d, k)."],
    4: ["Subtracting ΔW in bfloat16 cannot undo the rounding of the add: the drift grows with every switch.",
        "A strategy that never writes W0, or that restores an exact copy of it, has no drift at all.",
        "common.SWITCH_STRATEGIES lists the four strategies; section 2 describes what each one keeps."],
})
hint = EX.hint


@EX.check(1)
def ex1(answer, n: int = 4) -> bool:
    """How many cross terms Bᵢ·Aⱼ (i ≠ j) appear when the A's and the B's of n adapters are averaged separately?"""
    if answer is None:
        return not_answered("give the number of cross terms (a whole number) for n = 4 adapters.")
    k, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    right = n * (n - 1)
    if k == right:
        return ok(f"(ΣBᵢ)(ΣAⱼ) has n² = {n * n} products: {n} wanted ones BᵢAᵢ and {right} cross terms BᵢAⱼ "
                  "that no adapter ever learned. They grow quadratically with n.")
    if k == right // 2:
        return fail("you counted unordered pairs {i, j}; but BᵢAⱼ and BⱼAᵢ are different matrices.")
    if k == n * n:
        return fail("that counts every product, including the diagonal terms BᵢAᵢ, which are the adapters' own "
                    "updates, not cross terms.")
    if k == n:
        return fail("that is the number of wanted terms BᵢAᵢ; count the products with i ≠ j.")
    return fail(f"{k} is not it: count the products BᵢAⱼ with i ≠ j.")


def _cases2():
    g = torch.Generator().manual_seed(88)
    out = []
    for n, d, k, r, s in ((2, 5, 7, 2, 2.5), (3, 6, 4, 3, 0.5), (4, 8, 6, 1, 4.0)):
        pairs = [(torch.randn(r, k, generator=g, dtype=torch.float64), torch.randn(d, r, generator=g,
                                                                                   dtype=torch.float64))
                 for _ in range(n)]
        out.append((pairs, s))
    return out


def _variants2(pairs, s) -> dict:
    n = len(pairs)
    As, Bs = torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])
    mA, mB = As.mean(0), Bs.mean(0)
    return {"right": s * mB @ mA, "mean of products": s * sum(b @ a for a, b in pairs) / n,
            "no scaling": mB @ mA, "scaled twice": s * s * mB @ mA, "summed": s * Bs.sum(0) @ As.sum(0),
            "sum of products": s * sum(b @ a for a, b in pairs)}


_MSG2 = {
    "mean of products": "that is the mean of the adapters' ΔW's (what PEFT's exact 'cat' gives with weights "
                        "1/n). Naive averaging averages the factors first, then multiplies.",
    "no scaling": "you left out the scaling s = α/r.",
    "scaled twice": "the scaling s is applied twice.",
    "summed": "you summed the factors instead of averaging them: n² times too big.",
    "sum of products": "that is the exact sum of the adapters' updates; the exercise averages the factors first.",
}


@EX.check(2)
def ex2(fn) -> bool:
    """A function naive_average(pairs, scaling) = scaling · mean(B) · mean(A) for a list of (A, B) pairs."""
    if fn is None:
        return not_answered("write naive_average(pairs, scaling) in the cell above, then pass the function itself: "
                            "checks.nb08.ex2(naive_average).")
    if not callable(fn):
        return fail(f"pass your function itself (naive_average, without brackets), not a {type(fn).__name__}.")
    for pairs, s in _cases2():
        A, B = pairs[0]
        d, k = B.shape[0], A.shape[1]
        out, problem = call(fn, [(a.clone(), b.clone()) for a, b in pairs], s, name="naive_average")
        if problem:
            return fail(problem + f" (a list of {len(pairs)} pairs (A, B), A {tuple(A.shape)}, B {tuple(B.shape)}).")
        got, problem = read_tensor(out, what="naive_average's result")
        if problem:
            return fail(problem)
        if tuple(got.shape) == (k, d) and d != k:
            return fail("your ΔW is transposed: B·A is d×k, B (d×r) first.")
        if tuple(got.shape) != (d, k):
            return fail(f"your ΔW has shape {tuple(got.shape)}; B is {tuple(B.shape)} and A is {tuple(A.shape)}, so "
                        "the update has B's rows and A's columns.")
        v = _variants2(pairs, s)
        tol = 1e-6 * float(v["right"].abs().max()) + 1e-9
        if bool((got - v["right"]).abs().max() <= tol):
            continue
        wrong = next((n for n, x in v.items() if n != "right" and bool((got - x).abs().max() <= tol)), None)
        if wrong:
            return fail(_MSG2[wrong] + f" (seen with {len(pairs)} adapters, scaling {s:g})")
        return fail(f"with {len(pairs)} adapters and scaling {s:g} your ΔW differs from scaling · mean(B) · mean(A).")
    return ok("s·B̄·Ā = (s/n²)·ΣᵢΣⱼ BᵢAⱼ: the n own terms, shrunk, plus n(n − 1) cross terms nobody trained. "
              "Apply it to the plus3 and minus5 adapters and compare the norm of the cross terms.")


REASONS3 = {
    "a": "",
    "b": "the rank of a sum can exceed the rank of every term: two rank-1 matrices u₁v₁ᵀ + u₂v₂ᵀ have rank 2 when "
         "their directions differ.",
    "c": "the number may look right, but ranks of sums do not multiply: a sum of n rank-r matrices has rank at most "
         "n·r, because each term contributes its own r directions.",
    "d": "the measured rank is well below min(d, k) = 64: adding matrices does not mix in new directions.",
}


@EX.check(3)
def ex3(prediction=None, why=None, delta_sum=None, r: int = 4, n: int = 4, rank_tol: float = 1e-4) -> bool:
    """Predict, then measure, then explain: the numerical rank of the exact sum of n rank-r adapters' ΔW."""
    if prediction is None:
        return not_answered("write your prediction of the rank (a whole number) into `prediction` before anything "
                            "is measured, and run the cell.")
    v, problem = read_number(prediction, whole=True)
    if problem:
        return fail(problem)
    if v < 0:
        return fail("a rank is never negative.")
    M, problem = read_tensor(delta_sum, what="delta_sum")
    if problem or M.ndim != 2:
        return fail("pass the summed update as delta_sum= (the 64×64 tensor the exercise cell computes).")
    first = EX.first_prediction(3, v)
    s = singular_values(M)
    measured = numerical_rank(M, tol=rank_tol * float(s[0])) if float(s[0]) > 0 else 0
    if v == r:
        diag = "that is one adapter's rank; the sum holds several adapters' updates."
    elif v >= min(M.shape):
        diag = "that is full rank; the measurement counts how many directions the sum really uses."
    else:
        diag = "think about how many directions each adapter contributes, and whether they coincide."
    return judge_prediction(v, first, f"numerical rank {measured} (σ > {rank_tol:g}·σ₁) of the exact sum of {n} "
                            f"rank-{r} updates", v == measured, diag, why, REASONS3, "a",
                            f"each adapter's ΔW spans its own {r} directions, and separately trained adapters find "
                            "different ones: the exact sum keeps all of them, up to n·r. A single rank-r adapter "
                            "(or an SVD of the sum down to rank r) cannot — that is what 'svd' merging throws away.")


COSTS4 = {"keep_original": "b", "fp32_master": "b", "unmerged": "c"}
_COST_MSG = {
    "a": "every exact strategy keeps something extra: W0 cannot be rebuilt from a rounded W − ΔW.",
    "b": "your strategy never copies a weight matrix: it pays in another currency.",
    "c": "your strategy merges, so inference runs at the base model's speed: it pays in another currency.",
    "d": "the adapters are applied exactly as trained; precision is not what this strategy gives up.",
}


@EX.check(4)
def ex4(strategy=None, cost=None, base=None, adapters=None) -> bool:
    """Serve the adapters in bfloat16 for 100 switches with zero drift: the check runs the strategy itself."""
    from ...adapters import Adapter
    from ...inject import lora_layers
    from ...pretrained import load_pretrained
    from ..common import SWITCH_STRATEGIES, switch_drift

    if strategy is None:
        return not_answered("set `strategy` to the name of a switching strategy, then run the cell.")
    if not isinstance(strategy, str) or strategy not in SWITCH_STRATEGIES:
        return fail(f"{short(strategy, 30)} is not a strategy; choose one of {', '.join(SWITCH_STRATEGIES)}.")
    if not isinstance(base, nn.Module) or lora_layers(base):
        return fail("pass the plain pretrained model as base= (the notebook's `base`).")
    fresh = load_pretrained(device="cpu").state_dict()
    if any(k not in fresh or not torch.equal(v.detach().cpu(), fresh[k]) for k, v in base.state_dict().items()):
        return fail("base= is not the pretrained checkpoint: pass the notebook's untouched `base`.")
    ads = list(adapters.values()) if isinstance(adapters, dict) else adapters
    if not isinstance(ads, (list, tuple)) or len(ads) < 2 or not all(isinstance(a, Adapter) for a in ads):
        return fail("pass the notebook's adapters as adapters= (at least two le.Adapter objects).")
    rows = switch_drift(base, list(ads), "bfloat16", checkpoints=(100,), strategy=strategy)
    drift = rows[-1]["max_abs"]
    print(f"📏 Measured: '{strategy}' in bfloat16, max |W − W0| after 100 switches = {drift:.3g}")
    if drift != 0:
        return fail(f"'{strategy}' drifts: each merge rounds W0 + ΔW to bfloat16, and subtracting ΔW cannot know "
                    "what was rounded away. Pick a strategy that never has to subtract.")
    if cost is None:
        return not_answered("no drift. Now say what this strategy costs instead: set `cost` to the letter of the "
                            "right option in the exercise text.")
    letter, problem = read_choice(cost)
    if problem:
        return fail(problem)
    if letter != COSTS4[strategy]:
        return fail(_COST_MSG[letter])
    paid = {"keep_original": "memory: a copy of every adapted matrix, in the weights' dtype, while merged",
            "fp32_master": "memory: a float32 copy of every adapted matrix, kept all the time",
            "unmerged": "time: every forward pass runs the two extra small matmuls of each LoRA layer"}[strategy]
    return ok(f"'{strategy}' gives W0 back bit for bit after 100 switches, and pays in {paid}. Exact switching is "
              "never free; choose the currency your server can afford.")

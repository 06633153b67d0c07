"""Self-checks for notebook 06 (merging, latency, switching, precision). Protocol: see `feedback`; never raise."""

from __future__ import annotations

import functools
import math

import torch

from ...model import ToyConfig
from .feedback import Exercises, fail, judge_prediction, not_answered, ok, read_number, read_tensor

__all__ = ["ex1", "ex2", "ex3", "hint"]

EX = Exercises("nb06", hints={
    1: ["The merged layer computes W·x with one matrix W that gives the same outputs as W0·x + (α/r)·B·A·x.",
        "B is d×r and A is r×k, so B @ A is d×k like W0.",
        "Scale B @ A by the adapter's scaling before adding it to W0."],
    2: ["keep_original stores one exact copy of each adapted W0 while the model is merged.",
        "Which matrices are adapted here, in how many blocks, and how big is each?",
        "bfloat16 stores each number in 2 bytes."],
    3: ["Merging computes 1 + δ in float32 and rounds the result to the nearest bfloat16.",
        "bfloat16 keeps 8 significant bits: next to 1.0 the representable numbers are 2⁻⁷ apart (the spacing printed "
        "in section 5 for a typical weight is eps × that weight).",
        "1 + δ rounds back to 1.0 as long as it is closer to 1.0 than to the next representable number."],
})
hint = EX.hint


@EX.check(1)
def ex1(answer, W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> bool:
    """The merged weight W = W0 + (α/r)·B·A."""
    if answer is None:
        return not_answered("compute the merged weight (a tensor the shape of W0) into `answer` and run the cell.")
    W0, A, B = (t.detach().to("cpu", torch.float64) for t in (W0, A, B))
    ans, problem = read_tensor(answer, what="your W")
    if problem:
        return fail(problem)
    if ans.shape != W0.shape:
        return fail(f"your W has shape {tuple(ans.shape)}; the merged weight replaces W0, so it has W0's shape "
                    f"{tuple(W0.shape)}.")
    right = W0 + scaling * (B @ A)
    dtype = answer.dtype if isinstance(answer, torch.Tensor) and answer.is_floating_point() else torch.float32
    tol = 2 * max(1e-4, torch.finfo(dtype).eps) * float(right.abs().max()) + 1e-6  # rounding of the answer's dtype

    def close(x):
        return bool((ans - x).abs().max() <= tol)

    if close(right):
        return ok("W0 + (α/r)·B·A: one d×k matrix, so the merged layer costs exactly one matmul.")
    if scaling != 1 and close(W0 + B @ A):
        return fail("you left out the scaling α/r; the layer computes W0·x + (α/r)·B·A·x.")
    if scaling != 1 and close(W0 + scaling ** 2 * (B @ A)):
        return fail("the scaling α/r is applied twice.")
    if close(W0 - scaling * (B @ A)):
        return fail("that subtracts ΔW (that is unmerging); merging adds it.")
    if close(W0):
        return fail("that is W0 unchanged; the merged weight includes the update.")
    if close(scaling * (B @ A)):
        return fail("that is ΔW alone; the merged weight keeps W0 as well.")
    if W0.shape[0] == W0.shape[1] and close(W0 + scaling * (B @ A).T):
        return fail("the update is transposed: ΔW = B·A is d×k with B first (d×r) and A second (r×k).")
    return fail(f"your W differs from the merged weight by up to {float((ans - right).abs().max()):.3g}.")


@EX.check(2)
def ex2(answer) -> bool:
    """Extra bytes that merge(keep_original=True) holds in bfloat16 for LoRA on W_q, W_v of every block."""
    if answer is None:
        return not_answered("give the number of extra bytes (a whole number) held while merged with "
                            "keep_original=True.")
    n, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    cfg = ToyConfig()
    d, L = cfg.d_model, cfg.n_layer
    right = 2 * L * d * d * 2
    if n == right:
        return ok(f"2 matrices × {L} blocks × {d}×{d} × 2 bytes = {right:,} bytes: exact restore costs one copy of "
                  "every adapted matrix, as much memory as those base weights themselves.")
    if n == right * 2:
        return fail("that is twice too much: either 4 bytes per value (bfloat16 takes 2) or all four attention "
                    "matrices (LoRA is on W_q and W_v only).")
    if n == right // 2:
        return fail("that is half of it: either you counted values rather than bytes (2 per bfloat16), or only one "
                    "matrix type or one block. W_q and W_v are adapted in every block.")
    if n == d * d * 2:
        return fail("that is one matrix; every adapted matrix keeps its own copy.")
    if n == right + 2 * L * d * 2:
        return fail("a merge does not touch the biases, so they need no copy.")
    if n == 2 * L * 4 * (d + d) * 2:
        return fail("that is the size of the adapters (A and B); keep_original copies the base matrices W0.")
    return fail(f"{n:,} is not it: count the adapted matrices, their entries and the bytes per entry.")


@functools.lru_cache(maxsize=1)
def _threshold() -> tuple[float, float]:
    """(the threshold δ: larger updates survive a bfloat16 merge into a weight of 1.0, smaller or equal ones vanish;
    the weight after merge → unmerge of 0.002)."""
    from ...layer import LoRALinear

    def layer(delta):
        lin = torch.nn.Linear(2, 2).to(torch.bfloat16)
        with torch.no_grad():
            lin.weight.fill_(1.0)
        m = LoRALinear(lin, r=1, alpha=delta)  # ΔW = δ·B·A with A = B = 1: every entry δ, not rounded to bf16
        with torch.no_grad():
            m.A.fill_(1.0)
            m.B.fill_(1.0)
        m.merge()
        return m

    with torch.random.fork_rng(devices=[]):
        lo, hi = 0.0, 0.05
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if float(layer(mid).weight[0, 0]) > 1.0 else (mid, hi)
        m = layer(0.002)
        m.unmerge()
        return hi, float(m.weight[0, 0])


REASONS3 = {
    "a": "",
    "b": "the merge adds every entry of ΔW, however small: it computes 1 + δ exactly in float32. What happens to "
         "that sum when it is stored back in bfloat16?",
    "c": "bfloat16 has float32's range: it stores numbers far smaller than 0.004 (down to about 1e-38). What it "
         "lacks is precision *relative to the number stored* — here 1.0.",
    "d": "the scaling α/r is 1 in this measurement, and it would scale every δ alike; it cannot single out small "
         "ones.",
}


@EX.check(3)
def ex3(prediction=None, why=None) -> bool:
    """Predict the threshold δ up to which an update merged into a bfloat16 weight of 1.0 vanishes; then explain."""
    if prediction is None:
        return not_answered("write your prediction of the threshold δ (a number): up to it, an update merged into a "
                            "bfloat16 weight of 1.0 vanishes; above it, it changes the weight. Put it in "
                            "`prediction` and run the cell.")
    v, problem = read_number(prediction)
    if problem:
        return fail(problem)
    if v < 0:
        return fail("δ is a size here: give a positive number.")
    first = EX.first_prediction(3, v)
    t, after = _threshold()

    def near(x, rel=0.1):
        return math.isclose(v, x, rel_tol=rel)

    if near(t):
        diag = ""
    elif near(2 * t):
        diag = "that is the full spacing between neighbours; rounding goes to the *nearest* neighbour."
    elif any(near(x) for x in (2.0 ** -11, 2.0 ** -10, 2.0 ** -12)):
        diag = "that is float16's spacing near 1.0; the model here is bfloat16, which keeps fewer significant bits."
    elif any(near(x) for x in (2.0 ** -23, 2.0 ** -24)):
        diag = "that is float32's spacing near 1.0; the weights here are stored in bfloat16."
    elif v == 0:
        diag = "any δ at all would need a number system without gaps; bfloat16 has gaps next to 1.0."
    else:
        diag = "work out how far apart the bfloat16 numbers next to 1.0 are, then where 1 + δ is rounded to."
    return judge_prediction(v, first, f"δ up to {t:.4g} vanishes: 1 + δ is stored as 1.0. (And merging then "
                            f"unmerging δ = 0.002 leaves the weight at {after:g}, not 1.0.)", near(t), diag, why,
                            REASONS3, "a",
                            "bfloat16 keeps 8 significant bits, so next to 1.0 its numbers are 2⁻⁷ apart and a "
                            "merge rounds 1 + δ to the nearest one: an update up to half that spacing disappears "
                            "(a tie goes to the even neighbour, 1.0). "
                            "Worse, unmerging subtracts a δ that was never added. Small adapters merged into "
                            "bfloat16 weights can vanish — keep them unmerged or merge into float32.")

"""Self-checks for notebook 06 (merging, latency, switching, precision)."""

from __future__ import annotations

import torch

from ...model import ToyConfig
from .feedback import as_int, fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3"]


def ex1(answer, W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> bool:
    """The merged weight W = W0 + (α/r)·B·A."""
    if answer is None:
        return not_answered("W = W0 + scaling · B @ A")
    if not isinstance(answer, torch.Tensor):
        return fail(f"give a tensor, got {type(answer).__name__}")
    W0, A, B = (t.detach().float().cpu() for t in (W0, A, B))
    ans = answer.detach().float().cpu()
    if ans.shape != W0.shape:
        return fail(f"your W has shape {tuple(ans.shape)}; it must have W0's shape {tuple(W0.shape)} "
                    f"(B is {tuple(B.shape)}, A is {tuple(A.shape)}, so B @ A is {B.shape[0]}×{A.shape[1]})")
    right = W0 + scaling * (B @ A)

    def close(x):
        return torch.allclose(ans, x, atol=1e-5, rtol=1e-4)

    if close(right):
        return ok("W0 + (α/r)·B·A: one d×k matrix, so the merged layer costs exactly one matmul.")
    if scaling != 1 and close(W0 + B @ A):
        return fail(f"you left out the scaling α/r = {scaling:g}; the layer computes W0·x + (α/r)·B·A·x.")
    if close(W0 - scaling * (B @ A)):
        return fail("that subtracts ΔW (that is unmerging); merging adds it.")
    if close(W0):
        return fail("that is W0 unchanged; add ΔW = scaling · B @ A.")
    if close(scaling * (B @ A)):
        return fail("that is ΔW alone; the merged weight is W0 + ΔW.")
    return fail(f"max difference from W0 + scaling·B@A is {float((ans - right).abs().max()):.3g}.")


def ex2(answer) -> bool:
    """Extra bytes that merge(keep_original=True) holds in bfloat16 for LoRA on W_q, W_v of every block."""
    if answer is None:
        return not_answered("keep_original stores one copy of each adapted W0")
    n = as_int(answer)
    if n is None:
        return fail(f"the answer should be a whole number of bytes, got {answer!r}")
    cfg = ToyConfig()
    d, L = cfg.d_model, cfg.n_layer
    right = 2 * L * d * d * 2
    if n == right:
        return ok(f"2 matrices × {L} blocks × {d}×{d} × 2 bytes = {right:,} bytes: exact restore costs one extra "
                  "copy of every adapted matrix — the same memory as keeping the base weights twice for those layers.")
    if n == right * 2:
        return fail("bfloat16 takes 2 bytes per value, not 4.")
    if n == right // 2:
        return fail(f"that is half: either you counted values instead of bytes (2 per bfloat16), or only one "
                    f"matrix type / one of the {L} blocks. Count W_q and W_v in every block, 2 bytes each.")
    if n == d * d * 2:
        return fail("that is one matrix; every adapted matrix keeps its own copy.")
    if n == right + 2 * L * d * 2:
        return fail("the biases are not touched by a merge, so they need no copy.")
    return fail(f"{n:,} is not it. Hint: adapted matrices × d × k × bytes per value.")


def ex3(answer) -> bool:
    """Which dtype drifts more under repeated merge→unmerge: 'bfloat16' or 'float16'?"""
    if answer is None:
        return not_answered("answer 'bfloat16' or 'float16'")
    if isinstance(answer, torch.dtype):
        answer = str(answer).replace("torch.", "")
    if not isinstance(answer, str):
        return fail(f"answer with a string, 'bfloat16' or 'float16', got {answer!r}")
    a = answer.strip().lower().replace("torch.", "")
    a = {"bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(a, a)
    if a == "bfloat16":
        return ok("bfloat16 keeps 8 significant bits against float16's 11, so every rounding after a merge or an "
                  "unmerge is about 8× larger (float16 buys that precision with a much smaller range).")
    if a == "float16":
        return fail("float16 has the smaller range but the finer spacing (11 significant bits vs 8); look at the "
                    "drift plot again.")
    if a == "float32":
        return fail("float32 drifts least of all; the question is between the two 16-bit types.")
    return fail(f"{answer!r} is not one of 'bfloat16' or 'float16'.")

"""Self-checks for notebook 04 (the toy transformer)."""

from __future__ import annotations

import torch

from ...model import ToyConfig
from .feedback import as_int, fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3"]




def ex1(answer) -> bool:
    """Scalars in all attention weight matrices (W_q, W_k, W_v, W_o of every block, biases excluded)."""
    if answer is None:
        return not_answered("each W is d_model × d_model; count them over all blocks")
    n = as_int(answer)
    if n is None:
        return fail(f"the answer should be a whole number, got {answer!r}")
    cfg = ToyConfig()
    d, L = cfg.d_model, cfg.n_layer
    right = 4 * L * d * d
    if n == right:
        return ok(f"{L} blocks × 4 matrices × {d}×{d} = {right:,} — about a third of the model.")
    if n == right + 4 * L * d:
        return fail(f"{n:,} includes the {4 * L * d} bias scalars; the question asks for the weight matrices only.")
    if n == 4 * d * d:
        return fail(f"{n:,} is one block's worth; the toy has {L} blocks.")
    if n == d * d:
        return fail(f"{n:,} is a single matrix; there are 4 per block and {L} blocks.")
    if n == 3 * L * d * d:
        return fail("that counts W_q, W_k, W_v but leaves out the output projection W_o.")
    return fail(f"{n:,} is not it. Hint: sum p.numel() over the parameters whose name ends in "
                "'_proj.weight' and contains 'attn'.")


def _digits(answer):
    if isinstance(answer, str):
        s = [c for c in answer if not c.isspace()]
        if not all(c.isdigit() for c in s):
            return None
        return [int(c) for c in s]
    try:
        t = torch.as_tensor(answer).reshape(-1)
    except Exception:  # noqa: BLE001
        return None
    if t.is_floating_point() and not torch.equal(t, t.round()):
        return None
    return [int(v) for v in t.tolist()]


def ex2(answer, model=None) -> bool:
    """The pretrained model's greedy answer for input 1 2 3 4 5 6 7 8 (asked to 'reverse' it)."""
    if answer is None:
        return not_answered("run le.generate(model, le.tasks.encode('12345678'))")
    got = _digits(answer)
    if got is None:
        return fail(f"give the 8 output digits (a list, tensor or string), got {answer!r}")
    from ...pretrained import load_pretrained
    from ...tasks import encode
    from ...train import generate

    m = model if model is not None else load_pretrained(device="cpu")
    x = encode("12345678")
    truth = generate(m, x)[0].tolist()
    if got == truth:
        same = truth == x[0].tolist()
        return ok("the model " + ("copies its input" if same else f"answers {truth}") +
                  ": the prompt 'BOS x SEP' never says which task is wanted, so the pretrained model "
                  "does what it was trained to do. Fine-tuning is what tells it the new rule.")
    if got == x[0].flip(0).tolist():
        return fail("8 7 6 5 4 3 2 1 is the *correct* reversal, but the model has never been trained to reverse. "
                    "Run it: what does a copy-trained model do with the same prompt?")
    if len(got) != len(truth):
        return fail(f"the model answers with {len(truth)} digits, you gave {len(got)}.")
    wrong = sum(a != b for a, b in zip(got, truth))
    return fail(f"{wrong} of the 8 digits differ from what the model actually outputs; compute it with le.generate.")


def ex3(answer) -> bool:
    """LoRA parameters for r = 8 on W_q, W_k, W_v and W_o of every block."""
    if answer is None:
        return not_answered("each adapted d×k matrix gets A (r×k) and B (d×r)")
    n = as_int(answer)
    if n is None:
        return fail(f"the answer should be a whole number, got {answer!r}")
    cfg = ToyConfig()
    d, L, r = cfg.d_model, cfg.n_layer, 8
    per = r * (d + d)
    right = 4 * L * per
    if n == right:
        return ok(f"4 matrices × {L} blocks × r·(d + k) = 4 × {L} × {per} = {right:,}, "
                  f"{right / (4 * L * d * d):.0%} of the attention weights.")
    if n == right // 2:
        return fail("that is half of it: count both A (r×k) and B (d×r) — or did you forget a block?")
    if n == 4 * per:
        return fail(f"{n:,} is one block; the toy has {L}.")
    if n == L * per:
        return fail(f"{n:,} is one matrix per block; the question asks for all four attention matrices.")
    if n == 4 * L * r * r:
        return fail("A is r×k and B is d×r: each has r·64 entries, not r·r.")
    if n == 4 * L * d * d:
        return fail("that is the size of the frozen matrices themselves, not of the low-rank factors.")
    return fail(f"{n:,} is not it. Hint: per matrix, A has r·k and B has d·r entries.")

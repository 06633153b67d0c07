"""Self-checks for notebook 00 (start here): a warm-up count and a first predict → measure → explain (plus3)."""

from __future__ import annotations

import functools

from .feedback import Exercises, fail, judge_prediction, not_answered, ok, read_fraction, read_number

__all__ = ["ex1", "ex2", "hint"]

EX = Exercises("nb00", hints={
    1: ["LoRA leaves W_q (64×64) frozen and trains two new matrices next to it: B and A.",
        "B is d×r and A is r×k; here d = k = 64 and r = 1.",
        "Count the entries of B, count the entries of A, add them."],
    2: ["The model has never seen the word `plus`, yet it still answers something. Run "
        "`le.generate(model, x, 'plus3')` on a few inputs x and compare with what known skills give on the same x: "
        "`le.get_task(name).fn(x)` for rot3, add3, sub3, rsub3.",
        "Token accuracy is the share of the 6 answer digits that are right. For plus3, answer digit i should be "
        "(x_i + x_(i+3)) mod 10.",
        "If the model computes x_i − x_(i+3) instead: for which digits b is a − b ≡ a + b (mod 10)? For random "
        "digits, how often is b one of them?"],
})
hint = EX.hint

D = K = 64  # the toy's attention matrices


@EX.check(1)
def ex1(answer) -> bool:
    """Trainable numbers of a rank-1 LoRA update of one 64×64 attention matrix of the toy."""
    if answer is None:
        return not_answered("replace `None` with a whole number: how many trainable numbers LoRA with r = 1 adds "
                            "next to one 64×64 matrix W_q.")
    n, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    right = 1 * (D + K)
    if n == right:
        return ok(f"B is 64×1 and A is 1×64: {right} numbers next to the {D * K:,} of W_q, which stay frozen. "
                  "Notebook 01 counts the same at GPT-3's size.")
    if n == D * K:
        return fail("that is the size of W_q itself, which stays frozen; LoRA trains two thin matrices B and A "
                    "instead.")
    if n in (D, K):
        return fail("that counts one of the two matrices; LoRA trains both B and A.")
    if n == 2 * right:
        return fail("that is LoRA on two matrices (or on W_q in both blocks); the question asks about one matrix.")
    if n == D * K + right:
        return fail("that adds the frozen W_q; count only the numbers LoRA trains.")
    if n == 1:
        return fail("r = 1 is the rank, not the number of trainable numbers: B and A each still have a full side.")
    return fail(f"{n:,} is not the count; B has d·r entries and A has r·k.")


TASK2, FALLBACK2 = "plus3", "sub3"  # the downstream task asked about, and the skill the model answers instead


@functools.lru_cache(maxsize=1)
def _measure2() -> tuple[float, float]:
    """(token accuracy of the pretrained model on plus3, share of its answer digits that equal sub3's answer)."""
    import torch

    from ...pretrained import load_pretrained
    from ...tasks import get_task
    from ...train import EVAL_SEED, evaluate, generate

    model = load_pretrained(device="cpu")
    x = get_task(TASK2).sample_x(512, torch.Generator().manual_seed(EVAL_SEED))
    agree = float((generate(model, x, TASK2) == get_task(FALLBACK2).fn(x)).float().mean())
    return evaluate(model, TASK2, n_examples=512), agree


REASONS2 = {
    "a": "random guessing would score about 1 in 10, but the measurement is not 1 in 10, and the model's answers are "
         "not random: run it on one input twice, or compare its output with the known skills.",
    "b": "",
    "c": "copying the digit 3 places on (rot 3) would be right only where x_i = 0, 1 time in 10 — the measurement "
         "is not that. Compare the model's plus3 output with rot3's, sub3's and add3's on the same input.",
    "d": "the model never saw the word `plus`, so there is nothing to half-understand: it answers every plus3 "
         "prompt with one rule it already knows. Which one, and how often does that rule agree with adding?",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict, measure, explain: the pretrained model's token accuracy on `plus3` (an op word it never saw)."""
    if prediction is None:
        return not_answered("write your prediction of the token accuracy (a number between 0 and 1) into "
                            "`prediction` before anything is measured, and run the cell.")
    v, problem = read_fraction(prediction)
    if problem:
        return fail(problem)
    first = EX.first_prediction(2, v)
    acc, agree = _measure2()
    good = abs(v - acc) <= 0.05
    if v >= 0.8:
        diag = "that would mean the model already adds when asked with `plus`. It has never seen that word: what "\
               "could it fall back on?"
    elif v <= 0.02:
        diag = "almost no digit right would mean the model's rule never agrees with adding; but a wrong rule can "\
               "agree with the right one by coincidence. How often?"
    else:
        diag = "the model answers the unknown word with one rule it knows; find which (compare its output with the "\
               "known skills), then work out how often that rule's digit equals x_i + x_(i+3) mod 10."
    return judge_prediction(v, first, f"token accuracy {acc:.3f} on 512 held-out examples", good, diag, why,
                            REASONS2, "b",
                            f"the model treats the unknown word `plus` like `sub`: {agree:.0%} of its answer digits "
                            "equal sub 3's. x_i − x_(i+3) ≡ x_i + x_(i+3) (mod 10) only when 2·x_(i+3) ≡ 0, i.e. "
                            "x_(i+3) is 0 or 5 — one time in five for random digits. Pretraining taught the route and "
                            "the arithmetic; only the word is new, and binding it to `add` is the small change LoRA "
                            "will learn (notebook 05).")

"""Self-checks for notebook 00 (start here): a warm-up count and a first predict → measure → explain."""

from __future__ import annotations

import functools

from .feedback import Exercises, fail, judge_prediction, not_answered, ok, read_fraction, read_number

__all__ = ["ex1", "ex2", "hint"]

EX = Exercises("nb00", hints={
    1: ["LoRA leaves W_q (64×64) frozen and trains two new matrices next to it: B and A.",
        "B is d×r and A is r×k; here d = k = 64 and r = 1.",
        "Count the entries of B, count the entries of A, add them."],
    2: ["The pretrained model has only ever been trained to copy; the prompt `BOS x SEP` never says which task is "
        "wanted. What does the model then write after the separator?",
        "Token accuracy is the share of the 8 answer digits that are right. For reverse, answer digit i should be "
        "input digit 9 − i.",
        "A copied digit is right exactly where input digit i equals input digit 9 − i. For random digits, how often "
        "are two given digits equal?"],
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


@functools.lru_cache(maxsize=1)
def _reverse_accuracy() -> float:
    from ...pretrained import load_pretrained
    from ...train import evaluate

    return evaluate(load_pretrained(device="cpu"), "reverse", n_examples=512)


REASONS2 = {
    "a": "random guessing would also score about 1 in 10, but look at the environment check above: the model's "
         "output is not random. What does it do with the digits it is given?",
    "b": "",
    "c": "the prompt contains no token that names the task: `BOS 3 1 4 … SEP` is the same prompt for copy and "
         "reverse, so nothing can be half-understood.",
    "d": "the model was pretrained on one task only (notebook 04 shows its recipe); it has never seen a reversed "
         "sequence.",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict, then measure, then explain: the pretrained (copy) model's token accuracy on `reverse`."""
    if prediction is None:
        return not_answered("write your prediction of the token accuracy (a number between 0 and 1) into "
                            "`prediction` before anything is measured, and run the cell.")
    v, problem = read_fraction(prediction)
    if problem:
        return fail(problem)
    first = EX.first_prediction(2, v)
    acc = _reverse_accuracy()
    good = abs(v - acc) <= 0.05
    if v >= 0.8:
        diag = "that would mean the model reverses. It was only ever trained to copy, and the prompt does not say "\
               "'reverse'."
    elif v <= 0.02:
        diag = "almost no digit right would mean every copied digit is wrong; but a copied digit can be right by "\
               "coincidence. How often?"
    else:
        diag = "the model does one thing with any prompt; work out how often that thing lands on the reversed digit."
    return judge_prediction(v, first, f"token accuracy {acc:.3f} on 512 held-out examples", good, diag, why,
                            REASONS2, "b",
                            "the model copies whatever you want, because copying is all its weights know; a "
                            "copied digit is right only when digit i equals digit 9 − i, one time in ten for random "
                            "digits. Only new weights can say 'reverse' — that is what LoRA will train (notebook 05).")

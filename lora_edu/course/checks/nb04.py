"""Self-checks for notebook 04 (the toy transformer). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import functools

from ...model import ToyConfig
from .feedback import Exercises, fail, judge_prediction, not_answered, ok, read_fraction, read_number

__all__ = ["ex1", "ex2", "ex3", "hint"]

EX = Exercises("nb04", hints={
    1: ["Each attention projection is one nn.Linear(d_model, d_model): its weight is d_model × d_model.",
        "Every block has four of them (q, k, v, o), and the model has cfg.n_layer blocks. Biases are separate "
        "parameters.",
        "In code: add up p.numel() over model.named_parameters() whose name contains '.attn.' and ends in "
        "'_proj.weight'."],
    2: ["Section 4 found which known rule the model's answers follow when asked plus3: compare that rule with "
        "plus3's, digit by digit.",
        "Token accuracy is the share of answer digits that are right; a digit is right where the rule the model "
        "follows and plus3's rule happen to give the same digit.",
        "For which partner digits y is (x − y) mod 10 equal to (x + y) mod 10? How often is a random digit one of "
        "them?"],
    3: ["Each adapted matrix gets its own A (r×k) and B (d×r); here d = k = d_model.",
        "Four attention matrices per block, and cfg.n_layer blocks.",
        "Confirm with le.add_lora on copy.deepcopy(model) and le.count_parameters."],
})
hint = EX.hint


@EX.check(1)
def ex1(answer) -> bool:
    """Scalars in all attention weight matrices (W_q, W_k, W_v, W_o of every block, biases excluded)."""
    if answer is None:
        return not_answered("give the number of scalars (a whole number) in all attention weight matrices of the "
                            "model.")
    n, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    cfg = ToyConfig()
    d, L = cfg.d_model, cfg.n_layer
    right = 4 * L * d * d
    if n == right:
        return ok(f"{L} blocks × 4 matrices × {d}×{d} = {right:,}: about a third of the model.")
    if n == right + 4 * L * d:
        return fail("that includes the bias vectors; the question asks for the weight matrices only.")
    if n == 4 * d * d:
        return fail("that is one block's worth; count every block.")
    if n == d * d:
        return fail("that is a single matrix; there are four per block, in every block.")
    if n == 3 * L * d * d:
        return fail("that counts W_q, W_k and W_v but leaves out the output projection W_o.")
    if n > right:
        return fail("that is more than the attention weights hold: did the MLP or the embeddings get in?")
    return fail(f"{n:,} is not it: not every attention weight matrix is counted.")


@functools.lru_cache(maxsize=1)
def _plus3_accuracy() -> tuple[float, float]:
    from ...pretrained import load_pretrained
    from ...train import evaluate

    m = load_pretrained(device="cpu")
    return evaluate(m, "plus3", 512), evaluate(m, "plus3", 512, metric="sequence")


REASONS2 = {
    "a": "the model does not output random digits: section 4 shows its answers follow one known rule almost "
         "everywhere, and random digits would be right 1 time in 10, not the token accuracy measured above.",
    "b": "",
    "c": "that would hold only if each digit were right independently with one fixed chance; here whether a digit is "
         "right depends on the partner digit it reads. The number may look similar — the reason is not.",
    "d": "the route is not the problem: the rule the answers follow in section 4 reads the same partner digit "
         "x_(i+3) as plus3 does.",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict, then measure, then explain: the pretrained model's *token* accuracy on `plus3`."""
    if prediction is None:
        return not_answered("write your prediction of the token accuracy on plus3 (a number between 0 and 1) "
                            "into `prediction` before anything is measured, and run the cell.")
    v, problem = read_fraction(prediction)
    if problem:
        return fail(problem)
    first = EX.first_prediction(2, v)
    token, seq = _plus3_accuracy()
    good = abs(v - token) <= 0.05
    if abs(v - seq) <= 0.02:
        diag = "that is about the *whole-answer* accuracy; token accuracy gives credit for every right digit."
    elif abs(v - 0.1) <= 0.03:
        diag = "1 in 10 is the chance of a random digit being right; the model does not answer at random."
    elif v > token:
        diag = "too high: the rule the model follows agrees with plus3's only for some partner digits."
    else:
        diag = "too low: for some partner digits the rule the model follows gives plus3's digit too."
    return judge_prediction(v, first, f"token accuracy {token:.3f} (whole answers {seq:.3f}) on 512 held-out "
                            "examples", good, diag, why, REASONS2, "b",
                            "the model reads the unknown word as `sub` and answers (x − y) mod 10 with the right "
                            "partner y = x_(i+3). That equals plus3's (x + y) mod 10 exactly when 2y ≡ 0 (mod 10), "
                            "i.e. y = 0 or 5: one partner digit in five. A whole answer needs all six, so whole "
                            "answers are almost never right — the model has the route and the arithmetic, only the "
                            "word is missing.")


@EX.check(3)
def ex3(answer) -> bool:
    """LoRA parameters for r = 8 on W_q, W_k, W_v and W_o of every block."""
    if answer is None:
        return not_answered("give the number of trainable parameters (a whole number) LoRA with r = 8 adds on all "
                            "four attention matrices of every block.")
    n, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    cfg = ToyConfig()
    d, L, r = cfg.d_model, cfg.n_layer, 8
    per = r * (d + d)
    right = 4 * L * per
    if n == right:
        return ok(f"4 matrices × {L} blocks × r·(d + k) = 4 × {L} × {per} = {right:,}, "
                  f"{right / (4 * L * d * d):.0%} of the attention weights.")
    if n == right // 2:
        return fail("that is half of it: each adapted matrix gets both factors, A and B.")
    if n == right // L:
        return fail("that is one block's worth; count every block.")
    if n == L * per:
        return fail("that is one matrix per block; the question asks for all four attention matrices.")
    if n == 4 * L * r * r:
        return fail("A is r×k and B is d×r: each has one side of length d_model, not r.")
    if n == 4 * L * d * d:
        return fail("that is the size of the frozen matrices themselves, not of the low-rank factors.")
    return fail(f"{n:,} is not it; per adapted matrix, A has r·k and B has d·r entries.")

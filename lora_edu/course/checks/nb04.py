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
    2: ["The model copies. For sort, a copied digit is right where the input digit already sits in its sorted "
        "place.",
        "Sequence accuracy counts an example right only if all 8 answer digits are right.",
        "When is a copy of the input entirely right for sort? How often are 8 random digits already in order?"],
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
def _sort_accuracy() -> tuple[float, float]:
    from ...pretrained import load_pretrained
    from ...train import evaluate

    m = load_pretrained(device="cpu")
    return evaluate(m, "sort", 512), evaluate(m, "sort", 512, metric="sequence")


REASONS2 = {
    "a": "the model does not output random digits: it copies (section 4 shows model and copy rule agree), and "
         "random digits would score about 0.1 per digit on sort, not the token accuracy measured above.",
    "b": "",
    "c": "that holds only if every digit were right independently of the others, with the same chance; here "
         "whether a digit is right depends on the whole input. The number can look similar — the reason is not.",
    "d": "the question is why whole answers are so much rarer than right digits; the MLP does not enter into it.",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict, then measure, then explain: the pretrained model's *sequence* accuracy on `sort`."""
    if prediction is None:
        return not_answered("write your prediction of the sequence accuracy on sort (a number between 0 and 1) "
                            "into `prediction` before anything is measured, and run the cell.")
    v, problem = read_fraction(prediction)
    if problem:
        return fail(problem)
    first = EX.first_prediction(2, v)
    token, seq = _sort_accuracy()
    good = abs(v - seq) <= 0.01
    if abs(v - token) <= 0.05:
        diag = "that is about the *token* accuracy (the share of right digits); a whole answer needs all 8 right."
    elif abs(v - 0.1) <= 0.03:
        diag = "1 in 10 is the chance of one random digit being right; a sequence needs eight right digits."
    else:
        diag = "think about when a copied sequence is entirely right for sort."
    return judge_prediction(v, first, f"sequence accuracy {seq:.4f} (token accuracy {token:.3f}) on 512 held-out "
                            "examples", good, diag, why, REASONS2, "b",
                            "copying is right at a position where the digit is already in its sorted place — often "
                            "for one position, but all eight only when the input is already sorted, which random "
                            "digits almost never are. Token accuracy gives partial credit; a task is learned when "
                            "whole answers come out right.")


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
        return fail("that is half of it: either only one of the two factors (each matrix gets both A and B) or only "
                    "one of the blocks.")
    if n == L * per:
        return fail("that is one matrix per block; the question asks for all four attention matrices.")
    if n == 4 * L * r * r:
        return fail("A is r×k and B is d×r: each has one side of length d_model, not r.")
    if n == 4 * L * d * d:
        return fail("that is the size of the frozen matrices themselves, not of the low-rank factors.")
    return fail(f"{n:,} is not it; per adapted matrix, A has r·k and B has d·r entries.")

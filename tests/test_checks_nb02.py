"""Self-checks of notebook 02: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import math

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb02 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


def test_ex1(capsys):
    assert run(capsys, check.ex1, ((64, 8), (8, 256)))[0]
    assert run(capsys, check.ex1, (torch.Size([64, 8]), torch.Size([8, 256])))[0]
    assert run(capsys, check.ex1, [[64, 8], [8, 256]])[0]
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and "(64, 8)" not in out
    for wrong, says in [(((8, 64), (8, 256)), "your B cannot be right"), (((8, 256), (64, 8)), "swapped"),
                        (((64, 8), (256, 8)), "your A cannot be right"), ("64x8", "give a pair"),
                        (((64, 8),), "give a pair"), (((64.5, 8), (8, 256)), "whole numbers"),
                        ((torch.zeros(64, 8), torch.zeros(8, 256)), "not the tensors")]:
        ok, out = run(capsys, check.ex1, wrong)
        leaks = [shape for shape in ("(64, 8)", "(8, 256)") if shape in out and shape not in repr(wrong)]
        assert not ok and says in out and not leaks


def right2(x, W0, A, B, alpha):
    return x @ W0.T + alpha / A.shape[0] * (x @ A.T) @ B.T


def test_ex2_accepts_every_honest_form(capsys):
    assert run(capsys, check.ex2, right2)[0]
    assert run(capsys, check.ex2, lambda x, W0, A, B, a: torch.nn.functional.linear(x, W0)
               + a / B.shape[1] * torch.nn.functional.linear(torch.nn.functional.linear(x, A), B))[0]
    assert run(capsys, check.ex2, lambda x, W0, A, B, a: (right2(x, W0, A, B, a)).numpy())[0]


def _wrapper(x, W0, A, B, alpha):
    lin = torch.nn.Linear(W0.shape[1], W0.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(W0)
    layer = le.LoRALinear(lin, r=A.shape[0], alpha=alpha)
    with torch.no_grad():
        layer.A.copy_(A)
        layer.B.copy_(B)
    return layer(x).detach()


def _path(scale):
    return lambda x, W0, A, B, a: x @ W0.T + scale(x, A, B, a) * (x @ A.T) @ B.T


WRONG2 = {
    "no scaling": (_path(lambda x, A, B, a: 1.0), "left out the scaling"),
    "alpha only": (_path(lambda x, A, B, a: a), "scaled by α alone"),
    "rsLoRA": (_path(lambda x, A, B, a: a / math.sqrt(A.shape[0])), "rsLoRA"),
    "inverted": (_path(lambda x, A, B, a: A.shape[0] / a), "upside down"),
    "squared": (_path(lambda x, A, B, a: (a / A.shape[0]) ** 2), "applied twice"),
    "r from B's rows": (_path(lambda x, A, B, a: a / B.shape[0]), "wrong r"),
    "r from A's columns": (_path(lambda x, A, B, a: a / A.shape[1]), "wrong r"),
    "r from the batch": (_path(lambda x, A, B, a: a / x.shape[0]), "wrong r"),
    "hard-coded r = 2": (_path(lambda x, A, B, a: a / 2), "divides α by 2"),
    "hard-coded scale": (_path(lambda x, A, B, a: 1.5), "same number whatever α and r"),
    "forms BA": (lambda x, W0, A, B, a: x @ (W0 + a / A.shape[0] * B @ A).T, "forms the d×k matrix"),
    "forms (BA)ᵀ": (lambda x, W0, A, B, a: x @ W0.T + a / A.shape[0] * x @ (A.T @ B.T), "forms the d×k matrix"),
    "wraps LoRALinear": (_wrapper, "uses le.LoRALinear"),
    "ignores A and B": (lambda x, W0, A, B, a: x @ W0.T, "ignores A and B"),
    "drops W0": (lambda x, W0, A, B, a: a / A.shape[0] * (x @ A.T) @ B.T, "dropped the frozen path"),
    "transposed output": (lambda x, W0, A, B, a: right2(x, W0, A, B, a).T, "transposed"),
    "one row": (lambda x, W0, A, B, a: right2(x, W0, A, B, a)[:1], "one row per example"),
    "wrong path": (lambda x, W0, A, B, a: x @ W0.T + (x @ A.T) @ B[:, :1].T.expand(A.shape[0], -1),
                   "check the update path"),
    "returns None (the stub)": (lambda x, W0, A, B, a: None, "forget the `return`"),
    "raises on shapes": (lambda x, W0, A, B, a: W0 @ x, "raised RuntimeError"),
    "NaN": (lambda x, W0, A, B, a: right2(x, W0, A, B, a) * float("nan"), "NaN"),
    "not a function": (42, "pass your function itself"),
}


@pytest.mark.parametrize("name", WRONG2)
def test_ex2_wrong_functions(capsys, name):
    fn, says = WRONG2[name]
    ok, out = run(capsys, check.ex2, fn)
    assert not ok and out.startswith("❌") and says in out
    assert "x @ A.T) @ B.T" not in out and "A.shape[0]" not in out, "the message never spells out the code"


def test_ex2_unanswered_gives_no_formula(capsys):
    ok, out = run(capsys, check.ex2, None)
    assert not ok and out.startswith("⏳") and "alpha / r" not in out and "@" not in out


@pytest.fixture(scope="module")
def ref_and_x():
    return le.load_pretrained("cpu"), le.get_task("plus3").batch(4, torch.Generator().manual_seed(0))[0]


ALL4 = ("q_proj", "k_proj", "v_proj", "o_proj")


def _lora(targets=ALL4, r=2):
    m = le.load_pretrained("cpu")
    le.add_lora(m, targets=targets, r=r)
    return m


def test_ex3_right(capsys, ref_and_x):
    ref, x = ref_and_x
    ok, out = run(capsys, check.ex3, _lora(), ref, x)
    assert ok and "bit-identical" in out


def _random_b():
    m = _lora()
    with torch.no_grad():
        m.blocks[0].attn.k_proj.B.fill_(0.1)
    return m


def _trained_base():
    m = le.load_pretrained("cpu")
    with torch.no_grad():
        m.blocks[1].mlp.up_proj.weight.add_(0.01)
    le.add_lora(m, targets=ALL4, r=2)
    return m


def _unfrozen():
    m = _lora()
    m.blocks[0].mlp.up_proj.weight.requires_grad_(True)
    return m


WRONG3 = {
    "no LoRA": (lambda: le.load_pretrained("cpu"), "no LoRA layers"),
    "q and v only": (lambda: _lora(("q_proj", "v_proj")), "missing on ['k_proj', 'o_proj']"),
    "MLP too": (lambda: _lora(ALL4 + ("up_proj",)), "also on ['up_proj']"),
    "rank 4": (lambda: _lora(r=4), "r = 2"),
    "random B": (_random_b, "B is not zero"),
    "not a fresh model": (_trained_base, "not the pretrained checkpoint's"),
    "base weights trainable": (_unfrozen, "still trainable"),
    "a string": (lambda: "model", "nn.Module"),
}


@pytest.mark.parametrize("name", WRONG3)
def test_ex3_wrong_models(capsys, ref_and_x, name):
    ref, x = ref_and_x
    make, says = WRONG3[name]
    ok, out = run(capsys, check.ex3, make(), ref, x)
    assert not ok and out.startswith("❌") and says in out


def test_ex3_lora_on_the_reference_itself_is_caught(capsys, ref_and_x):
    _, x = ref_and_x
    ref = le.load_pretrained("cpu")
    le.add_lora(ref, targets=ALL4, r=2)
    with torch.no_grad():
        ref.blocks[0].attn.q_proj.B.normal_()  # random B: comparing the model with itself would hide it
    ok, out = run(capsys, check.ex3, ref, ref, x)
    assert not ok and "`pretrained` itself" in out
    ok, out = run(capsys, check.ex3, _lora(), ref, x)
    assert not ok and "has LoRA layers now" in out
    shared = le.load_pretrained("cpu")
    m = _lora()
    m.tok_emb = shared.tok_emb
    ok, out = run(capsys, check.ex3, m, shared, x)
    assert not ok and "shares its weights" in out


def test_ex4_predict_then_explain(capsys):
    ok, out = run(capsys, check.ex4)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex4, 0)
    assert not ok and "‖ΔW‖_F = 0 from A = B = 0" in out and "⏳" in out
    assert run(capsys, check.ex4, 0.0, "b")[0]


@pytest.mark.parametrize("prediction, says", [(0.01, "nonzero gradient"), (5.0, "nonzero gradient"),
                                              (-1, "never negative"), ("zero", "not the text")])
def test_ex4_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex4, prediction, "b")
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("a", "about lr per step"), ("c", "only means W0 gets no update"),
                                       ("d", "rank can grow"), ("bb", "not one of")])
def test_ex4_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex4, 0, why)
    assert not ok and says in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, ref_and_x, bad):
    ref, x = ref_and_x
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex3, bad, ref, x)
    assert_safe(capsys, check.ex3, _lora(), ref, bad) if bad is not None else None
    assert_safe(capsys, check.ex4, bad)
    assert_safe(capsys, check.ex4, 0, bad)

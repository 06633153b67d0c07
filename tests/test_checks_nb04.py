"""Self-checks of notebook 04: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import copy

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb04 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


@pytest.fixture(scope="module")
def model():
    return le.load_pretrained(device="cpu")


def test_ex1(capsys, model):
    right = sum(p.numel() for n, p in model.named_parameters() if ".attn." in n and n.endswith("_proj.weight"))
    assert run(capsys, check.ex1, right)[0] and run(capsys, check.ex1, torch.tensor(right))[0]
    assert run(capsys, check.ex1, str(right))[0], "numeric text is read as a number, as in every check"
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and f"{right:,}" not in out and str(right) not in out
    L, d = model.cfg.n_layer, model.cfg.d_model
    for wrong, says in [(right + 4 * L * d, "bias"), (right // L, "one block's"), (d * d, "single matrix"),
                        (3 * right // 4, "W_o"), (12345, "not every attention weight"), (10 ** 6, "MLP"),
                        (True, "truth value")]:
        ok, out = run(capsys, check.ex1, wrong)
        verdict = out.splitlines()[0]
        assert not ok and says in verdict and f"{right:,}" not in out
        assert "named_parameters" not in verdict, "the code that computes it is a hint, not a diagnosis"


def test_ex2_predict_then_explain(capsys, model):
    token = le.evaluate(model, "plus3", 512)
    ok, out = run(capsys, check.ex2)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex2, 0.9)
    assert not ok and f"token accuracy {token:.3f}" in out and "`why`" not in out
    ok, out = run(capsys, check.ex2, token + 0.03)
    assert not ok and "`why`" in out, "a prediction within 0.05 agrees and asks for the explanation"
    assert run(capsys, check.ex2, 0.2, "b")[0] and run(capsys, check.ex2, token, "B")[0]


@pytest.mark.parametrize("prediction, says", [(0.0, "*whole-answer* accuracy"), (0.1, "random digit"),
                                              (0.6, "too high"), (0.15, "too low"), (30, "fraction"),
                                              (-1, "not an accuracy")])
def test_ex2_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex2, prediction, "b")
    assert not ok and says in out
    assert "2y" not in out and "0 or 5" not in out, "a wrong prediction is not told the reason"


@pytest.mark.parametrize("why, says", [("a", "does not output random digits"), ("c", "independently"),
                                       ("d", "route is not the problem"), ("x", "not one of")])
def test_ex2_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex2, 0.2, why)
    assert not ok and says in out


def test_ex3(capsys, model):
    m = copy.deepcopy(model)
    le.add_lora(m, ("q_proj", "k_proj", "v_proj", "o_proj"), r=8)
    right = le.count_parameters(m)[0]
    assert run(capsys, check.ex3, right)[0]
    ok, out = run(capsys, check.ex3, None)
    assert not ok and out.startswith("⏳") and str(right) not in out
    L = model.cfg.n_layer
    for wrong, says in [(right // 2, "half of it"), (L * 8 * 128, "one matrix per block"),
                        (right // L, "one block's"), (4 * L * 8 * 8, "not r"), (4 * L * 64 * 64, "frozen matrices"),
                        (7, "per adapted matrix")]:
        ok, out = run(capsys, check.ex3, wrong)
        assert not ok and says in out and f"{right:,}" not in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex2, 0.0, bad)
    assert_safe(capsys, check.ex3, bad)

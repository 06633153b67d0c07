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
    for wrong, says in [(right + 8 * 64, "bias"), (right // 2, "one block's"), (4096, "single matrix"),
                        (3 * right // 4, "W_o"), (12345, "not every attention weight"), (10 ** 6, "MLP"),
                        (True, "truth value")]:
        ok, out = run(capsys, check.ex1, wrong)
        verdict = out.splitlines()[0]
        assert not ok and says in verdict and f"{right:,}" not in out
        assert "named_parameters" not in verdict, "the code that computes it is a hint, not a diagnosis"


def test_ex2_predict_then_explain(capsys, model):
    seq = le.evaluate(model, "sort", 512, metric="sequence")
    ok, out = run(capsys, check.ex2)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex2, 0.001)
    assert not ok and f"sequence accuracy {seq:.4f}" in out and "`why`" in out
    assert run(capsys, check.ex2, 0, "b")[0]


@pytest.mark.parametrize("prediction, says", [(0.21, "*token* accuracy"), (0.1, "chance of one random digit"),
                                              (0.6, "entirely right"), (30, "fraction"), (-1, "not an accuracy")])
def test_ex2_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex2, prediction, "b")
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("a", "does not output random digits"), ("c", "independently"),
                                       ("d", "MLP does not enter"), ("x", "not one of")])
def test_ex2_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex2, 0.0, why)
    assert not ok and says in out


def test_ex3(capsys, model):
    m = copy.deepcopy(model)
    le.add_lora(m, ("q_proj", "k_proj", "v_proj", "o_proj"), r=8)
    right = le.count_parameters(m)[0]
    assert run(capsys, check.ex3, right)[0]
    ok, out = run(capsys, check.ex3, None)
    assert not ok and out.startswith("⏳") and str(right) not in out
    for wrong, says in [(right // 2, "half of it"), (2 * 8 * 128, "one matrix per block"),
                        (4 * 2 * 8 * 8, "not r"), (8 * 64 * 64, "frozen matrices"), (7, "per adapted matrix")]:
        ok, out = run(capsys, check.ex3, wrong)
        assert not ok and says in out and f"{right:,}" not in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex2, 0.0, bad)
    assert_safe(capsys, check.ex3, bad)

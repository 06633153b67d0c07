"""Notebook 00's own exercises: a warm-up count and a predict → measure → explain, with their diagnoses."""

from __future__ import annotations

import pytest

from lora_edu.course.checks import nb00 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


def test_ex1_right_and_unanswered(capsys):
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and "128" not in out
    assert run(capsys, check.ex1, 128)[0] and run(capsys, check.ex1, "128")[0]


@pytest.mark.parametrize("wrong, says", [(4096, "size of W_q itself"), (64, "one of the two matrices"),
                                         (256, "two matrices"), (4096 + 128, "adds the frozen"),
                                         (1, "rank, not the number"), (100, "d·r entries"), (127.5, "whole")])
def test_ex1_wrong_answers_are_diagnosed_without_the_answer(capsys, wrong, says):
    ok, out = run(capsys, check.ex1, wrong)
    assert not ok and out.startswith("❌") and says in out and "128" not in out


def test_ex2_measures_what_the_explanation_says():
    """The graded explanation (b) must stay true of the shipped checkpoint: plus3 is answered as sub3, ≈ 1 in 5."""
    acc, agree = check._measure2()
    assert agree >= 0.9, f"the pretrained model no longer answers plus3 as sub3 ({agree:.2f}): rewrite exercise 2"
    assert abs(acc - 0.2) <= 0.05, acc


def test_ex2_predict_then_explain(capsys):
    ok, out = run(capsys, check.ex2)
    assert not ok and out.startswith("⏳") and "Measured" not in out, "no measurement before a prediction"
    ok, out = run(capsys, check.ex2, 0.2)
    assert not ok and "📏 Measured: token accuracy 0.2" in out and "⏳" in out and "`why`" in out
    ok, out = run(capsys, check.ex2, 0.2, "b")
    assert ok and "like `sub`" in out


@pytest.mark.parametrize("prediction, says", [(1.0, "already adds"), (0.0, "by coincidence"),
                                              (0.1, "one rule it knows"), (0.5, "one rule it knows"),
                                              (10, "fraction between 0 and 1"),
                                              (-0.2, "not an accuracy"), ("ten percent", "not the text")])
def test_ex2_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex2, prediction, "b")
    assert not ok and "❌" in out and says in out and "0 or 5" not in out


@pytest.mark.parametrize("why, says", [("a", "not random"), ("c", "rot 3"), ("d", "nothing to half-understand"),
                                       ("e", "not one of"), (2, "one letter")])
def test_ex2_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex2, 0.2, why)
    assert not ok and "❌" in out and says in out


def test_ex2_keeps_the_first_prediction(capsys):
    run(capsys, check.ex2, 0.6)
    ok, out = run(capsys, check.ex2, 0.21, "b")
    assert ok and "first prediction was 0.6" in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex2, 0.2, bad)

"""Self-checks of notebook 03: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import pytest
import torch

import lora_edu as le
from lora_edu.course import matrix_fit
from lora_edu.course.checks import nb03 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


@pytest.fixture(scope="module")
def mystery():
    return matrix_fit.planted_update(48, 40, rank=6, seed=7) + matrix_fit.planted_update(48, 40, rank=3, seed=8)


def test_ex1(capsys, mystery):
    truth = le.numerical_rank(mystery)
    assert truth == 9
    assert run(capsys, check.ex1, truth, mystery)[0] and run(capsys, check.ex1, torch.tensor(9), mystery)[0]
    ok, out = run(capsys, check.ex1, None, mystery)
    assert not ok and out.startswith("⏳") and "9" not in out
    for wrong, says in [(6, "more independent directions"), (3, "more independent directions"),
                        (8, "more independent directions"), (12, "not the smallest"), (40, "always suffices"),
                        (0, "no update at all"), ("nine", "not the text")]:
        ok, out = run(capsys, check.ex1, wrong, mystery)
        assert not ok and says in out and " 9 " not in out and "= 9" not in out


def right2(s, r):
    s2 = s.pow(2)
    return float(s2[r:].sum() / s2.sum())


def test_ex2_accepts_honest_code(capsys):
    assert run(capsys, check.ex2, right2)[0]
    assert run(capsys, check.ex2, lambda s, r: 1 - s[:r].pow(2).sum() / s.pow(2).sum())[0]


WRONG2 = {
    "eckart_young_error": (lambda s, r: le.eckart_young_error(torch.diag(s), r) ** 2 / float(s.pow(2).sum()),
                           "uses le.eckart_young_error"),
    "relative_error": (lambda s, r: le.relative_error(torch.diag(s), r) ** 2, "uses le.relative_error"),
    "energy": (lambda s, r: 1 - le.energy(torch.diag(s), r), "uses le.energy"),
    "captured": (lambda s, r: float(s[:r].pow(2).sum() / s.pow(2).sum()), "*captures*"),
    "not squared": (lambda s, r: right2(s, r) ** 0.5, "*squared* error"),
    "plain σ": (lambda s, r: float(s[r:].sum() / s.sum()), "square the singular values"),
    "absolute": (lambda s, r: float(s[r:].pow(2).sum()), "relative to ‖ΔW*‖_F²"),
    "one more": (lambda s, r: right2(s, r + 1), "error starts at σ_{r+1}"),
    "one less": (lambda s, r: right2(s, max(r - 1, 0)), "keeps r singular values"),
    "rounded": (lambda s, r: round(right2(s, r), 2), "rounds"),
    "stub": (lambda s, r: None, "forget the `return`"),
    "raises": (lambda s, r: s[r:].pow(2).sum() / s.reshape(4, -1), "raised RuntimeError"),
    "arbitrary": (lambda s, r: 0.36, "not the relative squared error"),
    "not a function": (0.36, "pass your function itself"),
}


@pytest.mark.parametrize("name", WRONG2)
def test_ex2_wrong_functions(capsys, name):
    fn, says = WRONG2[name]
    ok, out = run(capsys, check.ex2, fn)
    assert not ok and out.startswith("❌") and says in out and "s[" not in out and "sum()" not in out


def test_ex3(capsys):
    assert run(capsys, check.ex3, 32)[0] and run(capsys, check.ex3, "32")[0]
    assert run(capsys, check.ex3, 7, d=10, k=20)[0]  # 200/30 = 6.67 → 7
    ok, out = run(capsys, check.ex3, None)
    assert not ok and out.startswith("⏳") and "32" not in out
    for wrong, says in [(64, "expressiveness"), (31, "still below"), (16, "still below"), (40, "smaller r"),
                        (0, "positive"), (32.5, "whole")]:
        ok, out = run(capsys, check.ex3, wrong)
        assert not ok and says in out and "r = 32" not in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, mystery, bad):
    assert_safe(capsys, check.ex1, bad, mystery)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex3, bad)

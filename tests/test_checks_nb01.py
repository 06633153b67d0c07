"""Self-checks of notebook 01: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import math

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb01 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


def _W():
    q = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(0)))[0]
    return torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0])) @ q  # energies 16, 9, 4, 1 of 30: .533 .833 .967 1


def test_ex1(capsys):
    W = _W()
    ok, out = run(capsys, check.ex1, None, W)
    assert not ok and out.startswith("⏳") and "3" not in out.split("\n")[0]
    assert run(capsys, check.ex1, 3, W)[0] and run(capsys, check.ex1, "3", W)[0]
    for wrong, says in [(2, "off by one"), (4, "not the *smallest*"), (1, "less than 90%"), (9, "between 1 and 4"),
                        (0, "between 1 and 4"), (2.5, "whole")]:
        ok, out = run(capsys, check.ex1, wrong, W)
        assert not ok and says in out and "r = 3" not in out
    W2 = torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0, 1.0]))  # plain σ reach 90% much later than σ²
    assert run(capsys, check.ex1, 1, W2)[0]
    ok, out = run(capsys, check.ex1, 5, W2)  # plain σ: 10, 11, …, 15 of 15 reach 90% at r = 5
    assert not ok and "plain σᵢ" in out


def right2(s, r):
    return float(s[r:].pow(2).sum().sqrt())


def test_ex2_accepts_honest_code_in_any_numeric_form(capsys):
    assert run(capsys, check.ex2, right2)[0]
    assert run(capsys, check.ex2, lambda s, r: torch.linalg.vector_norm(s[r:]))[0]  # a 0-d tensor
    assert run(capsys, check.ex2, lambda s, r: (s[r:] ** 2).sum().sqrt().reshape(1))[0]  # a 1-element tensor
    assert run(capsys, check.ex2, lambda s, r: math.sqrt(sum(float(v) ** 2 for v in s[r:])))[0]


_alias = le.eckart_young_error


WRONG2 = {
    "the library itself": (le.eckart_young_error, "uses le.eckart_young_error"),
    "the library on diag(s)": (lambda s, r: le.eckart_young_error(torch.diag(s), r), "uses le.eckart_young_error"),
    "an alias of it": (lambda s, r: _alias(torch.diag(s), r), "uses le.eckart_young_error"),
    "measured via low_rank_approx": (lambda s, r: float((torch.diag(s) - le.low_rank_approx(torch.diag(s), r)).norm()),
                                     "uses le.low_rank_approx"),
    "squared": (lambda s, r: float(s[r:].pow(2).sum()), "*squared* error"),
    "unsquared": (lambda s, r: float(s[r:].sum()), "dropped σᵢ themselves"),
    "kept part": (lambda s, r: float(s[:r].pow(2).sum().sqrt()), "truncation *keeps*"),
    "relative": (lambda s, r: float(s[r:].pow(2).sum().sqrt() / s.pow(2).sum().sqrt()), "relative to ‖W‖_F"),
    "spectral": (lambda s, r: float(s[r]) if r < len(s) else 0.0, "spectral norm"),
    "one too few dropped": (lambda s, r: float(s[r + 1:].pow(2).sum().sqrt()), "one piece too few"),
    "one too many dropped": (lambda s, r: float(s[max(r - 1, 0):].pow(2).sum().sqrt()), "one piece too many"),
    "forgot return": (lambda s, r: None, "forget the `return`"),
    "a vector": (lambda s, r: s[r:].pow(2), "one number"),
    "raises": (lambda s, r: s.reshape(2, -1), "raised RuntimeError"),
    "hard-coded": (lambda s, r: 3.2, "not the Frobenius error"),
    "not a function": (3.2, "pass your function itself"),
}


@pytest.mark.parametrize("name", WRONG2)
def test_ex2_wrong_functions(capsys, name):
    fn, says = WRONG2[name]
    ok, out = run(capsys, check.ex2, fn)
    assert not ok and out.startswith("❌") and says in out


def test_ex2_unanswered_gives_no_formula(capsys):
    ok, out = run(capsys, check.ex2, None)
    assert not ok and out.startswith("⏳") and "σ" not in out.split("\n")[0] and "s[" not in out


def test_ex3(capsys):
    d, k, r = 49152, 12288, 8
    assert run(capsys, check.ex3, r * (d + k))[0]
    ok, out = run(capsys, check.ex3, None)
    assert not ok and out.startswith("⏳") and f"{r * (d + k):,}" not in out
    for wrong, says in [(d * k, "full update"), (r * d, "one of the two factors"), (r * k, "one of the two factors"),
                        (2 * r * d, "square"), (2 * r * k, "square"), (r * r, "not r"),
                        (d * k / (r * (d + k)), "compression ratio"), (12345, "count the entries")]:
        ok, out = run(capsys, check.ex3, wrong)
        assert not ok and says in out and f"{r * (d + k):,}" not in out and str(r * (d + k)) not in out
    assert run(capsys, check.ex3, 3 * (10 + 20), d=10, k=20, r=3)[0]


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    W = _W()
    assert_safe(capsys, check.ex1, bad, W)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex3, bad)

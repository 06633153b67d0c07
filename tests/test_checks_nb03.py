"""Self-checks of notebook 03 accept the right answer and explain typical wrong ones."""

from __future__ import annotations

import torch

from lora_edu.course import matrix_fit
from lora_edu.course.checks import nb03 as check


def test_ex1(capsys):
    T = matrix_fit.planted_update(32, 32, 6)
    assert check.ex1(6, T) is True
    assert check.ex1(torch.tensor(6), T) is True
    assert check.ex1(32, T) is False and "not the smallest" in capsys.readouterr().out
    assert check.ex1(5, T) is False and "at most 5" in capsys.readouterr().out
    assert check.ex1(None, T) is False and check.ex1("six", T) is False


def test_ex2(capsys):
    T = matrix_fit.planted_update(16, 16, 5)
    s2 = torch.linalg.svdvals(T.double()) ** 2
    truth = float(s2[3:].sum() / s2.sum())
    assert check.ex2(truth, T) is True
    assert check.ex2(1 - truth, T) is False and "captures" in capsys.readouterr().out
    assert check.ex2(truth**0.5, T) is False and "square" in capsys.readouterr().out
    assert check.ex2(float(s2[2:].sum() / s2.sum()), T) is False and "off by one" in capsys.readouterr().out
    assert check.ex2(None, T) is False and check.ex2([1], T) is False


def test_ex3(capsys):
    assert check.ex3(32) is True
    assert check.ex3(64) is False and "expressiveness" in capsys.readouterr().out
    assert check.ex3(31) is False and "below" in capsys.readouterr().out
    assert check.ex3(None) is False
    assert check.ex3(7, d=10, k=20) is True  # 200/30 = 6.67 → 7

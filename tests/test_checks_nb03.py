"""Self-checks of notebook 03 accept the right answer and explain typical wrong ones."""

from __future__ import annotations

import torch

from lora_edu import experiments_math as em
from lora_edu.checks import nb03


def test_ex1(capsys):
    T = em.planted_update(32, 32, 6)
    assert nb03.ex1(6, T) is True
    assert nb03.ex1(torch.tensor(6), T) is True
    assert nb03.ex1(32, T) is False and "not the smallest" in capsys.readouterr().out
    assert nb03.ex1(5, T) is False and "at most 5" in capsys.readouterr().out
    assert nb03.ex1(None, T) is False and nb03.ex1("six", T) is False


def test_ex2(capsys):
    T = em.planted_update(16, 16, 5)
    s2 = torch.linalg.svdvals(T.double()) ** 2
    truth = float(s2[3:].sum() / s2.sum())
    assert nb03.ex2(truth, T) is True
    assert nb03.ex2(1 - truth, T) is False and "captures" in capsys.readouterr().out
    assert nb03.ex2(truth**0.5, T) is False and "square" in capsys.readouterr().out
    assert nb03.ex2(float(s2[2:].sum() / s2.sum()), T) is False and "off by one" in capsys.readouterr().out
    assert nb03.ex2(None, T) is False and nb03.ex2([1], T) is False


def test_ex3(capsys):
    assert nb03.ex3(32) is True
    assert nb03.ex3(64) is False and "expressiveness" in capsys.readouterr().out
    assert nb03.ex3(31) is False and "below" in capsys.readouterr().out
    assert nb03.ex3(None) is False
    assert nb03.ex3(7, d=10, k=20) is True  # 200/30 = 6.67 → 7

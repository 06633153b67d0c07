"""Self-checks of notebook 01 accept the right answer and explain typical wrong ones."""

from __future__ import annotations

import torch

import lora_edu as le
from lora_edu.course.checks import nb01 as check


def _W():
    return torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0])) @ torch.linalg.qr(torch.randn(4, 4,
                                                                                 generator=torch.Generator().manual_seed(0)))[0]


def test_ex1(capsys):
    W = _W()  # energies 16, 9, 4, 1 of 30: cumulative .533 .833 .967 1
    assert check.ex1(None, W) is False and "Not answered" in capsys.readouterr().out
    assert check.ex1(3, W) is True
    assert check.ex1(2, W) is False and "off by one" in capsys.readouterr().out
    assert check.ex1(4, W) is False and "smallest" in capsys.readouterr().out
    assert check.ex1("three", W) is False and "whole number" in capsys.readouterr().out
    W2 = torch.diag(torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0, 1.0]))  # plain σ reaches 90% later than σ²
    assert check.ex1(1, W2) is True
    assert check.ex1(6, W2, target=0.9) is False


def test_ex2(capsys):
    W = le.load_pretrained("cpu").blocks[0].attn.q_proj.weight.detach()
    s = le.singular_values(W)
    truth = float(s[8:].pow(2).sum().sqrt())
    assert check.ex2(truth, W) is True
    assert check.ex2(torch.tensor(truth), W) is True
    assert check.ex2(truth**2, W) is False and "squared" in capsys.readouterr().out
    assert check.ex2(float(s[8:].sum()), W) is False and "square" in capsys.readouterr().out
    assert check.ex2(float(s[7:].pow(2).sum().sqrt()), W) is False and "off by one" in capsys.readouterr().out
    assert check.ex2(float(s[8]), W) is False and "spectral" in capsys.readouterr().out
    assert check.ex2([1, 2], W) is False


def test_ex3(capsys):
    assert check.ex3(4 * (12288 * 2)) is True
    assert check.ex3(12288 * 12288) is False and "full update" in capsys.readouterr().out
    assert check.ex3(4 * 12288) is False and "one factor" in capsys.readouterr().out
    assert check.ex3(None) is False
    assert check.ex3(3 * (10 + 20), d=10, k=20, r=3) is True

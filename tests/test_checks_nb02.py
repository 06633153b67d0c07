"""Self-checks of notebook 02 accept the right answer and explain typical wrong ones."""

from __future__ import annotations

import math

import torch

import lora_edu as le
from lora_edu.course.checks import nb02 as check


def test_ex1(capsys):
    assert check.ex1(((64, 8), (8, 256))) is True
    assert check.ex1(((8, 64), (8, 256))) is False
    assert "your B has shape (8, 64); B maps from rank r back to d, so it should be (64, 8)" in capsys.readouterr().out
    assert check.ex1(((8, 256), (64, 8))) is False and "swapped" in capsys.readouterr().out
    assert check.ex1(None) is False and check.ex1("64x8") is False
    assert check.ex1((torch.Size([64, 8]), torch.Size([8, 256]))) is True


def test_ex2(capsys):
    def right(x, W0, A, B, alpha):
        return x @ W0.T + alpha / A.shape[0] * (x @ A.T) @ B.T

    def no_scale(x, W0, A, B, alpha):
        return x @ W0.T + (x @ A.T) @ B.T

    def rs(x, W0, A, B, alpha):
        return x @ W0.T + alpha / math.sqrt(A.shape[0]) * (x @ A.T) @ B.T

    def crash(x, W0, A, B, alpha):
        return W0 @ x

    assert check.ex2(right) is True
    assert check.ex2(no_scale) is False and "scaling" in capsys.readouterr().out
    assert check.ex2(rs) is False and "rsLoRA" in capsys.readouterr().out
    assert check.ex2(crash) is False and "raised" in capsys.readouterr().out
    assert check.ex2(lambda x, W0, A, B, a: x @ W0.T) is False and "ignores" in capsys.readouterr().out
    assert check.ex2(42) is False and check.ex2(None) is False


def test_ex3(capsys):
    ref = le.load_pretrained("cpu")
    x, _ = le.get_task("copy").batch(4)
    m = le.load_pretrained("cpu")
    assert check.ex3(m, ref, x) is False and "no LoRA" in capsys.readouterr().out
    le.add_lora(m, targets=("q_proj", "v_proj"), r=2)
    assert check.ex3(m, ref, x) is False and "missing" in capsys.readouterr().out
    m = le.load_pretrained("cpu")
    le.add_lora(m, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r=4)
    assert check.ex3(m, ref, x) is False and "r = 2" in capsys.readouterr().out
    m = le.load_pretrained("cpu")
    le.add_lora(m, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r=2)
    assert check.ex3(m, ref, x) is True
    with torch.no_grad():
        m.blocks[0].attn.k_proj.B.fill_(0.1)
    assert check.ex3(m, ref, x) is False and "B is not zero" in capsys.readouterr().out
    assert check.ex3("model", ref, x) is False and check.ex3(None, ref, x) is False

"""Self-checks of notebook 08: right answers pass, typical wrong ones fail with a precise message."""

import pytest
import torch

import lora_edu as le
from lora_edu.course import common
from lora_edu.course.checks import nb08 as check


def test_ex1(capsys):
    assert check.ex1(12, 4) and "Correct" in capsys.readouterr().out
    assert check.ex1(torch.tensor(2), 2)
    capsys.readouterr()
    for wrong, words in [(6, "unordered"), (16, "diagonal"), (4, "wanted"), (5, "not it"), ("x", "whole number")]:
        assert not check.ex1(wrong, 4)
        assert words in capsys.readouterr().out
    assert not check.ex1(None, 4) and "Not answered" in capsys.readouterr().out


@pytest.fixture
def pairs():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 6, generator=g), torch.randn(5, 2, generator=g)) for _ in range(2)]


def test_ex2(capsys, pairs):
    (A1, B1), (A2, B2) = pairs
    s = 2.0
    right = s * ((B1 + B2) / 2) @ ((A1 + A2) / 2)
    assert check.ex2(right, pairs[0], pairs[1], s) and "Correct" in capsys.readouterr().out
    cases = [(s * (B1 @ A1 + B2 @ A2) / 2, "mean of the two"), (right / s, "scaling"),
             (s * (B1 + B2) @ (A1 + A2), "summed"), (right + 1, "max difference"), (right[:, :3], "shape")]
    for wrong, words in cases:
        assert not check.ex2(wrong, pairs[0], pairs[1], s)
        assert words in capsys.readouterr().out
    assert not check.ex2([[0.0]], pairs[0], pairs[1], s) and "tensor" in capsys.readouterr().out
    assert not check.ex2(None, pairs[0], pairs[1], s) and "Not answered" in capsys.readouterr().out


def test_ex3(capsys):
    g = torch.Generator().manual_seed(0)
    M = sum(torch.randn(16, 2, generator=g) @ torch.randn(2, 16, generator=g) for _ in range(3))
    assert check.ex3(6, M, r=2, n=3) and "Correct" in capsys.readouterr().out
    for wrong, words in [(2, "one adapter"), (16, "full rank"), (5, "not it"), (2.5, "whole number")]:
        assert not check.ex3(wrong, M, r=2, n=3)
        assert words in capsys.readouterr().out
    assert not check.ex3(None, M, 2, 3) and "Not answered" in capsys.readouterr().out


def test_ex4(capsys):
    base = le.load_pretrained(device="cpu")
    g = torch.Generator().manual_seed(0)
    names = ("blocks.0.attn.q_proj", "blocks.1.attn.q_proj")
    ad = [le.Adapter(2, 4.0, ("q_proj",), tensors={n: (torch.randn(2, 64, generator=g) / 8,
                                                        torch.randn(64, 2, generator=g) * 0.05) for n in names})
          for _ in range(2)]
    good = common.switch_drift(base, ad, "bfloat16", checkpoints=(1, 100), strategy="fp32_master")
    assert check.ex4(good) and "Correct" in capsys.readouterr().out
    bad = common.switch_drift(base, ad, "bfloat16", checkpoints=(1, 100), strategy="subtract")
    assert not check.ex4(bad) and "'subtract' drifts" in capsys.readouterr().out
    short = common.switch_drift(base, ad, "bfloat16", checkpoints=(1, 10), strategy="unmerged")
    assert not check.ex4(short) and "at least 100" in capsys.readouterr().out
    f32 = common.switch_drift(base, ad, "float32", checkpoints=(100,), strategy="unmerged")
    assert not check.ex4(f32) and "bfloat16" in capsys.readouterr().out
    assert not check.ex4("rows") and "list of rows" in capsys.readouterr().out
    assert not check.ex4(None) and "Not answered" in capsys.readouterr().out

"""Self-checks of notebook 04: right answers pass, typical wrong ones fail with a precise message."""

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb04 as check


@pytest.fixture(scope="module")
def model():
    return le.load_pretrained(device="cpu")


def test_ex1(capsys, model):
    right = sum(p.numel() for n, p in model.named_parameters() if "attn" in n and n.endswith("_proj.weight"))
    assert check.ex1(right) and "Correct" in capsys.readouterr().out
    assert check.ex1(float(right)) and check.ex1(torch.tensor(right))
    cases = {right + 8 * 64: "bias", right // 2: "2 blocks", 4096: "single matrix", 3 * right // 4: "W_o",
             12345: "Hint"}
    for wrong, words in cases.items():
        assert not check.ex1(wrong)
        assert words in capsys.readouterr().out
    assert not check.ex1(None) and "Not answered" in capsys.readouterr().out
    assert not check.ex1("lots") and "whole number" in capsys.readouterr().out
    assert not check.ex1(True)


def test_ex2(capsys, model):
    truth = le.generate(model, le.tasks.encode("12345678"))[0]
    assert check.ex2(truth, model) and "Correct" in capsys.readouterr().out
    assert check.ex2(truth.tolist()) and check.ex2("".join(map(str, truth.tolist())))
    assert not check.ex2([8, 7, 6, 5, 4, 3, 2, 1], model) and "never been trained" in capsys.readouterr().out
    wrong = truth.clone()
    wrong[0] = (wrong[0] + 1) % 10
    assert not check.ex2(wrong, model) and "1 of the 8 digits" in capsys.readouterr().out
    assert not check.ex2([1, 2, 3], model) and "8 digits" in capsys.readouterr().out
    assert not check.ex2("abc", model) and "8 output digits" in capsys.readouterr().out
    assert not check.ex2(None) and "Not answered" in capsys.readouterr().out


def test_ex3(capsys, model):
    import copy

    m = copy.deepcopy(model)
    le.add_lora(m, ("q_proj", "k_proj", "v_proj", "o_proj"), r=8)
    right = le.count_parameters(m)[0]
    assert check.ex3(right) and "Correct" in capsys.readouterr().out
    cases = {right // 2: "both A", 2 * 8 * 128: "one matrix per block",
             8 * 8 * 8: "not r·r", 8 * 64 * 64: "frozen", 7: "Hint"}
    for wrong, words in cases.items():
        assert not check.ex3(wrong)
        assert words in capsys.readouterr().out
    assert not check.ex3(None) and "Not answered" in capsys.readouterr().out

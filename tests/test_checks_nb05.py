"""Self-checks of notebook 05: right answers pass, typical wrong ones fail with a precise message."""

import copy

import pytest
import torch

import lora_edu as le
from lora_edu.course import nb05
from lora_edu.course.checks import nb05 as check


@pytest.fixture(scope="module")
def model():
    return le.load_pretrained(device="cpu")


def test_ex1(capsys, model):
    total = le.count_parameters(model)[1]
    m = copy.deepcopy(model)
    le.add_lora(m, ("q_proj",), r=1)
    lora = le.count_parameters(m)[0]
    assert check.ex1(total / lora) and "Correct" in capsys.readouterr().out
    cases = {lora / total: "full ÷ LoRA", total / (lora / 2): "blocks", 4 * 2 * 64 * 64 / lora: "only the attention",
             3.0: "Hint"}
    for wrong, words in cases.items():
        assert not check.ex1(wrong)
        assert words in capsys.readouterr().out
    assert not check.ex1("big") and "a number" in capsys.readouterr().out
    assert not check.ex1(None) and "Not answered" in capsys.readouterr().out


def test_ex2_matches_measured_state(capsys, model):
    measured = nb05.training_memory(model)["optimizer_bytes"]
    assert check.ex2(measured) and "Correct" in capsys.readouterr().out
    total = le.count_parameters(model)[1]
    cases = {total * 4: "two", 2 * total: "bytes", 16 * total: "weights + gradients", 12 * total: "gradients",
             5: "Hint"}
    for wrong, words in cases.items():
        assert not check.ex2(wrong)
        assert words in capsys.readouterr().out
    assert not check.ex2(None) and "Not answered" in capsys.readouterr().out


def test_ex3(capsys, model):
    _, row = nb05.finetune("increment", targets=("up_proj", "down_proj"), r=2, steps=2, model=model,
                         progress=False, measure=False, eval_examples=16)
    assert check.ex3(row) and "Correct" in capsys.readouterr().out
    _, attn = nb05.finetune("increment", r=2, steps=1, model=model, progress=False, measure=False, eval_examples=8)
    assert not check.ex3(attn) and "MLP" in capsys.readouterr().out
    assert not check.ex3(dict(row, r=4)) and "r = 2" in capsys.readouterr().out
    assert not check.ex3(dict(row, method="full")) and "LoRA" in capsys.readouterr().out
    assert not check.ex3(dict(row, trainable=999)) and "expected 2560" in capsys.readouterr().out
    assert not check.ex3(dict(row, accuracy=torch.tensor(0.5))) and "between 0 and 1" in capsys.readouterr().out
    assert not check.ex3((None, row)) and "dict" in capsys.readouterr().out
    assert not check.ex3({"method": "lora"}) and "lacks" in capsys.readouterr().out
    assert not check.ex3(None) and "Not answered" in capsys.readouterr().out

"""Self-checks of notebook 06: right answers pass, typical wrong ones fail with a precise message."""

import copy

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb06 as check


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    lora = le.LoRALinear(lin, r=4, alpha=8)
    with torch.no_grad():
        lora.B.normal_(std=0.1)
    return lora


def test_ex1(capsys, layer):
    W0 = layer.base.weight.detach().clone()
    A, B, s = layer.A.detach(), layer.B.detach(), layer.scaling
    m = copy.deepcopy(layer)
    m.merge()
    assert check.ex1(m.base.weight.detach(), W0, A, B, s) and "Correct" in capsys.readouterr().out
    cases = [(W0 + B @ A, "scaling"), (W0 - s * B @ A, "unmerging"), (W0, "unchanged"), (s * B @ A, "ΔW alone"),
             (W0 + 2 * s * B @ A, "max difference"), (W0[:, :4], "shape")]
    for wrong, words in cases:
        assert not check.ex1(wrong, W0, A, B, s)
        assert words in capsys.readouterr().out
    assert not check.ex1([[1.0]], W0, A, B, s) and "tensor" in capsys.readouterr().out
    assert not check.ex1(None, W0, A, B, s) and "Not answered" in capsys.readouterr().out


def test_ex2_matches_kept_copy(capsys):
    model = le.load_pretrained(device="cpu").to(torch.bfloat16)
    le.add_lora(model, ("q_proj", "v_proj"), r=4)
    le.merge_lora(model, keep_original=True)
    kept = sum(m._W0.numel() * m._W0.element_size() for m in le.lora_layers(model).values())
    assert check.ex2(kept) and "Correct" in capsys.readouterr().out
    cases = {2 * kept: "2 bytes", kept // 2: "half", 64 * 64 * 2: "one matrix", kept + 4 * 64 * 2: "biases",
             3: "Hint"}
    for wrong, words in cases.items():
        assert not check.ex2(wrong)
        assert words in capsys.readouterr().out
    assert not check.ex2(None) and "Not answered" in capsys.readouterr().out


def test_ex3(capsys):
    for right in ("bfloat16", "bf16", torch.bfloat16, " BFloat16 "):
        assert check.ex3(right)
    assert "Correct" in capsys.readouterr().out
    for wrong, words in (("float16", "finer"), ("fp16", "finer"), ("float32", "16-bit"), ("int8", "not one"),
                         (16, "string")):
        assert not check.ex3(wrong)
        assert words in capsys.readouterr().out
    assert not check.ex3(None) and "Not answered" in capsys.readouterr().out

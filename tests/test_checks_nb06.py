"""Self-checks of notebook 06: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import copy

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb06 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    lora = le.LoRALinear(torch.nn.Linear(64, 48), r=4, alpha=8)  # α ≠ r: the scaling is 2, and d ≠ k
    with torch.no_grad():
        lora.B.normal_(std=0.1)
    return lora


def test_ex1(capsys, layer):
    W0 = layer.base.weight.detach().clone()
    A, B, s = layer.A.detach(), layer.B.detach(), layer.scaling
    m = copy.deepcopy(layer)
    m.merge()
    assert run(capsys, check.ex1, m.base.weight.detach(), W0, A, B, s)[0]
    assert run(capsys, check.ex1, m.base.weight.detach().to(torch.bfloat16), W0, A, B, s)[0], "any dtype"
    ok, out = run(capsys, check.ex1, None, W0, A, B, s)
    assert not ok and out.startswith("⏳") and "B @ A" not in out
    for wrong, says in [(W0 + B @ A, "left out the scaling"), (W0 + s * s * B @ A, "applied twice"),
                        (W0 - s * B @ A, "unmerging"), (W0, "W0 unchanged"), (s * B @ A, "ΔW alone"),
                        (W0 + 3 * s * B @ A, "differs from the merged weight"), (W0[:, :4], "W0's shape"),
                        ([[1.0]], "W0's shape"), ("W", "text"), (W0 * float("nan"), "NaN")]:
        ok, out = run(capsys, check.ex1, wrong, W0, A, B, s)
        assert not ok and says in out


def test_ex1_transposed_update_on_a_square_layer(capsys):
    torch.manual_seed(1)
    W0, A, B = torch.randn(8, 8), torch.randn(2, 8), torch.randn(8, 2)
    ok, out = run(capsys, check.ex1, W0 + 2.0 * (B @ A).T, W0, A, B, 2.0)
    assert not ok and "transposed" in out


def test_ex2_matches_the_kept_copy(capsys):
    model = le.load_pretrained(device="cpu").to(torch.bfloat16)
    le.add_lora(model, ("q_proj", "v_proj"), r=4)
    le.merge_lora(model, keep_original=True)
    kept = sum(m.kept_original.numel() * m.kept_original.element_size() for m in le.lora_layers(model).values())
    assert run(capsys, check.ex2, kept)[0]
    ok, out = run(capsys, check.ex2, None)
    assert not ok and out.startswith("⏳") and f"{kept:,}" not in out
    L = le.ToyConfig().n_layer
    cases = {2 * kept: "4 bytes per value", kept // 2: "half of it", 64 * 64 * 2: "one matrix",
             kept + 2 * L * 64 * 2: "biases", 2 * L * 4 * 128 * 2: "size of the adapters", 3: "count the adapted"}
    for wrong, says in cases.items():
        ok, out = run(capsys, check.ex2, wrong)
        assert not ok and says in out and f"{kept:,}" not in out and str(kept) not in out


def test_ex2_all_four_matrices_is_named_as_a_possibility(capsys):
    """Adapting all four attention matrices gives the same number as 4 bytes per value: the check names both."""
    ok, out = run(capsys, check.ex2, 4 * le.ToyConfig().n_layer * 64 * 64 * 2)
    assert not ok and "all four attention matrices" in out and "4 bytes per value" in out


def test_ex3_predict_then_explain(capsys):
    ok, out = run(capsys, check.ex3)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex3, 0.0039)
    assert not ok and "δ up to 0.0039" in out and "0.996094" in out and "`why`" in out
    assert run(capsys, check.ex3, 2 ** -8, "a")[0] and run(capsys, check.ex3, "0.004", "a")[0]


@pytest.mark.parametrize("prediction, says", [(2 ** -7, "full spacing"), (2 ** -11, "float16"), (2 ** -12, "float16"),
                                              (2 ** -24, "float32"), (0, "gaps"), (0.05, "how far apart"),
                                              (-0.004, "positive")])
def test_ex3_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex3, prediction, "a")
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("b", "however small"), ("c", "float32's range"), ("d", "scale every δ alike"),
                                       ("bfloat16", "not one of")])
def test_ex3_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex3, 0.0039, why)
    assert not ok and says in out


def test_ex3_no_longer_a_coin_toss(capsys):
    """The old binary question ('bfloat16' or 'float16') is gone: a dtype name is not a prediction."""
    for answer in ("bfloat16", "float16", torch.bfloat16):
        ok, out = run(capsys, check.ex3, answer, "a")
        assert not ok and "❌" in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, layer, bad):
    W0, A, B = layer.base.weight.detach(), layer.A.detach(), layer.B.detach()
    assert_safe(capsys, check.ex1, bad, W0, A, B, layer.scaling)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex3, bad)
    assert_safe(capsys, check.ex3, 0.0039, bad)

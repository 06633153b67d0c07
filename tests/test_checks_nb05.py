"""Self-checks of notebook 05: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import copy

import pytest
import torch

import lora_edu as le
from lora_edu.course import nb05
from lora_edu.course.checks import nb05 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


@pytest.fixture(scope="module")
def model():
    return le.load_pretrained(device="cpu")


def test_ex1(capsys, model):
    total = le.count_parameters(model)[1]
    m = copy.deepcopy(model)
    le.add_lora(m, ("q_proj",), r=1)
    lora = le.count_parameters(m)[0]
    assert run(capsys, check.ex1, total / lora)[0] and run(capsys, check.ex1, f"{total / lora:.1f}")[0]
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and f"{total / lora:.0f}" not in out
    n = le.ToyConfig().n_layer
    for wrong, says in [(lora / total, "full ÷ LoRA"), (total / (lora / 2), "half of LoRA's"),
                        (4 * n * 64 * 64 / lora, "*every* parameter"), (n * 64 * 64 / lora, "*every* parameter"),
                        (3.0, "not the ratio"), ("big", "not the text")]:
        ok, out = run(capsys, check.ex1, wrong)
        assert not ok and says in out and f"{total / lora:.0f}×" not in out


def test_ex2_predict_then_explain(capsys, model):
    m = copy.deepcopy(model)
    le.add_lora(m, check.EX2_TARGETS, r=check.EX2_R)
    measured = nb05.training_memory(m)["optimizer_bytes"]
    trainable = le.count_parameters(m)[0]
    assert measured == 8 * trainable == RIGHT2
    ok, out = run(capsys, check.ex2)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex2, measured)
    assert not ok and f"{measured:,} bytes" in out and "`why`" in out
    assert run(capsys, check.ex2, measured, "a")[0]


N = le.ToyConfig().n_layer
RIGHT2 = 8 * N * check.EX2_R * (64 + 64 + 64 + 256)  # bytes: k_proj (64×64) and down_proj (64 out × 256 in)


def _wrong_predictions():
    cfg = le.ToyConfig()
    p = N * check.EX2_R * (64 + 64 + 64 + 256)  # trainable parameters, every block
    total = sum(x.numel() for x in le.ToyTransformer(cfg).parameters())
    return [(4 * p, "half"), (2 * p, "number of values"), (16 * p, "twice too much"), (8 * total, "*every* parameter"),
            (8 * N * check.EX2_R * 256, "not square"), (8 * N * check.EX2_R * (64 + 256), "one of the two factors"),
            (8 * N * check.EX2_R * 128, "one of the two factors"), (1000, "count the trainable parameters first"),
            (2.5, "whole")]


@pytest.mark.parametrize("prediction, says", _wrong_predictions())
def test_ex2_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex2, prediction, "a")
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("b", "float32"), ("c", "not the gradients' size"),
                                       ("d", "plain AdamW"), ("", "not one of")])
def test_ex2_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex2, RIGHT2, why)
    assert not ok and says in out


@pytest.fixture(scope="module")
def mlp_run():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORA_EDU_FAST", "1")
        return nb05.finetune("plus3", "lora", targets=check.EX3_TARGETS, r=2, alpha=8, steps=60,
                             eval_examples=256, device="cpu")


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setenv("LORA_EDU_FAST", "1")  # STEPS = 60, EVAL = 256


def test_ex3_right(capsys, fast, mlp_run):
    m, row = mlp_run
    ok, out = run(capsys, check.ex3, m, row)
    assert ok and f"{N * 2 * 2 * (64 + 256):,} parameters" in out


def _short_other_task():
    return nb05.finetune("minus5", "lora", targets=check.EX3_TARGETS, r=2, steps=2, eval_examples=16, device="cpu")


def _modified_base(m):
    m = copy.deepcopy(m)
    with torch.no_grad():
        m.blocks[0].attn.q_proj.weight.add_(0.01)
    return m


def _untrained(m):
    m = copy.deepcopy(m)
    with torch.no_grad():
        for layer in le.lora_layers(m).values():
            layer.B.zero_()
    return m


CASES3 = {
    "a hand-made dict": (lambda m, row: (m, {"method": "lora", "targets": check.EX3_TARGETS, "r": 2, "trainable": 2560,
                                             "accuracy": 0.5}), "lacks"),
    "another task, 2 steps": (lambda m, row: _short_other_task(), "'minus5'"),
    "wrong step count": (lambda m, row: (m, dict(row, steps=7)), "7 steps"),
    "history does not match": (lambda m, row: (m, dict(row, history={"loss": [1.0]})), "history"),
    "attention targets": (lambda m, row: (m, dict(row, targets=("q_proj", "v_proj"))), "adapt the MLP"),
    "r = 4": (lambda m, row: (m, dict(row, r=4)), "use r = 2"),
    "full fine-tuning": (lambda m, row: (m, dict(row, method="full")), "LoRA fine-tune"),
    "row of another model": (lambda m, row: (m, dict(row, accuracy=row["accuracy"] + 0.01)), "not what this model"),
    "a modified base": (lambda m, row: (_modified_base(m), row), "not the pretrained checkpoint's"),
    "untrained adapters": (lambda m, row: (_untrained(m), row), "still zero"),
    "a plain model": (lambda m, row: (le.load_pretrained("cpu"), row), "not r = 2 on up_proj and down_proj"),
    "the row only": (lambda m, row: (row, None), "pass both values"),
    "swapped": (lambda m, row: (row, m), "pass both values"),
    "trainable count": (lambda m, row: (m, dict(row, trainable=999)), "trainable parameters"),
}


@pytest.mark.parametrize("name", CASES3)
def test_ex3_provenance(capsys, fast, mlp_run, name):
    make, says = CASES3[name]
    args = make(*mlp_run)
    ok, out = run(capsys, check.ex3, *args)
    assert not ok and out.startswith("❌") and says in out


def test_ex3_unanswered(capsys):
    ok, out = run(capsys, check.ex3, None, None)
    assert not ok and out.startswith("⏳")


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex2, RIGHT2, bad)
    assert_safe(capsys, check.ex3, bad, bad)
    assert_safe(capsys, check.ex3, le.load_pretrained("cpu"), bad) if bad is not None else None

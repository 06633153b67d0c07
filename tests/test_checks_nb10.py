"""Notebook 10's self-checks: unanswered says what to do, each plausible wrong answer gets its diagnosis without
the answer, nothing raises, library shortcuts fail, and the solutions pass."""

from __future__ import annotations

import warnings

import pytest
import torch

import lora_edu as le

peft = pytest.importorskip("peft")
from lora_edu.course.checks import nb10 as checks  # noqa: E402

PEFT_ALPHA = peft.LoraConfig().lora_alpha  # read, not assumed: the check reads it too
WANT_RATIO = (16 / 16) / (PEFT_ALPHA / 16)  # lora_edu's default α = r


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def run(capsys, check, *args):
    result = check(*args)
    out = capsys.readouterr().out
    assert isinstance(result, bool), "a check returns True/False"
    return result, out


# ---- exercise 1: predict the ratio of the updates, then fix it with alpha --------------------------------

def test_ex1_unanswered_says_what_to_do_only(capsys):
    ok, out = run(capsys, checks.ex1, None)
    assert not ok and out.startswith("⏳") and "predict" in out
    assert f"{WANT_RATIO:g}" not in out and f"alpha={PEFT_ALPHA}" not in out


@pytest.mark.parametrize("ratio, says", [
    (1 / WANT_RATIO, "upside down"),
    (1, "same α"),
    (PEFT_ALPHA, "value of α"),
    (16, "value of α"),
    (3.7, "compute scaling"),
    ("two", "one number"),
    (float("nan"), "one number"),
    (float("inf"), "one number"),
    (True, "one number"),
    ([2], "one number"),
    (torch.tensor([2.0, 2.0]), "one number"),
])
def test_ex1_wrong_ratios_are_diagnosed_without_the_answer(capsys, ratio, says):
    ok, out = run(capsys, checks.ex1, ratio)
    assert not ok and out.startswith("❌") and says in out
    assert f"{WANT_RATIO:g}×" not in out and "alpha=" not in out


def test_ex1_right_ratio_then_asks_for_alpha(capsys):
    for ratio in (WANT_RATIO, str(WANT_RATIO), torch.tensor(WANT_RATIO)):
        ok, out = run(capsys, checks.ex1, ratio)
        assert not ok and out.startswith("⏳") and "alpha" in out and f"alpha={PEFT_ALPHA:g}" not in out


@pytest.mark.parametrize("alpha, says", [
    (PEFT_ALPHA / 16, "is a scaling"),
    (1.0, "is a scaling"),
    (16, "differs from PEFT"),
    (32, "differs from PEFT"),
    ("eight", "should be a number"),
    (None, "Not answered"),
])
def test_ex1_wrong_alphas_are_diagnosed(capsys, alpha, says):
    ok, out = run(capsys, checks.ex1, WANT_RATIO, alpha)
    assert not ok and says in out and f"alpha={PEFT_ALPHA:g}" not in out


def test_ex1_solution_passes(capsys):
    ok, out = run(capsys, checks.ex1, (16 / 16) / (PEFT_ALPHA / 16), PEFT_ALPHA)
    assert ok and out.startswith("✅")


# ---- exercise 2: the key converter -----------------------------------------------------------------------

def solution(state_dict):
    pairs = {}
    for key, tensor in state_dict.items():
        layer, which, _ = key.removeprefix("base_model.model.").rsplit(".", 2)
        pairs.setdefault(layer, [None, None])[which == "lora_B"] = tensor
    return {layer: tuple(ab) for layer, ab in pairs.items()}


def keep_prefix(sd):
    return {"base_model.model." + k: v for k, v in solution(sd).items()}


def per_tensor(sd):
    return {k: (v, v) for k, v in sd.items()}


def swapped(sd):
    return {k: (b, a) for k, (a, b) in solution(sd).items()}


def transposed(sd):
    return {k: (a.T, b.T) for k, (a, b) in solution(sd).items()}


def cast(sd):
    return {k: (a.float(), b.float()) for k, (a, b) in solution(sd).items()}


def changed(sd):
    return {k: (a * 1, b + 1) for k, (a, b) in solution(sd).items()}


def via_adapter(sd):  # the library shortcut: one r and one dtype for all layers
    from lora_edu.peft_format import from_peft

    a = le.Adapter(**from_peft({"peft_type": "LORA", "r": 2}, sd))
    return a.tensors


def raises(sd):
    raise KeyError("lora_A")


@pytest.mark.parametrize("fn, says", [
    (keep_prefix, "prefix"),
    (per_tensor, "one entry per layer"),
    (lambda sd: {k.rsplit(".", 1)[0]: v for k, v in solution(sd).items()}, "expected"),
    (swapped, "swapped"),
    (transposed, "transposed"),
    (cast, "keep the tensors as stored"),
    (changed, "numbers of"),
    (via_adapter, "one r and one dtype"),
    (raises, "raised KeyError"),
    (lambda sd: None, "forget `return`"),
    (lambda sd: [1, 2], "return a dict"),
    (lambda sd: {k: 1 for k in solution(sd)}, "pair (A, B)"),
    (lambda sd: {k: (v[0],) for k, v in solution(sd).items()}, "pair (A, B)"),
    (lambda sd: {k: ("A", "B") for k in solution(sd)}, "pair (A, B)"),
    (lambda: {}, "raised TypeError"),
    (42, "function itself"),
    ("peft_to_pairs", "function itself"),
])
def test_ex2_wrong_converters_are_diagnosed(capsys, fn, says):
    ok, out = run(capsys, checks.ex2, fn)
    assert not ok and says in out, out


def test_ex2_unanswered_and_the_stub(capsys):
    ok, out = run(capsys, checks.ex2, None)
    assert not ok and out.startswith("⏳") and "removeprefix" not in out
    ok, out = run(capsys, checks.ex2, lambda sd: {})  # the stub the notebook gives
    assert not ok and out.startswith("⏳")


def test_ex2_solution_passes(capsys):
    ok, out = run(capsys, checks.ex2, solution)
    assert ok and out.startswith("✅")


# ---- exercise 3: target_modules on a model with other names ---------------------------------------------

@pytest.mark.parametrize("answer", [["query_key_value", "dense"], ("dense", "query_key_value"),
                                    r".*attention\.(query_key_value|dense)", r".*\.attention\..*",
                                    ["attention.query_key_value", "attention.dense"]])
def test_ex3_right_answers(capsys, answer):
    ok, out = run(capsys, checks.ex3, answer)
    assert ok and out.startswith("✅")


@pytest.mark.parametrize("answer, says", [
    (["query_key_value"], "not adapted"),
    (["dense"], "not adapted"),
    ("all-linear", "the MLP and the output layer"),
    (["query_key_value", "dense", "dense_h_to_4h"], "also adapt the MLP"),
    (["query_key_value", "dense", "embed_out"], "the output layer"),
    (["q_proj", "v_proj"], "found none"),
    (["attention"], "not a Linear"),
    (5, "list of strings"),
    ([], "list of strings"),
    ([1, 2], "list of strings"),
    ({"query_key_value": 1}, "list of strings"),
])
def test_ex3_wrong_answers_are_diagnosed(capsys, answer, says):
    ok, out = run(capsys, checks.ex3, answer)
    assert not ok and says in out, out
    assert "['query_key_value', 'dense']" not in out


def test_ex3_unanswered(capsys):
    ok, out = run(capsys, checks.ex3, None)
    assert not ok and out.startswith("⏳") and "query_key_value" not in out


# ---- never raises; hints ---------------------------------------------------------------------------------

class Exploding(list):
    def __iter__(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize("check, args", [
    (checks.ex1, (object(),)), (checks.ex1, (2.0, object())), (checks.ex1, ({"r": 1},)),
    (checks.ex2, (object(),)), (checks.ex3, (Exploding(["dense"]),)), (checks.ex3, (object(),)),
    (checks.ex3, (["query_key_value", None],)),
])
def test_checks_never_raise(capsys, check, args):
    ok, out = run(capsys, check, *args)
    assert not ok and out.startswith(("❌", "⏳"))


def test_hints_reveal_one_more_each_call(capsys):
    checks._seen.clear()
    for _ in range(5):
        checks.hint(2)
    outs = capsys.readouterr().out.split("\n")
    assert sum("Hint 1/3" in line for line in outs) == 5 and sum("Hint 3/3" in line for line in outs) == 3
    checks.hint(7)
    assert "numbered" in capsys.readouterr().out

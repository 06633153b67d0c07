"""Self-checks of notebook 08: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb08 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


def test_ex1(capsys):
    assert run(capsys, check.ex1, 12, 4)[0] and run(capsys, check.ex1, torch.tensor(2), 2)[0]
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and "12" not in out
    for wrong, says in [(6, "unordered"), (16, "diagonal"), (4, "wanted terms"), (5, "i ≠ j"), ("x", "not the text"),
                        (12.5, "whole")]:
        ok, out = run(capsys, check.ex1, wrong, 4)
        assert not ok and says in out and "12 cross" not in out


def _navg(pairs, s):
    A = sum(a for a, _ in pairs) / len(pairs)
    B = sum(b for _, b in pairs) / len(pairs)
    return s * B @ A


def _mean_of_products(pairs, s):
    return s * sum(b @ a for a, b in pairs) / len(pairs)


WRONG2 = {
    "mean of the ΔW's": (_mean_of_products, "averages the factors first"),
    "the two-adapter formula for every n": (lambda p, s: s * ((p[0][1] + p[1][1]) / 2) @ ((p[0][0] + p[1][0]) / 2),
                                            "differs from scaling · mean(B) · mean(A)"),
    "no scaling": (lambda p, s: _navg(p, 1.0), "left out the scaling"),
    "scaling twice": (lambda p, s: _navg(p, s * s), "applied twice"),
    "sums, not means": (lambda p, s: s * sum(b for _, b in p) @ sum(a for a, _ in p), "summed the factors"),
    "exact sum of updates": (lambda p, s: s * sum(b @ a for a, b in p), "exact sum"),
    "transposed": (lambda p, s: _navg(p, s).T, "transposed"),
    "A·B": (lambda p, s: s * sum(a for a, _ in p).T @ sum(b for _, b in p).T, "transposed"),
    "stub": (lambda p, s: None, "forget the `return`"),
    "raises": (lambda p, s: p[0][0] @ p[0][0], "raised RuntimeError"),
    "not a function": ([[0.0]], "pass your function itself"),
}


def test_ex2(capsys):
    assert run(capsys, check.ex2, _navg)[0]
    ok, out = run(capsys, check.ex2, None)
    assert not ok and out.startswith("⏳") and "mean(" not in out


@pytest.mark.parametrize("name", WRONG2)
def test_ex2_wrong_functions(capsys, name):
    fn, says = WRONG2[name]
    ok, out = run(capsys, check.ex2, fn)
    assert not ok and out.startswith("❌") and says in out


def test_ex2_alpha_equal_to_r_no_longer_hides_the_scaling(capsys):
    """With the notebook's adapters s = α/r = 1, so leaving s out was invisible; the check uses s ≠ 1."""
    ok, out = run(capsys, check.ex2, lambda p, s: _navg(p, 1.0))
    assert not ok and "scaling" in out


@pytest.fixture(scope="module")
def delta_sum():
    g = torch.Generator().manual_seed(0)
    return sum(torch.randn(64, 4, generator=g) @ torch.randn(4, 64, generator=g) for _ in range(4))


def test_ex3_predict_then_explain(capsys, delta_sum):
    ok, out = run(capsys, check.ex3, delta_sum=delta_sum)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex3, 16, delta_sum=delta_sum)
    assert not ok and "numerical rank 16" in out and "`why`" in out
    assert run(capsys, check.ex3, 16, "a", delta_sum=delta_sum)[0]


@pytest.mark.parametrize("prediction, says", [(4, "one adapter's rank"), (64, "full rank"), (8, "how many directions"),
                                              (-1, "never negative"), (16.5, "whole")])
def test_ex3_wrong_predictions(capsys, delta_sum, prediction, says):
    ok, out = run(capsys, check.ex3, prediction, "a", delta_sum=delta_sum)
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("b", "can exceed the rank of every term"), ("c", "do not multiply"),
                                       ("d", "well below min(d, k)")])
def test_ex3_wrong_explanations(capsys, delta_sum, why, says):
    ok, out = run(capsys, check.ex3, 16, why, delta_sum=delta_sum)
    assert not ok and says in out


def test_ex3_needs_the_matrix(capsys):
    ok, out = run(capsys, check.ex3, 16, "a")
    assert not ok and "delta_sum=" in out


@pytest.fixture(scope="module")
def base_and_adapters():
    base = le.load_pretrained(device="cpu")
    g = torch.Generator().manual_seed(0)
    names = tuple(f"blocks.{i}.attn.q_proj" for i in range(le.ToyConfig().n_layer))  # every W_q of the model
    ads = {f"t{i}": le.Adapter(2, 4.0, ("q_proj",), tensors={n: (torch.randn(2, 64, generator=g) / 8,
                                                               torch.randn(64, 2, generator=g) * 0.05) for n in names})
           for i in range(2)}
    return base, ads


@pytest.mark.parametrize("strategy, cost", [("fp32_master", "b"), ("keep_original", "b"), ("unmerged", "c")])
def test_ex4_exact_strategies_and_their_costs(capsys, base_and_adapters, strategy, cost):
    base, ads = base_and_adapters
    ok, out = run(capsys, check.ex4, strategy, None, base=base, adapters=ads)
    assert not ok and "max |W − W0| after 100 switches = 0" in out and "`cost`" in out
    assert run(capsys, check.ex4, strategy, cost, base=base, adapters=ads)[0]
    wrong = {"b": "c", "c": "b"}[cost]
    for letter in (wrong, "a", "d"):
        ok, out = run(capsys, check.ex4, strategy, letter, base=base, adapters=ads)
        assert not ok and "❌" in out


def test_ex4_rows_can_no_longer_be_made_up(capsys, base_and_adapters):
    """The check runs the strategy itself: a list of rows, fabricated or not, is not an answer."""
    base, ads = base_and_adapters
    fake = [{"dtype": "bfloat16", "switches": 100, "max_abs": 0.0, "strategy": "subtract"}]
    ok, out = run(capsys, check.ex4, fake, "b", base=base, adapters=ads)
    assert not ok and "not a strategy" in out
    ok, out = run(capsys, check.ex4, "subtract", "b", base=base, adapters=ads)
    assert not ok and "'subtract' drifts" in out


def test_ex4_provenance(capsys, base_and_adapters):
    base, ads = base_and_adapters
    changed = le.load_pretrained(device="cpu")
    with torch.no_grad():
        changed.blocks[0].attn.q_proj.weight.add_(1e-3)
    ok, out = run(capsys, check.ex4, "unmerged", "c", base=changed, adapters=ads)
    assert not ok and "not the pretrained checkpoint" in out
    ok, out = run(capsys, check.ex4, "unmerged", "c", base=base, adapters=[1, 2])
    assert not ok and "le.Adapter" in out
    with_lora = le.load_pretrained(device="cpu")
    le.add_lora(with_lora, ("q_proj",), r=2)
    ok, out = run(capsys, check.ex4, "unmerged", "c", base=with_lora, adapters=ads)
    assert not ok and "plain pretrained model" in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, delta_sum, base_and_adapters, bad):
    base, ads = base_and_adapters
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex3, bad, delta_sum=delta_sum)
    assert_safe(capsys, check.ex3, 16, bad, delta_sum=delta_sum)
    assert_safe(capsys, check.ex3, 16, "a", delta_sum=bad)
    assert_safe(capsys, check.ex4, bad, base=base, adapters=ads)
    assert_safe(capsys, check.ex4, "unmerged", bad, base=base, adapters=ads)
    assert_safe(capsys, check.ex4, "unmerged", "c", base=bad, adapters=bad)

"""lora_edu.course.common and matrix_fit: the shared trainer, drift study, latency, tables and fits."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import lora_edu as le
from lora_edu.course import common, matrix_fit

from .conftest import random_adapter, same_state, state_of


# ---- notebook 06 -----------------------------------------------------------------------------
def test_time_forward_and_output_diff(base):
    tokens = common._example_tokens("plus3", 4, "cpu")
    t = common.time_forward(base, tokens, repeats=3, warmup=0)
    assert len(t) == 3 and t == sorted(t) and t[0] > 0
    assert common.max_output_diff(base, copy.deepcopy(base), tokens) == 0.0
    with pytest.raises(ValueError):
        common.time_forward(base, tokens, repeats=0)

def test_merged_equals_unmerged(base, random_adapters):
    a = random_adapters["plus3"]
    merged, unmerged = copy.deepcopy(base), copy.deepcopy(base)
    le.merge_adapter(merged, a)
    le.load_adapter(unmerged, a)
    tokens = common._example_tokens("plus3", 8, "cpu")
    assert common.max_output_diff(merged, unmerged, tokens) < 1e-4
    assert common.max_output_diff(merged, base, tokens) > 1e-3  # the adapter does change the outputs

def test_latency_comparison(base, random_adapters):
    before = state_of(base)
    rows = common.latency_comparison(base, random_adapters["plus3"], batch_sizes=(1, 4), repeats=3, warmup=1)
    assert [r["batch"] for r in rows] == [1, 4] and rows[1]["tokens"] == 4 * le.get_task("plus3").seq_len
    for r in rows:
        for k in ("base", "merged", "unmerged"):
            assert 0 < r[f"{k}_p10_ms"] <= r[f"{k}_ms"] <= r[f"{k}_p90_ms"]
        assert r["unmerged_over_base"] == pytest.approx(r["unmerged_ms"] / r["base_ms"])
    assert same_state(before, state_of(base))
    with pytest.raises(ValueError):
        common.latency_comparison(base, random_adapters["plus3"], batch_sizes=())
    with pytest.raises(ValueError):
        common.latency_comparison(base, random_adapters["plus3"], batch_sizes=(0,))
    with pytest.raises(TypeError):
        common.latency_comparison(base, "plus3")

@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_merge_drift_exact_is_zero_and_rounding_is_not(base, random_adapters, dtype):
    exact = common.switch_drift(base, random_adapters, dtype, checkpoints=(1, 5), strategy="keep_original")
    assert [r["switches"] for r in exact] == [1, 5]
    assert all(r["max_abs"] == 0 and r["rel_fro"] == 0 for r in exact)
    loose = common.switch_drift(base, random_adapters, dtype, checkpoints=(1, 20))
    if dtype != "float32":
        assert loose[-1]["max_abs"] > 0
    assert loose[-1]["max_abs"] >= 0 and all(r["strategy"] == "subtract" and r["dtype"] == dtype for r in loose)

def test_merge_drift_bf16_worse_than_fp32_and_grows(base, random_adapters):
    f32 = common.switch_drift(base, random_adapters, "float32", checkpoints=(50,))[0]["max_abs"]
    bf = common.switch_drift(base, random_adapters, torch.bfloat16, checkpoints=(1, 50))
    assert bf[1]["max_abs"] > bf[0]["max_abs"] > f32
    acc = common.switch_drift(base, random_adapters, "float32", checkpoints=(1,), task="rot0", n_examples=32)
    acc = acc[0]["accuracy"]
    assert acc == 1.0

@pytest.mark.parametrize("kw", [{"dtype": "int8"}, {"checkpoints": ()}, {"checkpoints": (10, 1)},
                                {"checkpoints": (0,)}, {"adapters": []}, {"n_examples": 0}])
def test_merge_drift_rejects(base, random_adapters, kw):
    with pytest.raises(ValueError):
        common.switch_drift(**({"base": base, "adapters": random_adapters} | kw))

def test_merge_drift_rejects_mismatched_adapters(base, random_adapters):
    other = random_adapter(base, r=4)
    with pytest.raises(ValueError):
        common.switch_drift(base, [random_adapters["plus3"], other])

def test_format_table():
    rows = [{"targets": ("q_proj", "v_proj"), "r": 4, "accuracy": 0.5, "h": {"x": 1}}]
    text = common.format_table(rows)
    assert "q+v" in text and "0.500" in text and "h" not in text.split("\n")[0].split()
    assert common.format_table(rows, ["r"], ["rank"]).startswith("rank")
    with pytest.raises(ValueError):
        common.format_table([])
    with pytest.raises(ValueError):
        common.format_table(rows, ["r"], ["a", "b"])

def test_matrix_svd_matches_lowrank_module(hopper):
    for r in (0, 1, 7, hopper.max_rank):
        ref = le.low_rank_approx(hopper.W, r)
        assert torch.allclose(hopper.approx(r), ref, atol=1e-9)
        assert math.isclose(hopper.predicted_error(r), le.eckart_young_error(hopper.W, r), rel_tol=1e-9,
                            abs_tol=1e-9)

def test_planted_update_has_the_asked_rank_and_spectrum():
    T = matrix_fit.planted_update(32, 24, 5, top=2.0, bottom=1.0)
    s = torch.linalg.svdvals(T.double())
    assert T.shape == (32, 24)
    assert torch.allclose(s[:5], torch.linspace(2.0, 1.0, 5, dtype=torch.float64), atol=1e-5)
    assert float(s[5:].max()) < 1e-5
    assert torch.equal(T, matrix_fit.planted_update(32, 24, 5, top=2.0, bottom=1.0))
    with pytest.raises(ValueError, match="rank"):
        matrix_fit.planted_update(4, 4, 5)

def test_fit_lora_starts_at_zero_update_and_learns():
    T = matrix_fit.planted_update(16, 16, 2)
    res = matrix_fit.fit_lora(T, 2, [1e-2, 3e-2], steps=200, scaling=1.0)
    assert res["loss"].shape == (2, 200)
    assert torch.allclose(res["loss"][:, 0], torch.ones(2), atol=1e-6)  # B = 0: ΔW = 0, error 1 at step 1
    assert float(res["loss"][:, -1].max()) < 1e-2

def test_fit_lora_matches_torch_adam_for_one_run():
    T = matrix_fit.planted_update(8, 6, 2)
    res = matrix_fit.fit_lora(T, 3, [5e-3], steps=10, scaling=0.5)
    g = torch.Generator().manual_seed(0)
    A = (torch.randn(3, 6, generator=g) / math.sqrt(6)).requires_grad_()
    B = torch.zeros(8, 3, requires_grad=True)
    opt = torch.optim.Adam([A, B], lr=5e-3)
    for _ in range(10):
        loss = (0.5 * B @ A - T).pow(2).sum() / T.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.allclose(res["delta"][0], (0.5 * B @ A).detach(), atol=1e-6)

def test_bad_arguments_named():
    T = matrix_fit.planted_update(8, 8, 2)
    with pytest.raises(ValueError, match="r must"):
        matrix_fit.fit_lora(T, 9, [1e-2], 3, 1.0)
    with pytest.raises(ValueError, match="lrs"):
        matrix_fit.fit_lora(T, 2, [], 3, 1.0)
    with pytest.raises(ValueError, match="target"):
        matrix_fit.fit_full(torch.ones(3), [1e-2], 3)

def test_per_run_scalings_match_separate_runs():
    T = matrix_fit.planted_update(8, 8, 2)
    both = matrix_fit.fit_lora(T, 2, [1e-2, 1e-2], 15, [0.5, 2.0], batch=4)
    for i, s in enumerate((0.5, 2.0)):
        one = matrix_fit.fit_lora(T, 2, [1e-2], 15, s, batch=4)
        assert torch.allclose(both["loss"][i], one["loss"][0], atol=1e-6)
    with pytest.raises(ValueError, match="scaling"):
        matrix_fit.fit_lora(T, 2, [1e-2, 1e-2], 3, [1.0, 2.0, 3.0])


@pytest.mark.parametrize("d, k, r", [(10**400, 10**400, 1), (4, 10**400, 2), (True, 4, 1), (4, 4, 0), (0, 4, 1)])
def test_param_count_summary_answers_with_a_message(d, k, r):
    """A slider callback: bad or out-of-range settings give a message, never an exception."""
    msg = common.param_count_summary(d, k, r)
    assert isinstance(msg, str) and msg


def test_growth_exponent():
    n = [1, 10, 100, 1000]
    assert common.growth_exponent(n, [3e-3 * k ** 0.5 for k in n]) == pytest.approx(0.5)
    assert common.growth_exponent(n, [2.0 * k for k in n]) == pytest.approx(1.0)
    assert common.growth_exponent(n, [0.0, 0.0, 0.0, 1.0]) != common.growth_exponent(n, [0.0, 0.0, 0.0, 1.0])  # nan

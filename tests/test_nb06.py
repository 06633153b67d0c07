"""Notebook 06's module: switching, multi-adapter batches, latency and drift figures, benchmark results."""

import copy

import matplotlib
import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb06

matplotlib.use("Agg")

from .conftest import bench_row, figure_done, finite, load_tool, logits_tol, random_adapter, same_state, state_of

bench = load_tool("benchmarks/peft_bench.py")


def test_switch_adapter_round_trip(base, random_adapters):
    m = copy.deepcopy(base)
    w0 = state_of(m)
    nb06.switch_adapter(m, None, random_adapters["plus3"])
    ref = copy.deepcopy(base)
    le.merge_adapter(ref, random_adapters["plus3"])
    tokens = common._example_tokens("plus3", 4, "cpu")
    tol = logits_tol(base(tokens))  # two fp32 routes to the same weights: rounding scaled to the logits
    assert common.max_output_diff(m, ref, tokens) < tol
    nb06.switch_adapter(m, random_adapters["plus3"], random_adapters["minus5"])
    ref2 = copy.deepcopy(base)
    le.merge_adapter(ref2, random_adapters["minus5"])
    assert common.max_output_diff(m, ref2, tokens) < tol
    nb06.switch_adapter(m, random_adapters["minus5"], None)
    assert all(torch.allclose(w0[k], v, atol=1e-6) for k, v in state_of(m).items())
    with pytest.raises(TypeError):
        nb06.switch_adapter(m, None, "minus5")

def test_switch_vs_reload(base, random_adapters):
    before = state_of(base)
    out = nb06.switch_vs_reload(base, random_adapters, repeats=3)
    assert out["switch_s"] > 0 and out["reload_s"] > 0
    assert out["adapter_bytes"] < out["full_bytes"] / 10
    assert same_state(before, state_of(base))
    with pytest.raises(ValueError):
        nb06.switch_vs_reload(base, {"one": random_adapters["plus3"]})
    with pytest.raises(ValueError):
        nb06.switch_vs_reload(base, random_adapters, repeats=0)

def test_multi_adapter_matches_per_row_single_adapter(base, random_adapters):
    other = random_adapter(base, targets=("k_proj", "o_proj", "up_proj"), r=4, seed=9)
    mixed = dict(random_adapters, other=other)  # different ranks and targets in one batch
    ids = ["plus3", "minus5", None, "rminus1", 0, "other", 3]
    tokens = common._example_tokens("plus3", len(ids), "cpu")
    assert nb06.multi_adapter_max_diff(base, mixed, tokens, ids) < 1e-4
    multi = nb06.MultiAdapterModel(base, mixed)
    out = multi(tokens, ids)
    # rows really differ by adapter, and None equals the base model
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert torch.allclose(out[2], base(tokens[2:3])[0], atol=1e-5)
    # generation through use(): each row decodes like its own merged model
    x = le.get_task("plus3").sample_x(3, torch.Generator().manual_seed(1))
    got = le.generate(multi.use(["plus3", "other", None]), x, "plus3")
    single = copy.deepcopy(base)
    le.merge_adapter(single, other)
    assert torch.equal(got[1:2], le.generate(single, x[1:2], "plus3"))
    assert torch.equal(got[2:3], le.generate(base, x[2:3], "plus3"))

def test_multi_adapter_leaves_base_alone_and_rejects(base, random_adapters):
    before = state_of(base)
    multi = nb06.MultiAdapterModel(base, random_adapters)
    tokens = common._example_tokens("plus3", 2, "cpu")
    multi(tokens, ["plus3", "rminus1"])
    assert same_state(before, state_of(base))
    for ids in (["plus3"], ["nope", "plus3"], [5, 0], [True, 0], [1.0, 0]):
        with pytest.raises(ValueError):
            multi(tokens, ids)
    with pytest.raises(ValueError):
        nb06.MultiAdapterModel(base, {})
    with pytest.raises(TypeError):
        nb06.MultiAdapterModel(base, {"x": 1})
    m = copy.deepcopy(base)
    le.add_lora(m)
    with pytest.raises(ValueError):
        nb06.MultiAdapterModel(m, random_adapters)

def test_merge_figures(base):
    m = le.load_pretrained(device="cpu")
    le.add_lora(m, r=2)
    for layer in le.lora_layers(m).values():
        torch.nn.init.normal_(layer.B, std=0.05)
    a = le.extract_adapter(m)
    figure_done(nb06.plot_latency(common.latency_comparison(base, a, batch_sizes=(1, 2), repeats=2), device="cpu"))
    rows = (common.switch_drift(base, a, "bfloat16", (1, 3))
            + common.switch_drift(base, a, "bfloat16", (1, 3), strategy="keep_original"))
    figure_done(nb06.plot_drift(rows))
    for f in (nb06.plot_latency, nb06.plot_drift):
        with pytest.raises(ValueError):
            f([])


def test_mixed_tokens_and_generate_mixed_match_each_row_alone(base, random_adapters):
    tasks = ["plus3", "minus5", "rminus1", "add2"]
    x, inputs = nb06.mixed_tokens(tasks, seed=2)
    assert inputs.shape == (4, le.get_task("plus3").seq_len)
    for i, t in enumerate(tasks):  # row i is a whole example of its own task: its own op word in the prompt
        assert torch.equal(inputs[i], le.get_task(t).make(x[i: i + 1])[0][0])
    multi = nb06.MultiAdapterModel(base, random_adapters)
    ids = ["plus3", "minus5", "rminus1", None]
    got = nb06.generate_mixed(multi, x, tasks, ids)
    for i, (t, a) in enumerate(zip(tasks, ids)):
        single = copy.deepcopy(base)
        if a is not None:
            le.merge_adapter(single, random_adapters[a])
        assert torch.equal(got[i: i + 1], le.generate(single, x[i: i + 1], t))
    assert torch.equal(nb06.generate_mixed(multi, x[:3], tasks[:3]), got[:3])  # default ids: the tasks' names
    with pytest.raises(ValueError, match="one task per row"):
        nb06.generate_mixed(multi, x, tasks[:2])
    with pytest.raises(TypeError, match="MultiAdapterModel"):
        nb06.generate_mixed(base, x, tasks)
    with pytest.raises(ValueError, match="tasks"):
        nb06.mixed_tokens([])


def test_latency_verdict_needs_every_round_and_a_real_difference():
    assert nb06.latency_verdict([1.2, 1.3, 1.1]) == "slower"
    assert nb06.latency_verdict([0.7, 0.8, 0.9]) == "faster"
    assert nb06.latency_verdict([0.7, 1.4, 1.3]) == "same within noise"  # the rounds disagree
    assert nb06.latency_verdict([1.01, 1.02, 1.03]) == "same within noise"  # consistent but under 5 %
    assert nb06.latency_verdict([1.01, 1.02, 1.03], negligible=0.01) == "slower"
    for bad in ([], [1.0, float("nan")], [0.0, 1.0], [-1.0]):
        with pytest.raises(ValueError, match="ratios"):
            nb06.latency_verdict(bad)


def test_latency_sentences_follow_the_numbers():
    row = {"batch": 16, "merged_ratios": [0.98, 1.02, 1.01], "unmerged_ratios": [1.3, 1.2, 1.25]}
    s = nb06.latency_sentences(row)
    assert s["merged_same"] and s["unmerged_pays"] and "1.25 [1.20–1.30] over 3" in s["unmerged_said"]
    noisy = nb06.latency_sentences({"batch": 1, "merged_ratios": [0.6, 0.7, 0.65], "unmerged_ratios": [0.5, 2.0, 1.0]})
    assert not noisy["merged_same"] and "faster than base on every round" in noisy["merged_otherwise"]
    assert not noisy["unmerged_pays"] and "within timing noise" in noisy["unmerged_otherwise"]


def test_latency_rounds_and_figure(base, random_adapters):
    rows = nb06.latency_rounds(base, random_adapters["plus3"], batch_sizes=(1, 2), rounds=2, repeats=2)
    assert [r["batch"] for r in rows] == [1, 2]
    for r in rows:
        assert len(r["merged_ratios"]) == len(r["unmerged_ratios"]) == 2
        assert all(finite(v) and v > 0 for v in r["merged_ratios"] + r["unmerged_ratios"])
        assert r["base_ms"] > 0 and r["tokens"] == r["batch"] * le.get_task("plus3").seq_len
    figure_done(nb06.plot_latency_rounds(rows, device="cpu"))
    with pytest.raises(ValueError):
        nb06.plot_latency_rounds([])
    with pytest.raises(ValueError, match="rounds"):
        nb06.latency_rounds(base, random_adapters["plus3"], rounds=0)


def test_growth_kind_and_plateau():
    assert [nb06.growth_kind(p) for p in (0.5, 0.6, 0.95, 1.1, 0.75, 0.2)] == [
        "random walk", "random walk", "systematic", "systematic", "neither", "neither"]
    with pytest.raises(TypeError):
        nb06.growth_kind("0.5")
    assert nb06.plateau_start([1, 10, 100, 1000], [1, 2, 3, 3]) == 100
    assert nb06.plateau_start([1, 10, 100, 1000], [1, 1, 1, 1]) == 1
    assert nb06.plateau_start([1, 10, 100], [1, 2, 3]) is None


def test_drift_reading_from_constructed_rows():
    def rows(drifts, switches=(1, 10, 100, 1000)):
        return [{"dtype": "bfloat16", "switches": s, "max_abs": d} for s, d in zip(switches, drifts)]

    walk = nb06.drift_reading(rows([1e-3, 10 ** -2.5, 1e-2, 10 ** -1.5]))
    assert walk["kind"] == "random walk" and walk["p"] == pytest.approx(0.5) and walk["plateau_from"] is None
    line = nb06.drift_reading(rows([1e-4, 1e-3, 1e-2, 1e-1]), {"moved": 5, "reversed": 0})
    assert line["kind"] == "systematic" and line["one_way"] and line["reversed_fraction"] == 0
    stop = nb06.drift_reading(rows([1e-4, 1e-3, 1e-2, 1e-2]), {"moved": 5, "reversed": 2})
    assert stop["plateau_from"] == 100 and stop["p_growing"] == pytest.approx(1.0) and stop["kind"] != "systematic"
    assert not stop["one_way"] and stop["reversed_fraction"] == pytest.approx(0.4)
    with pytest.raises(ValueError):
        nb06.drift_reading([])


def test_drift_directions_one_way_in_bfloat16_and_none_in_float32_exact(base, random_adapters):
    d = nb06.drift_directions(base, random_adapters, "bfloat16", cycles=4)
    assert d["switches"] == 12 and d["entries"] == 2 * 3 * 64 * 64
    assert 0 < d["moved"] <= d["entries"] and d["reversed"] == 0  # a monotone round trip never reverses an entry
    assert 0 <= d["still_moving"] <= d["moved"]
    before = state_of(base)
    nb06.drift_directions(base, random_adapters, "float32", cycles=1)
    assert same_state(before, state_of(base))
    with pytest.raises(ValueError, match="dtype"):
        nb06.drift_directions(base, random_adapters, "int8")
    with pytest.raises(ValueError, match="cycles"):
        nb06.drift_directions(base, random_adapters, cycles=0)


def test_latest_results_picks_newest_and_filters(tmp_path):
    assert nb06.latest_results(directory=tmp_path) == []
    bench.write_jsonl([bench_row("old")], tmp_path / "cpu_2026-01-01.jsonl")
    bench.write_jsonl([bench_row("new", "2026-02-01")], tmp_path / "cpu_2026-02-01.jsonl")
    bench.write_jsonl([bench_row("gpu", "2026-01-15", device="cuda", device_name="NVIDIA H200")],
                      tmp_path / "nvidia-h200_2026-01-15.jsonl")
    (tmp_path / "notes.txt").write_text("not results")
    (tmp_path / "vehicle.json").write_text('{\n "config": "pretty-printed, not JSON lines"\n}\n')  # other results
    (tmp_path / "zz_broken.jsonl").write_text('{"config": "half a row"\n')
    assert [r["config"] for r in nb06.latest_results(directory=tmp_path)] == ["new"]
    assert [r["config"] for r in nb06.latest_results("cpu", directory=tmp_path)] == ["new"]
    assert [r["config"] for r in nb06.latest_results("cuda", directory=tmp_path)] == ["gpu"]
    assert [r["config"] for r in nb06.latest_results("H200", directory=tmp_path)] == ["gpu"]
    assert nb06.latest_results("mps", directory=tmp_path) == []
    with pytest.raises(TypeError, match="device"):
        nb06.latest_results(0, directory=tmp_path)


def test_committed_results_are_well_formed():
    """The results shipped in benchmarks/results/ load and carry every field (what notebook 06 plots)."""
    rows = nb06.latest_results()
    if not rows:
        pytest.skip("no committed benchmark results")
    for r in rows:
        assert set(bench.FIELDS) <= set(r)
        assert finite(r["merged_over_base"]) and r["drift_100_ours_exact"] == 0


def test_plot_results():
    pytest.importorskip("matplotlib")

    rows = [bench_row("toy", merged_over_base=1.0, unmerged_over_base=1.1, train_lora_over_full=0.7,
                 peft="0.21", torch="2.x"),
            bench_row("d128", merged_over_base=0.99, unmerged_over_base=1.05, ours_over_peft_unmerged=0.9)]
    fig = nb06.plot_results(rows)
    axes = fig.get_axes()
    assert len(axes) == 3
    assert len(axes[0].patches) == 2 * 2  # two measured series × two configurations (PEFT ones not measured)
    assert "PEFT 0.21" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="rows"):
        nb06.plot_results([])
    with pytest.raises(TypeError, match="rows"):
        nb06.plot_results("rows")
    with pytest.raises(ValueError, match="config"):
        nb06.plot_results([{"merged_over_base": 1.0}])

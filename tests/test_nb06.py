"""Notebook 06's module: switching, multi-adapter batches, latency and drift figures, benchmark results."""

import copy

import matplotlib
import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb06

matplotlib.use("Agg")

from .conftest import bench_row, figure_done, finite, load_tool, random_adapter, same_state, state_of

bench = load_tool("benchmarks/peft_bench.py")


def test_switch_adapter_round_trip(base, random_adapters):
    m = copy.deepcopy(base)
    w0 = state_of(m)
    nb06.switch_adapter(m, None, random_adapters["reverse"])
    ref = copy.deepcopy(base)
    le.merge_adapter(ref, random_adapters["reverse"])
    tokens = common._example_tokens("reverse", 4, "cpu")
    assert common.max_output_diff(m, ref, tokens) < 1e-5
    nb06.switch_adapter(m, random_adapters["reverse"], random_adapters["increment"])
    ref2 = copy.deepcopy(base)
    le.merge_adapter(ref2, random_adapters["increment"])
    assert common.max_output_diff(m, ref2, tokens) < 1e-5
    nb06.switch_adapter(m, random_adapters["increment"], None)
    assert all(torch.allclose(w0[k], v, atol=1e-6) for k, v in state_of(m).items())
    with pytest.raises(TypeError):
        nb06.switch_adapter(m, None, "increment")

def test_switch_vs_reload(base, random_adapters):
    before = state_of(base)
    out = nb06.switch_vs_reload(base, random_adapters, repeats=3)
    assert out["switch_s"] > 0 and out["reload_s"] > 0
    assert out["adapter_bytes"] < out["full_bytes"] / 10
    assert same_state(before, state_of(base))
    with pytest.raises(ValueError):
        nb06.switch_vs_reload(base, {"one": random_adapters["reverse"]})
    with pytest.raises(ValueError):
        nb06.switch_vs_reload(base, random_adapters, repeats=0)

def test_multi_adapter_matches_per_row_single_adapter(base, random_adapters):
    other = random_adapter(base, targets=("k_proj", "o_proj", "up_proj"), r=4, seed=9)
    mixed = dict(random_adapters, other=other)  # different ranks and targets in one batch
    ids = ["reverse", "increment", None, "rotate", 0, "other", 3]
    tokens = common._example_tokens("reverse", len(ids), "cpu")
    assert nb06.multi_adapter_max_diff(base, mixed, tokens, ids) < 1e-4
    multi = nb06.MultiAdapterModel(base, mixed)
    out = multi(tokens, ids)
    # rows really differ by adapter, and None equals the base model
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert torch.allclose(out[2], base(tokens[2:3])[0], atol=1e-5)
    # generation through use(): each row decodes like its own merged model
    x = le.get_task("reverse").sample_x(3, torch.Generator().manual_seed(1))
    got = le.generate(multi.use(["reverse", "other", None]), x)
    single = copy.deepcopy(base)
    le.merge_adapter(single, other)
    assert torch.equal(got[1:2], le.generate(single, x[1:2]))
    assert torch.equal(got[2:3], le.generate(base, x[2:3]))

def test_multi_adapter_leaves_base_alone_and_rejects(base, random_adapters):
    before = state_of(base)
    multi = nb06.MultiAdapterModel(base, random_adapters)
    tokens = common._example_tokens("reverse", 2, "cpu")
    multi(tokens, ["reverse", "rotate"])
    assert same_state(before, state_of(base))
    for ids in (["reverse"], ["nope", "reverse"], [5, 0], [True, 0], [1.0, 0]):
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


def test_latest_results_picks_newest_and_filters(tmp_path):
    assert nb06.latest_results(directory=tmp_path) == []
    bench.write_jsonl([bench_row("old")], tmp_path / "cpu_2026-01-01.jsonl")
    bench.write_jsonl([bench_row("new", "2026-02-01")], tmp_path / "cpu_2026-02-01.jsonl")
    bench.write_jsonl([bench_row("gpu", "2026-01-15", device="cuda", device_name="NVIDIA H200")],
                      tmp_path / "nvidia-h200_2026-01-15.jsonl")
    (tmp_path / "notes.txt").write_text("not results")
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

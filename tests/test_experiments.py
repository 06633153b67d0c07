"""lora_edu.experiments on real (small) inputs: counts, fine-tune rows, tables, latency, switching, drift."""

import copy

import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb04, nb05, nb06

FAST = {"steps": 3, "eval_examples": 16, "progress": False}


@pytest.fixture(scope="module")
def base():
    torch.set_num_threads(1)
    return le.load_pretrained(device="cpu")


def _random_adapter(model, targets=("q_proj", "v_proj"), r=2, alpha=4, seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model)
    le.add_lora(m, targets, r=r, alpha=alpha)
    a = le.extract_adapter(m)
    a.tensors = {n: (torch.randn(A.shape, generator=g) * scale, torch.randn(B.shape, generator=g) * scale)
                 for n, (A, B) in a.tensors.items()}
    return a


@pytest.fixture(scope="module")
def adapters(base):
    return {name: _random_adapter(base, seed=i) for i, name in enumerate(("reverse", "increment", "rotate"))}


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- notebook 04 -----------------------------------------------------------------------------
def test_parameter_table_sums_to_model_and_groups(base):
    table = nb04.parameter_table(base)
    assert sum(r["params"] for r in table) == le.count_parameters(base)[1]
    q = next(r for r in table if r["name"] == "blocks.0.attn.q_proj.weight")
    assert q["shape"] == (64, 64) and q["params"] == 4096 and q["group"] == "attention"
    groups = nb04.parameter_groups(base)
    assert sum(groups.values()) == le.count_parameters(base)[1]
    assert groups["attention"] == 2 * 4 * (64 * 64 + 64)
    assert groups["mlp"] == 2 * (2 * 64 * 256 + 256 + 64)


def test_lora_params_at_scale_matches_toy_and_paper(base):
    toy = nb05.lora_params_at_scale(64, 2, 4)
    assert toy["total"] == le.count_parameters(base)[1]
    m = copy.deepcopy(base)
    le.add_lora(m, ("q_proj", "v_proj"), r=4)
    assert toy["lora"] == le.count_parameters(m)[0]
    gpt3 = nb05.lora_params_at_scale(**nb05.GPT3_175B, r=4)
    assert gpt3["lora"] == 2 * 192 * 12288 * 4  # the paper's |Θ| = 2·L̂·d_model·r with L̂ = 2×96
    assert 170e9 < gpt3["total"] < 180e9
    assert 5_000 < gpt3["ratio"] < 20_000


@pytest.mark.parametrize("kw", [{"d_model": 0}, {"r": 65}, {"n_adapted": 5}, {"n_layer": 1.5}, {"d_ff": -1}])
def test_lora_params_at_scale_rejects(kw):
    args = {"d_model": 64, "n_layer": 2, "r": 4} | kw
    with pytest.raises(ValueError):
        nb05.lora_params_at_scale(**args)


def test_baseline_accuracy(base):
    acc = nb04.baseline_accuracy(base, n_examples=32)
    assert set(acc) == set(le.DOWNSTREAM_TASKS)
    assert all(0 <= v <= 1 for v in acc.values())
    assert nb04.baseline_accuracy(base, "copy", n_examples=32) == {"copy": 1.0}
    with pytest.raises(ValueError):
        nb04.baseline_accuracy(base, ("nope",))


# ---- notebook 05 -----------------------------------------------------------------------------
def test_training_memory_lora_vs_full(base):
    full = nb05.training_memory(base)
    total = le.count_parameters(base)[1]
    assert full["optimizer_bytes"] == 2 * total * 4
    assert full["grad_bytes"] == total * 4
    assert full["weight_bytes"] == total * 4
    m = copy.deepcopy(base)
    le.add_lora(m, ("q_proj", "v_proj"), r=4)
    lora = nb05.training_memory(m)
    trainable, total2 = le.count_parameters(m)
    assert lora["optimizer_bytes"] == 2 * trainable * 4 and lora["grad_bytes"] == trainable * 4
    assert lora["weight_bytes"] == total2 * 4
    assert lora["total_bytes"] < full["total_bytes"]
    frozen = copy.deepcopy(base).requires_grad_(False)
    with pytest.raises(ValueError):
        nb05.training_memory(frozen)


def test_time_train_step_leaves_model_alone(base):
    before = _weights(base)
    t = nb05.time_train_step(base, steps=2, warmup=1, batch_size=4)
    assert t > 0
    assert _same(before, _weights(base))
    for kw in ({"steps": 0}, {"warmup": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            nb05.time_train_step(base, **kw)


def test_checkpoint_bytes(base):
    full = nb05.checkpoint_bytes(base)
    assert full > le.count_parameters(base)[1] * 4  # the weights plus a header
    m = copy.deepcopy(base)
    le.add_lora(m, ("q_proj", "v_proj"), r=4)
    lora = nb05.checkpoint_bytes(m)
    assert le.count_parameters(m)[0] * 4 < lora < full / 10


def test_finetune_lora_and_full_rows(base):
    before = _weights(base)
    m, row = nb05.finetune("increment", "lora", r=2, model=base, **FAST)
    assert _same(before, _weights(base))  # a copy was trained
    assert row["method"] == "lora" and row["targets"] == ("q_proj", "v_proj") and row["r"] == 2
    assert row["trainable"] == 2 * 2 * 2 * 128 and row["total"] == row["trainable"] + le.count_parameters(base)[1]
    assert 0 <= row["accuracy"] <= 1 and 0 <= row["seq_accuracy"] <= row["accuracy"] + 1e-9
    assert row["optimizer_bytes"] == 2 * row["trainable"] * 4
    assert len(row["history"]["loss"]) == 3 and row["step_ms"] > 0 and row["checkpoint_bytes"] > 0
    assert set(le.lora_layers(m)) == {f"blocks.{i}.attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")}
    mf, rf = nb05.finetune("increment", "full", model=base, **FAST)
    assert rf["trainable"] == rf["total"] == le.count_parameters(base)[1]
    assert rf["optimizer_bytes"] > row["optimizer_bytes"] and rf["checkpoint_bytes"] > row["checkpoint_bytes"]
    assert rf["lr"] == 3e-3 and row["lr"] == 1e-2
    assert not le.lora_layers(mf)


def test_finetune_is_deterministic(base):
    _, a = nb05.finetune("reverse", model=base, measure=False, **FAST)
    _, b = nb05.finetune("reverse", model=base, measure=False, **FAST)
    assert a["history"]["loss"] == b["history"]["loss"] and a["accuracy"] == b["accuracy"]


@pytest.mark.parametrize("kw", [{"method": "half"}, {"steps": 0}, {"r": 0}, {"r": 65}, {"targets": ("nope",)},
                                {"eval_examples": 0}, {"task": "nope"}, {"targets": ()}])
def test_finetune_rejects(base, kw):
    before = _weights(base)
    with pytest.raises(ValueError):
        nb05.finetune(**({"model": base, "progress": False, "steps": 2} | kw))
    assert _same(before, _weights(base))


def test_finetune_rejects_lora_model(base):
    m = copy.deepcopy(base)
    le.add_lora(m)
    with pytest.raises(ValueError):
        nb05.finetune(model=m, **FAST)


def test_budget_configs_equal_budget(base):
    configs = nb05.budget_configs(8)
    assert [(t, r) for t, r in configs] == [(p["targets"], p["r"]) for p in nb05.PAPER_TABLE5]
    counts = set()
    for targets, r in configs:
        m = copy.deepcopy(base)
        le.add_lora(m, targets, r=r)
        counts.add(le.count_parameters(m)[0])
    assert counts == {2 * 8 * 128}  # 2 blocks × r·(d + k) at r = 8
    for bad in (6, 0, -4):
        with pytest.raises(ValueError):
            nb05.budget_configs(bad)


def test_compare_targets_rows(base):
    rows = nb05.compare_targets("increment", steps=2, configs=[(("q_proj",), 8), (("q_proj", "v_proj"), 4),
                                                             (("up_proj",), 2)], progress=False)
    assert [r["r"] for r in rows] == [8, 4, 2]
    assert rows[0]["trainable"] == rows[1]["trainable"] == 2048
    assert rows[0]["paper_WikiSQL"] == 70.4 and rows[1]["paper_MultiNLI"] == 91.3
    assert "paper_WikiSQL" not in rows[2]
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    with pytest.raises(ValueError):
        nb05.compare_targets(configs=[], progress=False)


def test_rank_sweep_rows(base):
    rows = nb05.rank_sweep("increment", ranks=(1, 3), target_sets=(("q_proj",),), steps=2, progress=False,
                         eval_examples=32)
    assert [(r["targets"], r["r"], r["trainable"]) for r in rows] == [(("q_proj",), 1, 256), (("q_proj",), 3, 768)]
    assert rows[0]["paper_WikiSQL"] == 68.8 and "paper_WikiSQL" not in rows[1]
    assert rows[0]["acc_min"] == rows[0]["acc_max"] == rows[0]["accuracy"]
    two = nb05.rank_sweep("reverse", ranks=(2,), target_sets=(("q_proj",),), steps=3, seeds=(0, 1), progress=False,
                        eval_examples=32)[0]
    assert len(two["accuracies"]) == 2
    assert two["acc_min"] <= two["accuracy"] <= two["acc_max"]
    assert two["accuracy"] == pytest.approx(sum(two["accuracies"]) / 2)
    _, single = nb05.finetune("reverse", "lora", ("q_proj",), 2, 8, 3, seed=1, model=base, progress=False,
                            measure=False, eval_examples=32)
    assert two["accuracies"][1] == single["accuracy"]
    for kw in ({"ranks": ()}, {"ranks": (0,)}, {"target_sets": ()}, {"ranks": (100,)}, {"seeds": ()},
               {"seeds": (0.5,)}):
        with pytest.raises(ValueError):
            nb05.rank_sweep(**({"steps": 1, "progress": False} | kw))


# ---- notebook 06 -----------------------------------------------------------------------------
def test_time_forward_and_output_diff(base):
    tokens = common._example_tokens("reverse", 4, "cpu")
    t = common.time_forward(base, tokens, repeats=3, warmup=0)
    assert len(t) == 3 and t == sorted(t) and t[0] > 0
    assert common.max_output_diff(base, copy.deepcopy(base), tokens) == 0.0
    with pytest.raises(ValueError):
        common.time_forward(base, tokens, repeats=0)


def test_merged_equals_unmerged(base, adapters):
    a = adapters["reverse"]
    merged, unmerged = copy.deepcopy(base), copy.deepcopy(base)
    le.merge_adapter(merged, a)
    le.load_adapter(unmerged, a)
    tokens = common._example_tokens("reverse", 8, "cpu")
    assert common.max_output_diff(merged, unmerged, tokens) < 1e-4
    assert common.max_output_diff(merged, base, tokens) > 1e-3  # the adapter does change the outputs


def test_latency_comparison(base, adapters):
    before = _weights(base)
    rows = common.latency_comparison(base, adapters["reverse"], batch_sizes=(1, 4), repeats=3, warmup=1)
    assert [r["batch"] for r in rows] == [1, 4] and rows[1]["tokens"] == 4 * 17
    for r in rows:
        for k in ("base", "merged", "unmerged"):
            assert 0 < r[f"{k}_p10_ms"] <= r[f"{k}_ms"] <= r[f"{k}_p90_ms"]
        assert r["unmerged_over_base"] == pytest.approx(r["unmerged_ms"] / r["base_ms"])
    assert _same(before, _weights(base))
    with pytest.raises(ValueError):
        common.latency_comparison(base, adapters["reverse"], batch_sizes=())
    with pytest.raises(ValueError):
        common.latency_comparison(base, adapters["reverse"], batch_sizes=(0,))
    with pytest.raises(TypeError):
        common.latency_comparison(base, "reverse")


def test_switch_adapter_round_trip(base, adapters):
    m = copy.deepcopy(base)
    w0 = _weights(m)
    nb06.switch_adapter(m, None, adapters["reverse"])
    ref = copy.deepcopy(base)
    le.merge_adapter(ref, adapters["reverse"])
    tokens = common._example_tokens("reverse", 4, "cpu")
    assert common.max_output_diff(m, ref, tokens) < 1e-5
    nb06.switch_adapter(m, adapters["reverse"], adapters["increment"])
    ref2 = copy.deepcopy(base)
    le.merge_adapter(ref2, adapters["increment"])
    assert common.max_output_diff(m, ref2, tokens) < 1e-5
    nb06.switch_adapter(m, adapters["increment"], None)
    assert all(torch.allclose(w0[k], v, atol=1e-6) for k, v in _weights(m).items())
    with pytest.raises(TypeError):
        nb06.switch_adapter(m, None, "increment")


def test_switch_vs_reload(base, adapters):
    before = _weights(base)
    out = nb06.switch_vs_reload(base, adapters, repeats=3)
    assert out["switch_s"] > 0 and out["reload_s"] > 0
    assert out["adapter_bytes"] < out["full_bytes"] / 10
    assert _same(before, _weights(base))
    with pytest.raises(ValueError):
        nb06.switch_vs_reload(base, {"one": adapters["reverse"]})
    with pytest.raises(ValueError):
        nb06.switch_vs_reload(base, adapters, repeats=0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_merge_drift_exact_is_zero_and_rounding_is_not(base, adapters, dtype):
    exact = common.switch_drift(base, adapters, dtype, checkpoints=(1, 5), strategy="keep_original")
    assert [r["switches"] for r in exact] == [1, 5]
    assert all(r["max_abs"] == 0 and r["rel_fro"] == 0 for r in exact)
    loose = common.switch_drift(base, adapters, dtype, checkpoints=(1, 20))
    if dtype != "float32":
        assert loose[-1]["max_abs"] > 0
    assert loose[-1]["max_abs"] >= 0 and all(r["strategy"] == "subtract" and r["dtype"] == dtype for r in loose)


def test_merge_drift_bf16_worse_than_fp32_and_grows(base, adapters):
    f32 = common.switch_drift(base, adapters, "float32", checkpoints=(50,))[0]["max_abs"]
    bf = common.switch_drift(base, adapters, torch.bfloat16, checkpoints=(1, 50))
    assert bf[1]["max_abs"] > bf[0]["max_abs"] > f32
    acc = common.switch_drift(base, adapters, "float32", checkpoints=(1,), task="copy", n_examples=32)[0]["accuracy"]
    assert acc == 1.0


@pytest.mark.parametrize("kw", [{"dtype": "int8"}, {"checkpoints": ()}, {"checkpoints": (10, 1)},
                                {"checkpoints": (0,)}, {"adapters": []}, {"n_examples": 0}])
def test_merge_drift_rejects(base, adapters, kw):
    with pytest.raises(ValueError):
        common.switch_drift(**({"base": base, "adapters": adapters} | kw))


def test_merge_drift_rejects_mismatched_adapters(base, adapters):
    other = _random_adapter(base, r=4)
    with pytest.raises(ValueError):
        common.switch_drift(base, [adapters["reverse"], other])


def test_multi_adapter_matches_per_row_single_adapter(base, adapters):
    other = _random_adapter(base, targets=("k_proj", "o_proj", "up_proj"), r=4, seed=9)
    mixed = dict(adapters, other=other)  # different ranks and targets in one batch
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


def test_multi_adapter_leaves_base_alone_and_rejects(base, adapters):
    before = _weights(base)
    multi = nb06.MultiAdapterModel(base, adapters)
    tokens = common._example_tokens("reverse", 2, "cpu")
    multi(tokens, ["reverse", "rotate"])
    assert _same(before, _weights(base))
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
        nb06.MultiAdapterModel(m, adapters)


def test_format_table():
    rows = [{"targets": ("q_proj", "v_proj"), "r": 4, "accuracy": 0.5, "h": {"x": 1}}]
    text = common.format_table(rows)
    assert "q+v" in text and "0.500" in text and "h" not in text.split("\n")[0].split()
    assert common.format_table(rows, ["r"], ["rank"]).startswith("rank")
    with pytest.raises(ValueError):
        common.format_table([])
    with pytest.raises(ValueError):
        common.format_table(rows, ["r"], ["a", "b"])


def test_target_label_and_human_bytes():
    assert nb05.target_label(("q_proj", "v_proj")) == "W_q+W_v"
    assert nb05.target_label("o_proj") == "W_o"
    assert common.human_bytes(999) == "999 B"
    assert common.human_bytes(9214) == "9.21 kB"
    assert common.human_bytes(350e9) == "350 GB"
    assert common.human_bytes(37.7e6) == "37.7 MB"
    assert common.human_bytes(5e15) == "5e+03 TB"
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(ValueError):
            common.human_bytes(bad)
    with pytest.raises(ValueError):
        nb05.target_label(())

"""Notebook 08's module (lora_edu/course/nb08.py): the experiments at small sizes (random adapters, few steps)."""

from __future__ import annotations

import copy

import matplotlib
import pytest
import torch

import lora_edu as le
from lora_edu.course import common, nb08

from .conftest import same_state, state_of

matplotlib.use("Agg")

NAMES = tuple(f"blocks.{i}.attn.{m}" for i in range(le.ToyConfig().n_layer) for m in ("q_proj", "v_proj"))


def random_adapter(seed: int, r: int = 4, alpha: float = 8.0, std: float = 0.05, device="cpu") -> le.Adapter:
    g = torch.Generator().manual_seed(seed)
    t = {n: (torch.randn(r, 64, generator=g) / 8, torch.randn(64, r, generator=g) * std) for n in NAMES}
    return le.Adapter(r, alpha, ("q_proj", "v_proj"), tensors=t).to(device=device)


@pytest.fixture
def adapters(device):
    return [random_adapter(s, device=device) for s in range(3)]


# ---- claim 3: combining ---------------------------------------------------------------------
def test_exact_sum_equals_sequential_merge_adapter(pretrained, adapters):
    seq = copy.deepcopy(pretrained)
    for a in adapters:
        le.merge_adapter(seq, a)
    once = copy.deepcopy(pretrained)
    nb08.apply_deltas(once, nb08.combined_deltas(adapters, "sum"))
    for n in NAMES:
        torch.testing.assert_close(once.get_submodule(n).weight, seq.get_submodule(n).weight, atol=1e-5, rtol=0)
        assert not torch.equal(once.get_submodule(n).weight, pretrained.get_submodule(n).weight)


def test_svd_at_full_rank_equals_sum_and_truncates_below(adapters):
    exact = nb08.combined_deltas(adapters, "sum")
    full = nb08.combined_deltas(adapters, "svd", rank=3 * 4)
    low = nb08.combined_deltas(adapters, "svd", rank=4)
    for n in NAMES:
        torch.testing.assert_close(full[n], exact[n], atol=1e-10, rtol=0)
        assert le.numerical_rank(exact[n], tol=1e-8) == 12
        assert le.numerical_rank(low[n], tol=1e-8) == 4
        # Eckart–Young: the truncation error is the tail of the spectrum
        s = le.singular_values(exact[n])
        assert float((exact[n] - low[n]).norm()) == pytest.approx(float(s[4:].norm()), rel=1e-8)


def test_scaled_default_is_mean_of_deltas(adapters):
    mean = nb08.combined_deltas(adapters, "scaled")
    exact = nb08.combined_deltas(adapters, "sum")
    for n in NAMES:
        torch.testing.assert_close(mean[n], exact[n] / 3)
    w = nb08.combined_deltas(adapters, "sum", weights=[0.5, 0.0, 0.0])
    torch.testing.assert_close(w[NAMES[0]], 0.5 * nb08.adapter_deltas(adapters[0])[NAMES[0]])


def test_avg_ab_creates_cross_terms(adapters):
    ct = nb08.cross_terms(adapters)
    assert ct["norms"].shape == (3, 3)
    assert (ct["norms"] > 0).all() and ct["cross_norm"] > 0
    # naive average = (s/N²)(Σ own + Σ cross): check the identity on one layer
    n = NAMES[0]
    s = adapters[0].scaling
    own = sum(a.tensors[n][1].double() @ a.tensors[n][0].double() for a in adapters).cpu()
    cross = sum(ai.tensors[n][1].double() @ aj.tensors[n][0].double()
                for i, ai in enumerate(adapters) for j, aj in enumerate(adapters) if i != j).cpu()
    avg = nb08.combined_deltas(adapters, "avg_AB")[n]
    torch.testing.assert_close(avg, s * (own + cross) / 9)
    assert not torch.allclose(avg, nb08.combined_deltas(adapters, "scaled")[n])


def test_identical_adapters_have_no_cross_term_error(device):
    a = random_adapter(0, device=device)
    twins = [a, copy.deepcopy(a)]
    avg = nb08.combined_deltas(twins, "avg_AB")
    mean = nb08.combined_deltas(twins, "scaled")
    for n in NAMES:  # with identical adapters averaging the factors changes nothing
        torch.testing.assert_close(avg[n], mean[n])
    ct = nb08.cross_terms(twins)
    torch.testing.assert_close(ct["norms"][0, 1], ct["norms"][0, 0])
    assert ct["cross_over_own"] == pytest.approx(1.0)


def test_combined_deltas_rejects_bad_input(adapters):
    with pytest.raises(ValueError, match="method"):
        nb08.combined_deltas(adapters, "ties")
    with pytest.raises(ValueError, match="weights"):
        nb08.combined_deltas(adapters, "sum", weights=[1.0])
    with pytest.raises(ValueError, match="rank"):
        nb08.combined_deltas(adapters, "svd", rank=0)
    with pytest.raises(TypeError, match="adapters"):
        nb08.combined_deltas([1, 2], "sum")
    other = le.Adapter(2, 8.0, ("q_proj",), tensors={NAMES[0]: (torch.zeros(2, 64), torch.zeros(64, 2))})
    with pytest.raises(ValueError):
        nb08.combined_deltas([adapters[0], other], "avg_AB")


def test_merge_pair_rows_and_base_untouched(pretrained):
    base_w = state_of(pretrained)
    dev = next(pretrained.parameters()).device
    conflict = le.Task("plus", 3, rule="sub")
    ads = {"plus3": random_adapter(0, device=dev), conflict: random_adapter(1, device=dev)}
    res = nb08.merge_pair(pretrained, ads, n_examples=16)
    assert same_state(state_of(pretrained), base_w)
    assert res["tasks"] == ["plus3", "plus3-as-sub"] and set(res["merged"]) == set(nb08.MERGE_METHODS)
    for accs in (res["alone"], *res["merged"].values()):
        assert set(accs) == set(res["tasks"]) and all(0 <= v <= 1 for v in accs.values())
    # one adapter twice: the exact sum is the adapter at weight 2, the scaled sum and naive averaging the adapter
    a = random_adapter(2, std=2.0, device=dev)
    twice = nb08.merge_pair(pretrained, {"rot0": a, "rot1": copy.deepcopy(a)}, n_examples=32)
    single = copy.deepcopy(pretrained)
    le.merge_adapter(single, a)
    want = le.evaluate(single, "rot0", 32, metric="sequence")
    assert twice["alone"]["rot0"] == want
    for m in ("scaled", "avg_AB"):  # float64 deltas added in float32: at most one of 32 answers may round apart
        assert twice["merged"][m]["rot0"] == pytest.approx(want, abs=1 / 32 + 1e-9)
    with pytest.raises(ValueError, match="methods"):
        nb08.merge_pair(pretrained, ads, methods=("nope",))
    with pytest.raises(ValueError, match="two entries"):
        nb08.merge_pair(pretrained, {"plus3": ads["plus3"]})


def test_answered_as_and_pair_overlap(pretrained):
    t = le.Task("plus", 3, rule="sub")
    x = torch.tensor([[1, 2, 3, 4, 5, 6]])
    assert t.fn(x).tolist() == le.get_task("sub3").fn(x).tolist() and t.prefix(x).tolist() == \
        le.get_task("plus3").prefix(x).tolist()  # plus3's prompt, sub3's answer
    assert nb08.answer_conflict(["plus3", t], 256) > 0.9 and nb08.answer_conflict(["plus3", "add3"], 64) == 0.0
    with pytest.raises(ValueError, match="rule"):
        le.Task("plus", 3, rule="mul")
    dev = next(pretrained.parameters()).device
    a, b = random_adapter(0, device=dev), random_adapter(1, device=dev)
    same = nb08.pair_overlap(pretrained, {"plus3": a, t: b})
    assert same["input_cos"] == pytest.approx(1.0) and same["cross_response"] == pytest.approx(1.0)  # one word
    other = nb08.pair_overlap(pretrained, {"plus3": a, "rot2": b})
    assert other["input_cos"] < 0.99 and other["cross_response"] != pytest.approx(1.0)
    twin = nb08.pair_overlap(pretrained, {"plus3": a, "minus5": copy.deepcopy(a)})
    assert twin["delta_overlap"] == pytest.approx(1.0) and 0 <= other["delta_overlap"] < 0.5
    x_in = nb08.prompt_inputs(pretrained, ["plus3", "minus5"])
    assert x_in["plus3"].shape == (64,) and not torch.equal(x_in["plus3"], x_in["minus5"])
    with pytest.raises(ValueError, match="exactly two"):
        nb08.pair_overlap(pretrained, {"plus3": a})


def test_pair_study_records(pretrained):
    dev = next(pretrained.parameters()).device
    conflict = le.Task("plus", 3, rule="sub")
    ads = {s: {"plus3": random_adapter(s, device=dev), conflict.name: random_adapter(s + 5, device=dev)}
           for s in (0, 1)}
    (rec,) = nb08.pair_study(pretrained, ads, [("plus3", conflict.name)], {conflict.name: conflict}, 16,
                             by_construction=[("plus3", conflict.name)])
    assert rec["label"] == "plus3 + plus3-as-sub" and rec["by_construction"] and rec["seeds"] == [0, 1]
    assert all(len(v) == 2 for d in (rec["alone"], rec["merged"], rec["methods"], rec["overlap"]) for v in d.values())
    assert rec["overlap"]["input_cos"] == pytest.approx([1.0, 1.0])
    assert nb08.pair_kept(rec, 0.0) == (2, 2) and nb08.pair_kept(rec, 1.01) == (0, 2)
    (two,) = nb08.pair_study(pretrained, ads, [("plus3", conflict.name)], {conflict.name: conflict}, 8,
                             methods=("sum", "avg_AB"))
    assert set(two["methods"]) == {"sum", "avg_AB"} and not two["by_construction"]
    with pytest.raises(ValueError, match="sum"):
        nb08.pair_study(pretrained, ads, [("plus3", conflict.name)], {conflict.name: conflict}, methods=("avg_AB",))


# ---- claim 1 ----------------------------------------------------------------------------------
def test_merged_equals_unmerged_and_intactness(pretrained, tokens, adapters):
    base_w = state_of(pretrained)
    res = nb08.merged_vs_unmerged(pretrained, adapters[0], tokens)
    assert res["max_abs"] < 1e-3 * res["max_logit"]
    assert res["w0_intact_unmerged"] and not res["w0_intact_merged"]
    assert res["merged_weight_change"] > 0
    assert same_state(state_of(pretrained), base_w)


def test_branch_outputs_sum_to_layer_output(pretrained, tokens, adapters):
    model = copy.deepcopy(pretrained)
    le.load_adapter(model, adapters[0])
    out = nb08.lora_branch_outputs(model, tokens, NAMES[1])
    m = le.lora_layers(model)[NAMES[1]]
    with torch.no_grad():
        full = m(out["x"].to(tokens.device)).float().cpu()
    torch.testing.assert_close(out["h_base"] + out["h_delta"], full, atol=1e-5, rtol=1e-5)
    dec = nb08.shift_decomposition(out["h_delta"], out["h_base"])
    assert dec["rank"] <= 4 and 0 <= dec["constant_fraction"] <= 1 and dec["relative_size"] > 0
    const = torch.ones(10, 1) @ torch.randn(1, 5)  # the same shift for every input
    assert nb08.shift_decomposition(const)["constant_fraction"] == pytest.approx(1.0)
    le.merge_lora(model)
    with pytest.raises(ValueError, match="merged"):
        nb08.lora_branch_outputs(model, tokens, NAMES[1])
    with pytest.raises(ValueError, match="no LoRA"):
        nb08.lora_branch_outputs(pretrained, tokens)


def test_extra_macs(pretrained, adapters):
    m = nb08.extra_macs_per_token(adapters[0], pretrained)
    assert m["adapted_base_macs"] == len(NAMES) * 64 * 64 and m["extra_macs"] == len(NAMES) * 4 * (64 + 64)
    assert 0 < m["extra_fraction_of_model"] < 1


# ---- claim 2 ----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["keep_original", "fp32_master", "unmerged"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_exact_strategies_never_drift(pretrained, adapters, strategy, dtype):
    rows = common.switch_drift(pretrained, adapters, dtype, checkpoints=(1, 20), strategy=strategy)
    assert [r["switches"] for r in rows] == [1, 20]
    assert all(r["max_abs"] == 0 and r["rel_fro"] == 0 for r in rows)


def test_subtract_drifts_in_bfloat16_and_grows(pretrained, adapters):
    base_w = state_of(pretrained)
    rows = common.switch_drift(pretrained, adapters, "bfloat16", checkpoints=(1, 50), strategy="subtract",
                              task="add1", n_examples=16)
    assert rows[0]["max_abs"] > 0 and rows[1]["rel_fro"] > rows[0]["rel_fro"]
    assert 0 <= rows[1]["accuracy"] <= 1
    f32 = common.switch_drift(pretrained, adapters, "float32", checkpoints=(1, 50), strategy="subtract")
    assert f32[1]["max_abs"] < rows[1]["max_abs"] / 100  # float32 drift is orders of magnitude smaller
    assert same_state(state_of(pretrained), base_w)


def test_switch_drift_rejects_bad_input(pretrained, adapters):
    with pytest.raises(ValueError, match="dtype"):
        common.switch_drift(pretrained, adapters, "int8")
    with pytest.raises(ValueError, match="strategy"):
        common.switch_drift(pretrained, adapters, strategy="pray")
    with pytest.raises(ValueError, match="checkpoints"):
        common.switch_drift(pretrained, adapters, checkpoints=(10, 1))
    with pytest.raises(ValueError, match="adapters"):
        common.switch_drift(pretrained, [])


# ---- claim 4 ----------------------------------------------------------------------------------
def test_delta_anatomy_low_rank_vs_dense():
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(32, 32, generator=g)
    low = torch.randn(32, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 32, generator=g, dtype=torch.float64)
    dense = torch.randn(32, 32, generator=g)
    a, b = nb08.delta_anatomy(W0, low, r=3), nb08.delta_anatomy(W0, dense, r=3)
    assert a["rank"] == 3 and a["energy_top_r"] == pytest.approx(1.0) and a["effective_rank"] <= 3
    assert b["rank"] == 32 and b["energy_top_r"] < 0.6 and b["effective_rank"] > 3
    assert a["frac_changed"] > 0.9 and b["frac_changed"] > 0.9  # both touch (almost) every entry
    assert a["amplification"] > 0
    with pytest.raises(ValueError, match="shape"):
        nb08.delta_anatomy(W0, low[:5], r=3)
    with pytest.raises(ValueError, match="zeros"):
        nb08.delta_anatomy(W0, torch.zeros(32, 32), r=3)


def test_weight_deltas(pretrained, adapters):
    m = copy.deepcopy(pretrained)
    le.merge_adapter(m, adapters[0])
    d = nb08.weight_deltas(pretrained, m, NAMES)
    ref = nb08.adapter_deltas(adapters[0])
    for n in NAMES:
        torch.testing.assert_close(d[n], ref[n], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="names"):
        nb08.weight_deltas(pretrained, m, ["nope"])


# ---- claim 5 ----------------------------------------------------------------------------------
def test_biased_task_and_skew(pretrained):
    t = nb08.biased_copy_task((3, 5), 7)
    x = torch.tensor([[3, 5, 7, 1, 0, 3]])
    assert t.fn(x).tolist() == [[7, 7, 7, 1, 0, 7]] and t.name == "rot0_35_to_7"
    assert t.prefix(x).tolist() == nb08.COPY.prefix(x).tolist()  # asked as copy (rot 0)
    assert nb08.biased_copy_task(()).fn(x).tolist() == x.tolist()
    rep = nb08.skew_report(pretrained, n_examples=64)
    assert rep["skew"] == 0.0 and rep["quality"] == 1.0  # the shipped model copies perfectly
    with pytest.raises(ValueError, match="to"):
        nb08.biased_copy_task((7,), 7)
    with pytest.raises(ValueError, match="digits"):
        nb08.biased_copy_task((12,), 7)


def test_bias_correction_returns_on_removal(pretrained):
    biased = nb08.make_biased_model(pretrained, steps=40, lr=3e-3)
    before = nb08.skew_report(biased, n_examples=64)
    assert before["skew"] > 0.5
    fix, _ = nb08.train_adapter(biased, nb08.COPY, 40, n_examples=32)
    w = state_of(biased)
    rows = nb08.bias_table(biased, {"none": [], "fix": [fix], "none again": []}, n_examples=64)
    assert same_state(state_of(biased), w)
    assert rows[1]["skew"] < before["skew"]
    assert rows[2]["skew"] == rows[0]["skew"] == before["skew"]


def test_delta_cosine():
    a = {"x": torch.ones(2, 2), "y": torch.zeros(2, 2)}
    assert nb08.delta_cosine(a, a) == pytest.approx(1.0)
    assert nb08.delta_cosine(a, {"x": -torch.ones(2, 2)}) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        nb08.delta_cosine(a, {"z": torch.ones(1)})


T = {"equal_rel": 1e-5, "constant_shift": 0.5, "restore_tol": 0.0, "keep": 0.9, "nonsense": 0.1, "dense": 0.9,
     "limp": 0.05, "skew": 0.05, "quality_drop": 0.02}


@pytest.mark.parametrize("args, value, words", [
    ((2e-6, 0.07), nb08.CONDITIONAL, ["7.0%", "depends on the input"]),
    ((2e-6, 0.8), nb08.TRUE, ["80%", "like a bias"]),
    ((3e-3, 0.07), nb08.UNSETTLED, ["3.0e-03", "cannot call them one function"]),
])
def test_verdict_claim1_every_value(args, value, words):
    v, sentence = nb08.verdict_claim1(*args, T)
    assert v == value and all(w in sentence for w in words)


@pytest.mark.parametrize("args, value", [((0.0, 0.0), nb08.TRUE), ((0.15, 0.0), nb08.CONDITIONAL),
                                         ((0.15, 1e-3), nb08.FALSE)])
def test_verdict_claim2_every_value(args, value):
    v, sentence = nb08.verdict_claim2(*args, T)
    assert v == value and ("1.5e-01" in sentence) == (args[0] == 0.15)
    assert nb08.verdict_claim2(1e-7, 0.0, {**T, "restore_tol": 1e-6})[0] == nb08.TRUE  # the tolerance is used


def test_answer_conflict():
    assert nb08.answer_conflict(["rot0", "rot0"], 64) == 0.0
    assert nb08.answer_conflict(["rot0", "rot1"], 256) > 0.95
    with pytest.raises(ValueError):
        nb08.answer_conflict(["rot0", "nope"])


def _pair(label, merged, alone=(1.0, 1.0, 1.0), by_construction=False):
    return {"label": label, "by_construction": by_construction, "merged": dict(zip(("a", "b"), merged)),
            "alone": {"a": list(alone), "b": list(alone)}}


GOOD = _pair("a + b", ([0.95, 0.97, 0.92], [0.99, 0.91, 0.85]))        # both ≥ 0.9 on 2 of 3 seeds
BAD = _pair("a + c", ([0.97, 0.80, 0.99], [0.01, 0.30, 0.20]))         # one task falls
CONF = _pair("a + a'", ([0.80, 0.7, 0.9], [0.0, 0.0, 0.0]), by_construction=True)


@pytest.mark.parametrize("pairs, value, words", [
    ([GOOD, CONF], nb08.CONDITIONAL, ["only for adapters that conflict", "a + b (0.95 / 0.92)", "a + a' (b falls to "
                                      "0.00, nonsense)", "switching (each adapter alone) keeps every task at 1.00"]),
    ([BAD, CONF], nb08.TRUE, ["no pair keeps both ≥ 0.90", "a + c (b falls to 0.17)", "merging, not adding"]),
    ([GOOD], nb08.FALSE, ["every pair keeps both", "cost nothing"]),
    ([GOOD, _pair("x", ([0.95] * 3, [0.99] * 3), by_construction=True)], nb08.FALSE, ["even the pair built"]),
    ([GOOD, _pair("w", ([0.1] * 3, [0.1] * 3), alone=(0.5, 0.6, 0.95))], nb08.UNSETTLED, ["already misses 0.90"]),
])
def test_verdict_claim3_every_value(pairs, value, words):
    v, sentence = nb08.verdict_claim3(pairs, T)
    assert v == value and all(w in sentence for w in words), sentence
    with pytest.raises(ValueError, match="pairs"):
        nb08.verdict_claim3([], T)


def test_pair_kept_counts_seeds_where_every_task_keeps():
    assert nb08.pair_kept(GOOD, 0.9) == (2, 3) and nb08.pair_kept(BAD, 0.9) == (0, 3)


def test_say_verdict_records_a_claim(capsys):
    text = nb08.say_verdict("k", "3", nb08.TRUE, "because")
    assert "Verdict 3: true — because." in text and "✅" in capsys.readouterr().out
    assert "⚠️" in nb08.say_verdict("k", "3", nb08.UNSETTLED, "no")


@pytest.mark.parametrize("args, value", [((0.99, 4, 4, 0.50, 1.00), nb08.TRUE), ((0.99, 4, 4, 0.99, 1.00),
                                          nb08.CONDITIONAL), ((0.30, 4, 4, 0.99, 1.00), nb08.FALSE),
                                         ((0.99, 12, 4, 0.50, 1.00), nb08.FALSE)])
def test_verdict_claim4_every_value(args, value):
    v, sentence = nb08.verdict_claim4(*args, T)
    assert v == value and f"{args[3]:.2f}" in sentence or v == nb08.FALSE and f"rank ≤ {args[1]}" in sentence


@pytest.mark.parametrize("args, value", [((1.0, 0.0, 1.0, True), nb08.CONDITIONAL), ((1.0, 0.4, 1.0, True),
                                          nb08.TRUE), ((1.0, 0.0, 0.0, True), nb08.FALSE),
                                         ((1.0, 0.0, 1.0, False), nb08.FALSE)])
def test_verdict_claim5a_every_value(args, value):
    v, sentence = nb08.verdict_claim5a(*args, T)
    assert v == value and f"{args[1]:.2f}" in sentence
    assert ("by construction" in sentence) == (value == nb08.CONDITIONAL)


@pytest.mark.parametrize("args, value, word", [((0.05, 0.08), nb08.TRUE, "both"),
                                               ((0.0, 0.08), nb08.CONDITIONAL, "same fix twice"),
                                               ((0.05, 0.0), nb08.CONDITIONAL, "complementary pair"),
                                               ((0.0, 0.01), nb08.FALSE, "neither")])
def test_verdict_claim5b_every_value(args, value, word):
    v, sentence = nb08.verdict_claim5b(*args, T)
    assert v == value and word in sentence and f"{args[1]:+.3f}" in sentence


def test_verdicts_need_their_thresholds():
    with pytest.raises(ValueError, match="constant_shift"):
        nb08.verdict_claim1(1e-6, 0.1, {"equal_rel": 1e-5})
    with pytest.raises(TypeError, match="thresholds"):
        nb08.verdict_claim5b(0.0, 0.0, None)


def test_summary_markdown():
    md = nb08.summary_markdown([{"claim": "a|b", "verdict": "true", "numbers": "x=1", "evidence": "§1"}])
    assert md.count("\n") == 2 and "a\\|b" in md
    with pytest.raises(ValueError):
        nb08.summary_markdown([])


def test_full_finetune_sweep_keeps_the_best(pretrained):
    model, acc, lr, accs = nb08.full_finetune_sweep(pretrained, "rot1", 3, lrs=(3e-3, 1e-4), n_examples=16)
    assert set(accs) == {1e-4, 3e-3} and acc == max(accs.values()) and accs[lr] == acc
    if accs[1e-4] == accs[3e-3]:
        assert lr == 1e-4  # a tie goes to the smallest learning rate
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="lrs"):
        nb08.full_finetune_sweep(pretrained, "rot1", 3, lrs=())


# ---- plots ------------------------------------------------------------------------------------
def test_plots_draw(pretrained, tokens, adapters):
    rows = [{"batch": 1, **{f"{k}_{s}": 1.0 for k in ("base", "merged", "unmerged") for s in ("ms", "p10_ms",
                                                                                                "p90_ms")}}]
    figs = [nb08.plot_merged_vs_unmerged(torch.randn(50), torch.randn(50), rows),
            nb08.plot_shift(torch.randn(30, 8)),
            nb08.plot_drift(common.switch_drift(pretrained, adapters, "float16", checkpoints=(1, 2))
                                   + common.switch_drift(pretrained, adapters, "float16", checkpoints=(1, 2),
                                                        strategy="unmerged")),
            nb08.plot_pairs([{**GOOD, "overlap": {"delta_overlap": [0.1] * 3, "input_cos": [0.9] * 3,
                                                   "cross_response": [1.0] * 3}}]),
            nb08.plot_spectra({"lora": nb08.delta_anatomy(torch.randn(8, 8), torch.randn(8, 8), 2)}, 2),
            nb08.plot_delta_images(torch.randn(8, 8), {"ΔW": torch.randn(8, 8)}),
            nb08.plot_bias([{"config": "a", "skew": 0.5, "quality": 0.9, "quality_other": float("nan")}])]
    for f in figs:
        assert f.axes


def test_apply_deltas_checks_everything_first(pretrained):
    w = state_of(pretrained)
    good = torch.ones(64, 64, dtype=torch.float64)
    with pytest.raises(ValueError, match="deltas"):
        nb08.apply_deltas(pretrained, {NAMES[0]: good, "blocks.0.attn.k_proj": torch.ones(3, 3)})
    with pytest.raises(ValueError, match="deltas"):
        nb08.apply_deltas(pretrained, {NAMES[0]: good, "nope": good})
    assert same_state(state_of(pretrained), w)  # the valid first entry was not applied either
    nb08.apply_deltas(pretrained, {NAMES[0]: good})
    nb08.apply_deltas(pretrained, {NAMES[0]: good}, sign=-1.0)
    torch.testing.assert_close(pretrained.get_submodule(NAMES[0]).weight, w[NAMES[0] + ".weight"], atol=1e-6,
                               rtol=0)


def test_bias_helpers_reject_bad_input(pretrained):
    w = state_of(pretrained)
    with pytest.raises(TypeError, match="configs"):
        nb08.bias_table(pretrained, [("a", [])])
    with pytest.raises(TypeError, match="configs"):
        nb08.bias_table(pretrained, {"a": ["not an adapter"]})
    with pytest.raises(ValueError, match="n_examples"):
        nb08.skew_report(pretrained, n_examples=0)
    with pytest.raises(ValueError, match="digits"):
        nb08.skew_report(pretrained, digits=(3, -1))
    assert same_state(state_of(pretrained), w)


def test_train_helpers_leave_base_untouched(pretrained):
    w = state_of(pretrained)
    adapter, acc = nb08.train_adapter(pretrained, "plus3", 3, n_examples=8)
    model, facc = nb08.full_finetune(pretrained, "plus3", 3, n_examples=8)
    assert same_state(state_of(pretrained), w)
    assert set(adapter.tensors) == set(NAMES) and 0 <= acc <= 1 and 0 <= facc <= 1
    assert not any(p.requires_grad for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), w.values()))
    with pytest.raises(ValueError, match="plain"):
        lora = copy.deepcopy(pretrained)
        le.add_lora(lora)
        nb08.train_adapter(lora, "plus3", 1)


def test_correction_sweep_endpoints(pretrained):
    biased = nb08.make_biased_model(pretrained, steps=40, lr=3e-3)
    fix, _ = nb08.train_adapter(biased, nb08.COPY, 40, n_examples=32)
    w = state_of(biased)
    rows = nb08.correction_sweep(biased, fix, weights=(0.0, 1.0), n_examples=64)
    assert same_state(state_of(biased), w)
    assert [r["weight"] for r in rows] == [0.0, 1.0]
    assert rows[0]["skew"] == nb08.skew_report(biased, n_examples=64)["skew"]  # w = 0 is the biased model
    assert rows[1]["skew"] < rows[0]["skew"]
    with pytest.raises(ValueError, match="weights"):
        nb08.correction_sweep(biased, fix, weights=[float("nan")])
    with pytest.raises(ValueError, match="weights"):
        nb08.correction_sweep(biased, fix, weights=[])
    assert nb08.plot_correction_sweep(rows).axes

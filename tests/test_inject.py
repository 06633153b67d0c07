"""Model-level LoRA on the toy transformer: add_lora, merge_lora/unmerge_lora, remove_lora, state dicts, counts."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lora_edu as le

from .conftest import logits_tol

QV = [f"blocks.{i}.attn.{p}" for i in range(3) for p in ("q_proj", "v_proj")]


def test_linear_names_of_the_toy_transformer(pretrained):
    names = le.linear_names(pretrained)
    expected = [f"blocks.{i}.{kind}" for i in range(3)
                for kind in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj",
                             "mlp.down_proj")] + ["lm_head"]
    assert names == expected
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=2)
    # plain Linears only: the wrapped ones (and their '.base') are LoRA layers now
    assert le.linear_names(pretrained) == [n for n in expected if n not in QV]
    assert list(le.lora_layers(pretrained)) == QV


def test_add_lora_on_q_v_changes_nothing_at_init(pretrained, tokens):
    before = pretrained(tokens)
    names = le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    assert names == QV
    assert all(isinstance(pretrained.get_submodule(n), le.LoRALinear) for n in QV)
    assert torch.equal(pretrained(tokens), before)


@pytest.mark.parametrize("r", [1, 4, 8])
def test_add_lora_trains_exactly_sum_r_in_plus_out(pretrained, r):
    shapes = {n: pretrained.get_submodule(n).weight.shape for n in QV}
    _, total_before = le.count_parameters(pretrained)
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=r)
    expected = sum(r * (d + k) for d, k in shapes.values())
    trainable, total = le.count_parameters(pretrained)
    assert trainable == expected == 2 * 3 * r * (64 + 64)  # |Θ| = 2·L·d_model·r in §4.2 counts A and B per matrix
    assert total == total_before + expected
    names = {n for n, p in pretrained.named_parameters() if p.requires_grad}
    assert names == {f"{n}.{m}" for n in QV for m in ("A", "B")}
    assert sum(le.lora_param_count(d, k, r) for d, k in shapes.values()) == expected


def test_add_lora_target_forms(pretrained):
    assert le.add_lora(pretrained, "blocks.1.attn.q_proj", r=2) == ["blocks.1.attn.q_proj"]
    assert le.add_lora(pretrained, ["mlp.up_proj", "lm_head"], r=2) == [
        "blocks.0.mlp.up_proj", "blocks.1.mlp.up_proj", "blocks.2.mlp.up_proj", "lm_head"]
    # a second call keeps the first call's adapters trainable
    trainable = {n.rsplit(".", 1)[0] for n, p in pretrained.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.1.attn.q_proj", "blocks.0.mlp.up_proj", "blocks.1.mlp.up_proj", "blocks.2.mlp.up_proj",
                         "lm_head"}


def test_add_lora_passes_layer_options(pretrained):
    le.add_lora(pretrained, ("k_proj",), r=4, alpha=16, rslora=True, init="kaiming", dropout=0.1)
    for m in le.lora_layers(pretrained).values():
        assert (m.r, m.alpha, m.rslora, m.init) == (4, 16.0, True, "kaiming")
        assert m.scaling == pytest.approx(8.0)
        assert isinstance(m.dropout, nn.Dropout) and m.dropout.p == 0.1


def test_merge_lora_matches_unmerged_and_unmerge_restores(pretrained, tokens, randomize):
    W0 = {n: pretrained.get_submodule(n).weight.detach().clone() for n in QV}
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4, alpha=8)
    randomize(pretrained, std=0.05)
    unmerged = pretrained(tokens)
    assert not torch.allclose(unmerged, pretrained.__class__(pretrained.cfg).to(tokens.device)(tokens))
    assert le.merge_lora(pretrained) == QV
    assert all(m.merged for m in le.lora_layers(pretrained).values())
    merged = pretrained(tokens)
    assert (merged - unmerged).abs().max().item() <= logits_tol(unmerged)
    assert le.unmerge_lora(pretrained) == QV
    for n in QV:
        assert (pretrained.get_submodule(n).weight - W0[n]).abs().max().item() <= 1e-6
    assert (pretrained(tokens) - unmerged).abs().max().item() <= logits_tol(unmerged)


def test_merge_lora_keep_original_is_exact(pretrained, randomize, snapshot):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    randomize(pretrained)
    snap = snapshot(pretrained)
    for _ in range(20):
        le.merge_lora(pretrained, keep_original=True)
        le.unmerge_lora(pretrained)
    snap.assert_unchanged(pretrained)


@pytest.mark.parametrize("premerge", [False, True])
def test_remove_lora_merged_gives_plain_linears_with_w0_plus_delta(pretrained, tokens, randomize, premerge):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4, alpha=8)
    randomize(pretrained, std=0.05)
    expected_w = {n: (m.weight + m.delta_weight()).detach().clone() for n, m in le.lora_layers(pretrained).items()}
    y = pretrained(tokens)
    if premerge:
        le.merge_lora(pretrained)
    assert le.remove_lora(pretrained, merge=True) == QV
    for n in QV:
        m = pretrained.get_submodule(n)
        assert type(m) is nn.Linear
        torch.testing.assert_close(m.weight, expected_w[n], rtol=1e-6, atol=1e-6)
    assert le.lora_layers(pretrained) == {}
    assert le.count_parameters(pretrained)[0] == 0  # still frozen
    assert set(pretrained.state_dict()) == set(le.ToyTransformer(pretrained.cfg).state_dict())
    assert (pretrained(tokens) - y).abs().max().item() <= logits_tol(y)


@pytest.mark.parametrize("premerge", [False, True])
def test_remove_lora_unmerged_gives_back_w0(pretrained, _pretrained_cpu, tokens, randomize, premerge):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    randomize(pretrained)
    if premerge:
        le.merge_lora(pretrained)
    le.remove_lora(pretrained, merge=False)
    original = _pretrained_cpu.state_dict()
    for k, v in pretrained.state_dict().items():
        if premerge:
            assert (v.cpu() - original[k]).abs().max().item() <= 1e-6
        else:
            assert torch.equal(v.cpu(), original[k])
    assert all(type(pretrained.get_submodule(n)) is nn.Linear for n in QV)
    with torch.no_grad():
        original_model = copy.deepcopy(_pretrained_cpu).to(tokens.device)
        y0 = original_model(tokens)
        torch.testing.assert_close(pretrained(tokens), y0, rtol=0, atol=logits_tol(y0))


def test_lora_state_dict(pretrained, randomize):
    assert le.lora_state_dict(pretrained) == {}
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=3)
    randomize(pretrained)
    sd = le.lora_state_dict(pretrained)
    assert list(sd) == [f"{n}.{m}" for n in QV for m in ("A", "B")]
    for n, m in le.lora_layers(pretrained).items():
        assert torch.equal(sd[f"{n}.A"], m.A) and sd[f"{n}.A"].shape == (3, 64)
        assert torch.equal(sd[f"{n}.B"], m.B) and sd[f"{n}.B"].shape == (64, 3)
        assert not sd[f"{n}.A"].requires_grad
    full = pretrained.state_dict()
    assert all(k in full for k in sd)


def test_count_parameters():
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2, bias=False))
    assert le.count_parameters(model) == (3 * 5 + 5 + 10, 3 * 5 + 5 + 10)
    model[0].bias.requires_grad_(False)
    assert le.count_parameters(model) == (25, 30)
    tied = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    tied[1].weight = tied[0].weight
    assert le.count_parameters(tied) == (16, 16)  # a shared tensor is counted once
    with pytest.raises(TypeError, match="model"):
        le.count_parameters("not a model")


def test_mark_only_lora_trainable(pretrained):
    le.add_lora(pretrained, "q_proj", r=2)
    for p in pretrained.parameters():
        p.requires_grad_(True)
    le.mark_only_lora_trainable(pretrained)
    assert le.count_parameters(pretrained)[0] == 2 * 3 * (64 + 64)


# ---- refusals ------------------------------------------------------------------------------------------

BAD = [
    (dict(r=0), ValueError, "r must"),
    (dict(r=-1), ValueError, "r must"),
    (dict(r=2.5), TypeError, "r must"),
    (dict(r="4"), TypeError, "r must"),
    (dict(r=True), TypeError, "r must"),
    (dict(r=65), ValueError, "r must"),
    (dict(r=21, targets=("lm_head",)), ValueError, "r must"),  # lm_head is 20×64
    (dict(alpha=0), ValueError, "alpha"),
    (dict(alpha=-4), ValueError, "alpha"),
    (dict(alpha=float("nan")), ValueError, "alpha"),
    (dict(dropout=-0.5), ValueError, "dropout"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(init="zeros"), ValueError, "init"),
    (dict(rslora="yes"), TypeError, "rslora"),
    (dict(bias=True), TypeError, "unexpected keyword"),
    (dict(targets=()), ValueError, "targets"),
    (dict(targets=("",)), ValueError, "targets"),
    (dict(targets=5), TypeError, "targets"),
    (dict(targets=("q_proj", 3)), ValueError, "targets"),
    (dict(targets=("wq",)), ValueError, "targets: 'wq' matches no nn.Linear"),
    (dict(targets=("proj",)), ValueError, "matches no nn.Linear"),  # suffix on a name part, not a substring
    (dict(targets=("q_proj", "ln1")), ValueError, "'ln1' matches no nn.Linear"),
    (dict(targets=("tok_emb",)), ValueError, "matches no nn.Linear"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD)
def test_add_lora_bad_arguments_leave_model_untouched(pretrained, snapshot, kwargs, exc, match):
    snap = snapshot(pretrained)
    with pytest.raises(exc, match=match):
        le.add_lora(pretrained, **{"targets": ("q_proj", "v_proj"), "r": 4, **kwargs})
    snap.assert_unchanged(pretrained)


def test_unknown_target_lists_existing_linear_names(pretrained):
    with pytest.raises(ValueError) as info:
        le.add_lora(pretrained, "query", r=2)
    msg = str(info.value)
    for n in le.linear_names(pretrained):
        assert n in msg


def test_add_lora_twice_on_same_layers_is_refused(pretrained, randomize, snapshot):
    le.add_lora(pretrained, "q_proj", r=2)
    randomize(pretrained)
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="already have LoRA"):
        le.add_lora(pretrained, "q_proj", r=2)
    snap.assert_unchanged(pretrained)


def test_add_lora_needs_a_module(snapshot):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        le.add_lora({"q_proj": nn.Linear(2, 2)}, "q_proj", r=1)


def test_merge_lora_twice_is_refused(pretrained, randomize, snapshot):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    randomize(pretrained)
    le.merge_lora(pretrained)
    snap = snapshot(pretrained)
    with pytest.raises(RuntimeError, match="already merged"):
        le.merge_lora(pretrained)
    snap.assert_unchanged(pretrained)


def test_unmerge_lora_when_not_merged_is_refused(pretrained, randomize, snapshot):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    randomize(pretrained)
    snap = snapshot(pretrained)
    with pytest.raises(RuntimeError, match="nothing to unmerge"):
        le.unmerge_lora(pretrained)
    snap.assert_unchanged(pretrained)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_merge_lora_with_non_finite_delta_leaves_every_layer_alone(pretrained, randomize, snapshot, bad):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    randomize(pretrained)
    with torch.no_grad():
        le.lora_layers(pretrained)["blocks.2.attn.v_proj"].A[0, 0] = bad  # the last layer: others come first
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="blocks.2.attn.v_proj"):
        le.merge_lora(pretrained)
    snap.assert_unchanged(pretrained)
    with pytest.raises(ValueError, match="NaN or inf"):
        le.remove_lora(pretrained, merge=True)
    snap.assert_unchanged(pretrained)


def test_remove_lora_merge_must_be_bool(pretrained, snapshot):
    le.add_lora(pretrained, "q_proj", r=2)
    snap = snapshot(pretrained)
    with pytest.raises(TypeError, match="merge must be a bool"):
        le.remove_lora(pretrained, merge="yes")
    snap.assert_unchanged(pretrained)


@pytest.mark.parametrize("edit", [lambda m: m.B.mul_(2.0), lambda m: m.B.data.mul_(2.0),
                                  lambda m: setattr(m, "scaling", 3.0)])
@pytest.mark.parametrize("call", [le.unmerge_lora, lambda m: le.remove_lora(m, merge=False)])
def test_unmerge_refused_before_any_layer_changes_when_one_cannot_restore(pretrained, randomize, snapshot, call,
                                                                          edit):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    randomize(pretrained)
    le.merge_lora(pretrained)
    with torch.no_grad():
        edit(le.lora_layers(pretrained)["blocks.2.attn.v_proj"])  # edited while merged: ΔW no longer matches
    snap = snapshot(pretrained)
    with pytest.raises(RuntimeError, match="blocks.2.attn.v_proj"):
        call(pretrained)
    snap.assert_unchanged(pretrained)


@pytest.mark.parametrize("remove", [False, True])
def test_merge_is_all_or_nothing_when_a_later_layer_would_overflow(remove):
    """merge_lora / remove_lora(merge=True) check every layer first: an overflow in the last leaves all untouched."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)).half()
    le.add_lora(model, targets=("0", "1"), r=2)
    with torch.no_grad():
        for m in le.lora_layers(model).values():
            m.A.fill_(10.0)
            m.B.fill_(10.0)
        model[1].base.weight.fill_(65500.0)  # + ΔW overflows float16 in the second layer only
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="'1'.*overflows"):
        le.remove_lora(model, merge=True) if remove else le.merge_lora(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m.merged for m in le.lora_layers(model).values())
    assert isinstance(model[0], le.LoRALinear)

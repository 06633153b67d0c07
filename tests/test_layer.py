"""LoRALinear: the paper's §4.1 update h = W0·x + (α/r)·B·A·x, its merge/unmerge, and its refusals."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lora_edu as le


def x_for(layer, *lead, seed=1):
    g = torch.Generator().manual_seed(seed)
    w = layer.weight
    return torch.randn(*lead, layer.in_features, generator=g).to(device=w.device, dtype=w.dtype)


# ---- construction and initialisation -------------------------------------------------------------------

@pytest.mark.parametrize("init", ["gaussian", "kaiming"])
@pytest.mark.parametrize("lead", [(5,), (3, 7), (2, 3, 4)])
def test_b_zero_at_init_leaves_output_unchanged(linear, init, lead):
    x = x_for(linear, *lead)
    before = linear(x)
    layer = le.LoRALinear(linear, r=4, alpha=8, init=init)
    assert torch.count_nonzero(layer.B) == 0
    assert torch.count_nonzero(layer.A) > 0
    assert torch.equal(layer(x), before)


def test_parameters_are_named_a_and_b_with_paper_shapes(linear, device):
    layer = le.LoRALinear(linear, r=3)
    d, k = linear.weight.shape
    params = dict(layer.named_parameters())
    assert set(params) == {"A", "B", "base.weight", "base.bias"}
    assert layer.A.shape == (3, k) and layer.B.shape == (d, 3)
    assert layer.A.requires_grad and layer.B.requires_grad
    assert not linear.weight.requires_grad and not linear.bias.requires_grad
    assert layer.A.device.type == device.type and layer.A.dtype == linear.weight.dtype
    assert layer.in_features == k and layer.out_features == d
    assert layer.weight is linear.weight and layer.bias is linear.bias
    assert "r=3" in repr(layer)


def test_gaussian_init_is_n0_1_over_k():
    torch.manual_seed(0)
    layer = le.LoRALinear(nn.Linear(1024, 64), r=16, init="gaussian")
    std = layer.A.detach().double().std().item()
    assert abs(std - 1 / math.sqrt(1024)) < 0.05 / math.sqrt(1024)
    assert abs(layer.A.detach().double().mean().item()) < 3 / math.sqrt(1024 * 16 * 1024)


def test_kaiming_init_is_uniform_within_1_over_sqrt_k():
    torch.manual_seed(0)
    k = 1024
    layer = le.LoRALinear(nn.Linear(k, 64), r=16, init="kaiming")
    A = layer.A.detach()
    bound = 1 / math.sqrt(k)  # kaiming_uniform with a=√5: sqrt(6 / (6k))
    assert A.abs().max().item() <= bound
    assert A.abs().max().item() > 0.95 * bound
    assert abs(A.double().std().item() - bound / math.sqrt(3)) < 0.05 * bound


def test_gradients_reach_only_a_and_b(linear):
    layer = le.LoRALinear(linear, r=4)
    layer(x_for(linear, 6)).pow(2).sum().backward()
    assert linear.weight.grad is None and linear.bias.grad is None
    assert layer.B.grad is not None and layer.B.grad.abs().sum() > 0
    # B = 0 at init, so A gets exactly zero gradient on the first step (§4.1: ΔW = 0 when training starts)
    assert layer.A.grad is not None and torch.count_nonzero(layer.A.grad) == 0


# ---- the formula ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("r", "alpha", "rslora", "expected"), [
    (4, None, False, 1.0),
    (4, 8, False, 2.0),
    (8, 2, False, 0.25),
    (1, 3.5, False, 3.5),
    (4, 8, True, 4.0),
    (16, 16, True, 4.0),
    (9, None, True, 3.0),
])
def test_scaling(linear, r, alpha, rslora, expected):
    layer = le.LoRALinear(linear, r=r, alpha=alpha, rslora=rslora)
    assert layer.scaling == pytest.approx(expected, rel=1e-12)
    assert layer.alpha == float(r if alpha is None else alpha)
    assert layer.scaling == pytest.approx(layer.alpha / (math.sqrt(r) if rslora else r))


def test_delta_weight_is_scaling_b_a(linear, randomize):
    layer = le.LoRALinear(linear, r=5, alpha=3)
    randomize(layer)
    expected = (layer.B.detach().double() @ layer.A.detach().double()) * (3 / 5)
    dw = layer.delta_weight()
    assert dw.shape == linear.weight.shape and dw.dtype == linear.weight.dtype
    torch.testing.assert_close(dw.double(), expected, rtol=1e-6, atol=1e-7)
    assert le.numerical_rank(dw.detach()) == 5  # fp32 tolerance: rank r, not min(d, k)


def test_forward_matches_the_formula(linear, randomize):
    layer = le.LoRALinear(linear, r=4, alpha=6)
    randomize(layer)
    x = x_for(linear, 3, 5)
    W0, b, A, B = (t.detach().double() for t in (linear.weight, linear.bias, layer.A, layer.B))
    expected = x.double() @ W0.T + b + (6 / 4) * (x.double() @ A.T @ B.T)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_dropout_is_only_on_the_lora_path(linear, randomize):
    layer = le.LoRALinear(linear, r=4, dropout=0.5).train()
    x = x_for(linear, 64)
    assert torch.equal(layer(x), linear(x))  # B = 0: dropout must not touch W0·x
    randomize(layer)
    torch.manual_seed(0)
    y1 = layer(x)
    torch.manual_seed(1)
    y2 = layer(x)
    assert not torch.allclose(y1, y2)  # the LoRA path is dropped at random in training
    layer.eval()
    torch.testing.assert_close(layer(x), linear(x) + F.linear(x, layer.delta_weight()), rtol=1e-5, atol=1e-5)


# ---- merge / unmerge -----------------------------------------------------------------------------------

def test_merged_forward_equals_unmerged(linear, randomize):
    layer = le.LoRALinear(linear, r=4, alpha=8).eval()
    randomize(layer)
    x = x_for(linear, 16)
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    merged = layer(x)
    assert (merged - unmerged).abs().max().item() <= 1e-5
    # merged inference costs exactly one plain linear layer with W0 + ΔW
    assert torch.equal(merged, F.linear(x, linear.weight, linear.bias))


def rounding_bound(layer, W0) -> torch.Tensor:
    """LoRALinear.unmerge's documented bound for one way (merge or unmerge): (r + 1)·eps·(|W0| + s·|B|·|A|)."""
    B, A = layer.B.detach().double(), layer.A.detach().double()
    return (layer.r + 1) * torch.finfo(W0.dtype).eps * (W0.double().abs() + (B.abs() @ A.abs()) * layer.scaling)


@pytest.mark.parametrize("std", [0.5, 300.0])  # |ΔW| ≈ |W0|, and |ΔW| ≫ |W0| where "1e-6 relative" is out of reach
def test_unmerge_restores_w0_within_the_documented_bound(linear, randomize, std):
    W0 = linear.weight.detach().clone()
    layer = le.LoRALinear(linear, r=4, alpha=8)
    randomize(layer, std=std)
    bound = rounding_bound(layer, W0)
    exact = W0.double() + (layer.B.double() @ layer.A.double()) * layer.scaling
    layer.merge()
    assert (linear.weight - W0).abs().max().item() > 1e-3  # the merge did change W
    assert ((linear.weight.double() - exact).abs() <= bound).all()
    layer.unmerge()
    assert not layer.merged
    drift = (linear.weight.double() - W0.double()).abs()
    assert (drift <= 2 * bound).all()
    if std > 1:  # the bound is what holds, not a relative error in W0
        assert (drift / W0.double().abs()).max() > 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_exact_restore_after_1000_cycles(make_linear, randomize, device, dtype):
    lin = make_linear(dtype=dtype, device=device)
    W0 = lin.weight.detach().clone()
    layer = le.LoRALinear(lin, r=4, alpha=8)
    randomize(layer, std=0.3)
    for _ in range(1000):
        layer.merge(keep_original=True)
        layer.unmerge()
    assert torch.equal(lin.weight, W0)
    assert layer._W0 is None  # the extra copy is released on unmerge


def test_bf16_round_trip_drift_is_bounded_and_beats_bf16_arithmetic(make_linear, randomize, device):
    """merge/unmerge do their arithmetic in float32; a naive loop W + BA − BA in bfloat16 loses more."""
    lin = make_linear(k=128, d=128, dtype=torch.bfloat16, device=device)
    W0 = lin.weight.detach().clone()
    layer = le.LoRALinear(lin, r=8, alpha=16)
    randomize(layer, std=0.02)
    dW = layer.delta_weight().detach()  # the ΔW a bfloat16 user would compute: B@A in bf16
    exact = W0.double() + layer._delta_fp32().double()

    layer.merge()
    ours_merged_err = (lin.weight.double() - exact).norm().item()
    naive_merged_err = ((W0 + dW).double() - exact).norm().item()
    assert ours_merged_err < naive_merged_err

    layer.unmerge()
    bound = 2.0**-7 * (W0.double().abs() + dW.double().abs()) + 1e-30  # one bf16 ulp of the merged value
    drift1 = (lin.weight.double() - W0.double()).abs()
    assert (drift1 <= bound).all()

    naive = W0.clone()
    for _ in range(50):
        naive = (naive + dW) - dW
    for _ in range(49):
        layer.merge()
        layer.unmerge()
    drift50 = (lin.weight.double() - W0.double()).abs()
    naive50 = (naive.double() - W0.double()).abs()
    assert (drift50 <= bound).all()  # no accumulation over cycles
    assert drift50.norm() < naive50.norm()
    assert torch.count_nonzero(drift50) < torch.count_nonzero(naive50)


def test_float64_merge_keeps_float64_precision(make_linear, randomize):
    lin = make_linear(dtype=torch.float64)
    W0 = lin.weight.detach().clone()
    layer = le.LoRALinear(lin, r=4)
    randomize(layer, std=1.0)
    layer.merge()
    torch.testing.assert_close(lin.weight, W0 + layer.delta_weight(), rtol=1e-14, atol=1e-14)
    layer.unmerge()
    assert (lin.weight - W0).abs().max().item() <= 1e-13


# ---- refusals: merge state ------------------------------------------------------------------------------

def test_merge_twice_is_refused(linear, randomize, snapshot):
    layer = le.LoRALinear(linear, r=4)
    randomize(layer)
    layer.merge()
    snap = snapshot(layer)
    with pytest.raises(RuntimeError, match="already merged"):
        layer.merge()
    snap.assert_unchanged(layer)


def test_unmerge_when_not_merged_is_refused(linear, randomize, snapshot):
    layer = le.LoRALinear(linear, r=4)
    randomize(layer)
    snap = snapshot(layer)
    with pytest.raises(RuntimeError, match="not merged"):
        layer.unmerge()
    snap.assert_unchanged(layer)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_merge_with_non_finite_delta_is_refused(linear, snapshot, bad):
    layer = le.LoRALinear(linear, r=4)
    with torch.no_grad():
        layer.B[3, 1] = bad
    snap = snapshot(layer)
    with pytest.raises(ValueError, match="NaN or inf"):
        layer.merge()
    snap.assert_unchanged(layer)
    assert torch.isfinite(linear.weight).all()


def test_merge_keep_original_must_be_bool(linear, snapshot):
    layer = le.LoRALinear(linear, r=4)
    snap = snapshot(layer)
    with pytest.raises(TypeError, match="keep_original"):
        layer.merge(keep_original="yes")
    snap.assert_unchanged(layer)


def test_unmerge_after_training_while_merged_is_refused(linear, randomize, snapshot):
    layer = le.LoRALinear(linear, r=4)
    randomize(layer)
    layer.merge()
    with torch.no_grad():
        layer.B.add_(1.0)  # ΔW changed after the merge: subtracting it would not give W0 back
    snap = snapshot(layer)
    with pytest.raises(RuntimeError, match="changed while the layer was merged"):
        layer.unmerge()
    snap.assert_unchanged(layer)


def _swap_two_b_entries(layer):  # keeps every sum and norm of B: a checksum of sums would miss it
    with torch.no_grad():
        a, b = layer.B[0, 0].item(), layer.B[1, 0].item()
        layer.B[0, 0], layer.B[1, 0] = b, a
    layer.B._version  # noqa: B018  (in-place writes above bump the version; the .data cases below do not)


CHANGES = {
    "in place": lambda m: m.B.data.add_(1.0),
    "through .data, no version bump": lambda m: m.B.data.mul_(2.0),
    "A.data reassigned": lambda m: setattr(m.A, "data", m.A.data * 1.5),
    "layer.A reassigned": lambda m: setattr(m, "A", nn.Parameter(m.A.detach() * -1.0)),
    "scaling changed": lambda m: setattr(m, "scaling", m.scaling * 2),
    "two entries swapped": _swap_two_b_entries,
    "one bit flipped": lambda m: m.A.data.view(torch.int32)[0, 0].bitwise_xor_(1),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_change_while_merged_is_detected(linear, randomize, snapshot, change):
    layer = le.LoRALinear(linear, r=4)
    randomize(layer)
    layer.merge()
    CHANGES[change](layer)
    snap = snapshot(layer)
    with pytest.raises(RuntimeError, match="changed while the layer was merged"):
        layer.unmerge()
    snap.assert_unchanged(layer)
    assert layer.merged


def test_rewriting_the_same_values_while_merged_is_no_change(linear, randomize):
    W0 = linear.weight.detach().clone()
    layer = le.LoRALinear(linear, r=4)
    randomize(layer)
    layer.merge()
    with torch.no_grad():
        layer.B.copy_(layer.B.clone())  # bumps the version counter, but ΔW is what it was
    layer.A = nn.Parameter(layer.A.detach().clone())
    layer.unmerge()
    assert ((linear.weight.double() - W0.double()).abs() <= 2 * rounding_bound(layer, W0)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_merge_refuses_an_overflow_in_float32_and_float64(make_linear, snapshot, dtype):
    """W0 and ΔW each finite, W0 + ΔW beyond the dtype's largest number: refused, as in float16."""
    big = torch.finfo(dtype).max
    lin = make_linear(dtype=dtype)
    layer = le.LoRALinear(lin, r=2)
    with torch.no_grad():
        lin.weight.fill_(0.75 * big)
        layer.A.fill_(1.0)
        layer.B.fill_(0.25 * big)  # ΔW = 2·(α/r)·0.25·max = 0.5·max
    snap = snapshot(layer)
    for keep in (False, True):
        with pytest.raises(ValueError, match="overflows"):
            layer.merge(keep_original=keep)
        snap.assert_unchanged(layer)
    assert torch.isfinite(layer.delta_weight()).all()


def test_reset_parameters_while_merged_is_refused(linear, randomize, snapshot):
    layer = le.LoRALinear(linear, r=4)
    randomize(layer)
    layer.merge()
    snap = snapshot(layer)
    with pytest.raises(RuntimeError, match="unmerge"):
        layer.reset_parameters()
    snap.assert_unchanged(layer)


# ---- refusals: bad arguments ----------------------------------------------------------------------------

BAD_ARGS = [
    (dict(r=0), ValueError, "r must"),
    (dict(r=-2), ValueError, "r must"),
    (dict(r=2.5), TypeError, "r must"),
    (dict(r="4"), TypeError, "r must"),
    (dict(r=True), TypeError, "r must"),
    (dict(r=None), TypeError, "r must"),
    (dict(r=25), ValueError, "r must"),  # min(d, k) = 24
    (dict(r=4, alpha=0), ValueError, "alpha"),
    (dict(r=4, alpha=-1.0), ValueError, "alpha"),
    (dict(r=4, alpha=float("nan")), ValueError, "alpha"),
    (dict(r=4, alpha=float("inf")), ValueError, "alpha"),
    (dict(r=4, alpha="8"), TypeError, "alpha"),
    (dict(r=4, alpha=True), TypeError, "alpha"),
    (dict(r=4, alpha=10**400), ValueError, "alpha"),
    (dict(r=4, alpha=1e7), ValueError, "alpha"),
    (dict(r=10**400), ValueError, "r must"),
    (dict(r=4, dropout=10**400), ValueError, "dropout"),
    (dict(r=4, init=["gaussian"]), ValueError, "init"),
    (dict(r=4, dropout=-0.1), ValueError, "dropout"),
    (dict(r=4, dropout=1.0), ValueError, "dropout"),
    (dict(r=4, dropout=1.5), ValueError, "dropout"),
    (dict(r=4, dropout="0.1"), TypeError, "dropout"),
    (dict(r=4, init="xavier"), ValueError, "init"),
    (dict(r=4, rslora=1), TypeError, "rslora"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), BAD_ARGS)
def test_bad_arguments_raise_and_leave_base_untouched(linear, snapshot, kwargs, exc, match):
    snap = snapshot(linear)
    with pytest.raises(exc, match=match):
        le.LoRALinear(linear, **kwargs)
    snap.assert_unchanged(linear)
    assert linear.weight.requires_grad


@pytest.mark.parametrize("base", [nn.Conv1d(4, 4, 1), nn.Embedding(10, 4), nn.Bilinear(4, 4, 4), "linear",
                                  torch.zeros(4, 4)])
def test_wrapping_a_non_linear_is_refused(base):
    with pytest.raises(TypeError, match="base must be a torch.nn.Linear"):
        le.LoRALinear(base, r=1)


def test_wrapping_a_lora_layer_is_refused(linear, snapshot):
    layer = le.LoRALinear(linear, r=2)
    snap = snapshot(layer)
    with pytest.raises(TypeError, match="base must be a torch.nn.Linear"):
        le.LoRALinear(layer, r=2)
    snap.assert_unchanged(layer)


def test_merge_refuses_float16_overflow_and_leaves_weights_untouched():
    """ΔW is finite, but W0 + ΔW overflows float16 (max 65504): refused, weights and state untouched."""
    lin = nn.Linear(8, 8).half()
    with torch.no_grad():
        lin.weight.fill_(60000.0)
    layer = le.LoRALinear(lin, 2)
    with torch.no_grad():
        layer.A.fill_(100.0)
        layer.B.fill_(100.0)
    before = lin.weight.clone()
    for keep in (False, True):
        with pytest.raises(ValueError, match="overflows"):
            layer.merge(keep_original=keep)
        assert torch.equal(lin.weight, before)
        assert not layer.merged and layer._W0 is None

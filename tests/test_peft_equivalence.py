"""lora_edu computes what PEFT computes (same W0, A, B → same merged weights, same outputs, same gradients),
and the fast paths of LoRALinear (fused addmm forward, fused merge, cheap finiteness check) keep the
semantics of the plain formulas h = W0·x + b + (α/r)·B·A·x and W = W0 ± (α/r)·B·A.

Where equality is the point the models run in float64 and tolerances are 1e-9 of the magnitudes compared: far
above any CPU's or BLAS kernel's rounding (~1e-16), far below what a wrong formula changes (O(1))."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lora_edu as le

from .conftest import load_tool

bench = load_tool("benchmarks/peft_bench.py")



def close(actual, expected, rel=1e-9):
    """Equal up to rounding, scaled to the largest magnitude compared (float64 here: rel ≫ 1e-16)."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=rel * max(1.0, expected.abs().max().item()))


def _peft():
    return pytest.importorskip("peft")


def _pair(model: nn.Module, targets=("q_proj", "v_proj"), r=8, alpha=16, rslora=False, seed=1):
    """(ours, peft_model) built from copies of `model` with the same A, B (B ~ N(0, 0.02) so ΔW ≠ 0)."""
    peft = _peft()
    ours = copy.deepcopy(model)
    le.add_lora(ours, targets, r=r, alpha=alpha, rslora=rslora)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in le.lora_layers(ours).values():
            m.A.copy_(torch.randn(m.A.shape, generator=g) / math.sqrt(m.A.shape[1]))
            m.B.copy_(torch.randn(m.B.shape, generator=g) * 0.02)
    cfg = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                          use_rslora=rslora)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(copy.deepcopy(model), cfg)
    if next(model.parameters()).dtype == torch.float64:
        pm.double()  # PEFT's adapters too: the equality tests run wholly in float64
    peft_layers = {n: m for n, m in pm.base_model.model.named_modules() if hasattr(m, "lora_A")}
    assert set(peft_layers) == set(le.lora_layers(ours))
    with torch.no_grad():
        for n, m in le.lora_layers(ours).items():
            peft_layers[n].lora_A["default"].weight.copy_(m.A)
            peft_layers[n].lora_B["default"].weight.copy_(m.B)
    return ours, pm, peft_layers


def _models():
    torch.manual_seed(0)
    stack = bench.BenchStack(64, 2).double()
    toy = le.load_pretrained(device="cpu").double()
    return {"stack": (stack, torch.randn(2, 5, 64, dtype=torch.float64)),
            "toy": (toy, le.get_task("plus3").batch(4)[0])}


@pytest.fixture(scope="module")
def models():
    return _models()


@pytest.mark.parametrize("name", ["stack", "toy"])
@pytest.mark.parametrize("rslora", [False, True])
def test_unmerged_outputs_equal_peft(models, name, rslora):
    model, x = models[name]
    ours, pm, _ = _pair(model, rslora=rslora)
    with torch.no_grad():
        y_ours, y_peft = ours(x), pm(x)
        y_base = model(x)
    assert (y_ours - y_base).abs().max() > 1e-4  # the adapter really changes the output
    close(y_ours, y_peft)


@pytest.mark.parametrize("name", ["stack", "toy"])
def test_merged_weights_and_outputs_equal_peft(models, name):
    model, x = models[name]
    ours, pm, peft_layers = _pair(model)
    le.merge_lora(ours)
    pm.merge_adapter()
    assert pm.base_model.model.get_submodule(next(iter(peft_layers))).merged
    for n, m in le.lora_layers(ours).items():
        W_peft = peft_layers[n].base_layer.weight
        close(m.weight, W_peft)
        assert (m.weight - model.get_submodule(n).weight).abs().max() > 1e-5  # merge did real work
    with torch.no_grad():
        close(ours(x), pm(x))
    # merge_and_unload / remove_lora hand back plain nn.Linear models with the same weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "All adapters are already merged"
        plain_peft = pm.merge_and_unload()
    le.remove_lora(ours, merge=True)
    assert not le.lora_layers(ours)
    for n in le.linear_names(ours):
        close(ours.get_submodule(n).weight, plain_peft.get_submodule(n).weight)


def test_unmerge_restores_w0_like_peft(models):
    model, _ = models["stack"]
    ours, pm, peft_layers = _pair(model)
    le.merge_lora(ours)
    pm.merge_adapter()
    le.unmerge_lora(ours)
    pm.unmerge_adapter()
    for n, m in le.lora_layers(ours).items():
        W0 = model.get_submodule(n).weight
        close(m.weight, W0)
        close(peft_layers[n].base_layer.weight, W0)


def test_gradients_equal_peft(models):
    model, x = models["stack"]
    ours, pm, peft_layers = _pair(model)
    ours.train()
    pm.train()
    ours(x).square().mean().backward()
    pm(x).square().mean().backward()
    for n, m in le.lora_layers(ours).items():
        assert m.B.grad.abs().max() > 0
        close(m.A.grad, peft_layers[n].lora_A["default"].weight.grad)
        close(m.B.grad, peft_layers[n].lora_B["default"].weight.grad)


def test_bf16_merge_matches_peft_default_and_drifts_less():
    """PEFT (default float32 adapters) and lora_edu merge to the same bf16 weights; over 20 cycles
    PEFT's unmerge (subtracting a bf16-rounded ΔW) drifts, lora_edu's does not grow."""
    torch.manual_seed(0)
    model = bench.BenchStack(128, 1, dtype=torch.bfloat16)
    ours, pm, peft_layers = _pair(model)
    le.merge_lora(ours)
    pm.merge_adapter()
    for n, m in le.lora_layers(ours).items():  # both round W0 + ΔW (float32) to bfloat16: one ulp apart at most
        torch.testing.assert_close(m.weight, peft_layers[n].base_layer.weight, atol=0, rtol=2**-7)
    le.unmerge_lora(ours)
    pm.unmerge_adapter()

    def drift(ws, ws0):
        return max((w.float() - w0.float()).abs().max().item() for w, w0 in zip(ws, ws0))

    ours_w = [m.weight for m in le.lora_layers(ours).values()]
    peft_w = [peft_layers[n].base_layer.weight for n in le.lora_layers(ours)]
    w0 = [model.get_submodule(n).weight for n in le.lora_layers(ours)]
    d1 = drift(ours_w, w0)
    for _ in range(19):
        le.merge_lora(ours)
        le.unmerge_lora(ours)
        pm.merge_adapter()
        pm.unmerge_adapter()
    assert drift(ours_w, w0) <= d1 + 1e-12
    assert drift(ours_w, w0) < drift(peft_w, w0)


# ---- the fast paths against the plain formulas ---------------------------------------------------------------
def _layer(d=12, k=16, r=4, alpha=8.0, dtype=torch.float64, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    L = le.LoRALinear(nn.Linear(k, d).to(dtype), r=r, alpha=alpha, dropout=dropout)
    with torch.no_grad():
        L.B.normal_(std=0.5)
    return L


def _reference(L, x, xd=None):
    xd = x if xd is None else xd
    return F.linear(x, L.base.weight, L.base.bias) + (xd @ L.A.t() @ L.B.t()) * L.scaling


@pytest.mark.parametrize("shape", [(5, 16), (16,), (2, 3, 16), (2, 3, 4, 16), (0, 16), (2, 0, 16)])
def test_forward_and_gradients_match_reference(shape):
    L = _layer()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    y, ref = L(x), _reference(L, x)
    assert y.shape == ref.shape == (*shape[:-1], 12)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, L.A, L.B), g)
    want = torch.autograd.grad(ref, (x, L.A, L.B), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_gradcheck_unmerged_forward():
    L = _layer(d=5, k=6, r=2)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    # finite differences against autograd, for x and (through functional_call) for A and B
    assert torch.autograd.gradcheck(lambda x: L(x), (x,))
    params = {"A": L.A.detach().clone().requires_grad_(), "B": L.B.detach().clone().requires_grad_()}
    assert torch.autograd.gradcheck(
        lambda A, B: torch.func.functional_call(L, {"A": A, "B": B}, (x.detach(),)), (params["A"], params["B"]))


def test_dropout_only_on_lora_path():
    L = _layer(dropout=0.5)
    L.train()
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    torch.manual_seed(7)
    y = L(x)
    torch.manual_seed(7)
    xd = L.dropout(x.reshape(-1, 16)).reshape(2, 3, 16)
    close(y, _reference(L, x, xd))
    assert not torch.allclose(y, _reference(L, x), atol=1e-3)  # dropout did act on the LoRA path
    L.eval()
    close(L(x), _reference(L, x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_merge_matches_formula_and_merged_forward_is_plain_linear(dtype):
    L = _layer(dtype=dtype)
    W0 = L.weight.detach().clone()
    work = torch.promote_types(dtype, torch.float32)
    want = (W0.to(work) + (L.B.detach().to(work) @ L.A.detach().to(work)) * L.scaling).to(dtype)
    # LoRALinear.unmerge's documented bound, entry by entry: (r + 1)·eps·(|W0| + s·|B|·|A|) each way
    mag = W0.double().abs() + (L.B.detach().double().abs() @ L.A.detach().double().abs()) * L.scaling
    bound = (L.r + 1) * torch.finfo(dtype).eps * mag
    L.merge()
    assert ((L.weight.double() - want.double()).abs() <= bound).all()
    x = torch.randn(3, 16, dtype=dtype)
    assert torch.equal(L(x), F.linear(x, L.base.weight, L.base.bias))
    L.unmerge()
    assert ((L.weight.double() - W0.double()).abs() <= 2 * bound).all()


def test_merge_refuses_overflowing_delta_from_finite_factors():
    """A and B finite, but ΔW = s·B@A overflows float32: the cheap bound falls back to the exact check."""
    L = _layer(dtype=torch.float32)
    with torch.no_grad():
        L.A.fill_(1e20)
        L.B.fill_(1e20)
    assert torch.isfinite(L.A).all() and torch.isfinite(L.B).all()
    W0 = L.weight.detach().clone()
    with pytest.raises(ValueError, match="NaN or inf"):
        L.merge()
    assert torch.equal(L.weight, W0) and not L.merged
    model = nn.Sequential(nn.Linear(16, 12))
    le.add_lora(model, "0", r=4)
    with torch.no_grad():
        model[0].A.fill_(1e20)
        model[0].B.fill_(1e20)
    with pytest.raises(ValueError, match="NaN or inf"):
        le.merge_lora(model)
    with pytest.raises(ValueError, match="NaN or inf"):
        le.remove_lora(model, merge=True)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_merge_refuses_nonfinite_factors(bad):
    L = _layer(dtype=torch.float32)
    with torch.no_grad():
        L.B[0, 0] = bad
    W0 = L.weight.detach().clone()
    with pytest.raises(ValueError, match="NaN or inf"):
        L.merge()
    assert torch.equal(L.weight, W0)


def test_large_but_finite_float64_delta_still_merges():
    """Beyond the float32 bound but finite in float64: the fallback computes ΔW and allows the merge."""
    L = _layer(dtype=torch.float64)
    with torch.no_grad():
        L.A.fill_(1e30)
        L.B.fill_(1e-10)
    L.merge()
    assert L.merged and torch.isfinite(L.weight).all()
    assert L.weight.abs().max() > 1e19


def test_autocast_forward_and_gradients():
    """Under autocast (float32 weights, bf16 compute) the forward still works and matches the formula."""
    L = _layer(dtype=torch.float32)
    x = torch.randn(2, 3, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = L(x)
    assert y.dtype == torch.bfloat16
    ref = _reference(L, x)
    torch.testing.assert_close(y.float(), ref, atol=0.05 * ref.abs().max().item(), rtol=0)
    y.float().square().sum().backward()
    assert L.A.grad is not None and L.B.grad is not None and x.grad is not None
    assert L.A.grad.dtype == L.B.grad.dtype == torch.float32


def test_layer_used_twice_and_input_reused():
    """The in-place fused add only touches the layer's own output: x survives, shared use accumulates grads."""
    L = _layer()
    x = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    x_before = x.detach().clone()
    y = L(x) + L(2 * x)
    assert torch.equal(x.detach(), x_before)
    ref = _reference(L, x) + _reference(L, 2 * x)
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)
    got = torch.autograd.grad(y.sum(), (x, L.A, L.B))
    want = torch.autograd.grad(ref.sum(), (x, L.A, L.B))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


# ---- kernel counts (structure, not timing): what makes the fast paths fast ----------------------------------
_SHAPE_OPS = {"view", "t", "transpose", "_unsafe_view", "reshape", "expand", "detach", "alias", "unsqueeze",
              "squeeze", "promote_types", "lift_fresh"}


def _aten_ops(fn) -> list[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), Record() as rec:
        fn()
    return rec.ops


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16)])
def test_merged_forward_dispatches_exactly_what_nn_linear_does(shape):
    L = _layer(dtype=torch.float32)
    plain = nn.Linear(16, 12)
    x = torch.randn(*shape)
    L.merge()
    assert _aten_ops(lambda: L(x)) == _aten_ops(lambda: plain(x))


@pytest.mark.parametrize("shape", [(5, 16), (2, 3, 16)])
def test_unmerged_forward_is_three_matmuls_and_nothing_else(shape):
    L = _layer(dtype=torch.float32)
    x = torch.randn(*shape)
    compute = [op for op in _aten_ops(lambda: L(x)) if op not in _SHAPE_OPS]
    assert compute == ["addmm", "mm", "addmm_"]  # x·W0ᵀ + b, x·Aᵀ, then h += s·z·Bᵀ in place: no mul, no add


def test_float32_unmerge_is_one_fused_addmm():
    L = _layer(dtype=torch.float32)
    L.merge()
    compute = [op for op in _aten_ops(L.unmerge) if op not in _SHAPE_OPS]
    assert compute == ["addmm_"]

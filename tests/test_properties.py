"""Property tests (hypothesis) over shapes, ranks, dtypes, alphas: the LoRA identities hold everywhere."""

from __future__ import annotations

import tempfile

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lora_edu as le

try:  # tests/ is a package (tests/__init__.py); without it pytest puts tests/ itself on sys.path
    from .conftest import randomize_lora, seeded_linear
except ImportError:
    from conftest import randomize_lora, seeded_linear

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
SETTINGS = settings(max_examples=25, deadline=None, database=None)


def eps(dtype):
    return torch.finfo(dtype).eps


@st.composite
def layers(draw, dtypes=DTYPES):
    d = draw(st.integers(1, 24))
    k = draw(st.integers(1, 24))
    r = draw(st.integers(1, min(d, k)))
    dtype = draw(st.sampled_from(dtypes))
    alpha = draw(st.one_of(st.none(), st.floats(0.125, 64.0)))
    rslora = draw(st.booleans())
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    std = draw(st.sampled_from([0.01, 0.3, 3.0]))
    device = le.get_device()
    if device.type == "mps" and dtype == torch.float64:
        dtype = torch.float32
    lin = seeded_linear(k, d, bias=bias, seed=seed, dtype=dtype, device=device)
    layer = le.LoRALinear(lin, r=r, alpha=alpha, rslora=rslora)
    randomize_lora(layer, seed=seed + 1, std=std)
    return layer


def inputs(layer, n=5, seed=0):
    x = torch.randn(n, layer.in_features, generator=torch.Generator().manual_seed(seed))
    return x.to(device=layer.weight.device, dtype=layer.weight.dtype)


@SETTINGS
@given(layers())
def test_delta_shape_dtype_rank_and_scaling(layer):
    d, k, r = layer.out_features, layer.in_features, layer.r
    dw = layer.delta_weight()
    assert dw.shape == (d, k) and dw.dtype == layer.weight.dtype
    assert layer.A.shape == (r, k) and layer.B.shape == (d, r)
    assert le.numerical_rank(layer._delta_fp32()) <= r
    expected = layer.alpha / (r**0.5 if layer.rslora else r)
    assert abs(layer.scaling - expected) <= 1e-12 * expected
    assert le.count_parameters(layer)[0] == le.lora_param_count(d, k, r)


@SETTINGS
@given(layers())
def test_zero_b_changes_nothing(layer):
    with torch.no_grad():
        layer.B.zero_()
    x = inputs(layer)
    assert torch.equal(layer(x), layer.base(x))


@SETTINGS
@given(layers())
def test_merge_unmerge_round_trip_is_bounded(layer):
    """LoRALinear.unmerge's documented bound: each way at most (r + 1)·eps·(|W0| + s·|B|·|A|) per entry, so the
    round trip 2(r + 1)·eps·(…). Not "1e-6 relative to W0": when |ΔW| ≫ |W0| the ΔW term dominates."""
    W0 = layer.weight.detach().clone()
    W0d = W0.double()
    B, A = layer.B.detach().double(), layer.A.detach().double()
    exact = W0d + (B @ A) * layer.scaling  # exact up to float64
    bound = (layer.r + 1) * eps(W0.dtype) * (W0d.abs() + (B.abs() @ A.abs()) * layer.scaling) \
        + torch.finfo(W0.dtype).tiny  # (and an underflow's worth)
    layer.merge()
    assert ((layer.weight.double() - exact).abs() <= bound).all()
    layer.unmerge()
    assert ((layer.weight.double() - W0d).abs() <= 2 * bound).all()


@SETTINGS
@given(layers(), st.integers(1, 5))
def test_keep_original_restores_bit_for_bit(layer, cycles):
    W0 = layer.weight.detach().clone()
    for _ in range(cycles):
        layer.merge(keep_original=True)
        layer.unmerge()
    assert torch.equal(layer.weight, W0)


@SETTINGS
@given(layers())
def test_merged_forward_matches_unmerged(layer):
    layer.eval()
    x = inputs(layer)
    unmerged = layer(x).double()
    layer.merge()
    merged = layer(x).double()
    # error scale: what |x|·(|W0| + |ΔW|)ᵀ + |b| would be in exact arithmetic, times a few roundings
    W0, dW = layer.weight.double() - layer._delta_fp32().double(), layer._delta_fp32().double()
    scale = x.double().abs() @ (W0.abs() + dW.abs()).T
    if layer.bias is not None:
        scale = scale + layer.bias.double().abs()
    rounds = 8 + layer.in_features + layer.r
    assert ((merged - unmerged).abs() <= rounds * eps(layer.weight.dtype) * scale + 1e-30).all()


@SETTINGS
@given(
    st.lists(st.tuples(st.integers(4, 12), st.integers(4, 12)), min_size=1, max_size=4),  # r ≤ min(d, k)
    st.integers(1, 4),
    st.sampled_from(DTYPES),
    st.floats(0.5, 32.0),
    st.booleans(),
    st.integers(0, 1000),
)
def test_adapter_save_load_round_trip(shapes, r, dtype, alpha, rslora, seed):
    g = torch.Generator().manual_seed(seed)
    tensors = {f"layers.{i}.proj": (torch.randn(r, k, generator=g).to(dtype), torch.randn(d, r, generator=g).to(dtype))
               for i, (d, k) in enumerate(shapes)}
    a = le.Adapter(r, alpha, ("proj",), rslora, tensors)
    with tempfile.TemporaryDirectory() as tmp:
        b = le.Adapter.load(a.save(tmp))
    assert (b.r, b.alpha, b.targets, b.rslora, b.dtype) == (r, alpha, ("proj",), rslora, dtype)
    assert b.tensors.keys() == a.tensors.keys()
    for n, (A, B) in a.tensors.items():
        assert torch.equal(b.tensors[n][0], A) and torch.equal(b.tensors[n][1], B)
        assert torch.equal(b.delta(n), a.delta(n))
    assert b.num_parameters() == sum(r * (d + k) for d, k in shapes)


@SETTINGS
@given(st.integers(1, 4), st.integers(2, 16), st.integers(0, 1000))
def test_add_lora_counts_on_random_mlps(n_layers, width, seed):
    torch.manual_seed(seed)
    dims = [width + i for i in range(n_layers + 1)]
    model = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(dims, dims[1:])])
    x = torch.randn(3, dims[0])
    before = model(x)
    r = min(dims) // 2 + 1
    names = le.add_lora(model, [str(i) for i in range(n_layers)], r=r)
    assert names == [str(i) for i in range(n_layers)]
    assert le.count_parameters(model)[0] == sum(r * (a + b) for a, b in zip(dims, dims[1:]))
    assert torch.equal(model(x), before)


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_eckart_young_everywhere(m, n, data):
    r = data.draw(st.integers(0, min(m, n)))
    seed = data.draw(st.integers(0, 1000))
    W = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    err = torch.linalg.matrix_norm(W - le.low_rank_approx(W, r)).item()
    predicted = le.eckart_young_error(W, r)
    assert abs(err - predicted) <= 1e-9 * max(1.0, predicted)
    assert le.numerical_rank(le.low_rank_approx(W, r)) == r


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 6), st.integers(6, 20), st.integers(0, 1000))
def test_subspace_similarity_in_unit_interval_and_symmetric(r1, r2, k, seed):
    g = torch.Generator().manual_seed(seed)
    A1 = torch.randn(r1, k, generator=g, dtype=torch.float64)
    A2 = torch.randn(r2, k, generator=g, dtype=torch.float64)
    grid = le.subspace_similarity_grid(A1, A2)
    assert grid.shape == (r1, r2)
    assert (grid >= -1e-12).all() and (grid <= 1 + 1e-12).all()
    i, j = r1, r2
    assert abs(le.subspace_similarity(A1, A2, i, j) - le.subspace_similarity(A2, A1, j, i)) <= 1e-10
    assert abs(le.subspace_similarity(A1, A1, i, i) - 1.0) <= 1e-10

"""Adapters as values (§4.1 "subtract BA and add B'A'"): save/load, switch, stack, and refuse bad files."""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import lora_edu as le
from lora_edu.adapters import CONFIG_NAME, WEIGHTS_NAME

from .conftest import logits_tol

QV = [f"blocks.{i}.attn.{p}" for i in range(3) for p in ("q_proj", "v_proj")]


@pytest.fixture
def make_adapter(_pretrained_cpu, randomize):
    """make_adapter(seed, r=4, alpha=8, targets=("q_proj", "v_proj"), rslora=False) -> an Adapter with ΔW ≠ 0."""

    def make(seed, r=4, alpha=8, targets=("q_proj", "v_proj"), rslora=False, dtype=torch.float32):
        m = copy.deepcopy(_pretrained_cpu).to(dtype)
        le.add_lora(m, targets, r=r, alpha=alpha, rslora=rslora)
        randomize(m, seed=seed, std=0.05)
        return le.extract_adapter(m)

    return make


def with_adapter(model, adapter):
    """A copy of `model` with the adapter loaded as unmerged LoRA layers (the reference for merges)."""
    m = copy.deepcopy(model)
    le.load_adapter(m, adapter)
    return m.eval()


def plain_weights(model):
    return {n: model.get_submodule(n).weight.detach().clone() for n in le.linear_names(model)}


# ---- the value -----------------------------------------------------------------------------------------

def test_extract_adapter_copies_config_and_tensors(pretrained, randomize):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=3, alpha=6, rslora=True)
    randomize(pretrained)
    a = le.extract_adapter(pretrained)
    assert (a.r, a.alpha, a.targets, a.rslora) == (3, 6.0, ("q_proj", "v_proj"), True)
    assert a.scaling == pytest.approx(6 / 3**0.5)
    assert list(a.tensors) == QV
    assert a.num_parameters() == le.count_parameters(pretrained)[0]
    for n, m in le.lora_layers(pretrained).items():
        A, B = a.tensors[n]
        assert torch.equal(A, m.A) and torch.equal(B, m.B)
        torch.testing.assert_close(a.delta(n).to(m.A.device), m.delta_weight().float(), rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        le.lora_layers(pretrained)[QV[0]].B.add_(1.0)
    assert not torch.equal(a.tensors[QV[0]][1], le.lora_layers(pretrained)[QV[0]].B)  # a copy, not a view


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_save_load_round_trip(make_adapter, tmp_path, dtype):
    a = make_adapter(0, r=2, alpha=5, rslora=True, dtype=dtype)
    out = a.save(tmp_path / "adapter")
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])
    cfg = json.loads((out / CONFIG_NAME).read_text())
    assert (cfg["r"], cfg["alpha"], cfg["targets"], cfg["rslora"]) == (2, 5, ["q_proj", "v_proj"], True)
    b = le.Adapter.load(out)
    assert (b.r, b.alpha, b.targets, b.rslora, b.dtype) == (a.r, a.alpha, a.targets, a.rslora, dtype)
    assert list(b.tensors) == list(a.tensors)
    for n in a.tensors:
        for x, y in zip(a.tensors[n], b.tensors[n]):
            assert x.dtype == y.dtype and torch.equal(x.cpu(), y)


def test_load_adapter_into_fresh_model_reproduces_finetuned_outputs(_pretrained_cpu, device, tokens, tmp_path,
                                                                    same_outputs):
    le.seed_everything(0)
    tuned = copy.deepcopy(_pretrained_cpu).to(device)
    le.add_lora(tuned, ("q_proj", "v_proj"), r=4)
    le.train(tuned, "plus3", 25, lr=1e-2, progress=False, eval_examples=16)
    expected = tuned.eval()(tokens)
    le.extract_adapter(tuned).save(tmp_path)

    fresh = copy.deepcopy(_pretrained_cpu).to(device).eval()
    assert not torch.allclose(fresh(tokens), expected, atol=1e-3)
    assert le.load_adapter(fresh, le.Adapter.load(tmp_path, device=device)) == QV
    same_outputs(fresh(tokens), expected)
    # loading again into the model that now has LoRA layers copies values in place
    le.load_adapter(fresh, le.Adapter.load(tmp_path))
    same_outputs(fresh(tokens), expected)


def test_merge_adapter_matches_lora_and_unmerge_restores_w0(pretrained, make_adapter, tokens):
    a = make_adapter(1)
    reference = with_adapter(pretrained, a)(tokens)
    W0 = plain_weights(pretrained)
    assert le.merge_adapter(pretrained, a) == QV
    assert le.lora_layers(pretrained) == {}
    assert (pretrained(tokens) - reference).abs().max().item() <= logits_tol(reference)
    for n in QV:
        torch.testing.assert_close(pretrained.get_submodule(n).weight, W0[n] + a.delta(n).to(W0[n].device),
                                   rtol=1e-6, atol=1e-6)
    le.unmerge_adapter(pretrained, a)
    for n, w in plain_weights(pretrained).items():
        assert (w - W0[n]).abs().max().item() <= 1e-6


def test_switching_among_three_adapters(pretrained, make_adapter, tokens, same_outputs):
    adapters = [make_adapter(s, r=r, alpha=a) for s, r, a in ((1, 2, 2), (2, 4, 8), (3, 8, 4))]
    refs = [with_adapter(pretrained, a)(tokens) for a in adapters]
    assert all(not torch.allclose(refs[0], y, atol=1e-3) for y in refs[1:])
    W0 = plain_weights(pretrained)
    lora = copy.deepcopy(pretrained)
    for _ in range(2):
        for a, ref in zip(adapters, refs):
            le.merge_adapter(pretrained, a)
            assert (pretrained(tokens) - ref).abs().max().item() <= logits_tol(ref)
            le.unmerge_adapter(pretrained, a)
    for n, w in plain_weights(pretrained).items():
        assert (w - W0[n]).abs().max().item() <= 1e-6
    # the same switch with unmerged LoRA layers of one config: load_adapter overwrites A and B
    le.add_lora(lora, ("q_proj", "v_proj"), r=4, alpha=8)
    le.load_adapter(lora, make_adapter(4))
    le.load_adapter(lora, adapters[1])
    same_outputs(lora(tokens), refs[1])


def test_stacking_two_adapters_adds_their_deltas(pretrained, make_adapter, tokens):
    a1, a2 = make_adapter(1, r=2, alpha=2), make_adapter(2, r=3, alpha=3, targets=("q_proj", "k_proj"))
    W0 = plain_weights(pretrained)
    le.merge_adapter(pretrained, a1)
    le.merge_adapter(pretrained, a2)
    for n, w in plain_weights(pretrained).items():
        expected = W0[n].double()
        for a in (a1, a2):
            if n in a.tensors:
                expected = expected + a.delta(n).double().to(expected.device)
        torch.testing.assert_close(w.double(), expected, rtol=1e-6, atol=1e-6)
    stacked = pretrained(tokens)
    # FIFO undo works as well as LIFO: the deltas commute
    le.unmerge_adapter(pretrained, a1)
    le.unmerge_adapter(pretrained, a2)
    for n, w in plain_weights(pretrained).items():
        assert (w - W0[n]).abs().max().item() <= 1e-6
    assert not torch.allclose(pretrained(tokens), stacked, atol=1e-4)


def test_stack_equals_concatenated_adapter(pretrained, make_adapter, tokens):
    """Two stacked adapters = one adapter of rank r1 + r2 (A's rows and B's columns concatenated)."""
    a1, a2 = make_adapter(1, r=2, alpha=2), make_adapter(2, r=3, alpha=3)  # scaling 1 each
    cat = le.Adapter(5, 5.0, ("q_proj", "v_proj"), False,
                     {n: (torch.cat([a1.tensors[n][0], a2.tensors[n][0]]),
                          torch.cat([a1.tensors[n][1], a2.tensors[n][1]], 1)) for n in QV})
    both = copy.deepcopy(pretrained)
    le.merge_adapter(both, a1)
    le.merge_adapter(both, a2)
    ref = with_adapter(pretrained, cat)(tokens)
    assert (both(tokens) - ref).abs().max().item() <= logits_tol(ref)


def test_merge_adapter_weight(pretrained, make_adapter):
    a = make_adapter(1)
    half = copy.deepcopy(pretrained)
    le.merge_adapter(half, a, weight=0.5)
    le.merge_adapter(half, a, weight=0.5)
    le.merge_adapter(pretrained, a)
    for n, w in plain_weights(pretrained).items():
        torch.testing.assert_close(half.get_submodule(n).weight, w, rtol=1e-6, atol=1e-6)


# ---- refusals: values and models -----------------------------------------------------------------------

def _pair(r=4, k=64, d=64, dtype=torch.float32):
    return torch.zeros(r, k, dtype=dtype), torch.zeros(d, r, dtype=dtype)


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    (dict(r=0), ValueError, "r must"),
    (dict(r="4"), TypeError, "r must"),
    (dict(r=True), TypeError, "r must"),
    (dict(r=10**400), ValueError, "r must"),
    (dict(alpha=0), ValueError, "alpha"),
    (dict(alpha=float("inf")), ValueError, "alpha"),
    (dict(alpha=10**400), ValueError, "alpha"),
    (dict(targets=("q_proj", "q_proj")), ValueError, "distinct"),
    (dict(targets=("q proj",)), ValueError, "targets"),
    (dict(targets=("a..b",)), ValueError, "targets"),
    (dict(tensors={"x": _pair()}), ValueError, "targets .* do not fit"),
    (dict(targets=("x", "y"), tensors={"x": _pair()}), ValueError, "selecting no layer .*'y'"),
    (dict(tensors={"": _pair()}), ValueError, "layer name"),
    (dict(tensors={"q_proj": (torch.zeros(4, 3), torch.zeros(64, 4))}), ValueError, "r ≤ min"),
    (dict(tensors={"q_proj": (torch.full((4, 64), float("nan")), torch.zeros(64, 4))}), ValueError, "NaN or inf"),
    (dict(tensors={"q_proj": (torch.zeros(4, 64), torch.full((64, 4), float("-inf")))}), ValueError, "NaN or inf"),
    (dict(tensors={"q_proj": _pair(dtype=torch.float8_e4m3fn)}), ValueError, "dtype"),
    (dict(rslora="no"), TypeError, "rslora"),
    (dict(targets="q_proj"), ValueError, "targets"),
    (dict(targets=()), ValueError, "targets"),
    (dict(targets=5), ValueError, "targets"),
    (dict(tensors=[1, 2]), TypeError, "tensors"),
    (dict(tensors={"x": (torch.zeros(3, 64), torch.zeros(64, 4))}), ValueError, "shape"),
    (dict(tensors={"x": (torch.zeros(4, 64), torch.zeros(64, 4, 1))}), ValueError, "shape"),
    (dict(tensors={"x": (torch.zeros(4, 64), torch.zeros(64, 4, dtype=torch.float64))}), ValueError, "dtype"),
    (dict(tensors={"x": (torch.zeros(4, 64, dtype=torch.long), torch.zeros(64, 4, dtype=torch.long))}),
     ValueError, "floating"),
    (dict(tensors={"x": _pair(), "y": _pair(dtype=torch.bfloat16)}), ValueError, "dtype"),
    (dict(tensors={"x": torch.zeros(4, 64)}), TypeError, "pair"),
    (dict(tensors={"x": ([0.0], [0.0])}), TypeError, "tensors"),
])
def test_bad_adapter_values(kwargs, exc, match):
    args = {"r": 4, "alpha": 4.0, "targets": ("q_proj",), "rslora": False, "tensors": {}, **kwargs}
    with pytest.raises(exc, match=match):
        le.Adapter(**args)


def test_load_adapter_refuses_mismatches_untouched(pretrained, make_adapter, snapshot, _pretrained_cpu):
    a = make_adapter(1)
    wrong_names = le.Adapter(a.r, a.alpha, a.targets, a.rslora,
                             {n.replace("blocks.1", "blocks.7"): t for n, t in a.tensors.items()})
    small = le.ToyTransformer(le.ToyConfig(d_model=32))
    le.add_lora(small, ("q_proj", "v_proj"), r=4, alpha=8)
    wrong_shape = le.extract_adapter(small)
    partial = le.Adapter(a.r, a.alpha, ("q_proj",), a.rslora, {QV[0]: a.tensors[QV[0]]})

    snap = snapshot(pretrained)
    for bad, match in ((wrong_names, "not an nn.Linear"), (wrong_shape, "ΔW for"), (partial, "do not match")):
        with pytest.raises(ValueError, match=match):
            le.load_adapter(pretrained, bad)
        snap.assert_unchanged(pretrained)

    le.add_lora(pretrained, ("q_proj", "v_proj"), r=2, alpha=8)  # a model whose LoRA layers have rank 2
    snap = snapshot(pretrained)
    for bad, match in ((a, "shapes"), (wrong_names, "do not match"), (wrong_shape, "shapes")):
        with pytest.raises(ValueError, match=match):
            le.load_adapter(pretrained, bad)
        snap.assert_unchanged(pretrained)
    other_alpha = make_adapter(2, r=2, alpha=3)
    with pytest.raises(ValueError, match="alpha"):
        le.load_adapter(pretrained, other_alpha)
    snap.assert_unchanged(pretrained)
    with pytest.raises(TypeError, match="adapter must be"):
        le.load_adapter(pretrained, {"r": 4})
    snap.assert_unchanged(pretrained)

    le.merge_lora(pretrained)
    snap = snapshot(pretrained)
    with pytest.raises(RuntimeError, match="merged"):
        le.load_adapter(pretrained, make_adapter(3, r=2, alpha=8))
    snap.assert_unchanged(pretrained)


def test_merge_adapter_refusals_leave_model_untouched(pretrained, make_adapter, snapshot):
    a = make_adapter(1)
    nan = make_adapter(2)
    nan.tensors[QV[-1]][1][0, 0] = float("nan")
    small = le.ToyTransformer(le.ToyConfig(d_model=32))
    le.add_lora(small, ("q_proj",), r=4, alpha=8)
    snap = snapshot(pretrained)
    cases = [
        (lambda: le.merge_adapter(pretrained, nan), ValueError, "NaN or inf"),
        (lambda: le.merge_adapter(pretrained, a, weight=float("nan")), ValueError, "weight"),
        (lambda: le.merge_adapter(pretrained, a, weight=True), TypeError, "weight"),
        (lambda: le.merge_adapter(pretrained, a, weight="1"), TypeError, "weight"),
        (lambda: le.merge_adapter(pretrained, a, weight=10**400), ValueError, "weight"),
        (lambda: le.merge_adapter(pretrained, a, weight=1e30), ValueError, "weight"),
        (lambda: le.unmerge_adapter(pretrained, a, weight=-1e9), ValueError, "weight"),
        (lambda: le.merge_adapter(pretrained, le.extract_adapter(small)), ValueError, "ΔW for"),
        (lambda: le.unmerge_adapter(pretrained, nan), ValueError, "NaN or inf"),
        (lambda: le.merge_adapter(pretrained, "adapter"), TypeError, "adapter must be"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
        snap.assert_unchanged(pretrained)
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4, alpha=8)
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="plain model"):
        le.merge_adapter(pretrained, a)
    snap.assert_unchanged(pretrained)


def test_extract_adapter_without_lora_is_refused(pretrained):
    with pytest.raises(ValueError, match="no LoRA layers"):
        le.extract_adapter(pretrained)


# ---- refusals: files -----------------------------------------------------------------------------------

@pytest.fixture
def saved(make_adapter, tmp_path) -> Path:
    return make_adapter(1).save(tmp_path / "good")


def _stamp(directory: Path) -> None:
    """Record the weights file's present SHA-256 in the config, as a save would (so the parser is what refuses)."""
    _rewrite_config(directory, weights_sha256=hashlib.sha256((directory / WEIGHTS_NAME).read_bytes()).hexdigest())


def _rewrite_weights(directory: Path, fn) -> None:
    w = directory / WEIGHTS_NAME
    flat = load_file(str(w))
    save_file(fn(flat), str(w), metadata={"format": "lora_edu.adapter"})
    _stamp(directory)


def _rewrite_config(directory: Path, **changes) -> None:
    c = directory / CONFIG_NAME
    cfg = json.loads(c.read_text())
    for k, v in changes.items():
        if v is _DROP:
            del cfg[k]
        else:
            cfg[k] = v
    c.write_text(json.dumps(cfg))


_DROP = object()


def test_wrong_tensor_names(saved):
    _rewrite_weights(saved, lambda f: {k.replace("q_proj", "query"): v for k, v in f.items()})
    with pytest.raises(ValueError, match="tensor names do not match"):
        le.Adapter.load(saved)


def test_extra_tensor(saved):
    _rewrite_weights(saved, lambda f: {**f, "lm_head.A": torch.zeros(4, 64)})
    with pytest.raises(ValueError, match="unexpected"):
        le.Adapter.load(saved)


@pytest.mark.parametrize("shape", [(3, 64), (64, 4), (4,), (4, 64, 1)])
def test_wrong_shape_or_rank(saved, shape):
    key = f"{QV[0]}.A"
    _rewrite_weights(saved, lambda f: {**f, key: torch.zeros(shape)})
    with pytest.raises(ValueError, match="shape"):
        le.Adapter.load(saved)


def test_file_for_another_model_is_refused_by_load_adapter(saved, pretrained, snapshot):
    key = f"{QV[0]}.A"
    _rewrite_weights(saved, lambda f: {**f, key: torch.zeros(4, 63)})  # a valid adapter, for a k=63 layer
    a = le.Adapter.load(saved)
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="ΔW for"):
        le.load_adapter(pretrained, a)
    snap.assert_unchanged(pretrained)


def test_config_rank_disagrees_with_tensors(saved):
    _rewrite_config(saved, r=8)
    with pytest.raises(ValueError, match="r=8"):
        le.Adapter.load(saved)


def test_wrong_dtype(saved):
    _rewrite_weights(saved, lambda f: {k: v.to(torch.bfloat16) for k, v in f.items()})
    with pytest.raises(ValueError, match="dtype"):
        le.Adapter.load(saved)


def test_mixed_dtypes(saved):
    key = f"{QV[0]}.B"
    _rewrite_weights(saved, lambda f: {**f, key: f[key].double()})
    with pytest.raises(ValueError, match="dtype"):
        le.Adapter.load(saved)


def test_safetensors_not_written_by_lora_edu(saved):
    w = saved / WEIGHTS_NAME
    save_file(load_file(str(w)), str(w))  # no metadata: e.g. a PEFT or hand-made file
    _stamp(saved)
    with pytest.raises(ValueError, match="not written by lora_edu"):
        le.Adapter.load(saved)


@pytest.mark.parametrize("keep", [0, 4, 8, 100, 0.5, -1])
def test_truncated_safetensors(saved, keep):
    w = saved / WEIGHTS_NAME
    data = w.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    w.write_bytes(data[:cut])
    with pytest.raises(ValueError, match="does not match"):  # the config's SHA-256 catches it first
        le.Adapter.load(saved)
    _stamp(saved)
    with pytest.raises(ValueError, match="safetensors"):
        le.Adapter.load(saved)


@pytest.mark.parametrize("payload", [b"hello, I am not a tensor file", bytes(range(256)) * 8,
                                     b'{"format": "lora_edu.adapter"}', b"\x00" * 64])
def test_non_safetensors_file(saved, payload):
    (saved / WEIGHTS_NAME).write_bytes(payload)
    _stamp(saved)
    with pytest.raises(ValueError, match="safetensors"):
        le.Adapter.load(saved)


class _Trap:
    """Unpickling this object creates a file: proof that something ran pickle.load on our data."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_renamed_is_refused_and_never_unpickled(saved, tmp_path):
    marker = tmp_path / "unpickled.txt"
    payload = {f"{QV[0]}.A": _Trap(str(marker)), "x": torch.zeros(2)}
    (saved / WEIGHTS_NAME).write_bytes(pickle.dumps(payload))
    _stamp(saved)
    with pytest.raises(ValueError, match="safetensors"):
        le.Adapter.load(saved)
    assert not marker.exists()
    # a torch.save checkpoint (zip + pickle) renamed to the safetensors name
    torch.save({"trap": _Trap(str(marker))}, saved / WEIGHTS_NAME)
    _stamp(saved)
    with pytest.raises(ValueError, match="safetensors"):
        le.Adapter.load(saved)
    assert not marker.exists()
    with open(marker, "w"):  # the trap works when something does unpickle it
        pass
    marker.unlink()
    pickle.loads(pickle.dumps(_Trap(str(marker))))
    assert marker.exists()


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2, 3]", "must hold a JSON object"),
    ('"lora_edu.adapter"', "must hold a JSON object"),
    ('{"format": "lora_edu.adapter", "format": "x"}', "duplicate key 'format'"),
    ('{"format": NaN}', "NaN is not JSON"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"r": ' + "9" * 5000 + "}", "not valid JSON"),
    ('{"peft_type": "LORA", "r": 4}', "tensors a plain LoRA does not have"),  # PEFT's config, our tensor names
])
def test_wrong_json_text(saved, text, match):
    (saved / CONFIG_NAME).write_text(text)
    with pytest.raises(ValueError, match=match):
        le.Adapter.load(saved)


def test_config_not_utf8(saved):
    (saved / CONFIG_NAME).write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="JSON"):
        le.Adapter.load(saved)


@pytest.mark.parametrize(("changes", "exc", "match"), [
    (dict(format="peft"), ValueError, "format"),
    (dict(format_version=3), ValueError, "format_version"),
    (dict(format_version=1), ValueError, "format_version"),
    (dict(extra=1), ValueError, "unknown fields"),
    (dict(weights_sha256="0" * 64), ValueError, "does not match"),
    (dict(weights_sha256=None), ValueError, "does not match"),
    (dict(r=_DROP), ValueError, "lacks"),
    (dict(layers=_DROP, targets=_DROP), ValueError, "lacks"),
    (dict(r="4"), ValueError, "r must"),
    (dict(r=0), ValueError, "r must"),
    (dict(r=4.0), ValueError, "r must"),
    (dict(alpha=-1), ValueError, "alpha"),
    (dict(alpha="8"), ValueError, "alpha"),
    (dict(rslora="false"), ValueError, "rslora"),
    (dict(r=10**400), ValueError, "r must"),
    (dict(alpha=10**400), ValueError, "alpha"),
    (dict(alpha=1e300), ValueError, "alpha"),
    (dict(targets=["k_proj"]), ValueError, "do not fit"),
    (dict(targets=["q_proj", "v_proj", "k_proj"]), ValueError, "selecting no layer"),
    (dict(layers=QV + QV[:1]), ValueError, "distinct"),
    (dict(dtype="int8"), ValueError, "dtype"),
    (dict(dtype=None), ValueError, "dtype"),
    (dict(dtype="bfloat16"), ValueError, "dtype"),
    (dict(layers="blocks.0.attn.q_proj"), ValueError, "layers"),
    (dict(layers=[1, 2]), ValueError, "layers"),
    (dict(layers=QV[:2]), ValueError, "tensor names do not match"),
    (dict(targets="q_proj"), ValueError, "targets"),
    (dict(targets=7), ValueError, "targets"),
    (dict(targets=[]), ValueError, "targets"),
])
def test_wrong_json_fields(saved, changes, exc, match):
    _rewrite_config(saved, **changes)
    with pytest.raises(exc, match=match):
        le.Adapter.load(saved)


def test_missing_files(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="directory"):
        le.Adapter.load(tmp_path / "nowhere")
    (saved / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        le.Adapter.load(saved)


def test_a_refused_file_never_reaches_the_model(pretrained, saved, snapshot):
    (saved / WEIGHTS_NAME).write_bytes(b"garbage")
    snap = snapshot(pretrained)
    with pytest.raises(ValueError):
        le.load_adapter(pretrained, le.Adapter.load(saved))
    snap.assert_unchanged(pretrained)
    assert isinstance(pretrained.get_submodule(QV[0]), nn.Linear)


def test_extract_adapter_refuses_mixed_configs(pretrained):
    le.add_lora(pretrained, "q_proj", r=2)
    le.add_lora(pretrained, "v_proj", r=4)
    with pytest.raises(ValueError, match="disagree"):
        le.extract_adapter(pretrained)


def test_merge_adapter_needs_a_module(make_adapter):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        le.merge_adapter({"blocks.0.attn.q_proj": None}, make_adapter(1))


def test_merge_adapter_refuses_float16_overflow_and_touches_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).half()
    A = torch.full((2, 8), 10.0, dtype=torch.float16)
    B = torch.full((8, 2), 10.0, dtype=torch.float16)
    adapter = le.Adapter(2, 2.0, ("0", "1"), False, {"0": (A / 10, B / 10), "1": (A, B)})  # ΔW 2 and 200
    with torch.no_grad():
        model[1].weight.fill_(65500.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="overflows"):
        le.merge_adapter(model, adapter)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---- files: memory ownership and atomic saves ----------------------------------------------------------

def test_loaded_adapter_owns_its_memory(saved, pretrained, tokens):
    """Truncating or rewriting the files after load changes nothing (no memory map survives Adapter.load)."""
    a = le.Adapter.load(saved)
    before = {n: (A.clone(), B.clone()) for n, (A, B) in a.tensors.items()}
    reference = with_adapter(pretrained, a)(tokens)
    w = saved / WEIGHTS_NAME
    size = w.stat().st_size
    with open(w, "r+b") as f:  # overwrite in place, same inode: a mapped tensor would see these bytes
        f.write(b"\xff" * size)
    with open(w, "r+b") as f:
        f.truncate(0)  # a mapped tensor would now raise SIGBUS on access
    (saved / CONFIG_NAME).write_text("{}")
    for n, (A, B) in a.tensors.items():
        assert torch.equal(A, before[n][0]) and torch.equal(B, before[n][1])
    le.merge_adapter(pretrained, a)
    assert (pretrained(tokens) - reference).abs().max().item() <= logits_tol(reference)
    with torch.no_grad():  # and the tensors are writable memory of their own
        a.tensors[QV[0]][0].mul_(2)


def test_save_refuses_to_overwrite_unless_asked(make_adapter, tmp_path):
    a, b = make_adapter(1), make_adapter(2)
    out = a.save(tmp_path / "ad")
    with pytest.raises(FileExistsError, match=str(out / WEIGHTS_NAME)):
        b.save(out)
    assert torch.equal(le.Adapter.load(out).tensors[QV[0]][1], a.tensors[QV[0]][1])
    with pytest.raises(TypeError, match="overwrite"):
        b.save(out, overwrite="yes")
    b.save(out, overwrite=True)
    assert torch.equal(le.Adapter.load(out).tensors[QV[0]][1], b.tensors[QV[0]][1])
    (tmp_path / "empty").mkdir()  # an existing directory without an adapter is fine
    a.save(tmp_path / "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad", "empty"]  # no temporary directory left
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, WEIGHTS_NAME])


def test_save_gives_both_files_the_same_umask_permissions(make_adapter, tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        out = make_adapter(1).save(tmp_path / "ad")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {CONFIG_NAME: 0o640, WEIGHTS_NAME: 0o640}
    assert stat.S_IMODE(out.stat().st_mode) == 0o750


def test_save_never_writes_through_a_planted_symlink(make_adapter, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "ad"
    out.mkdir()
    (out / CONFIG_NAME).symlink_to(victim)
    with pytest.raises(FileExistsError):
        make_adapter(1).save(out)
    make_adapter(1).save(out, overwrite=True)
    assert victim.read_text() == "precious"
    assert not (out / CONFIG_NAME).is_symlink()
    assert le.Adapter.load(out).r == 4


@pytest.mark.parametrize("fresh", [True, False])
def test_a_failed_save_leaves_the_old_pair_or_nothing(make_adapter, tmp_path, monkeypatch, fresh):
    """The config write fails (a full disk, simulated): no mixed pair, no half-written directory, no litter."""
    import os

    a = make_adapter(1)
    out = tmp_path / "ad"
    if not fresh:
        a.save(out)
    before = {p.name: p.read_bytes() for p in out.iterdir()} if not fresh else None
    real_open = os.open

    def full_disk(path, flags, *args, **kwargs):
        if str(path).endswith(CONFIG_NAME) and flags & os.O_CREAT:
            raise OSError(28, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", full_disk)
    with pytest.raises(OSError, match="No space"):
        make_adapter(2).save(out, overwrite=True)
    monkeypatch.undo()
    if fresh:
        assert not out.exists()
    else:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
        assert torch.equal(le.Adapter.load(out).tensors[QV[0]][1], a.tensors[QV[0]][1])
    assert [p.name for p in tmp_path.iterdir()] == (["ad"] if not fresh else [])


def test_a_torn_pair_is_refused(make_adapter, tmp_path):
    """New weights beside an old config (a crash between the two renames) cannot load with the wrong α."""
    one, two = make_adapter(1, alpha=8).save(tmp_path / "one"), make_adapter(2, alpha=2).save(tmp_path / "two")
    (one / WEIGHTS_NAME).write_bytes((two / WEIGHTS_NAME).read_bytes())
    with pytest.raises(ValueError, match="not saved together"):
        le.Adapter.load(one)


@pytest.mark.parametrize("kind", ["dir", "fifo", "devzero", "huge"])
def test_special_or_oversized_files_are_refused(saved, kind, monkeypatch):
    import os

    c = saved / CONFIG_NAME
    c.unlink()
    if kind == "dir":
        c.mkdir()
    elif kind == "fifo":
        os.mkfifo(c)
    elif kind == "devzero":
        c.symlink_to("/dev/zero")
    else:
        with open(c, "wb") as f:
            f.truncate(8 << 30)  # a sparse 8 GiB file: only its size is ever looked at
    with pytest.raises(ValueError, match="regular file|allowed"):
        le.Adapter.load(saved)


def test_missing_config_and_not_a_directory(saved, tmp_path):
    (saved / CONFIG_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        le.Adapter.load(saved)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        le.Adapter.load(f)
    with pytest.raises(TypeError, match="directory"):
        le.Adapter.load(3)
    with pytest.raises(ValueError, match="device"):
        le.Adapter.load(saved, device="gpu")


def test_adapter_layer_inside_a_lora_layer_is_refused(pretrained, make_adapter, snapshot):
    """Names ending in '.base' (the nn.Linear inside a LoRALinear) do not pass for a plain model."""
    a = make_adapter(1)
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4, alpha=8)
    inside = le.Adapter(a.r, a.alpha, ("base",), a.rslora, {f"{n}.base": t for n, t in a.tensors.items()})
    snap = snapshot(pretrained)
    for call in (le.merge_adapter, le.unmerge_adapter):
        with pytest.raises(ValueError, match="inside"):
            call(pretrained, inside)
        snap.assert_unchanged(pretrained)

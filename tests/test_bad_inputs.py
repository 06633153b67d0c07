"""The bad-input catalogue: every public function, fed wrong values, raises a clear error naming the parameter
(TypeError / ValueError; FileNotFoundError / FileExistsError for paths; RuntimeError for a wrong merge state)
and leaves the model bit-identical: same tensors (bit for bit), flags, module types, merge state and mode.

One row per case: (id, subject, call, exception, pattern the message must contain). `subject` names the
object the call may touch — a fresh copy each time — which is snapshotted before and compared after.
"""

from __future__ import annotations

import copy
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import lora_edu as le
from lora_edu.adapters import CONFIG_NAME, WEIGHTS_NAME
from lora_edu.train import task_loss

try:  # tests/ is a package (tests/__init__.py); without it pytest puts tests/ itself on sys.path
    from .conftest import randomize_lora, seeded_linear
except ImportError:
    from conftest import randomize_lora, seeded_linear

QV = ("q_proj", "v_proj")
NAN, INF = math.nan, math.inf
HUGE = 10**400  # beyond float range: float(HUGE) raises OverflowError, which must never escape
W = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
CASES: list[tuple] = []


def case(id_, subject, call, exc, match):
    CASES.append(pytest.param(subject, call, exc, match, id=id_))


def numbers(prefix, subject, make_call, bad, name=None):
    """A case per bad value of one numeric parameter: make_call(value) -> call(m, env)."""
    name = name or prefix.rsplit(".", 1)[-1]
    table = {"str": ("1", TypeError), "bool": (True, TypeError), "none": (None, TypeError), "list": ([1], TypeError),
             "nan": (NAN, ValueError), "inf": (INF, ValueError), "-inf": (-INF, ValueError),
             "huge": (HUGE, ValueError), "-huge": (-HUGE, ValueError), "zero": (0, ValueError),
             "neg": (-1, ValueError), "float": (2.5, TypeError), "1e30": (1e30, ValueError)}
    for key in bad:
        value, exc = table[key]
        case(f"{prefix}={key}", subject, make_call(value), exc, f"{name} must")


# ---- LoRALinear -------------------------------------------------------------------------------------------------
for bad_base in ("linear", nn.Conv1d(4, 4, 1), torch.zeros(4, 4)):
    case(f"LoRALinear.base={type(bad_base).__name__}", None, lambda m, e, b=bad_base: le.LoRALinear(b, 2),
         TypeError, "base")
numbers("LoRALinear.r", "layer", lambda v: lambda m, e: le.LoRALinear(m, r=v),
        ["str", "bool", "none", "float", "zero", "neg", "huge"])
case("LoRALinear.r>min(d,k)", "layer", lambda m, e: le.LoRALinear(m, r=25), ValueError, "r must")
numbers("LoRALinear.alpha", "layer", lambda v: lambda m, e: le.LoRALinear(m, 2, alpha=v),
        ["str", "bool", "list", "nan", "inf", "huge", "zero", "neg", "1e30"])
numbers("LoRALinear.dropout", "layer", lambda v: lambda m, e: le.LoRALinear(m, 2, dropout=v),
        ["str", "bool", "none", "nan", "inf", "huge", "neg"])
case("LoRALinear.dropout=1", "layer", lambda m, e: le.LoRALinear(m, 2, dropout=1.0), ValueError, "dropout")
for bad in ("xavier", None, ["gaussian"]):
    case(f"LoRALinear.init={bad!r}", "layer", lambda m, e, b=bad: le.LoRALinear(m, 2, init=b), ValueError, "init")
for bad in (1, "yes", None):
    case(f"LoRALinear.rslora={bad!r}", "layer", lambda m, e, b=bad: le.LoRALinear(m, 2, rslora=b), TypeError, "rslora")
case("LoRALinear.merge.keep_original", "lora_layer", lambda m, e: m.merge(keep_original="yes"), TypeError,
     "keep_original")
case("LoRALinear.merge twice", "merged_layer", lambda m, e: m.merge(), RuntimeError, "already merged")
case("LoRALinear.unmerge unmerged", "lora_layer", lambda m, e: m.unmerge(), RuntimeError, "not merged")
case("LoRALinear.unmerge after B.data changed", "merged_layer_edited", lambda m, e: m.unmerge(), RuntimeError,
     "changed while the layer was merged")
case("LoRALinear.merge NaN B", "nan_layer", lambda m, e: m.merge(), ValueError, "NaN or inf")

# ---- model-level LoRA -------------------------------------------------------------------------------------------
for fn in (le.add_lora, le.merge_lora, le.unmerge_lora, le.lora_layers, le.linear_names, le.count_parameters,
           le.lora_state_dict, le.mark_only_lora_trainable, le.extract_adapter):
    case(f"{fn.__name__}.model=dict", None, lambda m, e, f=fn: f({"q_proj": nn.Linear(2, 2)}), TypeError, "model")
case("remove_lora.model=str", None, lambda m, e: le.remove_lora("model", merge=True), TypeError, "model")
for bad, exc in ((5, TypeError), ("", ValueError), ((), ValueError), (["q_proj", 3], ValueError),
                 ("nothing_here", ValueError), (("q_proj", ""), ValueError)):
    case(f"add_lora.targets={bad!r}", "plain", lambda m, e, b=bad: le.add_lora(m, b), exc, "targets")
numbers("add_lora.r", "plain", lambda v: lambda m, e: le.add_lora(m, QV, r=v), ["str", "bool", "zero", "huge"])
case("add_lora.r>64", "plain", lambda m, e: le.add_lora(m, QV, r=65), ValueError, "r must")
numbers("add_lora.alpha", "plain", lambda v: lambda m, e: le.add_lora(m, QV, alpha=v), ["str", "nan", "huge", "neg"])
case("add_lora.dropout", "plain", lambda m, e: le.add_lora(m, QV, dropout=2), ValueError, "dropout")
case("add_lora.init", "plain", lambda m, e: le.add_lora(m, QV, init="he"), ValueError, "init")
case("add_lora.rslora", "plain", lambda m, e: le.add_lora(m, QV, rslora="no"), TypeError, "rslora")
case("add_lora.unknown kwarg", "plain", lambda m, e: le.add_lora(m, QV, rank=4), TypeError, "rank")
case("add_lora twice", "lora", lambda m, e: le.add_lora(m, QV), ValueError, "already have LoRA")
case("merge_lora.keep_original", "lora", lambda m, e: le.merge_lora(m, keep_original=1), TypeError, "keep_original")
case("merge_lora merged", "merged", lambda m, e: le.merge_lora(m), RuntimeError, "already merged")
case("merge_lora NaN", "nan_lora", lambda m, e: le.merge_lora(m), ValueError, "blocks.1.attn.v_proj")
case("unmerge_lora unmerged", "lora", lambda m, e: le.unmerge_lora(m), RuntimeError, "nothing to unmerge")
case("unmerge_lora edited", "merged_edited", lambda m, e: le.unmerge_lora(m), RuntimeError, "blocks.0.attn.q_proj")
case("unmerge_lora scaling edited", "merged_rescaled", lambda m, e: le.unmerge_lora(m), RuntimeError,
     "scaling changed")
for bad in ("yes", 1, None):
    case(f"remove_lora.merge={bad!r}", "lora", lambda m, e, b=bad: le.remove_lora(m, merge=b), TypeError, "merge")
case("remove_lora(False) edited", "merged_edited", lambda m, e: le.remove_lora(m, merge=False), RuntimeError,
     "blocks.0.attn.q_proj")
case("remove_lora(True) NaN", "nan_lora", lambda m, e: le.remove_lora(m, merge=True), ValueError, "NaN or inf")
case("extract_adapter no LoRA", "plain", lambda m, e: le.extract_adapter(m), ValueError, "no LoRA layers")

# ---- Adapter values ---------------------------------------------------------------------------------------------


def _adapter(**kw):
    pair = (torch.zeros(2, 8), torch.zeros(8, 2))
    args = {"r": 2, "alpha": 4.0, "targets": ("q",), "rslora": False, "tensors": {"a.q": pair}, **kw}
    return lambda m, e: le.Adapter(**args)


numbers("Adapter.r", None, lambda v: _adapter(r=v), ["str", "bool", "none", "zero", "huge", "float"])
numbers("Adapter.alpha", None, lambda v: _adapter(alpha=v), ["str", "bool", "nan", "inf", "huge", "zero", "1e30"])
for bad in ("q", (), ("q", "q"), ("",), ("q", 5), ("x y",)):
    case(f"Adapter.targets={bad!r}", None, _adapter(targets=bad), ValueError, "targets")
case("Adapter.targets idle", None, _adapter(targets=("q", "k")), ValueError, "targets")
case("Adapter.rslora", None, _adapter(rslora="no"), TypeError, "rslora")
for id_, bad, exc in (("list", [1], TypeError), ("not pair", {"a.q": torch.zeros(2)}, TypeError),
                      ("nan", {"a.q": (torch.full((2, 8), NAN), torch.zeros(8, 2))}, ValueError),
                      ("inf", {"a.q": (torch.zeros(2, 8), torch.full((8, 2), INF))}, ValueError),
                      ("rank", {"a.q": (torch.zeros(3, 8), torch.zeros(8, 2))}, ValueError),
                      ("int dtype", {"a.q": (torch.zeros(2, 8, dtype=torch.long),) * 2}, ValueError),
                      ("float8", {"a.q": (torch.zeros(2, 8).to(torch.float8_e4m3fn),) * 2}, ValueError),
                      ("name", {"a..q": (torch.zeros(2, 8), torch.zeros(8, 2))}, ValueError)):
    case(f"Adapter.tensors {id_}", None, _adapter(tensors=bad), exc, "tensors")
case("Adapter.to(int8)", None, lambda m, e: e.adapter.to(dtype=torch.int8), ValueError, "dtype")

# ---- Adapter files ----------------------------------------------------------------------------------------------
case("Adapter.save.directory=3", None, lambda m, e: e.adapter.save(3), TypeError, "directory")
case("Adapter.save.overwrite='yes'", None, lambda m, e: e.adapter.save(e.tmp / "n", overwrite="yes"), TypeError,
     "overwrite")
case("Adapter.save existing", None, lambda m, e: e.adapter.save(e.saved), FileExistsError, WEIGHTS_NAME)
case("Adapter.save.format", None, lambda m, e: e.adapter.save(e.tmp / "n", format="onnx"), ValueError, "format")
case("Adapter.load.directory=None", None, lambda m, e: le.Adapter.load(None), TypeError, "directory")
case("Adapter.load missing dir", None, lambda m, e: le.Adapter.load(e.tmp / "none"), FileNotFoundError, "directory")
case("Adapter.load a file", None, lambda m, e: le.Adapter.load(e.saved / CONFIG_NAME), ValueError, "directory")
case("Adapter.load.device", None, lambda m, e: le.Adapter.load(e.saved, device="gpu"), ValueError, "device")


def _config_edit(fn):
    def call(m, e):
        path = e.saved / CONFIG_NAME
        path.write_text(fn(path.read_text()))
        le.Adapter.load(e.saved)
    return call


def _field(key, value):
    return _config_edit(lambda t: json.dumps({**json.loads(t), key: value}))


for key, value in (("r", HUGE), ("r", "4"), ("r", 4.0), ("alpha", HUGE), ("alpha", 1e300), ("alpha", None),
                   ("rslora", "false"), ("targets", "q_proj"), ("targets", ["k_proj"]), ("dtype", "float8"),
                   ("layers", "x"), ("layers", [["x"]]), ("format_version", 1), ("weights_sha256", 0)):
    case(f"Adapter.load {key}={str(value)[:12]}", None, _field(key, value), ValueError,
         "r must" if key == "r" else key)
case("Adapter.load duplicate key", None, _config_edit(lambda t: t[:-2] + ', "r": 8}'), ValueError, "duplicate key")
case("Adapter.load deep JSON", None, _config_edit(lambda t: "[" * 50_000 + "]" * 50_000), ValueError, "nested")
case("Adapter.load NaN constant", None, _config_edit(lambda t: re.sub(r'"alpha": [0-9.]+', '"alpha": NaN', t)),
    ValueError, "NaN is not JSON")
case("Adapter.load unknown field", None, _field("lora_dropout", 0.1), ValueError, "lora_dropout")

# ---- applying adapters ------------------------------------------------------------------------------------------
for fn in (le.merge_adapter, le.unmerge_adapter):
    numbers(f"{fn.__name__}.weight", "plain", lambda v, f=fn: lambda m, e: f(m, e.adapter, weight=v),
            ["str", "bool", "none", "nan", "inf", "-inf", "huge", "-huge", "1e30"])
    case(f"{fn.__name__}.adapter=dict", "plain", lambda m, e, f=fn: f(m, {"r": 4}), TypeError, "adapter")
    case(f"{fn.__name__}.model=list", None, lambda m, e, f=fn: f([], e.adapter), TypeError, "model")
    case(f"{fn.__name__} on LoRA model", "lora", lambda m, e, f=fn: f(m, e.adapter), ValueError, "LoRA")
    case(f"{fn.__name__} NaN adapter", "plain", lambda m, e, f=fn: f(m, e.nan_adapter), ValueError, "NaN or inf")
    case(f"{fn.__name__} swamps W0", "plain", lambda m, e, f=fn: f(m, e.big_adapter, weight=1e6), ValueError,
         "weight")
case("load_adapter.adapter=dict", "plain", lambda m, e: le.load_adapter(m, {"r": 4}), TypeError, "adapter")
case("load_adapter.model=None", None, lambda m, e: le.load_adapter(None, e.adapter), TypeError, "model")
case("load_adapter NaN", "lora", lambda m, e: le.load_adapter(m, e.nan_adapter), ValueError, "NaN or inf")
case("load_adapter merged", "merged", lambda m, e: le.load_adapter(m, e.adapter), RuntimeError, "merged")
case("load_adapter missing dir", "plain", lambda m, e: le.load_adapter(m, e.tmp / "none"), FileNotFoundError,
     "directory")

# ---- training and evaluation ------------------------------------------------------------------------------------


def _train(**kw):
    return lambda m, e: le.train(m, **{"task": "plus3", "steps": 2, "progress": False, **kw})


numbers("train.steps", "lora", lambda v: _train(steps=v), ["str", "bool", "float", "neg", "huge"])
numbers("train.lr", "lora", lambda v: _train(lr=v), ["str", "bool", "nan", "inf", "huge", "zero", "neg", "1e30"])
numbers("train.batch_size", "lora", lambda v: _train(batch_size=v), ["str", "zero", "neg", "huge", "float"])
numbers("train.seed", "lora", lambda v: _train(seed=v), ["str", "neg", "huge", "float"])
numbers("train.weight_decay", "lora", lambda v: _train(weight_decay=v), ["str", "nan", "inf", "neg"])
numbers("train.eval_every", "lora", lambda v: _train(eval_every=v), ["bool", "zero", "str"])
numbers("train.eval_examples", "lora", lambda v: _train(eval_examples=v), ["zero", "none", "huge"])
case("train.callback=5", "lora", _train(callback=5), TypeError, "callback")
case("train.progress='no'", "lora", _train(progress="no"), TypeError, "progress")
case("train.desc=3", "lora", _train(desc=3), TypeError, "desc")
case("train.task=None", "lora", _train(task=None), TypeError, "task")
case("train.task='transpose'", "lora", _train(task="transpose"), ValueError, "task")
case("train.model=None", None, lambda m, e: le.train(None, "plus3", 2), TypeError, "model")
case("train merged", "merged", _train(), ValueError, "merged LoRA layers")
case("train nothing trainable", "frozen", _train(), ValueError, "no trainable parameters")


def _evaluate(**kw):
    return lambda m, e: le.evaluate(m, **{"task": "rot0", "n_examples": 8, **kw})


numbers("evaluate.n_examples", "plain", lambda v: _evaluate(n_examples=v), ["zero", "neg", "bool", "huge", "str"])
numbers("evaluate.batch_size", "plain", lambda v: _evaluate(batch_size=v), ["zero", "neg", "float"])
numbers("evaluate.seed", "plain", lambda v: _evaluate(seed=v), ["str", "neg"])
case("evaluate.metric", "plain", _evaluate(metric="f1"), ValueError, "metric")
case("evaluate.task", "plain", _evaluate(task=3), TypeError, "task")
case("evaluate.model", None, lambda m, e: le.evaluate("model", "rot0"), TypeError, "model")
case("generate.model", None, lambda m, e: le.generate(3, torch.zeros(1, 6, dtype=torch.long), "rot0"), TypeError,
     "model")
for id_, bad in (("float", torch.zeros(1, 6)), ("1-D", torch.zeros(6, dtype=torch.long)), ("list", [[1, 2]])):
    case(f"generate.x {id_}", "plain", lambda m, e, b=bad: le.generate(m, b, "rot0"), TypeError, "x must")
case("generate.x n=8", "plain", lambda m, e: le.generate(m, torch.zeros(1, 8, dtype=torch.long), "rot0"),
     ValueError, "x must")
case("generate.x digit 12", "plain", lambda m, e: le.generate(m, torch.full((1, 6), 12), "rot0"), ValueError,
     "x must")
case("generate.task", "plain", lambda m, e: le.generate(m, torch.zeros(1, 6, dtype=torch.long), task="?"),
     ValueError, "task")
case("generate.task=mixture", "plain", lambda m, e: le.generate(m, torch.zeros(1, 6, dtype=torch.long), "pretrain"),
     ValueError, "mixture")
case("task_loss.inputs", "plain", lambda m, e: task_loss(m, "x", torch.zeros(1, 3, dtype=torch.long)), TypeError,
     "inputs must")
case("task_loss.targets", "plain", lambda m, e: task_loss(m, torch.zeros(1, 3, dtype=torch.long),
                                                          torch.zeros(1, 4, dtype=torch.long)), ValueError, "targets")

# ---- the toy model and its checkpoint ---------------------------------------------------------------------------
for key, value, exc in (("vocab_size", 0, ValueError), ("vocab_size", 2.5, TypeError), ("n_layer", 10**6, ValueError),
                        ("d_model", HUGE, ValueError), ("n_head", 3, ValueError), ("d_ff", True, TypeError),
                        ("max_len", "32", TypeError), ("dropout", 1.0, ValueError), ("dropout", NAN, ValueError),
                        ("bias", "yes", TypeError)):
    case(f"ToyConfig.{key}={str(value)[:10]}", None, lambda m, e, k=key, v=value: le.ToyConfig(**{k: v}), exc,
         "n_head" if key == "n_head" else f"{key} must")
case("ToyTransformer.cfg=dict", None, lambda m, e: le.ToyTransformer({"d_model": 8}), TypeError, "cfg")
for id_, bad, exc in (("float", torch.zeros(1, 4), TypeError), ("3-D", torch.zeros(1, 2, 4, dtype=torch.long),
                      ValueError), ("too long", torch.zeros(1, 40, dtype=torch.long), ValueError),
                      ("id 99", torch.full((1, 4), 99), ValueError), ("id -1", torch.full((1, 4), -1), ValueError),
                      ("str", "3 1 4", TypeError)):
    case(f"ToyTransformer.forward tokens {id_}", "plain", lambda m, e, b=bad: m(b), exc,
         "sequence length" if id_ == "too long" else "tokens")
for bad in ("gpu", "CPU", " cpu", "bogus", -1):
    case(f"load_pretrained.device={bad!r}", None, lambda m, e, b=bad: le.load_pretrained(b), ValueError, "device")
case("load_pretrained.device=1.5", None, lambda m, e: le.load_pretrained(1.5), TypeError, "device")
case("load_pretrained.path=3", None, lambda m, e: le.load_pretrained("cpu", path=3), TypeError, "path")
case("load_pretrained missing", None, lambda m, e: le.load_pretrained("cpu", path=e.tmp / "x.safetensors"),
     FileNotFoundError, "x.safetensors")
case("load_pretrained an adapter", None, lambda m, e: le.load_pretrained("cpu", path=e.saved / WEIGHTS_NAME),
     ValueError, "lora_edu_config")
case("pretrained_info a directory", None, lambda m, e: le.pretrained_info(e.tmp), ValueError, "regular file")

# ---- runtime and tasks ------------------------------------------------------------------------------------------
for bad in ("bogus", "gpu", "CPU", " cpu", "cuda:-1", "meta"):
    case(f"get_device({bad!r})", None, lambda m, e, b=bad: le.get_device(b), ValueError, "device")
    case(f"LORA_EDU_DEVICE={bad!r}", None, lambda m, e, b=bad: (e.setenv("LORA_EDU_DEVICE", b), le.get_device()),
         ValueError, "LORA_EDU_DEVICE")
case("get_device(1.5)", None, lambda m, e: le.get_device(1.5), TypeError, "device")
numbers("seed_everything.seed", None, lambda v: lambda m, e: le.seed_everything(v), ["str", "neg", "huge", "float"])
case("get_task(5)", None, lambda m, e: le.get_task(5), TypeError, "task")
case("get_task('nope')", None, lambda m, e: le.get_task("nope"), ValueError, "task")
for bad in (0, -1, "1", 2.5):
    case(f"Task.batch.batch_size={bad!r}", None, lambda m, e, b=bad: le.get_task("rot0").batch(b), ValueError,
         "batch_size must")

# ---- lowrank (its checks) ---------------------------------------------------------------------------------------
for fn in (le.low_rank_approx, le.energy, le.eckart_young_error, le.relative_error):
    case(f"{fn.__name__}.W=str", None, lambda m, e, f=fn: f("W", 1), TypeError, "W must")
    case(f"{fn.__name__}.W=3-D", None, lambda m, e, f=fn: f(torch.zeros(2, 2, 2), 1), ValueError, "W must")
    case(f"{fn.__name__}.r=huge", None, lambda m, e, f=fn: f(W, HUGE), ValueError, "r must")
    case(f"{fn.__name__}.r=str", None, lambda m, e, f=fn: f(W, "2"), TypeError, "r must")
for key in ("d", "k", "r"):
    case(f"lora_param_count.{key}=-1", None,
         lambda m, e, k=key: le.lora_param_count(**{"d": 4, "k": 4, "r": 2, k: -1}), ValueError, f"{key} must")
case("subspace_similarity.i=0", None, lambda m, e: le.subspace_similarity(W, W, 0, 1), ValueError, "i must")
case("subspace_similarity.A2 k", None, lambda m, e: le.subspace_similarity(W, torch.zeros(3, 4), 1, 1), ValueError,
     "A2")
case("subspace_similarity_grid.max_i", None, lambda m, e: le.subspace_similarity_grid(W, W, 99), ValueError, "max_i")
case("amplification_factor.delta_W", None, lambda m, e: le.amplification_factor(W, W.T, 1), ValueError, "delta_W")
case("amplification_factor.r=0", None, lambda m, e: le.amplification_factor(W, W, 0), ValueError, "r must")

# lowrank and tasks: non-finite matrices, tolerances, huge sizes, subspace shapes, digit tensors, encode / decode
for id_, call, exc, match in [
    ("low_rank_approx NaN W", lambda m, e: le.low_rank_approx(torch.full((3, 3), NAN), 1), ValueError, "W must"),
    ("singular_values inf W", lambda m, e: le.singular_values([[INF, 0.0]]), ValueError, "W must"),
    ("subspace_similarity NaN A2", lambda m, e: le.subspace_similarity(W, W * NAN, 1, 1), ValueError, "A2 must"),
    ("numerical_rank.tol='x'", lambda m, e: le.numerical_rank(W, tol="x"), TypeError, "tol must"),
    ("numerical_rank.tol=-1", lambda m, e: le.numerical_rank(W, tol=-1.0), ValueError, "tol must"),
    ("numerical_rank.tol=nan", lambda m, e: le.numerical_rank(W, tol=NAN), ValueError, "tol must"),
    ("compression_ratio huge", lambda m, e: le.compression_ratio(HUGE, HUGE, 1), ValueError, "d must"),
    ("compression_ratio.k=-huge", lambda m, e: le.compression_ratio(4, -HUGE, 1), ValueError, "k must"),
    ("lora_param_count.r=2.0", lambda m, e: le.lora_param_count(4, 4, 2.0), TypeError, "r must"),
    ("projection_norm.U=str", lambda m, e: le.projection_norm(W, "U", W), TypeError, "U must"),
    ("projection_norm shapes", lambda m, e: le.projection_norm(W, torch.zeros(3, 2), torch.zeros(2, 5)), ValueError,
     "U (d×r) and V (r×k) must fit W"),
    ("projection_norm.V NaN", lambda m, e: le.projection_norm(W, torch.zeros(6, 2), torch.full((2, 5), NAN)),
     ValueError, "V must"),
    ("effective_rank.W=str", lambda m, e: le.effective_rank("W"), TypeError, "W must"),
    ("effective_rank.W NaN", lambda m, e: le.effective_rank(torch.tensor([1.0, NAN])), ValueError, "W must"),
    ("effective_rank.W 3-D", lambda m, e: le.effective_rank(torch.ones(2, 2, 2)), ValueError, "W must"),
    ("Task.make.x float", lambda m, e: le.get_task("rot0").make(torch.zeros(2, 6)), TypeError, "x must"),
    ("Task.make.x list", lambda m, e: le.get_task("rot0").make([[1] * 6]), TypeError, "x must"),
    ("Task.make.x n=7", lambda m, e: le.get_task("rot0").make(torch.zeros(2, 7, dtype=torch.long)), ValueError,
     "x must"),
    ("Task.make.x digit 10", lambda m, e: le.get_task("rot0").make(torch.full((2, 6), 10)), ValueError, "x must"),
    ("Task.make.device", lambda m, e: le.get_task("rot0").make(torch.zeros(1, 6, dtype=torch.long), device="gpu"),
     ValueError, "device"),
    ("Task.batch.generator='g'", lambda m, e: le.get_task("rot0").batch(2, generator="g"), TypeError, "generator"),
    ("encode('3a')", lambda m, e: le.tasks.encode("3a"), ValueError, "digits must"),
    ("encode(5)", lambda m, e: le.tasks.encode(5), TypeError, "digits must"),
    ("encode([1.5])", lambda m, e: le.tasks.encode([1.5]), TypeError, "digits must"),
    ("encode('')", lambda m, e: le.tasks.encode(""), ValueError, "digits must"),
    ("decode(5)", lambda m, e: le.tasks.decode(5), TypeError, "tokens must"),
    ("decode(float tensor)", lambda m, e: le.tasks.decode(torch.zeros(3)), TypeError, "tokens must"),
]:
    case(id_, None, call, exc, match)


# ---- the test ---------------------------------------------------------------------------------------------------
@pytest.fixture
def env(_pretrained_cpu, tmp_path, monkeypatch):
    lora = copy.deepcopy(_pretrained_cpu)
    le.add_lora(lora, QV, r=4, alpha=8)
    randomize_lora(lora, seed=1, std=0.05)
    adapter = le.extract_adapter(lora)
    nan = le.extract_adapter(lora)
    nan.tensors["blocks.1.attn.v_proj"][1][0, 0] = NAN  # bypasses validation, as a user's in-place edit would
    big = le.Adapter(adapter.r, adapter.alpha, adapter.targets, adapter.rslora,
                     {n: (A, B * 1000) for n, (A, B) in adapter.tensors.items()})
    return SimpleNamespace(adapter=adapter, nan_adapter=nan, big_adapter=big, tmp=tmp_path, lora=lora,
                           saved=adapter.save(tmp_path / "saved"), setenv=monkeypatch.setenv)


def subject_of(kind, base, lora):
    if kind is None:
        return None
    if kind.endswith("layer") or "_layer" in kind:
        m = seeded_linear()
        if kind == "layer":
            return m
        m = le.LoRALinear(m, r=2)
        randomize_lora(m)
        if kind == "nan_layer":
            m.B.data[0, 0] = NAN
        if kind.startswith("merged"):
            m.merge()
        if kind.endswith("edited"):
            m.B.data.mul_(2.0)
        return m
    m = copy.deepcopy(lora if kind != "plain" and kind != "frozen" else base)
    if kind == "frozen":
        m.requires_grad_(False)
    if kind == "nan_lora":
        le.lora_layers(m)["blocks.1.attn.v_proj"].B.data[0, 0] = NAN
    if kind.startswith("merged"):
        le.merge_lora(m)
    if kind == "merged_edited":
        le.lora_layers(m)["blocks.0.attn.q_proj"].B.data.mul_(2.0)
    if kind == "merged_rescaled":
        le.lora_layers(m)["blocks.0.attn.q_proj"].scaling *= 2
    return m


def test_catalogue_is_large_enough():
    assert sum(1 for c in CASES if not c.marks) >= 150


@pytest.mark.parametrize(("kind", "call", "exc", "match"), CASES)
def test_bad_input_is_a_clear_error_and_changes_nothing(_pretrained_cpu, env, snapshot, kind, call, exc, match):
    m = subject_of(kind, _pretrained_cpu, env.lora)
    snap = snapshot(m) if m is not None else None
    with pytest.raises(exc) as info:
        call(m, env)
    assert match in str(info.value), f"the message does not name {match!r}: {info.value}"
    if snap is not None:
        snap.assert_unchanged(m)

"""Shared fixtures for the core tests.

Everything that can run on an accelerator uses ``le.get_device()``, so ``LORA_EDU_DEVICE=cuda pytest``
exercises CUDA; comparisons against loralib / PEFT stay on the CPU.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import lora_edu as le

# The toy models are tiny: one intra-op thread is faster than two, and on a shared, oversubscribed CPU
# two OpenMP threads spin-wait on each other (measured ~150x slower per forward pass).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def load_tool(relpath: str):
    """Import a script that lives outside the package (benchmarks/, tools/) as a module, once."""
    name = Path(relpath).stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def device() -> torch.device:
    return le.get_device()


@pytest.fixture(scope="session")
def _pretrained_cpu() -> nn.Module:
    return le.load_pretrained(device="cpu")


@pytest.fixture
def pretrained(_pretrained_cpu, device) -> nn.Module:
    """A fresh copy of the shipped pretrained ToyTransformer on `device`, in eval mode."""
    assert next(_pretrained_cpu.parameters()).device.type == "cpu", "a test moved the shared CPU model"
    return copy.deepcopy(_pretrained_cpu).to(device).eval()


def assert_same_outputs(a: torch.Tensor, b: torch.Tensor) -> None:
    """Bit-identical on the CPU; on an accelerator, kernels may reorder sums, so within 1e-6."""
    if a.device.type == "cpu":
        assert torch.equal(a, b)
    else:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.fixture
def same_outputs():
    return assert_same_outputs


@pytest.fixture
def tokens(device) -> torch.Tensor:
    """A fixed batch of model inputs for the plus3 task (batch 8, length 15)."""
    g = torch.Generator().manual_seed(7)
    inputs, _ = le.get_task("plus3").batch(8, g, device)
    return inputs


def logits_tol(y: torch.Tensor) -> float:
    """How far two fp32 routes to the same logits (merged vs unmerged, stacked vs concatenated) may differ:
    rounding of a few sums per layer, scaled to the logits' magnitude."""
    return 64 * torch.finfo(y.dtype).eps * max(1.0, y.abs().max().item())


def seeded_linear(k: int = 24, d: int = 40, bias: bool = True, seed: int = 0, dtype=torch.float32,
                  device="cpu") -> nn.Linear:
    """nn.Linear(k → d) whose weights depend only on `seed` (W0 is d×k, as in the paper)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(k, d, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(d, k, generator=g) / k**0.5)
        if bias:
            lin.bias.copy_(torch.randn(d, generator=g) * 0.1)
    return lin.to(device=device, dtype=dtype)


def randomize_lora(model_or_layer: nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Give every LoRA layer a non-zero B (and a fresh A) from a seeded generator, so ΔW ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    layers = ([model_or_layer] if isinstance(model_or_layer, le.LoRALinear)
              else list(le.lora_layers(model_or_layer).values()))
    with torch.no_grad():
        for m in layers:
            m.A.copy_(torch.randn(m.A.shape, generator=g, dtype=torch.float64) / m.A.shape[1] ** 0.5)
            m.B.copy_(torch.randn(m.B.shape, generator=g, dtype=torch.float64) * std)


@pytest.fixture
def linear(device) -> nn.Linear:
    """A small fp32 nn.Linear(24 → 40) with seeded weights on `device`."""
    return seeded_linear(device=device)


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits (so NaN == NaN and -0.0 != 0.0): 'bit-identical' taken literally."""
    return t.view(_INT_OF_SIZE[t.element_size()]) if t.is_floating_point() else t


@dataclass
class Snapshot:
    """Everything about a module that a refused call must leave alone."""

    tensors: dict
    grads: dict
    types: dict
    merged: dict
    training: bool

    @classmethod
    def of(cls, model: nn.Module) -> Snapshot:
        return cls(
            tensors={k: v.detach().clone() for k, v in model.state_dict().items()},
            grads={n: p.requires_grad for n, p in model.named_parameters()},
            types={n: type(m) for n, m in model.named_modules()},
            merged={n: m.merged for n, m in model.named_modules() if isinstance(m, le.LoRALinear)},
            training=model.training,
        )

    def assert_unchanged(self, model: nn.Module) -> None:
        now = Snapshot.of(model)
        assert now.types == self.types, "module types changed"
        assert now.grads == self.grads, "requires_grad flags changed"
        assert now.merged == self.merged, "merged flags changed"
        assert now.training == self.training
        assert now.tensors.keys() == self.tensors.keys(), "state_dict keys changed"
        for k, v in self.tensors.items():
            w = now.tensors[k]
            assert w.dtype == v.dtype and w.device == v.device, f"{k}: dtype/device changed"
            assert torch.equal(_bits(w), _bits(v)), f"{k}: values changed"


@pytest.fixture
def snapshot():
    """snap = snapshot(model); ...; snap.assert_unchanged(model) — bit-identical state, flags and types."""
    return Snapshot.of


@pytest.fixture
def make_linear():
    """make_linear(k, d, bias=True, seed=0, dtype=float32, device="cpu") -> seeded nn.Linear."""
    return seeded_linear


@pytest.fixture
def randomize():
    """randomize(model_or_layer, seed=0, std=0.1): non-zero seeded A and B in every LoRA layer."""
    return randomize_lora


# ---- helpers shared by the course tests (tests/test_nbNN.py, tests/test_course_common.py) ----------------
@pytest.fixture(scope="module")
def base() -> nn.Module:
    """The shipped pretrained toy on the CPU, shared by one test module (tests must not change it)."""
    return le.load_pretrained(device="cpu")


def random_adapter(model, targets=("q_proj", "v_proj"), r=2, alpha=4, seed=0, scale=0.05) -> le.Adapter:
    """An Adapter for `model` with seeded random A and B (ΔW ≠ 0) and no training."""
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model)
    le.add_lora(m, targets, r=r, alpha=alpha)
    a = le.extract_adapter(m)
    a.tensors = {n: (torch.randn(A.shape, generator=g) * scale, torch.randn(B.shape, generator=g) * scale)
                 for n, (A, B) in a.tensors.items()}
    return a


@pytest.fixture(scope="module")
def random_adapters(base) -> dict:
    """Three random adapters named after the tasks notebook 06 switches between."""
    return {name: random_adapter(base, seed=i) for i, name in enumerate(("plus3", "minus5", "rminus1"))}


@pytest.fixture(scope="module")
def hopper():
    from lora_edu.course import nb01

    return nb01.MatrixSVD(nb01.grace_hopper(4), "Grace Hopper")


def state_of(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def is_figure(x) -> bool:
    from matplotlib.figure import Figure

    return isinstance(x, Figure)


def figure_done(fig) -> None:
    """A figure with at least one axes; closed afterwards."""
    assert is_figure(fig) and fig.axes
    import matplotlib.pyplot as plt

    plt.close(fig)


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def bench_row(config="c", date="2026-01-01", device="cpu", device_name="X", **kw) -> dict:
    """A results row of benchmarks/peft_bench.py with every measurement NaN except those given."""
    r = {f: math.nan for f in load_tool("benchmarks/peft_bench.py").FIELDS}
    r.update(config=config, date=date, device=device, device_name=device_name, **kw)
    return r

"""`python benchmarks/peft_bench.py` (`make bench`): lora_edu against Hugging Face PEFT, side by side, in one run.

For each configuration (a stack of transformer blocks with q, k, v, o and an MLP, LoRA r = 8, α = 16 on
q and v, plus the toy transformer of the notebooks) it measures on the current device:

- inference latency of the plain base model, lora_edu unmerged / merged (LoRALinear in merged state) /
  "plain" (``remove_lora(model, merge=True)``, plain nn.Linear again), PEFT unmerged / merged;
- the time to merge every adapter, to unmerge it, and to switch task (unmerge one adapter, merge another);
- the drift of the base weights after 1 and 100 merge→unmerge cycles: lora_edu default, lora_edu with
  ``keep_original=True`` (exact restore) and PEFT;
- one AdamW training step: full fine-tuning versus LoRA (time, and on CUDA the peak memory).

Both libraries get the same W0, A and B (B drawn from N(0, 0.02), so merges do real work). PEFT is an
optional extra (``pip install 'lora-edu[compare]'``); without it the benchmark says so and measures
lora_edu alone. Latencies are medians over interleaved rounds (every variant timed back to back in a
rotating order, after warm-up, CUDA-synchronised); each ratio is the median of the per-round ratios, so
a busy machine slows both sides of a ratio alike. Only ratios within one run are meaningful.

    python benchmarks/peft_bench.py                 # table on the current device
    python benchmarks/peft_bench.py --quick         # ≈30 s smoke run (small sizes, few repeats)
    python benchmarks/peft_bench.py --threads 1 --json out.jsonl
    python benchmarks/peft_bench.py --save          # benchmarks/results/<device>_<date>.jsonl
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import json
import math
import platform
import re
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lora_edu.adapters import Adapter, load_adapter
from lora_edu.inject import lora_layers, merge_lora, remove_lora, unmerge_lora
from lora_edu.runtime import get_device

__all__ = ["BenchConfig", "BenchStack", "FIELDS", "RESULTS_DIR", "format_markdown", "format_table", "format_targets",
           "get_configs", "main", "run", "run_config", "write_jsonl"]

R, ALPHA, TARGETS, B_STD = 8, 16.0, ("q_proj", "v_proj"), 0.02
DRIFT_CYCLES = 100
RESULTS_DIR = Path(__file__).resolve().parent / "results"  # read back by lora_edu.course.nb06.latest_results
NAN = float("nan")

META_FIELDS = ["config", "kind", "d", "layers", "batch", "seq", "tokens", "dtype", "r", "alpha", "targets",
               "device", "device_name", "torch", "peft", "peft_adapter_dtype", "python", "threads", "quick",
               "cuda_graphs", "date"]
MEASURE_FIELDS = [
    "infer_ms_base", "infer_ms_ours_unmerged", "infer_ms_ours_merged", "infer_ms_ours_plain",
    "infer_ms_peft_unmerged", "infer_ms_peft_merged",
    "infer_ms_base_graph", "infer_ms_ours_unmerged_graph", "infer_ms_peft_unmerged_graph",
    "merge_ms_ours", "merge_ms_peft", "unmerge_ms_ours", "unmerge_ms_peft", "switch_ms_ours", "switch_ms_peft",
    "drift_1_ours", "drift_100_ours", "drift_1_ours_exact", "drift_100_ours_exact", "drift_1_peft",
    "drift_100_peft",
    "train_ms_full", "train_ms_lora", "train_ms_lora_peft",
    "train_peak_MiB_full", "train_peak_MiB_lora", "train_peak_MiB_lora_peft",
    "train_state_MiB_full", "train_state_MiB_lora", "trainable_full", "trainable_lora",
    "maxabs_unmerged_ours_vs_peft", "maxabs_merged_ours_vs_peft", "maxabs_merged_weights_ours_vs_peft",
    "maxabs_merged_vs_unmerged",
]
RATIO_FIELDS = [
    "merged_over_base", "plain_over_base", "unmerged_over_base", "peft_unmerged_over_base",
    "peft_merged_over_base", "ours_over_peft_unmerged", "ours_over_peft_merged", "graph_ours_over_peft_unmerged",
    "merge_ours_over_peft", "switch_ours_over_peft", "drift_ours_over_peft", "train_lora_over_full",
    "peak_mem_lora_over_full", "state_mem_lora_over_full", "train_ours_over_peft_lora",
]
FIELDS = META_FIELDS + MEASURE_FIELDS + RATIO_FIELDS


# ---- the models ------------------------------------------------------------------------------------------
class BenchBlock(nn.Module):
    """Causal self-attention with separate q, k, v, o projections, then a 4d GELU MLP; residuals, no norms.

    No LayerNorm, so the parameter count is exactly the Linears' (as in the PEFT anchors).
    """

    def __init__(self, d: int, n_head: int, **factory):
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(d, d, **factory)
        self.k_proj = nn.Linear(d, d, **factory)
        self.v_proj = nn.Linear(d, d, **factory)
        self.o_proj = nn.Linear(d, d, **factory)
        self.up_proj = nn.Linear(d, 4 * d, **factory)
        self.down_proj = nn.Linear(4 * d, d, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_head

        def split(y):
            return y.view(b, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down_proj(F.gelu(self.up_proj(x)))


class BenchStack(nn.Module):
    """`layers` BenchBlocks of width d (head size 64): hidden states (batch, seq, d) in and out."""

    def __init__(self, d: int, layers: int, device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.blocks = nn.ModuleList(BenchBlock(d, max(1, d // 64), **factory) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


@dataclass(frozen=True)
class BenchConfig:
    name: str
    kind: str  # "stack" or "toy"
    d: int
    layers: int
    dtype: torch.dtype
    batch: int
    seq: int

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


def get_configs(device, quick: bool = False) -> list[BenchConfig]:
    """The issue's configurations, sized for the device: smaller token counts on CPU, d = 4096 on GPU only."""
    dev = torch.device(device)
    f32, bf16 = torch.float32, torch.bfloat16
    gpu = dev.type == "cuda"
    if quick:
        return [
            BenchConfig("toy", "toy", 64, 2, f32, 64 if gpu else 16, 17),
            BenchConfig("d128x2-fp32", "stack", 128, 2, f32, 8 if gpu else 1, 64),
            BenchConfig("d256x2-bf16", "stack", 256, 2, bf16, 8 if gpu else 1, 32),
        ]
    if gpu:
        return [
            BenchConfig("toy", "toy", 64, 2, f32, 256, 17),
            BenchConfig("d128x4-fp32", "stack", 128, 4, f32, 32, 128),     # 4096 tokens
            BenchConfig("d1024x8-bf16", "stack", 1024, 8, bf16, 64, 128),  # 8192 tokens
            BenchConfig("d4096x4-bf16", "stack", 4096, 4, bf16, 64, 128),  # 8192 tokens
        ]
    return [
        BenchConfig("toy", "toy", 64, 2, f32, 64, 17),
        BenchConfig("d128x4-fp32", "stack", 128, 4, f32, 4, 128),  # 512 tokens
        BenchConfig("d1024x8-bf16", "stack", 1024, 8, bf16, 1, 64),  # 64 tokens
    ]


def _build_base(cfg: BenchConfig, device: torch.device, seed: int):
    g = torch.Generator().manual_seed(seed)
    if cfg.kind == "toy":
        from lora_edu.pretrained import load_pretrained
        from lora_edu.tasks import get_task

        model = load_pretrained(device)
        x, _ = get_task("rot0").batch(cfg.batch, g, device=device)
    else:
        torch.manual_seed(seed)
        model = BenchStack(cfg.d, cfg.layers, device=device, dtype=cfg.dtype)
        x = torch.randn(cfg.batch, cfg.seq, cfg.d, generator=g).to(device=device, dtype=cfg.dtype)
    model.eval().requires_grad_(False)
    return model, x


def _target_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in TARGETS]


def _make_adapter(model: nn.Module, seed: int) -> Adapter:
    """A ~ N(0, 1/k) (the paper's Gaussian init), B ~ N(0, 0.02): a trained-looking adapter, ΔW ≠ 0."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for n in _target_names(model):
        W = model.get_submodule(n).weight
        d, k = W.shape
        A = torch.randn(R, k, generator=g) / math.sqrt(k)
        B = torch.randn(d, R, generator=g) * B_STD
        tensors[n] = (A.to(W.device, W.dtype), B.to(W.device, W.dtype))
    return Adapter(R, ALPHA, TARGETS, False, tensors)


def _build_ours(base: nn.Module, adapter: Adapter) -> nn.Module:
    model = copy.deepcopy(base)
    load_adapter(model, adapter)  # adds LoRALinear layers with the adapter's config, then copies A, B
    return model


# ---- PEFT (optional) -------------------------------------------------------------------------------------
def _import_peft():
    """The peft module, or None when it is not installed."""
    try:
        import peft
        from peft import LoraConfig, get_peft_model  # noqa: F401
    except ImportError:
        return None
    return peft


def _peft_config(peft):
    return peft.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=list(TARGETS), lora_dropout=0.0, bias="none")


def _peft_layers(pm) -> dict:
    return {n: m for n, m in pm.base_model.model.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


def _load_peft_adapter(pm, adapter: Adapter, name: str) -> None:
    layers = _peft_layers(pm)
    if set(layers) != set(adapter.tensors):
        raise RuntimeError(f"PEFT wrapped {sorted(layers)}, expected {sorted(adapter.tensors)}")
    with torch.no_grad():
        for n, (A, B) in adapter.tensors.items():
            layers[n].lora_A[name].weight.copy_(A)
            layers[n].lora_B[name].weight.copy_(B)


def _build_peft(peft, base: nn.Module, adapter: Adapter, autocast: bool = True):
    """PeftModel around a copy of `base` with the adapter's values loaded.

    autocast=True is PEFT's default (bf16/fp16 adapters are stored in float32); False keeps them in the
    base dtype, like lora_edu.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = peft.get_peft_model(copy.deepcopy(base), _peft_config(peft), autocast_adapter_dtype=autocast)
    _load_peft_adapter(pm, adapter, "default")
    return pm


# ---- timing ----------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _interleaved(fns: dict, device: torch.device, rounds: int, warmup: int = 2,
                 min_sample_s: float = 0.0) -> dict[str, list[float]]:
    """{name: [seconds per call, one per round]}: each round times every fn back to back, rotating the order.

    A sample repeats a fn `inner` times (the same for all, so that one sample lasts ≥ min_sample_s).
    """
    names = list(fns)
    slowest = 0.0
    for n in names:
        for _ in range(warmup):
            fns[n]()
        _sync(device)
        t0 = time.perf_counter()
        fns[n]()
        _sync(device)
        slowest = max(slowest, time.perf_counter() - t0)
    inner = max(1, min(200, math.ceil(min_sample_s / max(slowest, 1e-7)))) if min_sample_s else 1
    out = {n: [] for n in names}
    for i in range(rounds):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(inner):
                fns[n]()
            _sync(device)
            out[n].append((time.perf_counter() - t0) / inner)
    return out


def _ms(samples: list[float] | None) -> float:
    return statistics.median(samples) * 1e3 if samples else NAN


def _ratio(samples: dict, num: str, den: str) -> float:
    """Median of per-round ratios num/den (NaN if either side was not measured)."""
    a, b = samples.get(num), samples.get(den)
    if not a or not b:
        return NAN
    return statistics.median(x / y for x, y in zip(a, b))


def _safe_div(a: float, b: float) -> float:
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return NAN
    return a / b


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _cuda_graph(fn, device: torch.device):
    """Capture fn() (inference, static input) in a CUDA graph; returns a replay function."""
    s = torch.cuda.Stream(device)
    s.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream(device).wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return g.replay


# ---- measurements ----------------------------------------------------------------------------------------
def _drift(weights: list[torch.Tensor], merge, unmerge, cycles: int) -> tuple[float, float]:
    """Max |W − W0| over the given weights after 1 and after `cycles` merge→unmerge cycles."""
    w0 = [w.detach().clone() for w in weights]
    after1 = NAN
    for c in range(1, cycles + 1):
        merge()
        unmerge()
        if c == 1:
            after1 = max(_maxabs(w, w_0) for w, w_0 in zip(weights, w0))
    return after1, max(_maxabs(w, w_0) for w, w_0 in zip(weights, w0))


def _restore(weights: list[torch.Tensor], originals: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for w, o in zip(weights, originals):
            w.copy_(o)


def _state_mib(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    """Bytes held by parameters, their gradients and the optimizer state (not activations), in MiB."""
    seen, total = set(), 0
    for p in model.parameters():
        for t in (p, p.grad):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    for st in opt.state.values():
        for t in st.values():
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total / 2**20


def _train_setup(kind: str, base: nn.Module, adapter: Adapter, peft, peft_autocast: bool = True):
    if kind == "full":
        model = copy.deepcopy(base).requires_grad_(True)
    elif kind == "lora":
        model = _build_ours(base, adapter)
    else:
        model = _build_peft(peft, base, adapter, peft_autocast).base_model.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.AdamW(params, lr=1e-4)


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss = model(x).float().square().mean()
    loss.backward()
    opt.step()


def _peak_mib(kind, base, adapter, peft, peft_autocast, x, device) -> float:
    """CUDA peak memory of one training step of a fresh model (weights, grads, optimizer state, activations)."""
    gc.collect()
    torch.cuda.empty_cache()
    _sync(device)
    m0 = torch.cuda.memory_allocated(device)
    model, opt = _train_setup(kind, base, adapter, peft, peft_autocast)
    for _ in range(2):
        _train_step(model, opt, x)
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    _train_step(model, opt, x)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - m0) / 2**20
    del model, opt
    gc.collect()
    torch.cuda.empty_cache()
    return peak


@dataclass
class _Ctx:
    cfg: BenchConfig
    device: torch.device
    peft: object
    quick: bool
    cuda_graphs: bool
    log: object
    peft_autocast: bool
    base: nn.Module
    x: torch.Tensor
    ad1: Adapter
    ad2: Adapter

    @property
    def has_peft(self) -> bool:
        return self.peft is not None


def _phase_inference(c: _Ctx, row: dict) -> None:
    """Correctness (same outputs and merged weights as PEFT), then interleaved inference latency."""
    rounds = 5 if c.quick else 41
    base, x = c.base, c.x
    ours_u, ours_m = _build_ours(base, c.ad1), _build_ours(base, c.ad1)
    y_u = ours_u(x)
    merge_lora(ours_m)
    y_m = ours_m(x)
    row["maxabs_merged_vs_unmerged"] = _maxabs(y_m, y_u)
    ours_plain = copy.deepcopy(ours_m)
    remove_lora(ours_plain, merge=True)
    fns = {"base": lambda: base(x), "ours_unmerged": lambda: ours_u(x), "ours_merged": lambda: ours_m(x),
           "ours_plain": lambda: ours_plain(x)}
    if c.has_peft:
        # timed: the model holding PEFT's LoRA layers, without the PeftModel wrapper's per-call overhead
        peft_u = _build_peft(c.peft, base, c.ad1, c.peft_autocast).base_model.model
        pm_m = _build_peft(c.peft, base, c.ad1, c.peft_autocast)
        peft_m = pm_m.base_model.model
        row["maxabs_unmerged_ours_vs_peft"] = _maxabs(y_u, peft_u(x))
        pm_m.merge_adapter()
        row["maxabs_merged_ours_vs_peft"] = _maxabs(y_m, peft_m(x))
        pl = _peft_layers(pm_m)
        row["maxabs_merged_weights_ours_vs_peft"] = max(
            _maxabs(m.weight, pl[n].base_layer.weight) for n, m in lora_layers(ours_m).items())
        fns.update(peft_unmerged=lambda: peft_u(x), peft_merged=lambda: peft_m(x))
    if c.cuda_graphs:
        for name in ["base", "ours_unmerged"] + (["peft_unmerged"] if c.has_peft else []):
            try:
                fns[name + "_graph"] = _cuda_graph(fns[name], c.device)
            except Exception as e:  # noqa: BLE001 — report it, keep the rest of the run
                c.log(f"  CUDA graph capture of {name} failed: {e}")
    c.log(f"  inference latency ({len(fns)} variants × {rounds} rounds)…")
    lat = _interleaved(fns, c.device, rounds, warmup=3, min_sample_s=0.002 if c.quick else 0.005)
    for n in lat:
        row[f"infer_ms_{n}"] = _ms(lat[n])
    row["merged_over_base"] = _ratio(lat, "ours_merged", "base")
    row["plain_over_base"] = _ratio(lat, "ours_plain", "base")
    row["unmerged_over_base"] = _ratio(lat, "ours_unmerged", "base")
    row["peft_unmerged_over_base"] = _ratio(lat, "peft_unmerged", "base")
    row["peft_merged_over_base"] = _ratio(lat, "peft_merged", "base")
    row["ours_over_peft_unmerged"] = _ratio(lat, "ours_unmerged", "peft_unmerged")
    row["ours_over_peft_merged"] = _ratio(lat, "ours_merged", "peft_merged")
    row["graph_ours_over_peft_unmerged"] = _ratio(lat, "ours_unmerged_graph", "peft_unmerged")


def _phase_merge(c: _Ctx, row: dict) -> None:
    """Merge / unmerge every adapter, task switch, and the drift of W0 over merge→unmerge cycles."""
    n_merge = 3 if c.quick else 7
    ours = _build_ours(c.base, c.ad1)
    pm = _build_peft(c.peft, c.base, c.ad1, c.peft_autocast) if c.has_peft else None
    c.log(f"  merge / unmerge ({n_merge} rounds)…")
    fns = {"merge_ours": lambda: merge_lora(ours), "unmerge_ours": lambda: unmerge_lora(ours)}
    if pm is not None:
        fns.update(merge_peft=pm.merge_adapter, unmerge_peft=pm.unmerge_adapter)
    mt = _interleaved_pairs(fns, c.device, n_merge)
    for k in ("ours", "peft"):
        row[f"merge_ms_{k}"] = _ms(mt.get(f"merge_{k}"))
        row[f"unmerge_ms_{k}"] = _ms(mt.get(f"unmerge_{k}"))
    row["merge_ours_over_peft"] = _ratio(mt, "merge_ours", "merge_peft")

    # drift of W0 after merge→unmerge cycles, each run starting from the original weights
    c.log(f"  drift ({DRIFT_CYCLES} merge→unmerge cycles × {3 if pm is not None else 2})…")
    names = list(lora_layers(ours))
    ours_w = [m.base.weight for m in lora_layers(ours).values()]
    originals = [c.base.get_submodule(n).weight for n in names]
    _restore(ours_w, originals)
    row["drift_1_ours"], row["drift_100_ours"] = _drift(
        ours_w, lambda: merge_lora(ours), lambda: unmerge_lora(ours), DRIFT_CYCLES)
    _restore(ours_w, originals)
    row["drift_1_ours_exact"], row["drift_100_ours_exact"] = _drift(
        ours_w, lambda: merge_lora(ours, keep_original=True), lambda: unmerge_lora(ours), DRIFT_CYCLES)
    if pm is not None:
        pl = _peft_layers(pm)
        peft_w = [pl[n].base_layer.weight for n in names]
        _restore(peft_w, originals)
        row["drift_1_peft"], row["drift_100_peft"] = _drift(peft_w, pm.merge_adapter, pm.unmerge_adapter,
                                                            DRIFT_CYCLES)
    row["drift_ours_over_peft"] = _safe_div(row["drift_100_ours"], row["drift_100_peft"])

    # task switch on merged models: unmerge adapter 1, merge adapter 2 (and back)
    c.log(f"  task switch ({n_merge} rounds)…")
    _restore(ours_w, originals)
    merge_lora(ours)
    state = {"ours": 1, "peft": 1}

    def switch_ours():
        state["ours"] = 3 - state["ours"]
        unmerge_lora(ours)
        load_adapter(ours, c.ad1 if state["ours"] == 1 else c.ad2)
        merge_lora(ours)

    def switch_peft():
        state["peft"] = 3 - state["peft"]
        pm.unmerge_adapter()
        pm.set_adapter("default" if state["peft"] == 1 else "task2")
        pm.merge_adapter()

    fns = {"switch_ours": switch_ours}
    if pm is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm.add_adapter("task2", _peft_config(c.peft))
        _load_peft_adapter(pm, c.ad2, "task2")
        pm.set_adapter("default")
        pm.merge_adapter()
        fns["switch_peft"] = switch_peft
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        st = _interleaved(fns, c.device, n_merge, warmup=1)
    row["switch_ms_ours"] = _ms(st["switch_ours"])
    row["switch_ms_peft"] = _ms(st.get("switch_peft"))
    row["switch_ours_over_peft"] = _ratio(st, "switch_ours", "switch_peft")


def _phase_train(c: _Ctx, row: dict) -> None:
    """One AdamW step: full fine-tuning vs LoRA (lora_edu; PEFT's LoRA for comparison)."""
    n_train = 2 if c.quick else 5
    c.log(f"  training steps ({n_train} rounds)…")
    kinds = ["full", "lora"] + (["lora_peft"] if c.has_peft else [])
    models = {k: _train_setup(k, c.base, c.ad1, c.peft, c.peft_autocast) for k in kinds}
    fns = {k: (lambda m=m, o=o: _train_step(m, o, c.x)) for k, (m, o) in models.items()}
    tr = _interleaved(fns, c.device, n_train, warmup=2)
    for k in kinds:
        row[f"train_ms_{k}"] = _ms(tr[k])
    row["train_lora_over_full"] = _ratio(tr, "lora", "full")
    row["train_ours_over_peft_lora"] = _ratio(tr, "lora", "lora_peft")
    row["train_state_MiB_full"] = _state_mib(*models["full"])
    row["train_state_MiB_lora"] = _state_mib(*models["lora"])
    row["state_mem_lora_over_full"] = _safe_div(row["train_state_MiB_lora"], row["train_state_MiB_full"])
    row["trainable_full"] = sum(p.numel() for p in models["full"][0].parameters() if p.requires_grad)
    row["trainable_lora"] = sum(p.numel() for p in models["lora"][0].parameters() if p.requires_grad)


def _phase_peak_memory(c: _Ctx, row: dict) -> None:
    if c.device.type != "cuda":
        return  # no honest peak-memory counter on CPU: left NaN (train_state_MiB_* are exact counts instead)
    kinds = ["full", "lora"] + (["lora_peft"] if c.has_peft else [])
    for k in kinds:
        row[f"train_peak_MiB_{k}"] = _peak_mib(k, c.base, c.ad1, c.peft, c.peft_autocast, c.x, c.device)
    row["peak_mem_lora_over_full"] = _safe_div(row["train_peak_MiB_lora"], row["train_peak_MiB_full"])


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_config(cfg: BenchConfig, device, peft=None, quick: bool = False, cuda_graphs: bool = False,
               peft_autocast: bool = True, seed: int = 0, log=print) -> dict:
    """Measure one configuration; returns a row with every name in FIELDS (NaN where not measured)."""
    device = torch.device(device)
    row = {f: NAN for f in MEASURE_FIELDS + RATIO_FIELDS}
    cuda_graphs = bool(cuda_graphs and device.type == "cuda")
    row.update(config=cfg.name, kind=cfg.kind, d=cfg.d, layers=cfg.layers, batch=cfg.batch, seq=cfg.seq,
               tokens=cfg.tokens, dtype=str(cfg.dtype).replace("torch.", ""), r=R, alpha=ALPHA,
               targets=list(TARGETS), cuda_graphs=cuda_graphs)
    base, x = _build_base(cfg, device, seed)
    c = _Ctx(cfg, device, peft, quick, cuda_graphs, log, peft_autocast, base, x,
             _make_adapter(base, seed + 1), _make_adapter(base, seed + 2))
    with torch.no_grad():
        _phase_inference(c, row)
        _cleanup(device)
        _phase_merge(c, row)
        _cleanup(device)
    _phase_train(c, row)
    _cleanup(device)
    _phase_peak_memory(c, row)
    _cleanup(device)
    return row


def _interleaved_pairs(fns: dict, device: torch.device, rounds: int) -> dict[str, list[float]]:
    """Like _interleaved for state-changing pairs: each round runs merge then unmerge of each library."""
    libs = sorted({k.split("_", 1)[1] for k in fns})
    out = {k: [] for k in fns}
    for lib in libs:  # warm-up
        fns[f"merge_{lib}"]()
        fns[f"unmerge_{lib}"]()
    for i in range(rounds):
        order = libs[i % len(libs):] + libs[:i % len(libs)]
        for lib in order:
            for op in ("merge", "unmerge"):
                _sync(device)
                t0 = time.perf_counter()
                fns[f"{op}_{lib}"]()
                _sync(device)
                out[f"{op}_{lib}"].append(time.perf_counter() - t0)
    return out


# ---- the whole run, output -------------------------------------------------------------------------------
def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    return device.type


def run(device=None, quick: bool = False, configs=None, cuda_graphs: bool = False, use_peft: bool = True,
        peft_autocast: bool = True, log=print) -> list[dict]:
    """Benchmark every configuration on `device` (default: get_device()); returns the rows."""
    device = get_device(device)
    peft = _import_peft() if use_peft else None
    if peft is None:
        log("PEFT is not installed (pip install 'lora-edu[compare]'): measuring lora_edu alone."
            if use_peft else "PEFT comparison switched off: measuring lora_edu alone.")
    all_cfgs = get_configs(device, quick)
    if configs:
        wanted = [configs] if isinstance(configs, str) else list(configs)
        unknown = [c for c in wanted if c not in {c.name for c in all_cfgs}]
        if unknown:
            raise ValueError(f"configs: unknown {unknown}; choose from {[c.name for c in all_cfgs]}")
        all_cfgs = [c for c in all_cfgs if c.name in wanted]
    meta = {"device": device.type, "device_name": _device_name(device), "torch": torch.__version__,
            "peft": getattr(peft, "__version__", None),
            "peft_adapter_dtype": None if peft is None else ("float32" if peft_autocast else "base"),
            "python": platform.python_version(),
            "threads": torch.get_num_threads() if device.type == "cpu" else None, "quick": bool(quick),
            "date": datetime.date.today().isoformat()}
    log(f"peft_bench on {meta['device_name']} ({device.type}), torch {meta['torch']}, "
        f"peft {meta['peft']}, threads {meta['threads']}{', quick' if quick else ''}")
    if device.type == "cpu" and torch.get_num_threads() > 1:
        log("(on a busy or shared CPU, --threads 1 gives steadier ratios)")
    rows = []
    for cfg in all_cfgs:
        log(f"[{cfg.name}] d={cfg.d} × {cfg.layers} layers, {cfg.dtype}, {cfg.tokens} tokens")
        t0 = time.perf_counter()
        row = run_config(cfg, device, peft, quick=quick, cuda_graphs=cuda_graphs, peft_autocast=peft_autocast,
                         log=log)
        row.update(meta)
        rows.append({f: row[f] for f in FIELDS})
        log(f"  done in {time.perf_counter() - t0:.1f} s")
    return rows


TABLE = [
    ("inference (ms)", None),
    ("plain base", "infer_ms_base"), ("lora_edu unmerged", "infer_ms_ours_unmerged"),
    ("lora_edu merged", "infer_ms_ours_merged"), ("lora_edu remove_lora(merge)", "infer_ms_ours_plain"),
    ("PEFT unmerged", "infer_ms_peft_unmerged"), ("PEFT merged", "infer_ms_peft_merged"),
    ("lora_edu unmerged, CUDA graph", "infer_ms_ours_unmerged_graph"),
    ("ratios", None),
    ("merged / base", "merged_over_base"), ("remove_lora / base", "plain_over_base"),
    ("unmerged / base", "unmerged_over_base"), ("PEFT unmerged / base", "peft_unmerged_over_base"),
    ("PEFT merged / base", "peft_merged_over_base"), ("ours / PEFT, unmerged", "ours_over_peft_unmerged"),
    ("ours / PEFT, merged", "ours_over_peft_merged"), ("ours graph / PEFT, unmerged", "graph_ours_over_peft_unmerged"),
    ("merge, unmerge, switch (ms)", None),
    ("merge all, lora_edu", "merge_ms_ours"), ("merge all, PEFT", "merge_ms_peft"),
    ("merge ours / PEFT", "merge_ours_over_peft"),
    ("switch task, lora_edu", "switch_ms_ours"), ("switch task, PEFT", "switch_ms_peft"),
    ("switch ours / PEFT", "switch_ours_over_peft"),
    ("drift of W0 (max abs change)", None),
    ("1 cycle, lora_edu", "drift_1_ours"), ("100 cycles, lora_edu", "drift_100_ours"),
    ("100 cycles, keep_original", "drift_100_ours_exact"), ("1 cycle, PEFT", "drift_1_peft"),
    ("100 cycles, PEFT", "drift_100_peft"), ("drift ours / PEFT (100)", "drift_ours_over_peft"),
    ("training step (AdamW)", None),
    ("full fine-tuning, ms", "train_ms_full"), ("LoRA lora_edu, ms", "train_ms_lora"),
    ("LoRA PEFT, ms", "train_ms_lora_peft"), ("LoRA / full, time", "train_lora_over_full"),
    ("peak MiB full", "train_peak_MiB_full"), ("peak MiB LoRA", "train_peak_MiB_lora"),
    ("LoRA / full, peak memory", "peak_mem_lora_over_full"),
    ("LoRA / full, params+grads+state", "state_mem_lora_over_full"),
    ("trainable full", "trainable_full"), ("trainable LoRA", "trainable_lora"),
    ("checks (max abs difference)", None),
    ("outputs ours vs PEFT, unmerged", "maxabs_unmerged_ours_vs_peft"),
    ("outputs ours vs PEFT, merged", "maxabs_merged_ours_vs_peft"),
    ("merged W ours vs PEFT", "maxabs_merged_weights_ours_vs_peft"),
]


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, int):
        return f"{v:,}"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 0.01:
        return f"{v:.3f}"
    return f"{v:.2e}"


def format_table(rows: list[dict]) -> str:
    """The rows as a text table: one column per configuration, one line per measurement."""
    w0 = max(len(label) for label, _ in TABLE) + 2
    cols = [max(12, len(r["config"]) + 2) for r in rows]
    lines = ["".ljust(w0) + "".join(r["config"].rjust(c) for r, c in zip(rows, cols))]
    for label, key in TABLE:
        if key is None:
            lines.append(f"-- {label} " + "-" * max(0, w0 + sum(cols) - len(label) - 4))
        elif any(not _is_nan(r.get(key)) for r in rows):
            lines.append(label.ljust(w0) + "".join(_fmt(r.get(key)).rjust(c) for r, c in zip(rows, cols)))
    return "\n".join(lines)


def _is_nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


TARGETS_CHECK = [
    # (label, field, comparison, bound, only these configs or None, only this device type or None)
    ("merged / base ≤ 1.01", "merged_over_base", "<=", 1.01, None, None),
    ("lora_edu unmerged ≤ PEFT unmerged", "ours_over_peft_unmerged", "<=", 1.0, None, None),
    ("merge time ≤ PEFT", "merge_ours_over_peft", "<=", 1.0, None, None),
    ("bf16 drift (100 cycles) < PEFT", "drift_ours_over_peft", "<", 1.0, "bfloat16", None),
    ("exact restore drift = 0", "drift_100_ours_exact", "==", 0.0, None, None),
    ("unmerged ≤ 0.8× PEFT at d=128 (GPU)", "ours_over_peft_unmerged", "<=", 0.8, ("d128x4-fp32",), "cuda"),
    ("CUDA graph ≤ 0.8× PEFT at d=128 (GPU)", "graph_ours_over_peft_unmerged", "<=", 0.8, ("d128x4-fp32",), "cuda"),
    ("unmerged / base ≤ 1.10 at d=1024 (GPU)", "unmerged_over_base", "<=", 1.10, ("d1024x8-bf16",), "cuda"),
    ("unmerged / base ≤ 1.03 at d=4096 (GPU)", "unmerged_over_base", "<=", 1.03, ("d4096x4-bf16",), "cuda"),
    ("LoRA step ≤ 0.7× full at d=4096 (GPU)", "train_lora_over_full", "<=", 0.7, ("d4096x4-bf16",), "cuda"),
    ("LoRA peak memory ≤ 0.6× full at d=4096 (GPU)", "peak_mem_lora_over_full", "<=", 0.6, ("d4096x4-bf16",),
     "cuda"),
]
_CMP = {"<=": lambda v, b: v <= b, "<": lambda v, b: v < b, "==": lambda v, b: v == b}


def format_targets(rows: list[dict]) -> str:
    """One line per target of the issue that applies to these rows: each configuration's value, ok or MISSED."""
    out = []
    for label, key, cmp, bound, only, device in TARGETS_CHECK:
        if device is not None and not any(r.get("device") == device for r in rows):
            continue
        if "PEFT" in label and all(r.get("peft") is None for r in rows):
            out.append(f"{label}: not measured (no PEFT)")
            continue
        cells = []
        for r in rows:
            if only == "bfloat16" and r.get("dtype") != "bfloat16":
                continue
            if isinstance(only, tuple) and r["config"] not in only:
                continue
            v = r.get(key)
            if _is_nan(v):
                cells.append(f"{r['config']} —")
            else:
                cells.append(f"{r['config']} {_fmt(v)} {'ok' if _CMP[cmp](v, bound) else 'MISSED'}")
        if cells:
            out.append(f"{label}: " + ", ".join(cells))
    return "\n".join(out)


def format_markdown(rows: list[dict]) -> str:
    """The table as GitHub markdown (what benchmarks/README.md shows), sections in bold."""
    lines = ["| | " + " | ".join(r["config"] for r in rows) + " |", "|---" * (len(rows) + 1) + "|"]
    for label, key in TABLE:
        if key is None:
            lines.append(f"| **{label}** |" + " |" * len(rows))
        elif any(not _is_nan(r.get(key)) for r in rows):
            lines.append(f"| {label} | " + " | ".join(_fmt(r.get(key)) for r in rows) + " |")
    return "\n".join(lines)


def write_jsonl(rows: list[dict], path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "device"


def default_results_path(rows: list[dict]) -> Path:
    r = rows[0]
    name = "cpu" if r["device"] == "cpu" else _slug(r["device_name"])
    return RESULTS_DIR / f"{name}_{r['date']}.jsonl"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/peft_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats (≈30 s smoke run)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    p.add_argument("--configs", default=None, help="comma-separated subset of configuration names")
    p.add_argument("--json", dest="json_path", default=None, help="write the rows as JSON lines to this path")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/<device>_<date>.jsonl")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cuda-graphs", action="store_true", help="also time unmerged forwards captured in CUDA graphs")
    p.add_argument("--markdown", action="store_true", help="also print the table as markdown")
    p.add_argument("--no-peft", action="store_true", help="measure lora_edu alone even if PEFT is installed")
    p.add_argument("--peft-base-dtype", action="store_true",
                   help="keep PEFT's adapters in the base dtype (autocast_adapter_dtype=False) instead of its "
                        "default float32 adapters for bf16/fp16 models")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads <= 0:
            p.error("--threads must be a positive int")
        torch.set_num_threads(args.threads)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()] if args.configs else None
    t0 = time.perf_counter()
    rows = run(args.device, quick=args.quick, configs=configs, cuda_graphs=args.cuda_graphs,
               use_peft=not args.no_peft, peft_autocast=not args.peft_base_dtype,
               log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(rows))
    print()
    print(format_targets(rows))
    if args.markdown:
        print()
        print(format_markdown(rows))
    print(f"\n{len(rows)} configurations in {time.perf_counter() - t0:.0f} s. Latency ratios are medians of "
          "per-round ratios; absolute times hold only for this device and load.")
    if args.quick:
        print("--quick is a smoke run: small sizes, few repeats, noisy ratios; run without it to measure.")
    for path in ([args.json_path] if args.json_path else []) + ([default_results_path(rows)] if args.save else []):
        print(f"wrote {write_jsonl(rows, path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Notebook 06 (merge, unmerge, latency): switching, multi-adapter batches, benchmark results and figures."""

from __future__ import annotations

import copy
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..adapters import Adapter, merge_adapter, unmerge_adapter
from ..inject import lora_layers
from ..tasks import get_task
from .common import (  # noqa: F401 — the drift readings are 06's lesson; they live in common for 08 too
    COLORS,
    DTYPES,
    GROWTH_TOL,
    RANDOM_WALK,
    SYSTEMATIC,
    adapter_list,
    check_int,
    check_model,
    check_plain,
    device_of,
    drift_directions,
    drift_reading,
    figure,
    growth_exponent,
    growth_kind,
    latency_comparison,
    plateau_start,
    results_dir,
    spread,
    sync,
)


def switch_adapter(model: nn.Module, current: Adapter | None, new: Adapter | None) -> None:
    """§4.1's task switch on a plain (merged) model: subtract the current BA, add the new B'A' — in place."""
    check_model(model)
    for name, a in (("current", current), ("new", new)):
        if a is not None and not isinstance(a, Adapter):
            raise TypeError(f"{name} must be a lora_edu.Adapter or None, got {type(a).__name__}")
    if current is not None:
        unmerge_adapter(model, current)
    if new is not None:
        try:
            merge_adapter(model, new)
        except (ValueError, TypeError):
            if current is not None:
                merge_adapter(model, current)  # put the model back as it was
            raise


def switch_vs_reload(base: nn.Module, adapters: dict, repeats: int = 20) -> dict:
    """Cost of switching task by unmerge/merge versus loading a full fine-tuned copy of the weights from disk.

    For each adapter a full merged checkpoint is written to a temporary folder (what you would store per task
    without LoRA). Returns median seconds of one switch and of one reload (safetensors read +
    load_state_dict), and the bytes on disk of one adapter and of one full checkpoint.
    """
    check_model(base)
    if not isinstance(adapters, dict) or len(adapters) < 2:
        raise ValueError("adapters must be a dict {name: Adapter} with at least two adapters")
    for k, a in adapters.items():
        if not isinstance(a, Adapter):
            raise TypeError(f"adapters[{k!r}] must be a lora_edu.Adapter, got {type(a).__name__}")
    check_int(repeats, "repeats")
    from safetensors.torch import load_file, save_file

    dev = device_of(base)
    adapters = {k: a.to(device=dev) for k, a in adapters.items()}
    names = list(adapters)
    model = copy.deepcopy(base)
    switch_times, reload_times = [], []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for k, a in adapters.items():
            merge_adapter(model, a)
            save_file({n: t.detach().cpu().contiguous() for n, t in model.state_dict().items()},
                      str(d / f"{k}.safetensors"))
            unmerge_adapter(model, a)
            a.save(d / f"adapter_{k}")
        current = None
        for i in range(repeats + 1):
            new = adapters[names[i % len(names)]]
            sync(dev)
            t0 = time.perf_counter()
            switch_adapter(model, current, new)
            sync(dev)
            if current is not None:
                switch_times.append(time.perf_counter() - t0)
            current = new
        for i in range(repeats):
            path = d / f"{names[i % len(names)]}.safetensors"
            sync(dev)
            t0 = time.perf_counter()
            model.load_state_dict(load_file(str(path), device=str(dev)))
            sync(dev)
            reload_times.append(time.perf_counter() - t0)
        full_bytes = (d / f"{names[0]}.safetensors").stat().st_size
        adapter_bytes = sum(f.stat().st_size for f in (d / f"adapter_{names[0]}").iterdir())
    return {"switch_s": statistics.median(switch_times), "reload_s": statistics.median(reload_times),
            "adapter_bytes": adapter_bytes, "full_bytes": full_bytes}


# ---------------------------------------------------------------------------------------------------------- latency
def latency_rounds(base: nn.Module, adapter: Adapter, batch_sizes=(1, 16, 64), rounds: int = 5, repeats: int = 10,
                   task="plus3") -> list[dict]:
    """`rounds` independent runs of common.latency_comparison (each interleaves base, merged and unmerged calls).

    A model's time in one round is the 10th percentile of its `repeats` calls: background load only ever adds
    time, so the fastest calls are the least disturbed estimate. Row per batch size: batch, tokens, the median over
    rounds of each model's time (ms), and the per-round ratios ``merged_ratios`` / ``unmerged_ratios`` (model /
    base). The spread of merged/base over rounds is what timing noise alone looks like: the merged model *is* the
    base architecture.
    """
    check_int(rounds, "rounds")
    runs = [latency_comparison(base, adapter, batch_sizes, repeats=repeats, task=task) for _ in range(rounds)]
    out = []
    for i, b in enumerate(runs[0]):
        rs = [run[i] for run in runs]
        row = {"batch": b["batch"], "tokens": b["tokens"]}
        for k in ("base", "merged", "unmerged"):
            row[f"{k}_ms"] = statistics.median(r[f"{k}_p10_ms"] for r in rs)
        row["merged_ratios"] = [r["merged_p10_ms"] / r["base_p10_ms"] for r in rs]
        row["unmerged_ratios"] = [r["unmerged_p10_ms"] / r["base_p10_ms"] for r in rs]
        row["merged_over_base"] = statistics.median(row["merged_ratios"])
        row["unmerged_over_base"] = statistics.median(row["unmerged_ratios"])
        out.append(row)
    return out


NEGLIGIBLE = 0.05  # a median latency ratio within 5 % of 1 is called "the same cost"


def latency_verdict(ratios, negligible: float = NEGLIGIBLE) -> str:
    """"slower" when every round's ratio (model / base) is above 1, "faster" when every one is below 1 (and the
    median is more than `negligible` away from 1), else "same within noise"."""
    r = [float(x) for x in ratios]
    if not r or any(not math.isfinite(x) or x <= 0 for x in r):
        raise ValueError(f"ratios must be a non-empty list of positive numbers, got {ratios!r}")
    if abs(statistics.median(r) - 1) <= negligible:
        return "same within noise"
    if min(r) > 1:
        return "slower"
    if max(r) < 1:
        return "faster"
    return "same within noise"


def latency_sentences(row: dict) -> dict:
    """The sentences section 3 prints for one batch size, chosen by the numbers (see latency_verdict)."""
    b = row["batch"]
    m, u = row["merged_ratios"], row["unmerged_ratios"]
    vm, vu = latency_verdict(m), latency_verdict(u)
    def med(v):  # the median round, as in the table above and the verdict, with the range of the rounds
        v = sorted(v)
        mid = statistics.median(v)
        return f"median {mid:.2f}" + (f" [{v[0]:.2f}–{v[-1]:.2f}] over {len(v)}" if len(v) > 1 else "")

    sm, su = med(m), med(u)
    rounds = "rounds" if len(m) > 1 else "(one round)"
    return {
        "merged_same": vm == "same within noise",
        "merged_said": f"batch {b}: merged costs what base costs, within timing noise — merged/base {sm} {rounds}.",
        "merged_otherwise": f"batch {b}: merged/base {sm} — {vm} than base on every round, although merged is the "
                            "base architecture with other numbers in two matrices: this is the machine (background "
                            "load, caches), not the merge. Rerun on a quiet machine.",
        "unmerged_pays": vu == "slower",
        "unmerged_said": f"batch {b}: the unmerged model pays for its extra matmuls — unmerged/base {su}, above 1 on "
                         "every round.",
        "unmerged_otherwise": f"batch {b}: unmerged/base {su} — "
                              + ("the same as base within timing noise: the extra r-wide matmuls are lost in the "
                                 "noise here (the merged model's spread above shows how large the noise is)."
                                 if vu == "same within noise" else
                                 "faster than base on every round, which the extra work cannot cause: timing "
                                 "noise on a loaded machine."),
    }


def plot_latency_rounds(rows: list[dict], device: str = ""):
    """Left: median ms per model and batch (log scale). Right: each round's merged/base and unmerged/base ratio."""
    if not rows:
        raise ValueError("rows must not be empty")
    fig, (ax, bx) = figure(2, 1, width=4.6, height=3.4)
    w = 0.26
    for j, k in enumerate(("base", "merged", "unmerged")):
        ax.bar([i + (j - 1) * w for i in range(len(rows))], [r[f"{k}_ms"] for r in rows], w, label=k,
               color=COLORS[k])
    ax.set_xticks(range(len(rows)), [f"batch {r['batch']}" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("forward time (ms, log)")
    ax.legend(fontsize=8)
    ax.set_title(f"Latency{' on ' + device if device else ''}", fontsize=10)
    for j, k in enumerate(("merged", "unmerged")):
        for i, r in enumerate(rows):
            ys = r[f"{k}_ratios"]
            bx.plot([i + (j - 0.5) * 0.3] * len(ys), ys, "o", color=COLORS[k], alpha=0.7, ms=5,
                    label=f"{k} / base (one dot per round)" if i == 0 else None)
    bx.axhline(1.0, color="black", lw=0.8, ls="--")
    bx.set_xticks(range(len(rows)), [f"batch {r['batch']}" for r in rows])
    bx.set_ylabel("time / base time")
    bx.legend(fontsize=8)
    bx.set_title("Ratio to base, every round: the spread is the noise", fontsize=10)
    return fig


class _MultiLoRALinear(nn.Module):
    """A frozen Linear plus one (A, B, scaling) per adapter; row i of the batch uses adapter ids[i] (−1 = none)."""

    def __init__(self, base: nn.Linear, pairs: list, scalings: list[float], owner: MultiAdapterModel):
        super().__init__()
        self.base = base
        d, k = base.weight.shape
        r_max = max([A.shape[0] for A, _ in pairs if A is not None] or [1])
        As = torch.zeros(len(pairs) + 1, r_max, k, dtype=base.weight.dtype, device=base.weight.device)
        Bs = torch.zeros(len(pairs) + 1, d, r_max, dtype=base.weight.dtype, device=base.weight.device)
        for i, (A, B) in enumerate(pairs):
            if A is not None:  # zero padding up to r_max leaves B @ A unchanged
                As[i, : A.shape[0]] = A
                Bs[i, :, : B.shape[1]] = B
        self.register_buffer("As", As)  # last slot: all zeros = "no adapter"
        self.register_buffer("Bs", Bs)
        self.register_buffer("scalings", torch.tensor(list(scalings) + [0.0], dtype=base.weight.dtype,
                                                      device=base.weight.device))
        self._owner = [owner]  # a list, so the parent is not registered as a child module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self._owner[0]._ids
        h = self.base(x)
        if ids is None:
            return h
        A, B, s = self.As[ids], self.Bs[ids], self.scalings[ids]  # (b, r, k), (b, d, r), (b,)
        z = torch.bmm(x, A.transpose(1, 2))  # (b, T, r)
        return h + torch.bmm(z, B.transpose(1, 2)) * s[:, None, None]


class MultiAdapterModel(nn.Module):
    """Serve a batch whose rows use different adapters in one unmerged forward pass.

    The paper (§4.2) notes that once BA is merged into W, batching inputs of different tasks is not
    straightforward. Keeping the adapters unmerged lifts it: every adapted Linear computes W0·x once for
    the whole batch and adds each row's own B_i·A_i·x. Works on a copy of the plain `model`; adapters may
    have different ranks and targets. Call ``model(tokens, adapter_ids)`` with one id per row (an adapter
    name or index, or None for the bare model), or set ``use(adapter_ids)`` before e.g. ``le.generate``.
    """

    def __init__(self, model: nn.Module, adapters: dict):
        super().__init__()
        check_model(model)
        if lora_layers(model):
            raise ValueError("model must be a plain model without LoRA layers")
        if not isinstance(adapters, dict) or not adapters:
            raise ValueError("adapters must be a non-empty dict {name: Adapter}")
        for k, a in adapters.items():
            if not isinstance(a, Adapter):
                raise TypeError(f"adapters[{k!r}] must be a lora_edu.Adapter, got {type(a).__name__}")
        self.names = list(adapters)
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        modules = dict(self.model.named_modules())
        layer_names = sorted({n for a in adapters.values() for n in a.tensors})
        for n in layer_names:
            lin = modules.get(n)
            if not isinstance(lin, nn.Linear):
                raise ValueError(f"adapter layer {n!r} is not an nn.Linear in this model")
            pairs = []
            for a in adapters.values():
                if n in a.tensors:
                    A, B = a.tensors[n]
                    if (B.shape[0], A.shape[1]) != tuple(lin.weight.shape):
                        raise ValueError(f"adapter ΔW for {n!r} is {B.shape[0]}×{A.shape[1]}, but the weight "
                                         f"is {tuple(lin.weight.shape)}")
                    pairs.append((A.to(lin.weight), B.to(lin.weight)))
                else:
                    pairs.append((None, None))
            parent_name, _, child = n.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, _MultiLoRALinear(lin, pairs, [a.scaling for a in adapters.values()], self))
        self._ids: torch.Tensor | None = None

    def _resolve(self, adapter_ids, batch: int) -> torch.Tensor:
        ids = list(adapter_ids)
        if len(ids) != batch:
            raise ValueError(f"adapter_ids must give one adapter per row: {batch} rows, got {len(ids)} ids")
        out = []
        for a in ids:
            if a is None:
                out.append(len(self.names))
            elif isinstance(a, str):
                if a not in self.names:
                    raise ValueError(f"adapter_ids: unknown adapter {a!r}; known: {self.names}")
                out.append(self.names.index(a))
            elif isinstance(a, int) and not isinstance(a, bool):
                if not 0 <= a < len(self.names):
                    raise ValueError(f"adapter_ids: index {a} out of range 0..{len(self.names) - 1}")
                out.append(a)
            else:
                raise ValueError(f"adapter_ids must hold adapter names, indices or None, got {a!r}")
        return torch.tensor(out, device=device_of(self.model))

    def use(self, adapter_ids) -> MultiAdapterModel:
        """Fix the per-row adapters for following calls (e.g. inside le.generate); None = bare model."""
        self._ids_spec = None if adapter_ids is None else list(adapter_ids)
        return self

    def forward(self, tokens: torch.Tensor, adapter_ids=None) -> torch.Tensor:
        spec = adapter_ids if adapter_ids is not None else getattr(self, "_ids_spec", None)
        self._ids = None if spec is None else self._resolve(spec, tokens.shape[0])
        try:
            return self.model(tokens)
        finally:
            self._ids = None


@torch.no_grad()
def multi_adapter_max_diff(model: nn.Module, adapters: dict, tokens: torch.Tensor, adapter_ids) -> float:
    """max |mixed-batch logits − per-row single-adapter logits|, the single-adapter model being merged."""
    multi = MultiAdapterModel(model, adapters)
    mixed = multi(tokens, adapter_ids)
    worst = 0.0
    for i, a in enumerate(adapter_ids):
        single = copy.deepcopy(model).eval()
        if a is not None:
            merge_adapter(single, adapters[a if isinstance(a, str) else multi.names[a]])
        ref = single(tokens[i: i + 1])
        worst = max(worst, float((mixed[i: i + 1].float() - ref.float()).abs().max()))
    return worst


def mixed_tokens(tasks, seed: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, inputs) for one example per entry of `tasks`: row i is a whole example of tasks[i] (its own prompt)."""
    tasks = [get_task(t) for t in tasks]
    if not tasks:
        raise ValueError("tasks must not be empty")
    x = tasks[0].sample_x(len(tasks), torch.Generator().manual_seed(seed))
    inputs = torch.cat([t.make(x[i: i + 1])[0] for i, t in enumerate(tasks)])
    return x, inputs if device is None else inputs.to(device)


@torch.no_grad()
def generate_mixed(multi: MultiAdapterModel, x: torch.Tensor, tasks, adapter_ids=None) -> torch.Tensor:
    """Greedy answers for a batch whose row i asks task tasks[i] with adapter adapter_ids[i] (default: the task's
    name), all rows in the same forward passes (le.generate takes one task for the whole batch)."""
    if not isinstance(multi, MultiAdapterModel):
        raise TypeError(f"multi must be a MultiAdapterModel, got {type(multi).__name__}")
    tasks = [get_task(t) for t in tasks]
    if len(tasks) != x.shape[0]:
        raise ValueError(f"tasks must give one task per row: {x.shape[0]} rows, got {len(tasks)}")
    ids = [t.name for t in tasks] if adapter_ids is None else list(adapter_ids)
    seq = torch.cat([t.prefix(x[i: i + 1].cpu()) for i, t in enumerate(tasks)]).to(device_of(multi.model))
    for _ in range(x.shape[1]):
        seq = torch.cat([seq, multi(seq, ids)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq[:, -x.shape[1]:].cpu()


def plot_latency(rows: list[dict], device: str = "", title: str | None = None):
    """Median forward latency (with 10–90 % whiskers) of base, merged and unmerged models per batch size."""
    if not rows:
        raise ValueError("rows must not be empty")
    fig, ax = figure(1, 1, width=7, height=3.5)
    kinds = ("base", "merged", "unmerged")
    w = 0.26
    for j, k in enumerate(kinds):
        xs = [i + (j - 1) * w for i in range(len(rows))]
        med = [r[f"{k}_ms"] for r in rows]
        lo = [r[f"{k}_ms"] - r[f"{k}_p10_ms"] for r in rows]
        hi = [r[f"{k}_p90_ms"] - r[f"{k}_ms"] for r in rows]
        ax.bar(xs, med, w, yerr=[lo, hi], capsize=3, label=k, color=COLORS[k])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"batch {r['batch']}\n({r['tokens']} tokens)" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("forward time (ms, log)")
    ax.legend()
    ax.set_title(title or f"Inference latency{' on ' + device if device else ''}")
    return fig


def plot_drift(rows: list[dict], title: str = "Weight drift after repeated merge → unmerge switches",
               guides: bool = True):
    """max |W − W0| against the number of switches, one line per dtype; exact restore drawn at the floor; with
    `guides`, gray lines ∝ n^0.5 (random walk) and ∝ n (systematic) from the largest first-switch drift."""
    if not rows:
        raise ValueError("rows must not be empty")
    fig, ax = figure(1, 1, width=8.5, height=3.6)
    nonzero = [r["max_abs"] for r in rows if r["max_abs"] > 0]
    floor = min(nonzero) / 10 if nonzero else 1e-10
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["strategy"] == "keep_original"), []).append(r)
    for (dt, exact), rs in groups.items():
        ys = [max(r["max_abs"], floor) for r in rs]
        ax.plot([r["switches"] for r in rs], ys, "s--" if exact else "o-", color=COLORS.get(dt),
                alpha=0.6 if exact else 1.0, label=f"{dt}{' + exact restore (= 0)' if exact else ''}")
    ax.axhline(floor, color="gray", lw=0.6, ls=":")
    ax.text(1, floor * 1.3, "exactly zero", fontsize=8, color="gray")
    if guides:  # the two textbook growth laws, from the first point of the largest drift
        first = [r for r in rows if r["max_abs"] > 0 and r["strategy"] != "keep_original"]
        if first:
            r0 = max(first, key=lambda r: (-r["switches"], r["max_abs"]))
            n = sorted({r["switches"] for r in rows if r["switches"] >= r0["switches"]})
            for p, ls, label in ((0.5, ":", "∝ n^0.5 (random walk)"), (1.0, "-.", "∝ n (systematic)")):
                ax.plot(n, [r0["max_abs"] * (k / r0["switches"]) ** p for k in n], ls, color="gray", lw=1,
                        label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of merge → unmerge switches")
    ax.set_ylabel("max |W − W0|")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title(title)
    return fig


def latest_results(device=None, directory=None) -> list[dict]:
    """The rows of the newest results file under benchmarks/results/ ([] if there is none).

    device: None (any), or a string matched (case-insensitively) against the file name and the rows'
    ``device`` / ``device_name`` fields, e.g. "cpu", "cuda", "h200". Newest = latest ``date`` in the
    rows, then the file's modification time.
    """
    if device is not None and not isinstance(device, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', or None; got {type(device).__name__}")
    directory = results_dir() if directory is None else Path(directory)
    best, best_key = [], None
    for path in sorted(directory.glob("*.jsonl")):  # the benchmark's JSON lines; other results are not its rows
        rows = []
        try:
            for line in path.read_text().splitlines():
                obj = json.loads(line) if line.strip() else None
                if isinstance(obj, dict) and "config" in obj:
                    rows.append(obj)
        except ValueError:  # not JSON lines (a hand-edited or foreign file): not a benchmark result
            continue
        if not rows:
            continue
        if device is not None:
            want = device.lower()
            hay = [path.name.lower(), str(rows[0].get("device", "")).lower(),
                   str(rows[0].get("device_name", "")).lower()]
            if not any(want in h for h in hay):
                continue
        key = (str(rows[0].get("date", "")), path.stat().st_mtime)
        if best_key is None or key > best_key:
            best, best_key = rows, key
    return best


PANELS = [
    ("Inference latency / plain base model", "× plain model (lower is better)", [
        ("lora_edu unmerged", "unmerged_over_base", "tab:blue"),
        ("lora_edu merged", "merged_over_base", "tab:cyan"),
        ("PEFT unmerged", "peft_unmerged_over_base", "tab:red"),
        ("PEFT merged", "peft_merged_over_base", "tab:orange"),
    ]),
    ("lora_edu / PEFT", "× PEFT (below 1: lora_edu better)", [
        ("unmerged latency", "ours_over_peft_unmerged", "tab:blue"),
        ("merge time", "merge_ours_over_peft", "tab:green"),
        ("task switch time", "switch_ours_over_peft", "tab:purple"),
        ("W0 drift, 100 cycles", "drift_ours_over_peft", "tab:gray"),
    ]),
    ("LoRA / full fine-tuning", "× full fine-tuning", [
        ("step time", "train_lora_over_full", "tab:blue"),
        ("peak memory", "peak_mem_lora_over_full", "tab:red"),
        ("params+grads+optimizer", "state_mem_lora_over_full", "tab:olive"),
    ]),
]


def _num(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def plot_results(rows, title: str | None = None):
    """Three panels of grouped bars, one group per configuration, a dashed line at 1.

    rows: a non-empty list of result dicts (``bench.run()`` or ``bench.latest_results()``).
    Ratios that were not measured (no PEFT, no CUDA peak memory) are left out. Returns the Figure.
    """
    if not isinstance(rows, (list, tuple)) or not all(isinstance(r, dict) for r in rows):
        raise TypeError("rows must be a list of result dicts from benchmarks/peft_bench.py")
    if not rows:
        raise ValueError("rows is empty: no benchmark results yet; run `python benchmarks/peft_bench.py --save`")
    missing = [r for r in rows if "config" not in r]
    if missing:
        raise ValueError("rows must come from benchmarks/peft_bench.py: a row has no 'config' field")
    from matplotlib.figure import Figure

    names = [str(r["config"]) for r in rows]
    fig = Figure(figsize=(4.6 * len(PANELS), 3.8), layout="constrained", dpi=90)
    axes = fig.subplots(1, len(PANELS))
    for ax, (panel_title, ylabel, series) in zip(axes, PANELS):
        shown = [(label, key, color) for label, key, color in series
                 if any(not math.isnan(_num(r.get(key))) for r in rows)]
        width = 0.8 / max(1, len(shown))
        for j, (label, key, color) in enumerate(shown):
            xs = [i + (j - (len(shown) - 1) / 2) * width for i in range(len(rows))]
            ys = [_num(r.get(key)) for r in rows]
            bars = ax.bar(xs, ys, width=width, label=label, color=color)
            ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.2f}" for y in ys], fontsize=6, rotation=90,
                         padding=2)
        top = max([1.0] + [_num(r.get(k)) for _, k, _ in shown for r in rows if not math.isnan(_num(r.get(k)))])
        ax.set_ylim(0, top * 1.55)
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(panel_title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        if shown:
            ax.legend(fontsize=7, loc="upper left", ncol=2)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="gray")
    first = rows[0]
    if title is None:
        peft = first.get("peft")
        title = (f"lora_edu vs PEFT {peft}" if peft else "lora_edu (PEFT not installed)") + \
            f" on {first.get('device_name', first.get('device', '?'))}, torch {first.get('torch', '?')}" + \
            (f", {first['date']}" if first.get("date") else "")
    fig.suptitle(title, fontsize=10)
    return fig

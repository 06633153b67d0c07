"""Measured experiments behind notebooks 04–06: parameter counts, fine-tune runs, Tables 5/6, latency, switching.

Pure compute (no matplotlib, no widgets): every function returns plain numbers, dicts or lists of dict
"rows", which `lora_edu.plots_transformer` draws and `format_table` prints. Everything runs on the
model's device; timing helpers synchronize CUDA before reading the clock.
"""

from __future__ import annotations

import copy
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .adapters import Adapter, extract_adapter, load_adapter, merge_adapter, unmerge_adapter
from .inject import _normalize_targets, add_lora, count_parameters, lora_layers, remove_lora
from .pretrained import load_pretrained
from .runtime import get_device, seed_everything
from .tasks import DOWNSTREAM_TASKS, get_task
from .train import evaluate, task_loss, train

__all__ = [
    "ATTENTION_TARGETS", "GPT3_175B", "PAPER_TABLE5", "PAPER_TABLE6", "PAPER_CLAIMS",
    "parameter_table", "parameter_groups", "lora_params_at_scale", "baseline_accuracy",
    "training_memory", "time_train_step", "checkpoint_bytes", "finetune",
    "budget_configs", "compare_targets", "rank_sweep",
    "time_forward", "max_output_diff", "latency_comparison",
    "switch_adapter", "switch_vs_reload", "merge_drift", "MultiAdapterModel", "multi_adapter_max_diff",
    "format_table", "target_label", "human_bytes",
]

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

# GPT-3 175B's shape (Brown et al. 2020, Table 2.1), used to scale our parameter arithmetic up.
GPT3_175B = {"d_model": 12288, "n_layer": 96, "d_ff": 4 * 12288, "vocab_size": 50257, "max_len": 2048}

# The paper's headline numbers (§4.2 and the abstract), quoted as the paper's.
PAPER_CLAIMS = {
    "trainable_ratio": 10_000, "checkpoint_full_bytes": 350e9, "checkpoint_lora_bytes": 35e6,
    "memory_ratio": 3.0, "train_vram_full_bytes": 1.2e12, "train_vram_lora_bytes": 350e9,
    "speedup": 43.1 / 32.5,
}

# §7.1 Table 5: GPT-3 175B, an 18M-parameter budget spent on different weight types.
PAPER_TABLE5 = [
    {"targets": ("q_proj",), "r": 8, "WikiSQL": 70.4, "MultiNLI": 91.0},
    {"targets": ("k_proj",), "r": 8, "WikiSQL": 70.0, "MultiNLI": 90.8},
    {"targets": ("v_proj",), "r": 8, "WikiSQL": 73.0, "MultiNLI": 91.0},
    {"targets": ("o_proj",), "r": 8, "WikiSQL": 73.2, "MultiNLI": 91.3},
    {"targets": ("q_proj", "k_proj"), "r": 4, "WikiSQL": 71.4, "MultiNLI": 91.3},
    {"targets": ("q_proj", "v_proj"), "r": 4, "WikiSQL": 73.7, "MultiNLI": 91.3},
    {"targets": ATTENTION_TARGETS, "r": 2, "WikiSQL": 73.7, "MultiNLI": 91.7},
]

# §7.2 Table 6: accuracy at r = 1, 2, 4, 8, 64.
PAPER_TABLE6 = {
    ("q_proj",): {"WikiSQL": (68.8, 69.6, 70.5, 70.4, 70.0), "MultiNLI": (90.7, 90.9, 91.1, 90.7, 90.7)},
    ("q_proj", "v_proj"): {"WikiSQL": (73.4, 73.3, 73.7, 73.8, 73.5),
                           "MultiNLI": (91.3, 91.4, 91.3, 91.6, 91.4)},
    ATTENTION_TARGETS: {"WikiSQL": (74.1, 73.7, 74.0, 74.0, 73.9), "MultiNLI": (91.2, 91.7, 91.7, 91.5, 91.4)},
}
PAPER_RANKS = (1, 2, 4, 8, 64)


# ---------------------------------------------------------------------------------------------
# small argument checks
def _pos_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


_targets_tuple = _normalize_targets


# ---------------------------------------------------------------------------------------------
# notebook 04: where the parameters live
def _group_of(name: str) -> str:
    if "attn." in name:
        return "attention"
    if "mlp." in name:
        return "mlp"
    if "emb" in name:
        return "embedding"
    if "ln" in name:
        return "layernorm"
    if "lm_head" in name:
        return "head"
    return "other"


def parameter_table(model: nn.Module) -> list[dict]:
    """One row per parameter tensor: name, group (attention/mlp/embedding/layernorm/head), shape, params."""
    _check_model(model)
    return [{"name": n, "group": _group_of(n), "shape": tuple(p.shape), "params": p.numel(),
             "trainable": p.requires_grad} for n, p in model.named_parameters()]


def parameter_groups(model: nn.Module) -> dict[str, int]:
    """{group: number of scalars}: how the model's parameters split between attention, MLP, embeddings, …"""
    out: dict[str, int] = {}
    for row in parameter_table(model):
        out[row["group"]] = out.get(row["group"], 0) + row["params"]
    return out


def lora_params_at_scale(d_model: int, n_layer: int, r: int, n_adapted: int = 2, d_ff: int | None = None,
                         vocab_size: int = 16, max_len: int = 32, bias: bool = True) -> dict:
    """Parameter arithmetic for a GPT-shaped model: total parameters, LoRA parameters, their ratio.

    LoRA on `n_adapted` d_model×d_model attention matrices per layer: |Θ| = 2·n_adapted·n_layer·d_model·r (§4.2).
    """
    for name, v in (("d_model", d_model), ("n_layer", n_layer), ("r", r), ("n_adapted", n_adapted),
                    ("vocab_size", vocab_size), ("max_len", max_len)):
        _pos_int(v, name)
    if n_adapted > 4:
        raise ValueError(f"n_adapted must be at most 4 (W_q, W_k, W_v, W_o), got {n_adapted}")
    if r > d_model:
        raise ValueError(f"r must be ≤ d_model = {d_model}, got {r}")
    d_ff = 4 * d_model if d_ff is None else _pos_int(d_ff, "d_ff")
    b = 1 if bias else 0
    attn = 4 * (d_model * d_model + b * d_model)
    mlp = 2 * d_model * d_ff + b * (d_ff + d_model)
    norms = 2 * 2 * d_model
    per_layer = attn + mlp + norms
    total = n_layer * per_layer + (vocab_size + max_len) * d_model + 2 * d_model + vocab_size * d_model
    lora = 2 * n_adapted * n_layer * d_model * r
    return {"total": total, "lora": lora, "ratio": total / lora}


def baseline_accuracy(model: nn.Module, tasks=DOWNSTREAM_TASKS, n_examples: int = 512,
                      metric: str = "token") -> dict[str, float]:
    """{task: accuracy} of `model` as it is, with no adaptation."""
    _check_model(model)
    if isinstance(tasks, str):
        tasks = (tasks,)
    return {get_task(t).name: evaluate(model, t, n_examples=n_examples, metric=metric) for t in tasks}


# ---------------------------------------------------------------------------------------------
# notebook 05: what a fine-tune costs
def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def training_memory(model: nn.Module, task="reverse", batch_size: int = 16) -> dict:
    """Bytes of the tensors one AdamW training step keeps, measured on a copy of `model`.

    weights (all parameters, frozen or not), gradients (trainable only) and optimizer state (AdamW's two
    moment tensors per trainable parameter; its scalar step counters are left out). Activations are not
    counted; on CUDA ``peak_bytes`` is the allocator's peak during the step, which does include them.
    """
    _check_model(model)
    _pos_int(batch_size, "batch_size")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dev = _device_of(m)
    opt = torch.optim.AdamW(params, lr=1e-3)
    inputs, targets = get_task(task).batch(batch_size, torch.Generator().manual_seed(0), dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
    task_loss(m, inputs, targets).backward()
    opt.step()
    out = {
        "weight_bytes": sum(_tensor_bytes(p) for p in m.parameters()),
        "grad_bytes": sum(_tensor_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer_bytes": sum(_tensor_bytes(t) for p in params for t in opt.state[p].values()
                               if torch.is_tensor(t) and t.shape == p.shape),
    }
    out["total_bytes"] = out["weight_bytes"] + out["grad_bytes"] + out["optimizer_bytes"]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        out["peak_bytes"] = torch.cuda.max_memory_allocated(dev) - start + out["weight_bytes"]
    return out


def time_train_step(model: nn.Module, task="reverse", batch_size: int = 64, steps: int = 20,
                    warmup: int = 3, lr: float = 1e-3) -> float:
    """Median wall-clock seconds of one AdamW training step (forward, backward, update) on a copy of `model`."""
    _check_model(model)
    _pos_int(batch_size, "batch_size")
    _pos_int(steps, "steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dev = _device_of(m)
    opt = torch.optim.AdamW(params, lr=lr)
    g = torch.Generator().manual_seed(0)
    inputs, targets = get_task(task).batch(batch_size, g, dev)
    times = []
    for i in range(warmup + steps):
        _sync(dev)
        t0 = time.perf_counter()
        loss = task_loss(m, inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def checkpoint_bytes(model: nn.Module) -> int:
    """Size on disk of what you must store for this fine-tune: the adapter files when `model` has LoRA
    layers (adapter_model.safetensors + adapter_config.json), else the full state dict as safetensors."""
    _check_model(model)
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        if lora_layers(model):
            extract_adapter(model).save(d)
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(Path(d) / "model.safetensors"))
        return sum(f.stat().st_size for f in Path(d).iterdir())


METHODS = ("lora", "full")


def finetune(task="reverse", method: str = "lora", targets=("q_proj", "v_proj"), r: int = 4,
             alpha: float | None = 8, steps: int = 300, lr: float | None = None, seed: int = 0,
             batch_size: int = 64, eval_examples: int = 512, device=None, progress: bool = True,
             model: nn.Module | None = None, measure: bool = True) -> tuple[nn.Module, dict]:
    """Fine-tune the pretrained toy (or a copy of `model`) on `task`; returns (model, results row).

    method "lora": LoRA(r, alpha) on `targets`, everything else frozen; "full": every parameter trains.
    lr defaults to 1e-2 for LoRA and 3e-3 (the pretraining lr) for full fine-tuning. The row holds: method,
    task, targets, r, alpha, steps, lr, seed, accuracy (token), trainable, total, train_seconds, step_ms (average over
    the run), and with ``measure`` also seq_accuracy, weight/grad/optimizer bytes and checkpoint_bytes.
    ``row["history"]`` is train()'s history (loss per step).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    task = get_task(task)
    _pos_int(steps, "steps")
    _pos_int(eval_examples, "eval_examples")
    if lr is None:
        lr = 1e-2 if method == "lora" else 3e-3
    if method == "lora":
        targets = _targets_tuple(targets)
    seed_everything(seed)
    if model is None:
        m = load_pretrained(device=device)
    else:
        _check_model(model)
        if lora_layers(model):
            raise ValueError("model already has LoRA layers; pass a plain model")
        m = copy.deepcopy(model)
        if device is not None:
            m = m.to(get_device(device))
        for p in m.parameters():
            p.requires_grad_(True)
    if method == "lora":
        add_lora(m, targets, r=r, alpha=alpha)
    else:
        for p in m.parameters():
            p.requires_grad_(True)
    trainable, total = count_parameters(m)
    label = f"{method} {task.name}" + (f" {'+'.join(t.split('_')[0] for t in targets)} r={r}"
                                       if method == "lora" else "")
    hist = train(m, task, steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress, desc=label,
                 eval_examples=eval_examples)
    row = {
        "method": method, "task": task.name, "targets": targets if method == "lora" else ("all",),
        "r": r if method == "lora" else None, "alpha": (m_alpha(m) if method == "lora" else None),
        "steps": steps, "lr": lr, "seed": seed,
        "accuracy": hist["accuracy"][-1],  # train() ends with evaluate(m, task, eval_examples)
        "trainable": trainable, "total": total, "train_seconds": hist["seconds"],
        "step_ms": 1000 * hist["seconds"] / steps, "final_loss": hist["loss"][-1], "history": hist,
    }
    if measure:
        row["seq_accuracy"] = evaluate(m, task, n_examples=eval_examples, metric="sequence")
        row.update(training_memory(m, task))
        row["checkpoint_bytes"] = checkpoint_bytes(m)
    m.eval()
    return m, row


def m_alpha(model: nn.Module) -> float:
    """The alpha of a model's LoRA layers (they share one)."""
    return next(iter(lora_layers(model).values())).alpha


def budget_configs(budget_rank: int = 8, types=ATTENTION_TARGETS) -> list[tuple[tuple[str, ...], int]]:
    """Table 5's layout: one type at r = budget_rank, pairs at r/2, all four at r/4 — equal parameter budgets."""
    _pos_int(budget_rank, "budget_rank")
    if budget_rank % 4:
        raise ValueError(f"budget_rank must be divisible by 4 so that every split is a whole rank, got {budget_rank}")
    types = _targets_tuple(types)
    if len(types) != 4:
        raise ValueError(f"types must name the four attention matrices, got {types!r}")
    q, k, v, o = types
    return ([((t,), budget_rank) for t in types]
            + [((q, k), budget_rank // 2), ((q, v), budget_rank // 2), (types, budget_rank // 4)])


def _paper5(targets) -> dict:
    for p in PAPER_TABLE5:
        if p["targets"] == tuple(targets):
            return {"paper_WikiSQL": p["WikiSQL"], "paper_MultiNLI": p["MultiNLI"]}
    return {}


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc)


def compare_targets(task="reverse", steps: int = 300, budget_rank: int = 8, alpha: float = 8, lr: float = 1e-2,
                    seed: int = 0, configs=None, device=None, progress: bool = True,
                    eval_examples: int = 512) -> list[dict]:
    """Table 5 analogue: the same trainable-parameter budget spent on different attention matrices.

    Each row: targets, r, trainable, accuracy, step_ms, final_loss, and the paper's WikiSQL/MultiNLI
    accuracy for that column where it has one.
    """
    configs = budget_configs(budget_rank) if configs is None else [(_targets_tuple(t), r) for t, r in configs]
    if not configs:
        raise ValueError("configs must not be empty")
    rows = []
    bar = _bar(len(configs), "Table 5 configs", progress)
    for targets, r in configs:
        _, row = finetune(task, "lora", targets, r, alpha, steps, lr, seed, device=device,
                          progress=False, measure=False, eval_examples=eval_examples)
        keep = ("targets", "r", "trainable", "accuracy", "step_ms", "final_loss")
        rows.append({k: row[k] for k in keep} | _paper5(targets))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return rows


def rank_sweep(task="reverse", ranks=PAPER_RANKS, target_sets=(("q_proj",), ("q_proj", "v_proj")),
               steps: int = 300, alpha: float = 8, lr: float = 1e-2, seeds=(0,), device=None,
               progress: bool = True, eval_examples: int = 512) -> list[dict]:
    """Table 6 analogue: accuracy for each rank and target set (alpha fixed, as the paper did).

    Every cell is trained once per seed in `seeds`. Each row: targets, r, trainable, accuracy (mean over
    seeds), acc_min, acc_max, accuracies (one per seed), and the paper's numbers for that cell if any.
    """
    ranks = tuple(ranks)
    if not ranks:
        raise ValueError("ranks must not be empty")
    for r in ranks:
        _pos_int(r, "ranks")
    target_sets = [_targets_tuple(t) for t in target_sets]
    if not target_sets:
        raise ValueError("target_sets must not be empty")
    if isinstance(seeds, int):
        seeds = (seeds,)
    seeds = tuple(seeds)
    if not seeds or any(isinstance(x, bool) or not isinstance(x, int) for x in seeds):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    rows = []
    bar = _bar(len(ranks) * len(target_sets) * len(seeds), "Table 6 runs", progress)
    for targets in target_sets:
        for r in ranks:
            accs = []
            for seed in seeds:
                _, row = finetune(task, "lora", targets, r, alpha, steps, lr, seed, device=device,
                                  progress=False, measure=False, eval_examples=eval_examples)
                accs.append(row["accuracy"])
                if bar is not None:
                    bar.update(1)
            out = {"targets": targets, "r": r, "trainable": row["trainable"], "accuracy": sum(accs) / len(accs),
                   "acc_min": min(accs), "acc_max": max(accs), "accuracies": accs}
            paper = PAPER_TABLE6.get(targets)
            if paper is not None and r in PAPER_RANKS:
                i = PAPER_RANKS.index(r)
                out |= {"paper_WikiSQL": paper["WikiSQL"][i], "paper_MultiNLI": paper["MultiNLI"][i]}
            rows.append(out)
    if bar is not None:
        bar.close()
    return rows


# ---------------------------------------------------------------------------------------------
# notebook 06: merging, latency, switching, precision, mixed batches
@torch.no_grad()
def time_forward(model: nn.Module, tokens: torch.Tensor, repeats: int = 30, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of `repeats` forward passes (after `warmup`), CUDA-synchronized; sorted ascending."""
    _check_model(model)
    _pos_int(repeats, "repeats")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    dev = tokens.device
    out = []
    for i in range(warmup + repeats):
        _sync(dev)
        t0 = time.perf_counter()
        model(tokens)
        _sync(dev)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return sorted(out)


@torch.no_grad()
def max_output_diff(model_a: nn.Module, model_b: nn.Module, tokens: torch.Tensor) -> float:
    """max |logits_a − logits_b| on the same tokens."""
    _check_model(model_a)
    _check_model(model_b)
    return float((model_a(tokens).float() - model_b(tokens).float()).abs().max())


def _example_tokens(task, batch_size: int, device, seed: int = 0) -> torch.Tensor:
    inputs, _ = get_task(task).batch(batch_size, torch.Generator().manual_seed(seed), device)
    return inputs


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated q-quantile of an ascending list (q = 0.5 is the median)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_comparison(base: nn.Module, adapter: Adapter, batch_sizes=(1, 16, 256), repeats: int = 30,
                       warmup: int = 3, task="reverse") -> list[dict]:
    """Forward latency of the base model, the merged model (W0 + BA as one matrix) and the unmerged LoRA model.

    `base` must be a plain model (it is copied, never changed). Measurements are interleaved round-robin so
    that background load hits all three alike. Row per batch size: batch, tokens, and for each model its
    median and 10th/90th-percentile milliseconds, plus unmerged/base and merged/base ratios.
    """
    _check_model(base)
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be a lora_edu.Adapter, got {type(adapter).__name__}")
    if lora_layers(base):
        raise ValueError("base must be a plain model without LoRA layers")
    batch_sizes = tuple(batch_sizes)
    if not batch_sizes:
        raise ValueError("batch_sizes must not be empty")
    for b in batch_sizes:
        _pos_int(b, "batch_sizes")
    _pos_int(repeats, "repeats")
    dev = _device_of(base)
    models = {"base": copy.deepcopy(base).eval(), "merged": copy.deepcopy(base).eval(),
              "unmerged": copy.deepcopy(base).eval()}
    merge_adapter(models["merged"], adapter.to(device=dev))
    load_adapter(models["unmerged"], adapter.to(device=dev))
    rows = []
    for b in batch_sizes:
        tokens = _example_tokens(task, b, dev)
        samples = {k: [] for k in models}
        for m in models.values():
            time_forward(m, tokens, repeats=1, warmup=warmup)
        for _ in range(repeats):
            for k, m in models.items():
                samples[k].extend(time_forward(m, tokens, repeats=1, warmup=0))
        row = {"batch": b, "tokens": b * tokens.shape[1]}
        for k, s in samples.items():
            s = sorted(s)
            row[f"{k}_ms"] = 1000 * statistics.median(s)
            row[f"{k}_p10_ms"] = 1000 * _percentile(s, 0.1)
            row[f"{k}_p90_ms"] = 1000 * _percentile(s, 0.9)
        row["unmerged_over_base"] = row["unmerged_ms"] / row["base_ms"]
        row["merged_over_base"] = row["merged_ms"] / row["base_ms"]
        rows.append(row)
    return rows


def switch_adapter(model: nn.Module, current: Adapter | None, new: Adapter | None) -> None:
    """§4.1's task switch on a plain (merged) model: subtract the current BA, add the new B'A' — in place."""
    _check_model(model)
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
    _check_model(base)
    if not isinstance(adapters, dict) or len(adapters) < 2:
        raise ValueError("adapters must be a dict {name: Adapter} with at least two adapters")
    for k, a in adapters.items():
        if not isinstance(a, Adapter):
            raise TypeError(f"adapters[{k!r}] must be a lora_edu.Adapter, got {type(a).__name__}")
    _pos_int(repeats, "repeats")
    from safetensors.torch import load_file, save_file

    dev = _device_of(base)
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
            _sync(dev)
            t0 = time.perf_counter()
            switch_adapter(model, current, new)
            _sync(dev)
            if current is not None:
                switch_times.append(time.perf_counter() - t0)
            current = new
        for i in range(repeats):
            path = d / f"{names[i % len(names)]}.safetensors"
            _sync(dev)
            t0 = time.perf_counter()
            model.load_state_dict(load_file(str(path), device=str(dev)))
            _sync(dev)
            reload_times.append(time.perf_counter() - t0)
        full_bytes = (d / f"{names[0]}.safetensors").stat().st_size
        adapter_bytes = sum(f.stat().st_size for f in (d / f"adapter_{names[0]}").iterdir())
    return {"switch_s": statistics.median(switch_times), "reload_s": statistics.median(reload_times),
            "adapter_bytes": adapter_bytes, "full_bytes": full_bytes}


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def merge_drift(base: nn.Module, adapters, dtype="bfloat16", checkpoints=(1, 10, 100, 1000),
                exact: bool = False, task=None, n_examples: int = 256) -> list[dict]:
    """How far the base weights wander after n merge→unmerge switches, cycling through `adapters`.

    A copy of `base` is cast to `dtype`; each switch loads the next adapter into LoRA layers, merges it
    (W ← W0 + BA, rounded to dtype) and unmerges it (W ← W − BA, rounded again). With ``exact=True`` the
    merge keeps a copy of W0 (``merge(keep_original=True)``) and unmerge restores it bit for bit.
    Row per checkpoint: dtype, exact, switches, max_abs (max |W − W0| over adapted weights) and
    rel_fro (‖W − W0‖_F / ‖W0‖_F); with `task`, also the accuracy on it of the drifted base (run in float32).
    """
    _check_model(base)
    if lora_layers(base):
        raise ValueError("base must be a plain model without LoRA layers")
    if isinstance(adapters, Adapter):
        adapters = [adapters]
    adapters = list(adapters.values()) if isinstance(adapters, dict) else list(adapters)
    if not adapters or not all(isinstance(a, Adapter) for a in adapters):
        raise ValueError("adapters must be one Adapter or a non-empty list/dict of Adapters")
    first = adapters[0]
    for a in adapters[1:]:
        if (a.r, float(a.alpha), a.rslora, sorted(a.tensors)) != (first.r, float(first.alpha), first.rslora,
                                                                   sorted(first.tensors)):
            raise ValueError("all adapters must share r, alpha, rslora and layers to be switched in one model")
    if isinstance(dtype, torch.dtype):
        dtype = next((k for k, v in DTYPES.items() if v == dtype), str(dtype))
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if not isinstance(exact, bool):
        raise TypeError(f"exact must be a bool, got {type(exact).__name__}")
    if task is not None:
        task = get_task(task)
    _pos_int(n_examples, "n_examples")
    checkpoints = tuple(checkpoints)
    if not checkpoints or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in checkpoints) \
            or list(checkpoints) != sorted(set(checkpoints)):
        raise ValueError(f"checkpoints must be increasing positive ints, got {checkpoints!r}")
    dt = DTYPES[dtype]
    dev = _device_of(base)
    model = copy.deepcopy(base).to(dtype=dt)
    adapters = [a.to(device=dev, dtype=dt) for a in adapters]
    load_adapter(model, adapters[0])
    layers = lora_layers(model)
    W0 = {n: m.base.weight.detach().clone() for n, m in layers.items()}
    rows = []
    n = 0
    for c in checkpoints:
        while n < c:  # the LoRALinear merge/unmerge, called directly to keep 1000s of switches quick
            a = adapters[n % len(adapters)]
            with torch.no_grad():
                for name, m in layers.items():
                    A, B = a.tensors[name]
                    m.A.copy_(A)
                    m.B.copy_(B)
                    m.merge(keep_original=exact)
                    m.unmerge()
            n += 1
        diffs = [(m.base.weight.float() - W0[name].float()) for name, m in layers.items()]
        max_abs = max(float(x.abs().max()) for x in diffs)
        num = math.sqrt(sum(float(x.pow(2).sum()) for x in diffs))
        den = math.sqrt(sum(float(W0[name].float().pow(2).sum()) for name in layers))
        row = {"dtype": dtype, "exact": exact, "switches": c, "max_abs": max_abs, "rel_fro": num / den}
        if task is not None:
            plain = copy.deepcopy(model)
            remove_lora(plain, merge=False)
            row["accuracy"] = evaluate(plain.float(), task, n_examples=n_examples)
        rows.append(row)
    return rows


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
        _check_model(model)
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
        return torch.tensor(out, device=_device_of(self.model))

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


# ---------------------------------------------------------------------------------------------
def target_label(targets) -> str:
    """("q_proj", "v_proj") → "W_q+W_v"."""
    return "+".join("W_" + t.replace("_proj", "") for t in _targets_tuple(targets))


def human_bytes(n) -> str:
    """1234567 → "1.23 MB" (decimal units, as disk sizes are quoted)."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n < 0:
        raise ValueError(f"n must be a non-negative number of bytes, got {n!r}")
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def _fmt(v) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 1e-3:
            return f"{v:.3g}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    if isinstance(v, (tuple, list)):
        return "+".join(str(x).replace("_proj", "") for x in v)
    return "—" if v is None else str(v)


def format_table(rows: list[dict], columns=None, headers=None) -> str:
    """A plain-text table of `rows` (lists of dict), `columns` in order (default: all scalar keys of row 0)."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("rows must be a non-empty list of dicts")
    if columns is None:
        columns = [k for k, v in rows[0].items() if not isinstance(v, (dict, list))]
    headers = list(columns) if headers is None else list(headers)
    if len(headers) != len(columns):
        raise ValueError(f"headers has {len(headers)} names for {len(columns)} columns")
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if c[:1].isdigit() or c[:1] == "-" else c.ljust(w) for c, w in zip(row, widths))
            for row in cells]
    return "\n".join(out)

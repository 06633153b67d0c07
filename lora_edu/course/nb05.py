"""Notebook 05 (fine-tuning with LoRA): LoRA vs full fine-tuning, the Table 5 and 6 ablations, their figures."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..adapters import extract_adapter
from ..inject import count_parameters, lora_layers
from ..tasks import get_task
from ..train import evaluate, task_loss
from .common import (
    ATTENTION_TARGETS,
    COLORS,
    check_int,
    check_model,
    device_of,
    figure,
    smooth,
    sync,
    targets_tuple,
    train_lora,
)

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


def lora_params_at_scale(d_model: int, n_layer: int, r: int, n_adapted: int = 2, d_ff: int | None = None,
                         vocab_size: int = 16, max_len: int = 32, bias: bool = True) -> dict:
    """Parameter arithmetic for a GPT-shaped model: total parameters, LoRA parameters, their ratio.

    LoRA on `n_adapted` d_model×d_model attention matrices per layer: |Θ| = 2·n_adapted·n_layer·d_model·r (§4.2).
    """
    for name, v in (("d_model", d_model), ("n_layer", n_layer), ("r", r), ("n_adapted", n_adapted),
                    ("vocab_size", vocab_size), ("max_len", max_len)):
        check_int(v, name)
    if n_adapted > 4:
        raise ValueError(f"n_adapted must be at most 4 (W_q, W_k, W_v, W_o), got {n_adapted}")
    if r > d_model:
        raise ValueError(f"r must be ≤ d_model = {d_model}, got {r}")
    d_ff = 4 * d_model if d_ff is None else check_int(d_ff, "d_ff")
    b = 1 if bias else 0
    attn = 4 * (d_model * d_model + b * d_model)
    mlp = 2 * d_model * d_ff + b * (d_ff + d_model)
    norms = 2 * 2 * d_model
    per_layer = attn + mlp + norms
    total = n_layer * per_layer + (vocab_size + max_len) * d_model + 2 * d_model + vocab_size * d_model
    lora = 2 * n_adapted * n_layer * d_model * r
    return {"total": total, "lora": lora, "ratio": total / lora}


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
    check_model(model)
    check_int(batch_size, "batch_size")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dev = device_of(m)
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
    check_model(model)
    check_int(batch_size, "batch_size")
    check_int(steps, "steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dev = device_of(m)
    opt = torch.optim.AdamW(params, lr=lr)
    g = torch.Generator().manual_seed(0)
    inputs, targets = get_task(task).batch(batch_size, g, dev)
    times = []
    for i in range(warmup + steps):
        sync(dev)
        t0 = time.perf_counter()
        loss = task_loss(m, inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def checkpoint_bytes(model: nn.Module) -> int:
    """Size on disk of what you must store for this fine-tune: the adapter files when `model` has LoRA
    layers (adapter_model.safetensors + adapter_config.json), else the full state dict as safetensors."""
    check_model(model)
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
    check_int(steps, "steps")
    check_int(eval_examples, "eval_examples")
    if lr is None:
        lr = 1e-2 if method == "lora" else 3e-3
    if method == "lora":
        targets = targets_tuple(targets)
    label = f"{method} {task.name}" + (f" {'+'.join(t.split('_')[0] for t in targets)} r={r}"
                                       if method == "lora" else "")
    m, hist = train_lora(task, base=model, targets=targets, r=r, alpha=alpha, lr=lr, steps=steps, seed=seed,
                         full=method == "full", device=device, batch_size=batch_size, progress=progress, desc=label,
                         eval_examples=eval_examples)
    trainable, total = count_parameters(m)
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
    check_int(budget_rank, "budget_rank")
    if budget_rank % 4:
        raise ValueError(f"budget_rank must be divisible by 4 so that every split is a whole rank, got {budget_rank}")
    types = targets_tuple(types)
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
    configs = budget_configs(budget_rank) if configs is None else [(targets_tuple(t), r) for t, r in configs]
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
        check_int(r, "ranks")
    target_sets = [targets_tuple(t) for t in target_sets]
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
def target_label(targets) -> str:
    """("q_proj", "v_proj") → "W_q+W_v"."""
    return "+".join("W_" + t.replace("_proj", "") for t in targets_tuple(targets))


def _short(targets) -> str:
    if isinstance(targets, str):
        targets = (targets,)
    return "+".join("W" + t.replace("_proj", "") for t in targets)


def plot_loss_curves(rows: list[dict], title: str = "Training loss"):
    """Loss per step (smoothed) of fine-tune runs (rows from finetune, with their history)."""
    if not rows:
        raise ValueError("rows must not be empty")
    fig, ax = figure(1, 1, width=6, height=3.2)
    for r in rows:
        h = r["history"]
        label = "full fine-tuning" if r["method"] == "full" else f"LoRA {_short(r['targets'])}, r={r['r']}"
        ax.plot(h["step"], smooth(h["loss"]), label=label, color=COLORS.get(r["method"]))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (smoothed)")
    ax.legend()
    ax.set_title(title)
    return fig


def plot_cost_comparison(lora: dict, full: dict, title: str = "What LoRA saves on the toy (full ÷ LoRA)"):
    """One bar per cost: how many times larger full fine-tuning is than LoRA (log scale), with the values."""
    items = [("trainable\nparameters", "trainable"), ("optimizer\nstate", "optimizer_bytes"),
             ("weights+grads\n+optimizer", "total_bytes"), ("checkpoint\non disk", "checkpoint_bytes"),
             ("time per\ntraining step", "step_ms")]
    items = [(lbl, k) for lbl, k in items if k in lora and k in full]
    ratios = [full[k] / lora[k] for _, k in items]
    fig, ax = figure(1, 1, width=7, height=3.4)
    bars = ax.bar([lbl for lbl, _ in items], ratios, color=["#c44e52" if x >= 1 else "#8c8c8c" for x in ratios])
    ax.axhline(1, color="black", lw=0.8)
    ax.set_yscale("log")
    for b, x in zip(bars, ratios):
        ax.text(b.get_x() + b.get_width() / 2, x * 1.08, f"{x:.2g}×", ha="center", fontsize=9)
    ax.set_ylabel("full fine-tuning ÷ LoRA")
    ax.set_ylim(min(0.5, min(ratios) * 0.7), max(ratios) * 2)
    ax.set_title(title)
    return fig


def plot_target_budget(results, title: str = "Same parameter budget, different weight types (Table 5)"):
    """Ours (toy accuracy per task) next to the paper's WikiSQL / MultiNLI accuracy for each target set.

    `results` is {task name: rows from compare_targets} (or a single list of rows).
    """
    if isinstance(results, list):
        results = {"toy": results}
    if not results or not all(results.values()):
        raise ValueError("results must hold at least one non-empty list of rows")
    rows = next(iter(results.values()))
    labels = [f"{'all four' if len(r['targets']) == 4 else _short(r['targets'])}\nr={r['r']}" for r in rows]
    fig, (a1, a2) = figure(2, 1, width=6, height=3.8)
    w = 0.8 / len(results)
    for j, (task, rs) in enumerate(results.items()):
        xs = [i + (j - (len(results) - 1) / 2) * w for i in range(len(rs))]
        a1.bar(xs, [r["accuracy"] for r in rs], w, label=task)
        for x, r in zip(xs, rs):
            a1.text(x, r["accuracy"] + 0.01, f"{r['accuracy']:.2f}", ha="center", fontsize=7)
    a1.set_ylabel("token accuracy")
    a1.set_title(f"toy ({rows[0]['trainable']:,} trainable parameters each)", fontsize=10)
    a1.set_ylim(0, 1.1)
    a1.legend(fontsize=8)
    xs = [i for i, r in enumerate(rows) if "paper_WikiSQL" in r]
    if xs:
        w = 0.4
        a2.bar([x - w / 2 for x in xs], [rows[x]["paper_WikiSQL"] for x in xs], w, label="WikiSQL")
        a2.bar([x + w / 2 for x in xs], [rows[x]["paper_MultiNLI"] for x in xs], w, label="MultiNLI")
        a2.set_ylim(65, 100)
        a2.legend(fontsize=8, loc="upper center", ncol=2)
    a2.set_ylabel("accuracy (%)")
    a2.set_title("paper, GPT-3 175B (18M parameters each)", fontsize=10)
    for ax in (a1, a2):
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(title)
    return fig


def plot_rank_sweep(rows: list[dict], title: str = "Accuracy versus rank r (Table 6)"):
    """Accuracy against r (log scale) for each target set: ours left, the paper's WikiSQL right."""
    if not rows:
        raise ValueError("rows must not be empty")
    fig, (a1, a2) = figure(2, 1, width=5, height=3.5)
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r["targets"]), []).append(r)
    for t, rs in groups.items():
        rs = sorted(rs, key=lambda x: x["r"])
        xs, ys = [x["r"] for x in rs], [x["accuracy"] for x in rs]
        if all("acc_min" in x for x in rs):
            err = [[y - x["acc_min"] for x, y in zip(rs, ys)], [x["acc_max"] - y for x, y in zip(rs, ys)]]
            a1.errorbar(xs, ys, yerr=err, fmt="o-", capsize=3, label=f"{_short(t)} (mean, min–max over seeds)")
        else:
            a1.plot(xs, ys, "o-", label=_short(t))
        paper = [x for x in rs if "paper_WikiSQL" in x]
        if paper:
            a2.plot([x["r"] for x in paper], [x["paper_WikiSQL"] for x in paper], "o-", label=_short(t))
    ranks = sorted({r["r"] for r in rows})
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks)
        ax.set_xticklabels([str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("rank r")
        ax.legend(fontsize=8)
    a1.set_ylabel("token accuracy (toy)")
    a1.set_ylim(0, 1.05)
    a2.set_ylabel("WikiSQL accuracy (%)")
    a2.set_title("paper, GPT-3 175B", fontsize=10)
    a1.set_title("toy", fontsize=10)
    fig.suptitle(title)
    return fig

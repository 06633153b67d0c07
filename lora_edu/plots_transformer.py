"""Figures for notebooks 04–06 (the toy transformer, LoRA fine-tuning, merging and latency).

Each function takes the plain numbers that `lora_edu.experiments` returns and gives back a matplotlib
Figure (matplotlib is imported lazily, so `import lora_edu` stays fast).
"""

from __future__ import annotations

__all__ = ["plot_param_breakdown", "plot_attention", "plot_baseline", "plot_loss_curves", "plot_cost_comparison",
           "plot_target_budget", "plot_rank_sweep", "plot_latency", "plot_drift"]

_COLORS = {"base": "#4c72b0", "merged": "#55a868", "unmerged": "#c44e52", "lora": "#c44e52", "full": "#4c72b0",
           "float32": "#4c72b0", "bfloat16": "#dd8452", "float16": "#8172b3"}


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _short(targets) -> str:
    if isinstance(targets, str):
        targets = (targets,)
    return "+".join("W" + t.replace("_proj", "") for t in targets)


def plot_param_breakdown(table: list[dict], title: str = "Where the toy transformer's parameters live"):
    """Horizontal bars: parameters per weight matrix / vector (rows of experiments.parameter_table)."""
    if not table:
        raise ValueError("table must not be empty")
    plt = _plt()
    colors = {"attention": "#c44e52", "mlp": "#4c72b0", "embedding": "#55a868", "layernorm": "#8c8c8c",
              "head": "#8172b3", "other": "#cccccc"}
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(table) + 1.2))
    names = [r["name"] for r in table][::-1]
    vals = [r["params"] for r in table][::-1]
    ax.barh(names, vals, color=[colors.get(r["group"], "#cccccc") for r in table][::-1])
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters (log scale)")
    ax.tick_params(axis="y", labelsize=7)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for g, c in colors.items() if any(r["group"] == g for r in table)]
    labels = [g for g in colors if any(r["group"] == g for r in table)]
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_attention(atts, labels=None, layer: int = 0, title: str | None = None):
    """Heatmaps of one layer's attention (one panel per head) for the first sequence of the batch.

    `atts` is the list model(tokens, return_attn=True) returns: per layer a (batch, heads, T, T) tensor.
    """
    if not 0 <= layer < len(atts):
        raise ValueError(f"layer must be in 0..{len(atts) - 1}, got {layer}")
    plt = _plt()
    att = atts[layer][0].detach().float().cpu().numpy()
    heads, T = att.shape[0], att.shape[-1]
    fig, axes = plt.subplots(1, heads, figsize=(3.2 * heads, 3.4))
    axes = [axes] if heads == 1 else list(axes)
    for h, ax in enumerate(axes):
        ax.imshow(att[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=9)
        if labels is not None:
            ax.set_xticks(range(T))
            ax.set_xticklabels(labels[:T], fontsize=6, rotation=90)
            ax.set_yticks(range(T))
            ax.set_yticklabels(labels[:T], fontsize=6)
        ax.set_xlabel("attends to (key)", fontsize=8)
    axes[0].set_ylabel("query position", fontsize=8)
    fig.suptitle(title or f"attention maps, layer {layer}")
    fig.tight_layout()
    return fig


def plot_baseline(acc: dict, chance: float | None = 0.1, title: str = "Pretrained model, before any adaptation"):
    """Bars of accuracy per task, with a dashed line at chance level."""
    if not acc:
        raise ValueError("acc must not be empty")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(acc), list(acc.values()), color="#4c72b0")
    for i, v in enumerate(acc.values()):
        ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=9)
    if chance is not None:
        ax.axhline(chance, ls="--", color="gray", lw=1)
        ax.text(len(acc) - 0.5, chance + 0.02, "chance (1 in 10)", ha="right", fontsize=8, color="gray")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("token accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _smooth(y, k: int = 10):
    out, acc = [], 0.0
    for i, v in enumerate(y):
        acc += v
        if i >= k:
            acc -= y[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_loss_curves(rows: list[dict], title: str = "Training loss"):
    """Loss per step (smoothed) of fine-tune runs (rows from experiments.finetune, with their history)."""
    if not rows:
        raise ValueError("rows must not be empty")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for r in rows:
        h = r["history"]
        label = "full fine-tuning" if r["method"] == "full" else f"LoRA {_short(r['targets'])}, r={r['r']}"
        ax.plot(h["step"], _smooth(h["loss"]), label=label, color=_COLORS.get(r["method"]))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (smoothed)")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_cost_comparison(lora: dict, full: dict, title: str = "What LoRA saves on the toy (full ÷ LoRA)"):
    """One bar per cost: how many times larger full fine-tuning is than LoRA (log scale), with the values."""
    plt = _plt()
    items = [("trainable\nparameters", "trainable"), ("optimizer\nstate", "optimizer_bytes"),
             ("weights+grads\n+optimizer", "total_bytes"), ("checkpoint\non disk", "checkpoint_bytes"),
             ("time per\ntraining step", "step_ms")]
    items = [(lbl, k) for lbl, k in items if k in lora and k in full]
    ratios = [full[k] / lora[k] for _, k in items]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    bars = ax.bar([lbl for lbl, _ in items], ratios, color=["#c44e52" if x >= 1 else "#8c8c8c" for x in ratios])
    ax.axhline(1, color="black", lw=0.8)
    ax.set_yscale("log")
    for b, x in zip(bars, ratios):
        ax.text(b.get_x() + b.get_width() / 2, x * 1.08, f"{x:.2g}×", ha="center", fontsize=9)
    ax.set_ylabel("full fine-tuning ÷ LoRA")
    ax.set_ylim(min(0.5, min(ratios) * 0.7), max(ratios) * 2)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_target_budget(results, title: str = "Same parameter budget, different weight types (Table 5)"):
    """Ours (toy accuracy per task) next to the paper's WikiSQL / MultiNLI accuracy for each target set.

    `results` is {task name: rows from experiments.compare_targets} (or a single list of rows).
    """
    if isinstance(results, list):
        results = {"toy": results}
    if not results or not all(results.values()):
        raise ValueError("results must hold at least one non-empty list of rows")
    plt = _plt()
    rows = next(iter(results.values()))
    labels = [f"{'all four' if len(r['targets']) == 4 else _short(r['targets'])}\nr={r['r']}" for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 3.8))
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
    fig.tight_layout()
    return fig


def plot_rank_sweep(rows: list[dict], title: str = "Accuracy versus rank r (Table 6)"):
    """Accuracy against r (log scale) for each target set: ours left, the paper's WikiSQL right."""
    if not rows:
        raise ValueError("rows must not be empty")
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
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
    fig.tight_layout()
    return fig


def plot_latency(rows: list[dict], device: str = "", title: str | None = None):
    """Median forward latency (with 10–90 % whiskers) of base, merged and unmerged models per batch size."""
    if not rows:
        raise ValueError("rows must not be empty")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    kinds = ("base", "merged", "unmerged")
    w = 0.26
    for j, k in enumerate(kinds):
        xs = [i + (j - 1) * w for i in range(len(rows))]
        med = [r[f"{k}_ms"] for r in rows]
        lo = [r[f"{k}_ms"] - r[f"{k}_p10_ms"] for r in rows]
        hi = [r[f"{k}_p90_ms"] - r[f"{k}_ms"] for r in rows]
        ax.bar(xs, med, w, yerr=[lo, hi], capsize=3, label=k, color=_COLORS[k])
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"batch {r['batch']}\n({r['tokens']} tokens)" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("forward time (ms, log)")
    ax.legend()
    ax.set_title(title or f"Inference latency{' on ' + device if device else ''}")
    fig.tight_layout()
    return fig


def plot_drift(rows: list[dict], title: str = "Weight drift after repeated merge → unmerge switches"):
    """max |W − W0| against the number of switches, one line per dtype; exact restore drawn at the floor."""
    if not rows:
        raise ValueError("rows must not be empty")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    nonzero = [r["max_abs"] for r in rows if r["max_abs"] > 0]
    floor = min(nonzero) / 10 if nonzero else 1e-10
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["exact"]), []).append(r)
    for (dt, exact), rs in groups.items():
        ys = [max(r["max_abs"], floor) for r in rs]
        ax.plot([r["switches"] for r in rs], ys, "s--" if exact else "o-", color=_COLORS.get(dt),
                alpha=0.6 if exact else 1.0, label=f"{dt}{' + exact restore (= 0)' if exact else ''}")
    ax.axhline(floor, color="gray", lw=0.6, ls=":")
    ax.text(1, floor * 1.3, "exactly zero", fontsize=8, color="gray")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of merge → unmerge switches")
    ax.set_ylabel("max |W − W0|")
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig

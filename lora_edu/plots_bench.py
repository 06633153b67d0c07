"""Plot the rows of `python -m lora_edu.bench` (notebook 06): is LoRA free at inference, and is lora_edu
at least as fast as PEFT?

    from lora_edu import bench, plots_bench
    fig = plots_bench.plot_results(bench.latest_results())

matplotlib is imported inside the function, and the Figure is not attached to pyplot (no plt.show()).
"""

from __future__ import annotations

import math

__all__ = ["plot_results"]

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
        raise TypeError("rows must be a list of result dicts from lora_edu.bench")
    if not rows:
        raise ValueError("rows is empty: no benchmark results yet; run `python -m lora_edu.bench --save`")
    missing = [r for r in rows if "config" not in r]
    if missing:
        raise ValueError("rows must come from lora_edu.bench: a row has no 'config' field")
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

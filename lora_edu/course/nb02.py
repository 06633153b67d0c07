"""Notebook 02 (the LoRA update): the α/r experiments, their figures and the scaling widget."""

from __future__ import annotations

import functools
import math

import torch

from ..runtime import brief, check_number
from .common import check_int, figure, show_in, to_numpy
from .matrix_fit import fit_lora, planted_update

SCHEMES = ("alpha/r", "alpha", "alpha/sqrt(r)")


def scaling_for(scheme: str, alpha: float, r: int) -> float:
    """The factor multiplying B·A: α/r (LoRA, §4.1), α (no division), α/√r (rsLoRA)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")
    check_int(r, "r")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return {"alpha/r": alpha / r, "alpha": float(alpha), "alpha/sqrt(r)": alpha / math.sqrt(r)}[scheme]


def lr_sweep(target: torch.Tensor, ranks, lrs, steps: int, scheme: str = "alpha/r", alpha: float = 4.0,
             seed: int = 0, batch: int | None = 16, last: int = 10) -> dict:
    """Final error (mean of the last `last` steps) for every (r, lr) pair under one scaling scheme.

    Returns {"ranks", "lrs", "scheme", "alpha", "final": tensor (len(ranks), len(lrs))}.
    """
    lrs = list(lrs)
    ranks = [check_int(r, "ranks") for r in ranks]
    final = torch.empty(len(ranks), len(lrs), device="cpu")
    for i, r in enumerate(ranks):
        res = fit_lora(target, r, lrs, steps, scaling_for(scheme, alpha, r), seed=seed, batch=batch)
        tail = res["loss"][:, -min(last, steps):]
        final[i] = torch.nan_to_num(tail.mean(1), nan=math.inf)
    return {"ranks": ranks, "lrs": lrs, "scheme": scheme, "alpha": alpha, "final": final}


def best_lr(sweep: dict) -> list[float]:
    """The learning rate with the lowest final error, for each rank of an lr_sweep result."""
    idx = sweep["final"].argmin(1).tolist()
    return [sweep["lrs"][i] for i in idx]


SCHEMECOLORS = {"alpha/r": "tab:blue", "alpha": "tab:red", "alpha/sqrt(r)": "tab:green"}


SCHEME_LABELS = {"alpha/r": "α/r (LoRA)", "alpha": "α, no division", "alpha/sqrt(r)": "α/√r (rsLoRA)"}


def plot_loss_curves(ax, curves: dict, log: bool = True, xlabel: str = "step", ylabel: str = "loss",
                     title: str = "", colors: dict | None = None, styles: dict | None = None):
    """One line per {label: sequence of losses}."""
    for label, ys in curves.items():
        ys = to_numpy(ys)
        kw = {}
        if colors and label in colors:
            kw["color"] = colors[label]
        if styles and label in styles:
            kw["ls"] = styles[label]
        ax.plot(range(1, len(ys) + 1), ys, label=str(label), **kw)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def plot_lr_sweep(ax, sweep: dict, title: str | None = None, cap: float = 1e2) -> int:
    """Final error against learning rate, one curve per rank (an lr_sweep result).

    Errors above `cap`, and diverged runs (not finite), are drawn AT the cap with an ×, and the axes say so.
    Returns how many points were drawn that way.
    """
    import matplotlib as mpl

    final = to_numpy(sweep["final"])
    cmap = mpl.colormaps["viridis"]
    n = len(sweep["ranks"])
    capped = 0
    for i, r in enumerate(sweep["ranks"]):
        color = cmap(i / max(1, n - 1))
        ys = [min(v, cap) if math.isfinite(v) else cap for v in final[i]]
        ax.plot(sweep["lrs"], ys, "o-", ms=3, color=color, label=f"r = {r}")
        over = [lr for lr, v in zip(sweep["lrs"], final[i]) if not (math.isfinite(v) and v <= cap)]
        if over:
            ax.plot(over, [cap] * len(over), "x", ms=7, color=color)
            capped += len(over)
    if capped:
        ax.text(0.02, 0.02, f"×: error above {cap:g} or diverged, drawn at {cap:g}", transform=ax.transAxes,
                fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final relative error")
    ax.set_title(title or SCHEME_LABELS.get(sweep["scheme"], sweep["scheme"]), fontsize=10)
    ax.legend(fontsize=7)
    return capped


def plot_best_lr(ax, sweeps: list, best: list):
    """Best learning rate against r for several scaling schemes (log–log)."""
    for sw, b in zip(sweeps, best):
        sch = sw["scheme"]
        ax.plot(sw["ranks"], b, "o-", color=SCHEMECOLORS.get(sch), label=SCHEME_LABELS.get(sch, sch))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("rank r")
    ax.set_ylabel("best learning rate")
    ax.set_title("Which learning rate is best at each r?", fontsize=10)
    ax.legend(fontsize=8)


# --------------------------------------------------------------------------------- α/r scaling (nb 02)
ALPHA_RANGE = (0.25, 64.0)


R_RANGE = (1, 64)


def _scaling_message(r, alpha, lr, steps, target_rank, batch) -> str | None:
    """Why scaling_curves can't run with these settings, as a sentence for the widget; None if it can."""
    if isinstance(r, bool) or not isinstance(r, int):
        return f"r must be a whole number, got {brief(r)}."
    if not R_RANGE[0] <= r <= R_RANGE[1]:
        return f"r = {brief(r)} is outside this experiment's range {R_RANGE[0]}…{R_RANGE[1]} (the layer is 64×64)."
    try:
        check_number("α", alpha)
    except (TypeError, ValueError):
        return f"α must be a finite number, got {brief(alpha)}."
    if alpha <= 0:
        return f"α = {alpha}: the scaling α/r must be positive (α = 0 would switch the update off)."
    try:  # the widget's fixed settings: a message too, never an IndexError from an empty curve
        check_number("lr", lr, 0, bounds="(]")
        check_number("steps", steps, 1, 10**5, integer=True)
        check_number("target_rank", target_rank, 1, 64, integer=True)
        check_number("batch", batch, 1, 4096, integer=True)
    except (TypeError, ValueError) as e:
        return f"{e}."
    return None


@functools.lru_cache(maxsize=256)
def _scaling_run(r: int, alpha: float, lr: float, steps: int, target_rank: int, batch: int):
    T = planted_update(64, 64, target_rank)
    scalings = [scaling_for(s, alpha, r) for s in SCHEMES]
    res = fit_lora(T, r, [lr] * len(scalings), steps, scalings, batch=batch)  # three runs side by side
    return {s: res["loss"][i] for i, s in enumerate(SCHEMES)}


def scaling_curves(r, alpha, lr: float = 1e-2, steps: int = 150, target_rank: int = 4, batch: int = 16
                   ) -> dict | str:
    """Loss curves of the small problem (fit a rank-4 update of a 64×64 layer) for the three scalings.

    Returns {"curves": {"alpha/r": losses, "alpha": losses, "alpha/sqrt(r)": losses}, "scaling": {scheme:
    factor}, "r", "alpha", "lr", "diverged": [schemes whose final error is above 1 or not finite]}, or a message.
    Cached: a slider position already visited answers instantly.
    """
    msg = _scaling_message(r, alpha, lr, steps, target_rank, batch)
    if msg:
        return msg
    curves = dict(_scaling_run(r, float(alpha), float(lr), int(steps), int(target_rank), int(batch)))
    diverged = [s for s, c in curves.items() if not math.isfinite(float(c[-1])) or float(c[-1]) > 1.0]
    return {"curves": curves, "scaling": {s: scaling_for(s, alpha, r) for s in SCHEMES}, "r": r,
            "alpha": float(alpha), "lr": lr, "diverged": diverged}


def scaling_figure(r, alpha, lr: float = 1e-2, steps: int = 150):
    """Loss curves for α/r, α (no division) and α/√r at the chosen r and α. Figure or message."""
    res = scaling_curves(r, alpha, lr, steps)
    if isinstance(res, str):
        return res
    fig, ax = figure(1, 1, width=6.0, height=3.6)
    curves, top = {}, 1e2
    for s in SCHEMES:
        c = res["curves"][s].nan_to_num(nan=top, posinf=top).clamp(max=top)
        curves[f"{SCHEME_LABELS[s]}: scale {res['scaling'][s]:.3g}"] = c
    colors = {k: SCHEMECOLORS[s] for k, s in zip(curves, SCHEMES)}
    plot_loss_curves(ax, curves, ylabel="relative error ‖ΔW − ΔW*‖²/‖ΔW*‖²", colors=colors,
                           title=f"r = {r}, α = {alpha:g}, learning rate {lr:g} (Adam)")
    ax.set_ylim(1e-5, 2 * top)
    if any(not math.isfinite(float(v)) or float(v) > top for c in res["curves"].values() for v in c):
        ax.text(0.98, 0.97, f"errors above {top:g} (or diverged) drawn at {top:g}", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="0.3")
    if res["diverged"]:
        ax.text(0.02, 0.03, "unstable: " + ", ".join(SCHEME_LABELS[s] for s in res["diverged"]),
                transform=ax.transAxes, fontsize=9, color="tab:red")
    return fig


def scaling_widget(r: int = 4, alpha: float = 4.0, lr: float = 1e-2, steps: int = 150):
    """Sliders r and α driving the loss curves of the three scaling schemes (notebook 02)."""
    import ipywidgets as w

    kw = dict(continuous_update=False, layout=w.Layout(width="480px"))
    sr = w.IntSlider(value=r, min=R_RANGE[0], max=R_RANGE[1], description="rank r", **kw)
    sa = w.FloatLogSlider(value=alpha, base=2, min=math.log2(ALPHA_RANGE[0]), max=math.log2(ALPHA_RANGE[1]),
                          step=0.5, description="α", **kw)
    out = w.Output()

    def update(change=None):
        show_in(out, lambda: scaling_figure(sr.value, sa.value, lr, steps))

    sr.observe(update, names="value")
    sa.observe(update, names="value")
    update()
    return w.VBox([sr, sa, out])


@torch.no_grad()
def reference_outputs(base: torch.nn.Linear, A: torch.Tensor, B: torch.Tensor, alpha: float,
                      x: torch.Tensor) -> dict:
    """h = layer(x) from le.LoRALinear, Microsoft's loralib and Hugging Face PEFT, all given the same W0, b, A, B.

    {name: (unmerged h, merged h)}, or {name: "message"} when that library isn't installed. Each library works
    on its own copy of `base`, so `base` is unchanged.
    """
    import copy

    from ..layer import LoRALinear

    r = A.shape[0]
    out = {}
    ours = LoRALinear(copy.deepcopy(base), r=r, alpha=alpha)
    ours.A.copy_(A)
    ours.B.copy_(B)
    h = ours(x)
    ours.merge()
    out["le.LoRALinear"] = (h, ours(x))
    try:
        import loralib
    except ImportError:
        out["loralib"] = "not installed (pip install loralib)"
    else:
        ref = loralib.Linear(base.in_features, base.out_features, r=r, lora_alpha=alpha, merge_weights=True)
        ref.load_state_dict({"weight": base.weight, "bias": base.bias, "lora_A": A, "lora_B": B})
        ref.train()  # loralib: training mode is the unmerged layer, eval() merges
        h = ref(x)
        ref.eval()
        out["loralib"] = (h, ref(x))
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        out["PEFT"] = "not installed (pip install peft)"
    else:
        wrapper = torch.nn.Sequential(copy.deepcopy(base))
        pm = get_peft_model(wrapper, LoraConfig(r=r, lora_alpha=alpha, target_modules=["0"]))
        lyr = pm.base_model.model[0]
        lyr.lora_A["default"].weight.copy_(A)
        lyr.lora_B["default"].weight.copy_(B)
        h = pm(x)
        lyr.merge()
        out["PEFT"] = (h, pm(x))
    return out


# --------------------------------------------------------------------------------- initialization (nb 02 §3)
PRETRAIN_PROBE = ("rot0", "rot2", "add1", "sub4", "rsub2")  # a few pretraining skills: did the model forget?


def pretrain_accuracy(model, n_examples: int = 128) -> float:
    """Mean token accuracy over PRETRAIN_PROBE, a cheap stand-in for the whole pretraining mixture."""
    from ..train import evaluate

    check_int(n_examples, "n_examples")
    return sum(evaluate(model, t, n_examples) for t in PRETRAIN_PROBE) / len(PRETRAIN_PROBE)


def compare_inits(make_model, train_fn, task, inits: dict, steps: int, seeds=(0, 1, 2),
                  n_examples: int = 256) -> dict:
    """Train one model per (init, seed): make_model(seed=s, **inits[label]) then train_fn(model, task, steps, seed=s).

    Returns {label: {"loss": [loss curve per seed], "accuracy": [token accuracy on `task` per seed]}}.
    """
    from ..train import evaluate

    check_int(steps, "steps")
    seeds = [check_int(s, "seeds", 0) for s in seeds]
    if not seeds:
        raise ValueError("seeds must not be empty")
    out = {}
    for label, kw in inits.items():
        runs = {"loss": [], "accuracy": []}
        for s in seeds:
            m = make_model(seed=s, **kw)
            runs["loss"].append(list(train_fn(m, task, steps, seed=s)))
            runs["accuracy"].append(evaluate(m, task, n_examples))
        out[label] = runs
    return out


def plot_seed_bands(ax, runs: dict, k: int = 10, title: str = "", ylabel: str = "training loss"):
    """For each label of a compare_inits result: the mean smoothed loss over seeds, with the min–max band shaded."""
    import numpy as np

    from .common import smooth

    for label, res in runs.items():
        curves = np.array([smooth(c, k) for c in res["loss"]])
        xs = np.arange(1, curves.shape[1] + 1)
        (line,) = ax.plot(xs, curves.mean(0), label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(xs, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2, lw=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{ylabel} (mean of {k} steps)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def early_loss(curve, frac: float = 1 / 3) -> float:
    """Mean loss over the first `frac` of a run: how fast it starts."""
    n = max(1, int(len(curve) * frac))
    return float(sum(curve[:n]) / n)

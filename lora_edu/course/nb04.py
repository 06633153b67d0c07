"""Notebook 04 (the toy transformer): parameters, the task family, pretraining, zero-shot accuracy, attention."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..model import ToyConfig, ToyTransformer
from ..pretrain import RECIPE
from ..runtime import seed_everything
from ..tasks import DOWNSTREAM_TASKS, OPS, PRETRAIN_TASK, RULES, TASKS, Mixture, Task, get_task
from ..train import EVAL_SEED, evaluate
from .common import check_int, check_model, figure, known_word_twin

OP_COLORS = {"rot": "#8c8c8c", "add": "#4c72b0", "sub": "#c44e52", "rsub": "#55a868"}


# ---------------------------------------------------------------------------------------------
# §1 where the parameters live
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
    check_model(model)
    return [{"name": n, "group": _group_of(n), "shape": tuple(p.shape), "params": p.numel(),
             "trainable": p.requires_grad} for n, p in model.named_parameters()]


def format_shape(shape) -> str:
    """'64 × 64' for a matrix, '64' for a vector (a tuple joined by ×, as a shape is read)."""
    return " × ".join(str(int(s)) for s in shape)


def format_parameter_table(table: list[dict]) -> str:
    """The rows of parameter_table as text: name, group, shape (out × in), number of scalars."""
    from .common import format_table

    if not table:
        raise ValueError("table must not be empty")
    rows = [{**r, "shape": format_shape(r["shape"]), "params": f"{r['params']:,}"} for r in table]
    return format_table(rows, ["name", "group", "shape", "params"], ["name", "group", "shape (out × in)", "scalars"])


def parameter_groups(model: nn.Module) -> dict[str, int]:
    """{group: number of scalars}: how the model's parameters split between attention, MLP, embeddings, …"""
    out: dict[str, int] = {}
    for row in parameter_table(model):
        out[row["group"]] = out.get(row["group"], 0) + row["params"]
    return out


def plot_param_breakdown(table: list[dict], title: str = "Where the toy transformer's parameters live"):
    """Horizontal bars: parameters per weight matrix / vector (rows of parameter_table)."""
    if not table:
        raise ValueError("table must not be empty")
    colors = {"attention": "#c44e52", "mlp": "#4c72b0", "embedding": "#55a868", "layernorm": "#8c8c8c",
              "head": "#8172b3", "other": "#cccccc"}
    fig, ax = figure(1, 1, width=7, height=0.16 * len(table) + 1.2)
    names = [r["name"] for r in table][::-1]
    vals = [r["params"] for r in table][::-1]
    ax.barh(names, vals, color=[colors.get(r["group"], "#cccccc") for r in table][::-1])
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters (log scale)")
    ax.tick_params(axis="y", labelsize=6)
    ax.set_ylim(-0.7, len(table) - 0.3)
    from matplotlib.patches import Rectangle

    handles = [Rectangle((0, 0), 1, 1, color=c) for g, c in colors.items() if any(r["group"] == g for r in table)]
    labels = [g for g in colors if any(r["group"] == g for r in table)]
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# §2–3 the task family and the pretraining mixture
def skills_by_op(mixture=PRETRAIN_TASK) -> dict[str, dict[str, int]]:
    """{op: {skill: draws per cycle}} of a Mixture: which (op, k) it trains and how often each is drawn."""
    mix = get_task(mixture)
    if not isinstance(mix, Mixture):
        raise ValueError(f"mixture must be a Mixture of skills, got the single skill {mix.name!r}")
    out: dict[str, dict[str, int]] = {}
    for p in mix.parts:
        t = get_task(p)
        out.setdefault(t.op, {})
        out[t.op][p] = out[t.op].get(p, 0) + 1
    return out


def route_grid(mixture=PRETRAIN_TASK) -> list[dict]:
    """One row per pretraining op, one column per route k: 'train' (in the mixture), 'HELD OUT' (a downstream
    pair), or '—' (left out for another reason: sub0 and rsub0 are always 0)."""
    seen = {p for ops in skills_by_op(mixture).values() for p in ops}
    held = {known_word_twin(t) for t in DOWNSTREAM_TASKS}
    n = get_task(next(iter(seen))).n
    return [{"op": op, **{f"k={k}": "train" if f"{op}{k}" in seen else "HELD OUT" if f"{op}{k}" in held else "—"
                          for k in range(n)}} for op in RULES]


def exact_accuracy(model: nn.Module, task, n_examples: int = 512, seed: int = EVAL_SEED) -> float:
    """Whole-answer accuracy in ONE forward pass: every answer token is the argmax under teacher forcing.

    This equals greedy decoding's whole-answer accuracy (`le.evaluate(..., metric="sequence")`): when all
    teacher-forced argmaxes are right, greedy decoding feeds back the same tokens, and conversely. Same inputs
    as le.evaluate for the same seed."""
    check_model(model)
    task = get_task(task)
    if isinstance(task, Mixture):
        raise ValueError(f"task must be one skill, not the mixture {task.name!r}")
    n_examples = check_int(n_examples, "n_examples")
    x = task.sample_x(n_examples, torch.Generator().manual_seed(seed))
    dev = next(model.parameters()).device
    inputs, targets = task.make(x, dev)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            pred = model(inputs).argmax(-1)
    finally:
        model.train(was)
    sl = task.answer_slice()
    return (pred[:, sl] == targets[:, sl]).all(1).float().mean().item()


def skill_accuracy(model: nn.Module, skills=PRETRAIN_TASK, n_examples: int = 256) -> dict[str, float]:
    """{skill: whole-answer accuracy} for every distinct skill of a mixture, or of a list of skill names
    (exact_accuracy: one forward pass each)."""
    names = skills_by_op_flat(skills) if isinstance(skills, str) else [get_task(s).name for s in skills]
    return {p: exact_accuracy(model, p, n_examples) for p in names}


def skills_by_op_flat(mixture=PRETRAIN_TASK) -> list[str]:
    return [p for ops in skills_by_op(mixture).values() for p in ops]


def per_op(acc: dict[str, float]) -> dict[str, list[float]]:
    """{op: [accuracies of its skills]} from {skill: accuracy}."""
    out: dict[str, list[float]] = {}
    for name, v in acc.items():
        out.setdefault(get_task(name).op, []).append(v)
    return out


def pretrain_demo(steps: int, skills=PRETRAIN_TASK, seed: int = 0, device=None, log_every: int = 5) -> dict:
    """A short version of lora_edu.pretrain's recipe: same optimiser, lr, batch and schedule shape
    (linear warm-up, then cosine to 0), compressed to `steps` (warm-up: 1/25 of them, as 200 of 5000).

    `skills`: the pretraining mixture's name, or a list of skill names (a smaller mixture, equal weights).
    Returns {"model", "steps", "seconds", "step", "loss": {op: [mean loss of that op's examples]}} — the loss is
    read off the training batches themselves, per op, so the curves cost nothing extra."""
    steps = check_int(steps, "steps")
    log_every = check_int(log_every, "log_every")
    if isinstance(skills, str):
        mix = get_task(skills)
        if not isinstance(mix, Mixture):
            mix = Mixture("demo", (mix.name,), "")
    else:
        names = [get_task(s).name for s in skills]
        if not names:
            raise ValueError("skills must name at least one skill")
        mix = Mixture("demo", tuple(names), "a subset of the pretraining skills")
    warm = max(1, steps * RECIPE["warmup"] // RECIPE["steps"])
    g = seed_everything(seed)
    model = ToyTransformer(ToyConfig())
    if device is not None:
        model = model.to(device)
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=RECIPE["lr"], betas=(0.9, 0.98),
                            weight_decay=RECIPE["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    op_of = {OPS[TASKS[p].op]: TASKS[p].op for p in mix.parts}  # op token id → op name
    hist = {"step": [], "loss": {op: [] for op in dict.fromkeys(op_of.values())}}
    acc_loss = {op: [0.0, 0] for op in hist["loss"]}
    model.train()
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        inputs, targets = mix.batch(RECIPE["batch_size"], g, dev)
        logits = model(inputs)
        per_tok = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none")
        per_ex = per_tok.view(targets.shape).sum(1) / (targets != -100).sum(1)
        loss = per_ex.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ops = inputs[:, 1].tolist()
        for tok, le_ in zip(ops, per_ex.detach().tolist()):
            a = acc_loss[op_of[tok]]
            a[0] += le_
            a[1] += 1
        if step % log_every == 0 or step == steps:
            hist["step"].append(step)
            for op, a in acc_loss.items():
                hist["loss"][op].append(a[0] / a[1] if a[1] else float("nan"))
                a[0], a[1] = 0.0, 0
    hist.update(model=model.eval(), steps=steps, seconds=time.perf_counter() - t0)
    return hist


def plot_pretrain_demo(runs: dict, full_steps: int = RECIPE["steps"]):
    """Loss per op family along each demo run (one panel per run), with ln 10 (guessing a digit) marked."""
    if not runs:
        raise ValueError("runs must not be empty")
    fig, axes = figure(len(runs), 1, width=4.4, height=3.2, sharey=True)
    axes = [axes] if len(runs) == 1 else list(axes)
    for ax, (label, h) in zip(axes, runs.items()):
        for op, ys in h["loss"].items():
            ax.plot(h["step"], ys, color=OP_COLORS.get(op, "k"), label=op)
        ax.axhline(math.log(10), ls="--", color="gray", lw=1)
        ax.text(h["step"][-1], math.log(10) + 0.05, "ln 10: a guessed digit", ha="right", fontsize=7, color="gray")
        ax.set_xlabel(f"step (the full recipe: {full_steps})")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("training loss per answer digit")
    return fig


# ---------------------------------------------------------------------------------------------
# §4 zero-shot: the downstream words and the same pairs asked with the known words
def baseline_accuracy(model: nn.Module, tasks=DOWNSTREAM_TASKS, n_examples: int = 512,
                      metric: str = "sequence") -> dict[str, float]:
    """{task: accuracy} of `model` as it is, with no adaptation (greedy decoding, le.evaluate)."""
    check_model(model)
    if isinstance(tasks, str):
        tasks = (tasks,)
    return {get_task(t).name: evaluate(model, t, n_examples=n_examples, metric=metric) for t in tasks}


def answered_as(model: nn.Module, task, n_examples: int = 512) -> dict[str, float]:
    """{op: share of answer digits that follow op's rule at the task's route k}: which known skill the model
    actually performs when asked `task` (greedy decoding on le.evaluate's held-out inputs)."""
    from ..train import generate

    check_model(model)
    t = get_task(task)
    if isinstance(t, Mixture):
        raise ValueError(f"task must be one skill, not the mixture {t.name!r}")
    x = t.sample_x(check_int(n_examples, "n_examples"), torch.Generator().manual_seed(EVAL_SEED))
    out = generate(model, x, t)
    return {op: (out == Task(op, t.k, t.n).fn(x)).float().mean().item() for op in RULES}


def plot_zero_shot(new: dict, known: dict, title: str = "The checkpoint, before any adaptation"):
    """Paired bars: whole-answer accuracy asked with the new word vs the same (op, k) asked with the known word."""
    if not new or len(new) != len(known):
        raise ValueError("new and known must be non-empty and of equal length")
    fig, ax = figure(1, 1, width=6, height=3)
    xs = range(len(new))
    for off, d, c, lab in ((-0.2, new, "#c44e52", "new word (downstream)"),
                           (0.2, known, "#4c72b0", "known word (same op and route)")):
        ax.bar([i + off for i in xs], list(d.values()), width=0.4, color=c, label=lab)
        for i, v in zip(xs, d.values()):
            ax.text(i + off, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{a} / {b}" for a, b in zip(new, known)])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("whole-answer accuracy")
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------------------------
# §5 inside attention
def answer_queries(task) -> list[tuple[int, int, int]]:
    """(query position, position of x_i, position of x_(i+k)) for each answer digit y_i of a skill's input.

    The token at position q predicts the next one: q = n+2+i predicts y_i (q = n+3 is SEP, which predicts y_1)."""
    t = get_task(task)
    if isinstance(t, Mixture):
        raise ValueError(f"task must be one skill, not the mixture {t.name!r}")
    return [(t.n + 2 + i, 2 + i, 3 + (i - 1 + t.k) % t.n) for i in range(1, t.n + 1)]


def attention_reads(model: nn.Module, skills=None, layer: int = 0, n_examples: int = 256) -> list[dict]:
    """Where each head of `layer` looks from the answer positions: one row per (skill, head) with the mean
    attention mass on x_i (the digit at the same place), x_(i+k) (the partner digit the route names), the route
    digit k (position 2) and the op word (position 1). Averaged over examples and the n answer positions."""
    check_model(model)
    layer = check_int(layer, "layer", lo=0)
    if layer >= model.cfg.n_layer:
        raise ValueError(f"layer must be in 0..{model.cfg.n_layer - 1}, got {layer}")
    skills = skills_by_op_flat() if skills is None else [get_task(s).name for s in skills]
    dev = next(model.parameters()).device
    rows = []
    for s in skills:
        t = get_task(s)
        inputs, _ = t.make(t.sample_x(check_int(n_examples, "n_examples"), torch.Generator().manual_seed(EVAL_SEED)),
                           dev)
        with torch.no_grad():
            _, atts = model(inputs, return_attn=True)
        att = atts[layer].float().mean(0).cpu()  # (heads, T, T)
        qs = answer_queries(t)
        q = torch.tensor([a for a, _, _ in qs], device="cpu")
        cols = {"x_i": torch.tensor([b for _, b, _ in qs], device="cpu"),
                "x_(i+k)": torch.tensor([c for _, _, c in qs], device="cpu"),
                "route k": torch.full_like(q, 2), "op word": torch.full_like(q, 1)}
        for h in range(att.shape[0]):
            rows.append({"skill": s, "op": t.op, "k": t.k, "head": h,
                         **{name: att[h, q, c].mean().item() for name, c in cols.items()}})
    return rows


def head_summary(rows: list[dict]) -> list[dict]:
    """Per head: the least mass over skills on x_i and on the route digit, and per route k ≥ 1 the mean mass on
    x_(i+k) over the skills with that route (k = 0 is left out: there x_(i+k) is x_i)."""
    if not rows:
        raise ValueError("rows must not be empty")
    out = []
    for h in sorted({r["head"] for r in rows}):
        mine = [r for r in rows if r["head"] == h]
        row = {"head": h, "min x_i": min(r["x_i"] for r in mine), "min route k": min(r["route k"] for r in mine)}
        for k in sorted({r["k"] for r in mine if r["k"] > 0}):
            ks = [r["x_(i+k)"] for r in mine if r["k"] == k]
            row[f"x_(i+{k})"] = sum(ks) / len(ks)
        out.append(row)
    return out


def plot_attention(atts, labels=None, layer: int = 0, title: str | None = None, marks=None):
    """Heatmaps of one layer's attention (one panel per head) for the first sequence of the batch.

    `atts` is the list model(tokens, return_attn=True) returns: per layer a (batch, heads, T, T) tensor.
    `marks`: optional {name: [(query, key), ...]} outlined on every panel (e.g. x_i and x_(i+k) per answer row).
    """
    if not 0 <= layer < len(atts):
        raise ValueError(f"layer must be in 0..{len(atts) - 1}, got {layer}")
    att = atts[layer][0].detach().float().cpu().numpy()
    heads, T = att.shape[0], att.shape[-1]
    fig, axes = figure(heads, 1, width=3.0, height=3.4)
    axes = [axes] if heads == 1 else list(axes)
    styles = [dict(marker="s", mfc="none", mec="#ff4040", ms=7, mew=1.2),
              dict(marker="o", mfc="none", mec="white", ms=4, mew=1.0)]
    for h, ax in enumerate(axes):
        ax.imshow(att[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"head {h}", fontsize=9)
        if labels is not None:
            ax.set_xticks(range(T))
            ax.set_xticklabels(labels[:T], fontsize=6, rotation=90)
            ax.set_yticks(range(T))
            ax.set_yticklabels(labels[:T], fontsize=6)
        for (name, pts), st in zip((marks or {}).items(), styles):
            ax.plot([k for _, k in pts], [q for q, _ in pts], ls="none", label=name if h == 0 else None, **st)
        ax.set_xlabel("attends to (key)", fontsize=8)
    axes[0].set_ylabel("query position", fontsize=8)
    if marks:
        fig.legend(loc="outside lower center", ncol=len(marks), fontsize=8, facecolor="#dddddd")
    fig.suptitle(title or f"attention maps, layer {layer}")
    return fig


__all__ = ["OP_COLORS", "answer_queries", "answered_as", "attention_reads", "baseline_accuracy", "exact_accuracy",
           "format_parameter_table", "format_shape", "head_summary", "known_word_twin", "parameter_groups",
           "parameter_table", "per_op", "plot_attention", "plot_param_breakdown", "plot_pretrain_demo",
           "plot_zero_shot", "pretrain_demo", "route_grid", "skill_accuracy", "skills_by_op"]

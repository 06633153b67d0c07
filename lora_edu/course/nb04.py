"""Notebook 04 (the toy transformer): parameter tables, baseline accuracy and their figures."""

from __future__ import annotations

from torch import nn

from ..tasks import DOWNSTREAM_TASKS, get_task
from ..train import evaluate
from .common import check_model, figure


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
    check_model(model)
    return [{"name": n, "group": _group_of(n), "shape": tuple(p.shape), "params": p.numel(),
             "trainable": p.requires_grad} for n, p in model.named_parameters()]


def parameter_groups(model: nn.Module) -> dict[str, int]:
    """{group: number of scalars}: how the model's parameters split between attention, MLP, embeddings, …"""
    out: dict[str, int] = {}
    for row in parameter_table(model):
        out[row["group"]] = out.get(row["group"], 0) + row["params"]
    return out


def baseline_accuracy(model: nn.Module, tasks=DOWNSTREAM_TASKS, n_examples: int = 512,
                      metric: str = "token") -> dict[str, float]:
    """{task: accuracy} of `model` as it is, with no adaptation."""
    check_model(model)
    if isinstance(tasks, str):
        tasks = (tasks,)
    return {get_task(t).name: evaluate(model, t, n_examples=n_examples, metric=metric) for t in tasks}




def plot_param_breakdown(table: list[dict], title: str = "Where the toy transformer's parameters live"):
    """Horizontal bars: parameters per weight matrix / vector (rows of parameter_table)."""
    if not table:
        raise ValueError("table must not be empty")
    colors = {"attention": "#c44e52", "mlp": "#4c72b0", "embedding": "#55a868", "layernorm": "#8c8c8c",
              "head": "#8172b3", "other": "#cccccc"}
    fig, ax = figure(1, 1, width=7, height=0.22 * len(table) + 1.2)
    names = [r["name"] for r in table][::-1]
    vals = [r["params"] for r in table][::-1]
    ax.barh(names, vals, color=[colors.get(r["group"], "#cccccc") for r in table][::-1])
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters (log scale)")
    ax.tick_params(axis="y", labelsize=7)
    from matplotlib.patches import Rectangle

    handles = [Rectangle((0, 0), 1, 1, color=c) for g, c in colors.items() if any(r["group"] == g for r in table)]
    labels = [g for g in colors if any(r["group"] == g for r in table)]
    ax.legend(handles, labels, loc="lower right", fontsize=8)
    ax.set_title(title)
    return fig


def plot_attention(atts, labels=None, layer: int = 0, title: str | None = None):
    """Heatmaps of one layer's attention (one panel per head) for the first sequence of the batch.

    `atts` is the list model(tokens, return_attn=True) returns: per layer a (batch, heads, T, T) tensor.
    """
    if not 0 <= layer < len(atts):
        raise ValueError(f"layer must be in 0..{len(atts) - 1}, got {layer}")
    att = atts[layer][0].detach().float().cpu().numpy()
    heads, T = att.shape[0], att.shape[-1]
    fig, axes = figure(heads, 1, width=3.2, height=3.4)
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
    return fig


def plot_baseline(acc: dict, chance: float | None = 0.1, title: str = "Pretrained model, before any adaptation"):
    """Bars of accuracy per task, with a dashed line at chance level."""
    if not acc:
        raise ValueError("acc must not be empty")
    fig, ax = figure(1, 1, width=6, height=3)
    ax.bar(list(acc), list(acc.values()), color="#4c72b0")
    for i, v in enumerate(acc.values()):
        ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=9)
    if chance is not None:
        ax.axhline(chance, ls="--", color="gray", lw=1)
        ax.text(len(acc) - 0.5, chance + 0.02, "chance (1 in 10)", ha="right", fontsize=8, color="gray")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("token accuracy")
    ax.set_title(title)
    return fig

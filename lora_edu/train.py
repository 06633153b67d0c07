"""Training and evaluation loops: AdamW on whatever is trainable, a tqdm progress bar, greedy-decoding accuracy."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .inject import check_model, lora_layers
from .runtime import check_number, device_of
from .tasks import Mixture, get_task

__all__ = ["train", "evaluate", "generate", "task_loss"]

EVAL_SEED = 1234
LR_MAX = 1e3  # AdamW's step is ~lr per weight: anything near this already destroys a model


def _count(name: str, value, lo: int = 1, hi: int = 2**16):  # 2**16: a batch that still fits in memory
    return check_number(name, value, lo, hi, integer=True)


def _check_tokens(name: str, t) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be a 2-D integer tensor (batch, length), got {type(t).__name__} "
                        f"{tuple(getattr(t, 'shape', ()))}")


def task_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the answer tokens only (targets are −100 elsewhere)."""
    _check_tokens("inputs", inputs)
    _check_tokens("targets", targets)
    if inputs.shape != targets.shape:
        raise ValueError(f"targets must have the shape of inputs {tuple(inputs.shape)}, got {tuple(targets.shape)}")
    logits = model(inputs)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


@torch.no_grad()
def generate(model: nn.Module, x: torch.Tensor, task) -> torch.Tensor:
    """Greedy answer of the model for digit sequences x (batch, n): feeds the task's prompt, decodes n tokens."""
    check_model(model)
    _check_tokens("x", x)
    task = get_task(task)
    if isinstance(task, Mixture):
        raise ValueError(f"task must be one skill, not the mixture {task.name!r}: its examples have different prompts")
    if x.shape[1] != task.n or x.numel() and (x.min() < 0 or x.max() > 9):
        raise ValueError(f"x must be a (batch, {task.n}) tensor of digits 0..9, got shape {tuple(x.shape)}")
    seq = task.prefix(x.cpu()).to(device_of(model))
    for _ in range(x.shape[1]):
        logits = model(seq)[:, -1]
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    return seq[:, -x.shape[1]:].cpu()


@torch.no_grad()
def evaluate(model: nn.Module, task, n_examples: int = 512, metric: str = "token",
             seed: int = EVAL_SEED, batch_size: int = 512) -> float:
    """Accuracy of greedy decoding on a fixed held-out set: per answer token ("token") or whole answer ("sequence")."""
    check_model(model)
    task = get_task(task)
    if isinstance(task, Mixture):  # the mean over its distinct skills
        parts = dict.fromkeys(task.parts)
        return sum(evaluate(model, p, n_examples, metric, seed, batch_size) for p in parts) / len(parts)
    if not isinstance(metric, str) or metric not in ("token", "sequence"):
        raise ValueError(f"metric must be 'token' or 'sequence', got {metric!r}")
    _count("n_examples", n_examples, hi=10**7)
    _count("seed", seed, 0, 2**63 - 1)
    _count("batch_size", batch_size)
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    correct = total = 0
    try:
        for start in range(0, n_examples, batch_size):
            x = task.sample_x(min(batch_size, n_examples - start), g)
            ok = generate(model, x, task) == task.fn(x)
            if metric == "token":
                correct += int(ok.sum())
                total += ok.numel()
            else:
                correct += int(ok.all(1).sum())
                total += ok.shape[0]
    finally:
        model.train(was_training)
    return correct / total


def train(model: nn.Module, task, steps: int, lr: float = 3e-3, batch_size: int = 64, seed: int = 0,
          weight_decay: float = 0.0, eval_every: int | None = None, eval_examples: int = 256,
          progress: bool = True, callback=None, desc: str | None = None) -> dict:
    """Train every parameter with requires_grad on `task` with AdamW; returns a history dict.

    history: step, loss (every step), eval_step / accuracy (every `eval_every` steps and at the end),
    seconds, steps_per_second. Data comes from a generator seeded with `seed`, so runs repeat exactly on CPU.
    Every argument is checked before the model changes; an error while training restores its train/eval mode.
    """
    check_model(model)
    task = get_task(task)
    _count("steps", steps, 0, 10**9)
    check_number("lr", lr, 0, LR_MAX, bounds="(]")
    _count("batch_size", batch_size)
    _count("seed", seed, 0, 2**63 - 1)
    check_number("weight_decay", weight_decay, 0, LR_MAX)
    if eval_every is not None:
        _count("eval_every", eval_every, hi=10**9)
    _count("eval_examples", eval_examples, hi=10**7)
    for name, value, ok, want in (("progress", progress, isinstance(progress, bool), "a bool"),
                                  ("callback", callback, callback is None or callable(callback), "None or callable"),
                                  ("desc", desc, desc is None or isinstance(desc, str), "None or a str")):
        if not ok:
            raise TypeError(f"{name} must be {want}, got {type(value).__name__}")
    merged = [n for n, m in lora_layers(model).items() if m.merged]
    if merged:
        raise ValueError(f"model has merged LoRA layers {merged}: unmerge_lora(model) before training")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters (did add_lora freeze everything else?)")
    dev = device_of(model)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    hist = {"task": task.name, "step": [], "loss": [], "eval_step": [], "accuracy": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=desc or f"train {task.name}", leave=False)
    was_training = model.training
    model.train()
    t0 = time.perf_counter()
    try:
        for step in range(1, steps + 1):
            inputs, targets = task.batch(batch_size, g, dev)
            loss = task_loss(model, inputs, targets)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = loss.item()
            hist["step"].append(step)
            hist["loss"].append(lv)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == steps:
                    bar.set_postfix(loss=f"{lv:.3f}")
            if eval_every and step % eval_every == 0 and step != steps:
                hist["eval_step"].append(step)
                hist["accuracy"].append(evaluate(model, task, eval_examples))
            if callback is not None:
                callback(step, lv)
    except BaseException:
        model.train(was_training)
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    hist["eval_step"].append(steps)
    hist["accuracy"].append(evaluate(model, task, eval_examples))
    model.eval()
    hist["seconds"] = seconds
    hist["steps_per_second"] = steps / seconds if seconds > 0 else float("inf")
    return hist

"""Retrain the shipped checkpoint: `python -m lora_edu.pretrain [--out PATH | --replace-shipped]`.

It writes build/toy_pretrained.safetensors unless --replace-shipped is given. One thread and fixed seeds make it
repeatable on one machine and torch build (bit-identical tensors run after run); another CPU may round differently:
an equivalent model, not the same bytes. About 4 minutes on one laptop core.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from .adapters import write_atomic
from .model import ToyConfig, ToyTransformer
from .pretrained import CHECKPOINT
from .runtime import seed_everything
from .tasks import PRETRAIN_TASK, TASKS
from .train import evaluate, task_loss

RECIPE = {"task": PRETRAIN_TASK, "steps": 5000, "lr": 3e-3, "warmup": 200, "batch_size": 128, "seed": 0,
          "weight_decay": 0.01}


def pretrain(steps: int | None = None, progress: bool = True) -> tuple[ToyTransformer, dict]:
    """Train a ToyTransformer from scratch on the skill mixture: AdamW, linear warm-up then cosine decay."""
    recipe = dict(RECIPE, steps=steps or RECIPE["steps"])
    n, warm = recipe["steps"], recipe["warmup"]
    g = seed_everything(recipe["seed"])
    model = ToyTransformer(ToyConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.98),
                            weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n)))
    mix = TASKS[recipe["task"]]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="pretrain", leave=False)
    model.train()
    for _ in range(n):
        loss = task_loss(model, *mix.batch(recipe["batch_size"], g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return model.eval(), recipe


def skill_accuracy(model, n_examples: int = 2048) -> dict[str, float]:
    """Whole-answer accuracy on every skill of the pretraining mixture."""
    return {p: evaluate(model, p, n_examples=n_examples, metric="sequence")
            for p in dict.fromkeys(TASKS[PRETRAIN_TASK].parts)}


def save_checkpoint(model: ToyTransformer, recipe: dict, path=CHECKPOINT, n_examples: int = 2048) -> dict:
    from safetensors.torch import save

    acc = skill_accuracy(model, n_examples)
    meta = {"lora_edu_config": json.dumps(model.cfg.to_dict()), "lora_edu_recipe": json.dumps(recipe),
            "lora_edu_accuracy": json.dumps(acc), "lora_edu_torch": json.dumps(torch.__version__)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    write_atomic(path.parent, {path.name: save(state, metadata=meta)}, overwrite=True)
    return acc


def main(argv=None) -> None:
    from safetensors.torch import load_file

    ap = argparse.ArgumentParser(prog="python -m lora_edu.pretrain", description=__doc__.split("\n", 2)[2])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, default=Path("build/toy_pretrained.safetensors"), help="file to write")
    where.add_argument("--replace-shipped", action="store_true", help=f"overwrite the shipped {CHECKPOINT.name}")
    ap.add_argument("--steps", type=int, default=None, help=f"default {RECIPE['steps']}")
    args = ap.parse_args(argv)
    out = CHECKPOINT if args.replace_shipped else args.out
    torch.set_num_threads(1)  # one thread: repeatable sums on this machine, and no oversubscription on small boxes
    t0 = time.perf_counter()
    model, recipe = pretrain(args.steps)
    old = load_file(str(CHECKPOINT))  # read before a --replace-shipped overwrites it
    acc = save_checkpoint(model, recipe, out)
    new = load_file(str(out))
    diff = max((new[k] - old[k]).abs().max().item() for k in old) if new.keys() == old.keys() and all(
        new[k].shape == old[k].shape for k in old) else float("inf")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t0:.0f} s; "
          f"worst skill {min(acc, key=acc.get)} {min(acc.values()):.3f}; "
          f"largest difference from the shipped tensors: {diff:.3g}")


if __name__ == "__main__":
    main()

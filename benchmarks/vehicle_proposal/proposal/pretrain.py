"""Regenerate the shipped checkpoint: `python -m lora_edu.pretrain [--out PATH]` (deterministic on CPU)."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from .model import ToyConfig, ToyTransformer
from .pretrained import CHECKPOINT
from .runtime import seed_everything
from .tasks import PRETRAIN_TASK, TASKS, VOCAB_SIZE, get_task
from .train import evaluate, task_loss

CONFIG = {"vocab_size": VOCAB_SIZE, "max_len": 16, "d_model": 64, "n_layer": 3, "n_head": 4, "d_ff": 256}
RECIPE = {"task": PRETRAIN_TASK, "steps": 5000, "lr": 3e-3, "warmup": 200, "batch_size": 128, "seed": 0,
          "weight_decay": 0.01}


def pretrain(steps: int | None = None, progress: bool = True) -> tuple[ToyTransformer, dict]:
    """Train a ToyTransformer from scratch on the skill mixture: AdamW, linear warm-up then cosine decay."""
    recipe = dict(RECIPE, steps=steps or RECIPE["steps"])
    n, warm = recipe["steps"], recipe["warmup"]
    g = seed_everything(recipe["seed"])
    model = ToyTransformer(ToyConfig(**CONFIG))
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], betas=(0.9, 0.98),
                            weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n)))
    mix = get_task(recipe["task"])
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


def save_checkpoint(model: ToyTransformer, recipe: dict, path=CHECKPOINT) -> dict:
    from safetensors.torch import save_file

    acc = skill_accuracy(model)
    meta = {"lora_edu_config": json.dumps(model.cfg.to_dict()), "lora_edu_recipe": json.dumps(recipe),
            "lora_edu_accuracy": json.dumps(acc), "lora_edu_torch": json.dumps(torch.__version__)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)  # atomic: a reader never sees half a checkpoint
    return acc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(CHECKPOINT), help="where to write the safetensors file")
    ap.add_argument("--steps", type=int, default=None, help=f"default {RECIPE['steps']}")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the same bytes on every CPU, and no oversubscription on small boxes
    t0 = time.perf_counter()
    model, recipe = pretrain(args.steps)
    acc = save_checkpoint(model, recipe, args.out)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB) in "
          f"{time.perf_counter() - t0:.0f} s; worst skill {min(acc, key=acc.get)} {min(acc.values()):.3f}")


if __name__ == "__main__":
    main()

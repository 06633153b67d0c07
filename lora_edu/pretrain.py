"""Regenerate the shipped checkpoint: `python -m lora_edu.pretrain [--out PATH]` (deterministic on CPU)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .model import ToyConfig, ToyTransformer
from .pretrained import CHECKPOINT
from .runtime import seed_everything
from .tasks import PRETRAIN_TASK, VOCAB_SIZE
from .train import evaluate, train

RECIPE = {"task": PRETRAIN_TASK, "steps": 1500, "lr": 3e-3, "batch_size": 128, "seed": 0,
          "weight_decay": 0.01}


def pretrain(steps: int | None = None, progress: bool = True) -> tuple[ToyTransformer, dict]:
    """Train a ToyTransformer from scratch on the pretraining task with the fixed RECIPE."""
    recipe = dict(RECIPE, steps=steps or RECIPE["steps"])
    seed_everything(recipe["seed"])
    model = ToyTransformer(ToyConfig(vocab_size=VOCAB_SIZE))
    train(model, recipe["task"], recipe["steps"], lr=recipe["lr"], batch_size=recipe["batch_size"],
                 seed=recipe["seed"], weight_decay=recipe["weight_decay"], progress=progress,
                 desc="pretrain")
    return model, recipe


def save_checkpoint(model: ToyTransformer, recipe: dict, path=CHECKPOINT) -> dict:
    from safetensors.torch import save_file

    acc = evaluate(model, recipe["task"], n_examples=2048)
    meta = {"lora_edu_config": json.dumps(model.cfg.to_dict()), "lora_edu_recipe": json.dumps(recipe),
            "lora_edu_accuracy": json.dumps({recipe["task"]: acc}),
            "lora_edu_torch": json.dumps(torch.__version__)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return {recipe["task"]: acc}


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
          f"{time.perf_counter() - t0:.0f} s; accuracy {acc}")


if __name__ == "__main__":
    main()

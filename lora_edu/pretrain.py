"""Retrain the shipped checkpoint: `python -m lora_edu.pretrain [--out PATH | --replace-shipped]`.

It writes build/toy_pretrained.safetensors unless --replace-shipped is given. One thread and fixed seeds make it
repeatable on one machine and torch build (bit-identical tensors run after run); another CPU may round differently
(every tensor differed, by up to 6.5e-4, on a second x86 CPU with the same torch): an equivalent model, not the same.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from .adapters import write_atomic
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
    from safetensors.torch import save

    acc = evaluate(model, recipe["task"], n_examples=2048)
    meta = {"lora_edu_config": json.dumps(model.cfg.to_dict()), "lora_edu_recipe": json.dumps(recipe),
            "lora_edu_accuracy": json.dumps({recipe["task"]: acc}),
            "lora_edu_torch": json.dumps(torch.__version__)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    write_atomic(path.parent, {path.name: save(state, metadata=meta)}, overwrite=True)
    return {recipe["task"]: acc}


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
    diff = max((new[k] - old[k]).abs().max().item() for k in old) if new.keys() == old.keys() else float("inf")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - t0:.0f} s; accuracy {acc}; "
          f"largest difference from the shipped tensors: {diff:.3g}")


if __name__ == "__main__":
    main()

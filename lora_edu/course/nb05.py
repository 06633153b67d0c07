"""Notebook 05 (fine-tuning with LoRA): LoRA from the checkpoint vs a random init and vs full fine-tuning, the
Table 5 and Table 6 ablations with seeds, what weight decay does to ΔW, and their tables and figures."""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..adapters import extract_adapter
from ..inject import count_parameters, lora_layers
from ..model import ToyConfig, ToyTransformer
from ..pretrained import load_pretrained
from ..runtime import get_device, pick
from ..tasks import DOWNSTREAM_TASKS, Task, get_task
from ..train import EVAL_SEED, task_loss
from .common import (
    ATTENTION_TARGETS,
    LORA_RECIPE,
    check_int,
    check_model,
    device_of,
    figure,
    known_word_twin,  # noqa: F401  (notebook 05 names the known word beside each new one)
    smooth,
    sync,
    targets_tuple,
    train_lora,
)

# GPT-3 175B's shape (Brown et al. 2020, Table 2.1), used to scale our parameter arithmetic up.
GPT3_175B = {"d_model": 12288, "n_layer": 96, "d_ff": 4 * 12288, "vocab_size": 50257, "max_len": 2048}


# The paper's headline numbers (§4.2 and the abstract), quoted as the paper's.
PAPER_CLAIMS = {
    "trainable_ratio": 10_000, "checkpoint_full_bytes": 350e9, "checkpoint_lora_bytes": 35e6,
    "memory_ratio": 3.0, "train_vram_full_bytes": 1.2e12, "train_vram_lora_bytes": 350e9,
    "speedup": 43.1 / 32.5,
}


# §7.1 Table 5: GPT-3 175B, an 18M-parameter budget spent on different weight types.
PAPER_TABLE5 = [
    {"targets": ("q_proj",), "r": 8, "WikiSQL": 70.4, "MultiNLI": 91.0},
    {"targets": ("k_proj",), "r": 8, "WikiSQL": 70.0, "MultiNLI": 90.8},
    {"targets": ("v_proj",), "r": 8, "WikiSQL": 73.0, "MultiNLI": 91.0},
    {"targets": ("o_proj",), "r": 8, "WikiSQL": 73.2, "MultiNLI": 91.3},
    {"targets": ("q_proj", "k_proj"), "r": 4, "WikiSQL": 71.4, "MultiNLI": 91.3},
    {"targets": ("q_proj", "v_proj"), "r": 4, "WikiSQL": 73.7, "MultiNLI": 91.3},
    {"targets": ATTENTION_TARGETS, "r": 2, "WikiSQL": 73.7, "MultiNLI": 91.7},
]


# §7.2 Table 6: accuracy at r = 1, 2, 4, 8, 64.
PAPER_TABLE6 = {
    ("q_proj",): {"WikiSQL": (68.8, 69.6, 70.5, 70.4, 70.0), "MultiNLI": (90.7, 90.9, 91.1, 90.7, 90.7)},
    ("q_proj", "v_proj"): {"WikiSQL": (73.4, 73.3, 73.7, 73.8, 73.5),
                           "MultiNLI": (91.3, 91.4, 91.3, 91.6, 91.4)},
    ATTENTION_TARGETS: {"WikiSQL": (74.1, 73.7, 74.0, 74.0, 73.9), "MultiNLI": (91.2, 91.7, 91.7, 91.5, 91.4)},
}


PAPER_RANKS = (1, 2, 4, 8, 64)


def lora_params_at_scale(d_model: int, n_layer: int, r: int, n_adapted: int = 2, d_ff: int | None = None,
                         vocab_size: int = 20, max_len: int = 16, bias: bool = True) -> dict:
    """Parameter arithmetic for a GPT-shaped model: total parameters, LoRA parameters, their ratio.

    LoRA on `n_adapted` d_model×d_model attention matrices per layer: |Θ| = 2·n_adapted·n_layer·d_model·r (§4.2).
    """
    for name, v in (("d_model", d_model), ("n_layer", n_layer), ("r", r), ("n_adapted", n_adapted),
                    ("vocab_size", vocab_size), ("max_len", max_len)):
        check_int(v, name)
    if n_adapted > 4:
        raise ValueError(f"n_adapted must be at most 4 (W_q, W_k, W_v, W_o), got {n_adapted}")
    if r > d_model:
        raise ValueError(f"r must be ≤ d_model = {d_model}, got {r}")
    d_ff = 4 * d_model if d_ff is None else check_int(d_ff, "d_ff")
    b = 1 if bias else 0
    attn = 4 * (d_model * d_model + b * d_model)
    mlp = 2 * d_model * d_ff + b * (d_ff + d_model)
    norms = 2 * 2 * d_model
    per_layer = attn + mlp + norms
    total = n_layer * per_layer + (vocab_size + max_len) * d_model + 2 * d_model + vocab_size * d_model
    lora = 2 * n_adapted * n_layer * d_model * r
    return {"total": total, "lora": lora, "ratio": total / lora}


# ---------------------------------------------------------------------------------------------
# notebook 05: what a fine-tune costs
def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def training_memory(model: nn.Module, task="plus3", batch_size: int = 16) -> dict:
    """Bytes of the tensors one AdamW training step keeps, measured on a copy of `model`.

    weights (all parameters, frozen or not), gradients (trainable only) and optimizer state (AdamW's two
    moment tensors per trainable parameter; its scalar step counters are left out). Activations are not
    counted; on CUDA ``peak_bytes`` is the allocator's peak during the step, which does include them.
    """
    check_model(model)
    check_int(batch_size, "batch_size")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dev = device_of(m)
    opt = torch.optim.AdamW(params, lr=1e-3)
    inputs, targets = get_task(task).batch(batch_size, torch.Generator().manual_seed(0), dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
    task_loss(m, inputs, targets).backward()
    opt.step()
    out = {
        "weight_bytes": sum(_tensor_bytes(p) for p in m.parameters()),
        "grad_bytes": sum(_tensor_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer_bytes": sum(_tensor_bytes(t) for p in params for t in opt.state[p].values()
                               if torch.is_tensor(t) and t.shape == p.shape),
    }
    out["total_bytes"] = out["weight_bytes"] + out["grad_bytes"] + out["optimizer_bytes"]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        out["peak_bytes"] = torch.cuda.max_memory_allocated(dev) - start + out["weight_bytes"]
    return out


def time_train_step(model: nn.Module, task="plus3", batch_size: int = 64, steps: int = 20,
                    warmup: int = 3, lr: float = 1e-3) -> float:
    """Median wall-clock seconds of one AdamW training step (forward, backward, update) on a copy of `model`."""
    check_model(model)
    check_int(batch_size, "batch_size")
    check_int(steps, "steps")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    m = copy.deepcopy(model).train()
    params = [p for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    dev = device_of(m)
    opt = torch.optim.AdamW(params, lr=lr)
    g = torch.Generator().manual_seed(0)
    inputs, targets = get_task(task).batch(batch_size, g, dev)
    times = []
    for i in range(warmup + steps):
        sync(dev)
        t0 = time.perf_counter()
        loss = task_loss(m, inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def checkpoint_bytes(model: nn.Module) -> int:
    """Size on disk of what you must store for this fine-tune: the adapter files when `model` has LoRA
    layers (adapter_model.safetensors + adapter_config.json), else the full state dict as safetensors."""
    check_model(model)
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as d:
        if lora_layers(model):
            extract_adapter(model).save(d)
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(Path(d) / "model.safetensors"))
        return sum(f.stat().st_size for f in Path(d).iterdir())


# ---------------------------------------------------------------------------------------------
# one fine-tuning run of the course recipe, scored by whole answers
METHODS = ("lora", "full")
QV, Q = ("q_proj", "v_proj"), ("q_proj",)
INITS = ("pretrained", "random")


@torch.no_grad()
def exact_accuracy(model: nn.Module, task="plus3", n_examples: int = 512, seed: int = EVAL_SEED,
                   batch_size: int = 512) -> float:
    """Fraction of held-out examples whose whole answer is right: le.evaluate(metric="sequence"), in one pass.

    Teacher forcing scores every answer position at once. If the model's top token is right at every position
    given the true prefix, greedy decoding reproduces that prefix and gives the same answer; if one is wrong,
    greedy decoding goes wrong there too. So the two agree example by example; the examples are le.evaluate's
    (same seed, same chunks).
    """
    check_model(model)
    task = get_task(task)
    if not isinstance(task, Task):
        raise ValueError(f"task must be a single task, not the mixture {task.name!r}")
    check_int(n_examples, "n_examples")
    check_int(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    answer, right = task.answer_slice(), 0
    try:
        for start in range(0, n_examples, batch_size):
            inputs, targets = task.make(task.sample_x(min(batch_size, n_examples - start), g), device_of(model))
            pred = model(inputs)[:, answer].argmax(-1)
            right += int((pred == targets[:, answer]).all(1).sum())
    finally:
        model.train(was_training)
    return right / n_examples


def random_init(seed: int = 0) -> nn.Module:
    """The control: a ToyTransformer of the checkpoint's shape with freshly drawn random weights (`seed`)."""
    check_int(seed, "seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyTransformer(ToyConfig()).eval()


def finetune(task="plus3", method: str = "lora", targets=QV, r: int = 4, alpha: float | None = 8.0,
             steps: int = 300, lr: float | None = None, seed: int = 0, eval_examples: int = 512,
             weight_decay: float | None = None, device=None, progress: bool = False, model: nn.Module | None = None,
             measure: bool = False) -> tuple[nn.Module, dict]:
    """One run of the course recipe (common.train_lora) from the checkpoint, or from a copy of `model`.

    method "lora": LoRA(r, alpha) on `targets`, everything else frozen, lr 1e-2 and AdamW weight decay 1.0 on A and
    B unless given; "full": every parameter trains, no weight decay, lr 3e-3 unless given. Batch 64, one CPU
    thread. Returns (model, row); row["accuracy"] is the whole-answer accuracy on `eval_examples` held-out
    examples, row["history"] train()'s history. With ``measure`` the row also holds the costs (see `costs`).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    task = get_task(task)
    if not isinstance(task, Task):
        raise ValueError(f"task must be a single task, not the mixture {task.name!r}")
    check_int(steps, "steps")
    check_int(eval_examples, "eval_examples")
    full = method == "full"
    if lr is None:
        lr = 3e-3 if full else LORA_RECIPE["lr"]
    targets = ("all",) if full else targets_tuple(targets)
    kw = {} if full else {"targets": targets, "r": r, "alpha": alpha}
    m, hist = train_lora(task, base=model, lr=lr, steps=steps, seed=seed, full=full, weight_decay=weight_decay,
                         device=device, threads=1, batch_size=LORA_RECIPE["batch_size"], progress=progress,
                         desc=f"{method} {task.name}", eval_examples=16, **kw)
    trainable, total = count_parameters(m)
    layer = next(iter(lora_layers(m).values()), None)
    row = {"method": method, "task": task.name, "targets": targets, "r": None if full else r,
           "alpha": None if full else layer.alpha, "scale": None if full else layer.scaling, "steps": steps,
           "lr": lr, "weight_decay": (0.0 if full else LORA_RECIPE["weight_decay"]) if weight_decay is None
           else weight_decay, "seed": seed, "accuracy": exact_accuracy(m, task, eval_examples),
           "trainable": trainable, "total": total, "train_seconds": hist["seconds"], "final_loss": hist["loss"][-1],
           "history": hist}
    if measure:
        row.update(costs(m, task))
    m.eval()
    return m, row


def costs(model: nn.Module, task="plus3") -> dict:
    """What a fine-tune of `model` costs: trainable parameters, bytes of weights+grads+AdamW state (training_memory),
    checkpoint bytes on disk and the median milliseconds of one training step (batch 64)."""
    check_model(model)
    out = {"trainable": count_parameters(model)[0]}
    out.update(training_memory(model, task))
    out["checkpoint_bytes"] = checkpoint_bytes(model)
    out["step_ms"] = 1000 * time_train_step(model, task, steps=pick(20, 5))
    return out


def _spec(task="plus3", *, targets=QV, r: int = 4, alpha: float = 8.0, seed: int = 0, init: str = "pretrained",
          full: bool = False, lr: float | None = None, weight_decay: float | None = None) -> dict:
    """One run's description, checked, with the key that identifies it."""
    if not isinstance(full, bool):
        raise TypeError(f"full must be a bool, got {type(full).__name__}")
    if full and lr is None:
        raise ValueError("lr: full fine-tuning needs its learning rate (choose it with lr_sweep)")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    check_int(seed, "seed", 0)
    t = get_task(task).name
    tg = None if full else targets_tuple(targets)
    key = (t, tg, None if full else r, None if full else float(alpha), seed, init,
           None if lr is None else float(lr), None if weight_decay is None else float(weight_decay))
    return {"key": key, "task": t, "method": "full" if full else "lora", "targets": tg or QV, "r": r,
            "alpha": alpha, "seed": seed, "init": init, "lr": lr, "weight_decay": weight_decay}


def _train(spec: dict, steps: int, eval_examples: int, device, base: nn.Module | None = None) -> dict:
    """Train the run `spec` describes (from `base`, else a fresh checkpoint or random init) → its row + model."""
    if base is None:
        base = load_pretrained("cpu") if spec["init"] == "pretrained" else random_init(spec["seed"])
    model, row = finetune(spec["task"], spec["method"], spec["targets"], spec["r"], spec["alpha"], steps, spec["lr"],
                          spec["seed"], eval_examples, spec["weight_decay"], device, model=base)
    return dict(row, init=spec["init"], model=model)


def _worker_init() -> None:
    torch.set_num_threads(1)  # one run per core: the toy is too small for two threads to help


class Lab:
    """The notebook's runs: each configuration is trained once (the first time it is asked for) and remembered,
    so tables that share a cell (Table 5's {W_q, W_v} at r = 4 is the headline run) show the same run.

    Every run uses the course recipe with `steps` steps and is scored on `eval_examples` held-out examples.
    `prefetch` trains a list of runs `workers` at a time in separate processes (default: 2 on a CPU with at least
    2 cores, else 1). Each run is seeded and single-threaded, so it gives the same numbers in any process.
    """

    def __init__(self, steps: int = 300, eval_examples: int = 512, device=None, workers: int | None = None):
        self.steps = check_int(steps, "steps")
        self.eval_examples = check_int(eval_examples, "eval_examples")
        self.device = device
        on_cpu = get_device(device).type == "cpu" if device is not None else True
        self.workers = (min(2, os.cpu_count() or 1) if on_cpu else 1) if workers is None else check_int(workers,
                                                                                                      "workers")
        if not on_cpu:
            self.workers = 1  # an accelerator is shared by one process
        self.runs: dict[tuple, dict] = {}
        self._bases: dict[tuple, nn.Module] = {}

    def base(self, init: str = "pretrained", seed: int = 0) -> nn.Module:
        """The frozen starting point: the shipped checkpoint, or `random_init(seed)`."""
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        key = (init, 0 if init == "pretrained" else seed)
        if key not in self._bases:
            m = load_pretrained("cpu") if init == "pretrained" else random_init(seed)
            self._bases[key] = m.to(get_device(self.device)) if self.device is not None else m
        return self._bases[key]

    def run(self, task="plus3", *, targets=QV, r: int = 4, alpha: float = 8.0, seed: int = 0,
            init: str = "pretrained", full: bool = False, lr: float | None = None,
            weight_decay: float | None = None) -> dict:
        """The row of one run (trained now, or remembered); row["model"] is the fine-tuned model."""
        spec = _spec(task, targets=targets, r=r, alpha=alpha, seed=seed, init=init, full=full, lr=lr,
                     weight_decay=weight_decay)
        if spec["key"] not in self.runs:
            self.runs[spec["key"]] = _train(spec, self.steps, self.eval_examples, self.device,
                                            self.base(init, seed))
        return self.runs[spec["key"]]

    def prefetch(self, jobs, desc: str = "runs", progress: bool = True) -> int:
        """Train every job (a dict of run() keywords) not trained yet, `workers` at a time; returns how many."""
        todo = {}
        for kw in jobs:
            spec = _spec(**kw)
            if spec["key"] not in self.runs:
                todo.setdefault(spec["key"], spec)
        bar = _bar(len(todo), desc, progress and bool(todo))
        if self.workers > 1 and len(todo) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with warnings.catch_warnings():  # Python ≥ 3.12 warns about fork in a threaded process (Jupyter's
                # kernel threads); the workers only train with torch on one thread, which is what fork is safe for
                warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                with ProcessPoolExecutor(min(self.workers, len(todo)), mp_context=ctx,
                                         initializer=_worker_init) as ex:
                    futures = {ex.submit(_train, spec, self.steps, self.eval_examples, "cpu"): key
                               for key, spec in todo.items()}
                    for f in as_completed(futures):
                        self.runs[futures[f]] = f.result()
                        if bar is not None:
                            bar.update(1)
        else:
            for key, spec in todo.items():
                self.runs[key] = _train(spec, self.steps, self.eval_examples, self.device,
                                        self.base(spec["init"], spec["seed"]))
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return len(todo)

    @property
    def seconds(self) -> float:
        """Training seconds of every run so far (summed over processes)."""
        return sum(r["train_seconds"] for r in self.runs.values())


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _cells(lab: Lab, cells: list[tuple[dict, dict]], desc: str, progress: bool) -> list[dict]:
    """cells: (row fields, run() keywords with a 'seeds' tuple and a 'task') → one row per cell with its
    accuracies over seeds, mean, min, max and the trainable-parameter count."""
    if not isinstance(lab, Lab):
        raise TypeError(f"lab must be an nb05.Lab, got {type(lab).__name__}")
    for _, kw in cells:
        seeds = kw["seeds"]
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty sequence of non-negative ints, got {seeds!r}")
    lab.prefetch([dict({k: v for k, v in kw.items() if k != "seeds"}, seed=s) for _, kw in cells
                  for s in kw["seeds"]], desc, progress)
    rows = []
    for fields, kw in cells:
        kw = dict(kw)
        seeds = tuple(kw.pop("seeds"))
        runs = [lab.run(seed=s, **kw) for s in seeds]
        accs = [x["accuracy"] for x in runs]
        rows.append(dict(fields, seeds=seeds, accuracies=accs, mean=sum(accs) / len(accs), min=min(accs),
                         max=max(accs), trainable=runs[0]["trainable"], scale=runs[0]["scale"]))
    return rows


def seed_table(lab: Lab, tasks=DOWNSTREAM_TASKS, seeds=(0, 1, 2), label: str = "", progress: bool = True,
               **run_kw) -> list[dict]:
    """One configuration (run() keywords) on every task over `seeds` — a tuple, or {task: seeds} to give each task
    its own. Row per task: task, config (= label), seeds, accuracies, mean, min, max, trainable."""
    tasks = tuple(get_task(t).name for t in tasks)
    if not tasks:
        raise ValueError("tasks must not be empty")
    per_task = seeds if isinstance(seeds, dict) else {t: tuple(seeds) for t in tasks}
    return _cells(lab, [({"task": t, "config": label}, dict(run_kw, task=t, seeds=tuple(per_task[t])))
                        for t in tasks], label or "runs", progress)


def lr_sweep(lab: Lab, task="plus3", lrs=(3e-4, 3e-3, 3e-2), seed: int = 0, progress: bool = True):
    """Full fine-tuning at each learning rate (one seed): (rows with lr, accuracy, final_loss, best lr).

    The best lr has the highest accuracy; ties go to the lower final training loss (the run that learned more).
    """
    lrs = tuple(lrs)
    if not lrs:
        raise ValueError("lrs must not be empty")
    lab.prefetch([{"task": task, "full": True, "lr": lr, "seed": seed} for lr in lrs], "full fine-tuning lr sweep",
                 progress)
    rows = []
    for lr in lrs:
        x = lab.run(task, full=True, lr=lr, seed=seed)
        rows.append({"lr": lr, "accuracy": x["accuracy"], "final_loss": x["final_loss"], "seed": seed,
                     "history": x["history"]})
    best = min(rows, key=lambda x: (-x["accuracy"], x["final_loss"]))["lr"]
    return rows, best


def budget_configs(budget_rank: int = 8, types=ATTENTION_TARGETS) -> list[tuple[tuple[str, ...], int]]:
    """Table 5's layout: one type at r = budget_rank, pairs at r/2, all four at r/4 — equal parameter budgets."""
    check_int(budget_rank, "budget_rank")
    if budget_rank % 4:
        raise ValueError(f"budget_rank must be divisible by 4 so that every split is a whole rank, got {budget_rank}")
    types = targets_tuple(types)
    if len(types) != 4:
        raise ValueError(f"types must name the four attention matrices, got {types!r}")
    q, k, v, o = types
    return ([((t,), budget_rank) for t in types]
            + [((q, k), budget_rank // 2), ((q, v), budget_rank // 2), (types, budget_rank // 4)])


def _paper5(targets) -> dict:
    for p in PAPER_TABLE5:
        if p["targets"] == tuple(targets):
            return {"paper_WikiSQL": p["WikiSQL"], "paper_MultiNLI": p["MultiNLI"]}
    return {}


def _paper6(targets, r) -> dict:
    paper = PAPER_TABLE6.get(tuple(targets))
    if paper is None or r not in PAPER_RANKS:
        return {}
    i = PAPER_RANKS.index(r)
    return {"paper_WikiSQL": paper["WikiSQL"][i], "paper_MultiNLI": paper["MultiNLI"][i]}


def table5(lab: Lab, task="plus3", seeds=(0, 1, 2), configs=None, alpha: float = 8.0,
           progress: bool = True) -> list[dict]:
    """Table 5 analogue: the same trainable-parameter budget spent on different weight types, α fixed.

    configs: (targets, r) pairs (default budget_configs(8), the paper's seven). Row per config: targets, r, alpha,
    scale (= α/r: it differs between configurations), trainable, seeds, accuracies, mean, min, max, and the
    paper's WikiSQL / MultiNLI accuracy for that column.
    """
    configs = budget_configs(8) if configs is None else [(targets_tuple(t), check_int(r, "r")) for t, r in configs]
    if not configs:
        raise ValueError("configs must not be empty")
    return _cells(lab, [({"targets": t, "r": r, "alpha": alpha} | _paper5(t),
                         {"task": task, "targets": t, "r": r, "alpha": alpha, "seeds": tuple(seeds)})
                        for t, r in configs], "Table 5 runs", progress)


def table6(lab: Lab, task="plus3", seeds=(0, 1, 2), ranks=PAPER_RANKS, target_sets=(Q, QV), alpha: float = 8.0,
           progress: bool = True) -> list[dict]:
    """Table 6 analogue: accuracy for each target set and rank, α fixed (as the paper did), over `seeds`.

    Row per cell: targets, r, alpha, scale, trainable, seeds, accuracies, mean, min, max, paper's numbers if any.
    """
    ranks = tuple(ranks)
    if not ranks:
        raise ValueError("ranks must not be empty")
    for r in ranks:
        check_int(r, "ranks")
    target_sets = [targets_tuple(t) for t in target_sets]
    if not target_sets:
        raise ValueError("target_sets must not be empty")
    return _cells(lab, [({"targets": t, "r": r, "alpha": alpha} | _paper6(t, r),
                         {"task": task, "targets": t, "r": r, "alpha": alpha, "seeds": tuple(seeds)})
                        for t in target_sets for r in ranks], "Table 6 runs", progress)


def cell(rows: list[dict], **match) -> dict:
    """The one row of a table whose fields equal `match` (targets may be given as a tuple of names)."""
    if "targets" in match:
        match["targets"] = targets_tuple(match["targets"])
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise ValueError(f"{len(found)} rows match {match!r}; expected exactly one")
    return found[0]


# ---------------------------------------------------------------------------------------------
# what weight decay on A and B does to ΔW
@torch.no_grad()
def delta_summary(model: nn.Module) -> list[dict]:
    """Per LoRA layer: ‖ΔW‖_F/‖W0‖_F, the share of ‖ΔW‖² in its top singular direction, how many singular values
    exceed 1% of the largest, and the singular values of ΔW = (α/r)·B·A themselves."""
    check_model(model)
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layers")
    rows = []
    for name, layer in layers.items():
        s = torch.linalg.svdvals(layer.delta_weight().detach().double().cpu())
        energy = float((s ** 2).sum())
        w0 = float(torch.linalg.matrix_norm(layer.base.weight.detach().double()))
        rows.append({"layer": name, "rel_norm": float(energy ** 0.5) / w0,
                     "top1_share": float(s[0] ** 2) / energy if energy > 0 else float("nan"),
                     "rank_1pct": int((s > 0.01 * s[0]).sum()) if energy > 0 else 0, "singular_values": s.tolist()})
    return rows


# ---------------------------------------------------------------------------------------------
def target_label(targets) -> str:
    """("q_proj", "v_proj") → "W_q+W_v"."""
    return "+".join("W_" + t.replace("_proj", "") for t in targets_tuple(targets))


def _short(targets) -> str:
    if isinstance(targets, str):
        targets = (targets,)
    if tuple(targets) == ATTENTION_TARGETS:
        return "all four"
    return "+".join("W" + t.replace("_proj", "") for t in targets)


def plot_seed_tables(tables: dict[str, list[dict]], title: str = "Whole-answer accuracy, one dot per seed"):
    """Each configuration's accuracy per task (rows from seed_table): a dot per run, a bar at the mean."""
    if not tables or not all(tables.values()):
        raise ValueError("tables must map labels to non-empty lists of rows")
    tasks = list(dict.fromkeys(r["task"] for rows in tables.values() for r in rows))
    fig, ax = figure(1, 1, width=1.6 + 1.9 * len(tasks), height=3.2)
    w = 0.8 / len(tables)
    for j, (label, rows) in enumerate(tables.items()):
        color = f"C{j}"
        for r in rows:
            x = tasks.index(r["task"]) + (j - (len(tables) - 1) / 2) * w
            ax.bar(x, r["mean"], w * 0.9, color=color, alpha=0.35, label=label if r is rows[0] else None)
            ax.plot([x] * len(r["accuracies"]), r["accuracies"], "o", color=color, ms=4)
            ax.text(x, r["mean"] + 0.03, f"{r['mean']:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylim(0, 1.35)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("whole answers right")
    ax.legend(fontsize=8, loc="upper center", ncol=len(tables))
    ax.set_title(title, fontsize=10)
    return fig


def plot_loss_curves(rows: list[dict], labels: list[str], title: str = "Training loss",
                     chance: float | None = None):
    """Loss per step (smoothed) of runs (rows with a history); `chance` draws ln(10), a guess among 10 digits."""
    if not rows or len(rows) != len(labels):
        raise ValueError("rows must be non-empty and labels must name each row")
    fig, ax = figure(1, 1, width=6, height=3.2)
    for i, (r, label) in enumerate(zip(rows, labels)):
        h = r["history"]
        ax.plot(h["step"], smooth(h["loss"]), label=label, color=f"C{i}")
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", lw=1)
        ax.text(0, chance * 1.15, "chance (ln 10)", color="gray", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (smoothed)")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def plot_cost_comparison(lora: dict, full: dict, title: str = "What LoRA saves on the toy (full ÷ LoRA)"):
    """One bar per cost: how many times larger full fine-tuning is than LoRA (log scale), with the values."""
    items = [("trainable\nparameters", "trainable"), ("optimizer\nstate", "optimizer_bytes"),
             ("weights+grads\n+optimizer", "total_bytes"), ("checkpoint\non disk", "checkpoint_bytes"),
             ("time per\ntraining step", "step_ms")]
    items = [(lbl, k) for lbl, k in items if k in lora and k in full]
    if not items:
        raise ValueError("lora and full share no cost (rows from nb05.costs)")
    ratios = [full[k] / lora[k] for _, k in items]
    fig, ax = figure(1, 1, width=7, height=3.4)
    bars = ax.bar([lbl for lbl, _ in items], ratios, color=["#c44e52" if x >= 1 else "#8c8c8c" for x in ratios])
    ax.axhline(1, color="black", lw=0.8)
    ax.set_yscale("log")
    for b, x in zip(bars, ratios):
        ax.text(b.get_x() + b.get_width() / 2, x * 1.08, f"{x:.2g}×", ha="center", fontsize=9)
    ax.set_ylabel("full fine-tuning ÷ LoRA")
    ax.set_ylim(min(0.5, min(ratios) * 0.7), max(ratios) * 2)
    ax.set_title(title)
    return fig


def _errorbars(ax, xs, rows, **kw):
    ys = [r["mean"] for r in rows]
    err = [[y - r["min"] for y, r in zip(ys, rows)], [r["max"] - y for y, r in zip(ys, rows)]]
    return ax.errorbar(xs, ys, yerr=err, capsize=3, **kw)


def plot_target_budget(rows: list[dict], task: str = "plus3",
                       title: str = "Same parameter budget, different weight types (Table 5)"):
    """Ours (mean and min–max over seeds, α/r under each label) above the paper's WikiSQL / MultiNLI accuracy."""
    if not rows:
        raise ValueError("rows must not be empty")
    labels = [f"{_short(r['targets'])}\nr={r['r']}, α/r={r['scale']:g}" for r in rows]
    fig, (a1, a2) = figure(1, 2, width=7.5, height=2.9)
    xs = range(len(rows))
    a1.bar(xs, [r["mean"] for r in rows], 0.6, color="C0", alpha=0.35)
    _errorbars(a1, xs, rows, fmt="none", color="C0")
    for x, r in zip(xs, rows):
        a1.plot([x] * len(r["accuracies"]), r["accuracies"], "o", color="C0", ms=3)
        a1.text(x + 0.32, r["mean"], f"{r['mean']:.2f}", va="center", fontsize=7)
    a1.set_ylabel("whole answers right")
    a1.set_title(f"toy, {task}: {rows[0]['trainable']:,} trainable parameters each, "
                 f"{len(rows[0]['seeds'])} seed(s)", fontsize=10)
    a1.set_ylim(0, 1.1)
    px = [i for i, r in enumerate(rows) if "paper_WikiSQL" in r]
    if px:
        a2.bar([x - 0.2 for x in px], [rows[x]["paper_WikiSQL"] for x in px], 0.4, label="WikiSQL")
        a2.bar([x + 0.2 for x in px], [rows[x]["paper_MultiNLI"] for x in px], 0.4, label="MultiNLI")
        a2.set_ylim(65, 100)
        a2.legend(fontsize=8, loc="upper center", ncol=2)
    a2.set_ylabel("accuracy (%)")
    a2.set_title("paper, GPT-3 175B (18M trainable parameters each)", fontsize=10)
    for ax, lbls in ((a1, labels), (a2, [f"{_short(r['targets'])}\nr={r['r']}" for r in rows])):
        ax.set_xticks(list(xs))
        ax.set_xticklabels(lbls)
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(title)
    return fig


def plot_rank_sweep(rows: list[dict], task: str = "plus3", title: str = "Accuracy versus rank r (Table 6)"):
    """Accuracy against r (log scale) per target set: ours (mean, min–max, seeds as dots) left, the paper's right."""
    if not rows:
        raise ValueError("rows must not be empty")
    fig, (a1, a2) = figure(2, 1, width=4.6, height=3.4)
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r["targets"]), []).append(r)
    for i, (t, rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda x: x["r"])
        xs = [x["r"] for x in rs]
        _errorbars(a1, xs, rs, fmt="o-", color=f"C{i}", label=f"{_short(t)}")
        for x in rs:
            a1.plot([x["r"]] * len(x["accuracies"]), x["accuracies"], ".", color=f"C{i}", alpha=0.6)
        paper = [x for x in rs if "paper_WikiSQL" in x]
        if paper:
            a2.plot([x["r"] for x in paper], [x["paper_WikiSQL"] for x in paper], "o-", color=f"C{i}",
                    label=_short(t))
    ranks = sorted({r["r"] for r in rows})
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks(ranks)
        ax.set_xticklabels([str(r) for r in ranks])
        ax.minorticks_off()
        ax.set_xlabel("rank r")
        ax.legend(fontsize=8)
    a1.set_xlabel(f"rank r (α fixed at {rows[0]['alpha']:g})")
    a1.set_ylabel("whole answers right")
    a1.set_ylim(0, 1.05)
    a1.set_title(f"toy, {task}: mean, min–max and each seed ({len(rows[0]['seeds'])})", fontsize=10)
    a2.set_ylabel("WikiSQL accuracy (%)")
    a2.set_title("paper, GPT-3 175B", fontsize=10)
    fig.suptitle(title)
    return fig


def plot_delta_spectra(summaries: dict[str, list[dict]], title: str = "Singular values of ΔW = (α/r)·B·A"):
    """Each LoRA layer's singular values of ΔW (divided by the largest) for each run in `summaries`
    ({label: delta_summary(model)}): one panel per run, one line per layer."""
    if not summaries or not all(summaries.values()):
        raise ValueError("summaries must map labels to non-empty delta_summary rows")
    fig, axes = figure(len(summaries), 1, width=4.2, height=3.0, sharey=True)
    axes = axes if len(summaries) > 1 else [axes]
    for ax, (label, rows) in zip(axes, summaries.items()):
        for i, r in enumerate(rows):
            s = torch.tensor(r["singular_values"], device="cpu")
            ax.semilogy(range(1, len(s) + 1), (s / s[0]).clamp_min(1e-8), ".-", ms=3, color=f"C{i}",
                        label=r["layer"].replace("blocks.", "b").replace(".attn", "").replace("_proj", ""))
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("index i of σᵢ")
        ax.set_ylim(1e-8, 2)
    axes[0].set_ylabel("σᵢ / σ₁ (floored at 1e-8)")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(title)
    return fig

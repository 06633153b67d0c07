"""Notebook 10 (from lora_edu to PEFT): the toy wrapped by PEFT, head-to-head training, one training step side by
side, adapters combined by PEFT's add_weighted_adapter next to notebook 08's arithmetic, and the name map.

PEFT is imported inside the functions, so importing this module never needs it.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..inject import add_lora, lora_layers
from ..layer import LoRALinear
from ..pretrained import load_pretrained
from ..runtime import seed_everything
from ..tasks import get_task
from ..train import evaluate, task_loss, train
from .common import LORA_RECIPE, check_int, check_model, device_of

TARGETS = ("q_proj", "v_proj")
PEFT_PREFIX = "base_model.model."
TASK = "plus3"  # the downstream task the notebook trains on (le.DOWNSTREAM_TASKS[0])
BASE_SKILL = "add2"  # a pretraining skill: what the base model keeps when adapters are combined or switched


def peft_config(r: int = 4, alpha: float = 8, targets=TARGETS, **kw):
    """LoraConfig(r, lora_alpha, target_modules) as the notebook uses it (no dropout, plain LoRA)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, **kw)


def peft_toy(seed: int = 0, base: nn.Module | None = None, adapter_name: str = "default", **cfg):
    """get_peft_model on a copy of `base` (default: the pretrained toy), after seeding the initialisation."""
    from peft import get_peft_model

    base = load_pretrained() if base is None else copy.deepcopy(base)
    seed_everything(seed)
    with warnings.catch_warnings():  # PEFT warns that the toy is not a transformers model; that is expected here
        warnings.simplefilter("ignore")
        return get_peft_model(base, peft_config(**cfg), adapter_name=adapter_name)


def peft_layers(model: nn.Module) -> dict:
    """{layer name as lora_edu writes it: PEFT LoRA layer} of a PeftModel (the ones holding lora_A)."""
    check_model(model)
    return {n.removeprefix(PEFT_PREFIX): m for n, m in model.named_modules()
            if hasattr(m, "lora_A") and hasattr(m, "base_layer")}


def layer_parts(layer, adapter: str = "default") -> dict:
    """W0, b, A (r×k), B (d×r), r, alpha and scaling of one PEFT LoRA layer, named as in the paper."""
    return {"W0": layer.base_layer.weight, "b": layer.base_layer.bias, "A": layer.lora_A[adapter].weight,
            "B": layer.lora_B[adapter].weight, "r": layer.r[adapter], "alpha": layer.lora_alpha[adapter],
            "scaling": layer.scaling[adapter]}


def copy_start(peft_model: nn.Module, base: nn.Module, alpha: float = 8) -> nn.Module:
    """A lora_edu copy of `base` whose A and B start exactly where the PEFT model's do (same r, alpha, layers)."""
    layers = peft_layers(peft_model)
    ours = copy.deepcopy(base)
    add_lora(ours, sorted({n.rsplit(".", 1)[-1] for n in layers}), r=layer_parts(next(iter(layers.values())))["r"],
             alpha=alpha)
    with torch.no_grad():
        for n, m in lora_layers(ours).items():
            p = layer_parts(layers[n])
            m.A.copy_(p["A"])
            m.B.copy_(p["B"])
    return ours


def one_step_side_by_side(base: nn.Module, task=TASK, seed: int = 0, batch_size: int = 64) -> dict:
    """Same start, same batch: the loss and the gradients of A and B in PEFT and in lora_edu (max |difference|)."""
    pm = peft_toy(seed, base)
    ours = copy_start(pm, base)
    inputs, targets = get_task(task).batch(batch_size, torch.Generator().manual_seed(seed), device_of(base))
    losses = []
    for m in (pm, ours):
        m.train()
        loss = task_loss(m, inputs, targets)
        loss.backward()
        losses.append(float(loss.detach()))
    grads = [max(float((layer_parts(pl)[k].grad - getattr(lora_layers(ours)[n], k).grad).abs().max())
                 for n, pl in peft_layers(pm).items()) for k in ("A", "B")]
    scale = max(float(getattr(m, k).grad.abs().max()) for m in lora_layers(ours).values() for k in ("A", "B"))
    return {"loss_peft": losses[0], "loss_lora_edu": losses[1], "max_grad_diff_A": grads[0],
            "max_grad_diff_B": grads[1], "max_grad": scale}


def head_to_head(base: nn.Module, task=TASK, seeds=(0, 1, 2), steps: int = LORA_RECIPE["steps"],
                 lr: float = LORA_RECIPE["lr"], weight_decay: float = LORA_RECIPE["weight_decay"],
                 eval_examples: int = 256) -> tuple[list[dict], dict]:
    """Train LoraConfig(r=4, lora_alpha=8) in PEFT and add_lora(r=4, alpha=8) in lora_edu with the course recipe
    (AdamW, weight decay on A and B), each from its own default initialisation, with the same data for each seed.
    Row: library, seed, accuracy (exact answer: all digits right), token_accuracy, final_loss (mean of the last 20
    steps), seconds. Returns (rows, {(library, seed): trained model})."""
    check_int(steps, "steps")
    rows, models = [], {}
    for seed in seeds:
        for lib in ("PEFT", "lora_edu"):
            if lib == "PEFT":
                m = peft_toy(seed, base)
            else:
                m = copy.deepcopy(base)
                seed_everything(seed)
                add_lora(m, TARGETS, r=4, alpha=8)
            t0 = time.perf_counter()
            hist = train(m, task, steps, lr=lr, seed=seed, weight_decay=weight_decay, progress=False,
                         eval_examples=eval_examples)
            seconds = time.perf_counter() - t0
            rows.append({"library": lib, "seed": seed,
                         "accuracy": evaluate(m, task, eval_examples, metric="sequence"),
                         "token_accuracy": hist["accuracy"][-1], "final_loss": statistics.fmean(hist["loss"][-20:]),
                         "seconds": seconds})
            models[(lib, seed)] = m
    return rows, models


def spread(rows: list[dict], key: str = "accuracy", **match) -> dict:
    """mean, min, max and n of rows[key] over the rows whose fields equal `match`."""
    vals = [r[key] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


@torch.no_grad()
def max_logit_diff(a: nn.Module, b: nn.Module, tokens: torch.Tensor) -> float:
    """max |a(tokens) − b(tokens)| in eval mode."""
    a.eval()
    b.eval()
    return float((a(tokens) - b(tokens)).abs().max())


def peft_adapter_delta(model: nn.Module, adapter: str) -> dict:
    """{layer: ΔW = scaling·B·A} (float64, CPU) of one named adapter in a PeftModel."""
    out = {}
    for n, layer in peft_layers(model).items():
        if adapter in layer.lora_A:
            p = layer_parts(layer, adapter)
            out[n] = (p["B"].detach().double().cpu() @ p["A"].detach().double().cpu()) * p["scaling"]
    return out


def combine_in_peft(model: nn.Module, names, method: str, weights=None) -> tuple[str, int]:
    """add_weighted_adapter(names, weights, method) as a new adapter "<method>"; returns (its name, its rank)."""
    names = list(names)
    weights = [1.0] * len(names) if weights is None else list(weights)
    new = f"{method}"
    if new in model.peft_config:
        model.delete_adapter(new)
    model.add_weighted_adapter(names, weights, new, combination_type=method)
    return new, model.peft_config[new].r


def notebook08_delta(adapters: list, method: str) -> dict:
    """What notebook 08 computes for PEFT's method: cat = the exact sum Σ sᵢBᵢAᵢ, svd = that sum truncated to
    rank r, linear = (ΣBᵢ)(ΣAⱼ)·s — which is N² times notebook 08's naive factor average s·B̄·Ā."""
    from . import nb08

    if method == "cat":
        return nb08.combined_deltas(adapters, "sum")
    if method == "svd":
        return nb08.combined_deltas(adapters, "svd")
    if method == "linear":
        return {k: v * len(adapters) ** 2 for k, v in nb08.combined_deltas(adapters, "avg_AB").items()}
    raise ValueError(f"method must be 'cat', 'linear' or 'svd', got {method!r}")


def cross_over_own(adapters: dict) -> float:
    """Notebook 08's measure of 'linear': ‖Σ cross terms sᵢBᵢAⱼ (i ≠ j)‖ / ‖Σ own terms sᵢBᵢAᵢ‖ over all layers."""
    from . import nb08

    return nb08.cross_terms(list(adapters.values()))["cross_over_own"]


def combination_rows(model: nn.Module, adapters: dict, methods=("cat", "linear", "svd"), pretrain: str = BASE_SKILL,
                     eval_examples: int = 256) -> list[dict]:
    """For each PEFT combination of all the adapters ({task: Adapter}, already loaded into `model` under their task
    names): its rank, max |ΔW_PEFT − ΔW_notebook08| relative to max |ΔW|, and exact-answer accuracy on every task
    and on the pretraining skill `pretrain`. A final row "set_adapter" scores each task with only its own adapter
    active (switching), and `pretrain` with the adapters disabled."""
    names = list(adapters)
    rows = []
    for method in methods:
        new, rank = combine_in_peft(model, names, method)
        mine, ref = peft_adapter_delta(model, new), notebook08_delta(list(adapters.values()), method)
        scale = max(float(v.abs().max()) for v in ref.values())
        gap = max(float((mine[k] - ref[k]).abs().max()) for k in ref) / scale
        model.set_adapter(new)
        acc = {t: evaluate(model, t, eval_examples, metric="sequence") for t in names}
        rows.append({"method": method, "rank": rank, "rel_gap_to_nb08": gap, **acc,
                     "mean_task": statistics.fmean(acc.values()),
                     pretrain: evaluate(model, pretrain, eval_examples, metric="sequence")})
        model.delete_adapter(new)
    acc = {}
    for t in names:
        model.set_adapter(t)
        acc[t] = evaluate(model, t, eval_examples, metric="sequence")
    with model.disable_adapter():
        pre = evaluate(model, pretrain, eval_examples, metric="sequence")
    rows.append({"method": "set_adapter", "rank": adapters[names[0]].r, "rel_gap_to_nb08": None, **acc,
                 "mean_task": statistics.fmean(acc.values()), pretrain: pre})
    return rows


def describe(directory) -> dict:
    """What an adapter directory holds: its format, the config fields for r, α, targets, rsLoRA, and tensor names."""
    from safetensors import safe_open

    directory = Path(directory)
    cfg = json.loads((directory / "adapter_config.json").read_text())
    with safe_open(str(directory / "adapter_model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
    is_peft = "peft_type" in cfg
    fields = (("peft_type", "r", "lora_alpha", "target_modules", "use_rslora") if is_peft
              else ("format", "r", "alpha", "targets", "rslora"))
    return {"format": "PEFT" if is_peft else "lora_edu", "config": {k: cfg.get(k) for k in fields},
            "tensors": len(keys), "first_keys": keys[:2]}


def name_map() -> list[dict]:
    """lora_edu idea → PEFT name, with both libraries' defaults read from the installed code, not typed in."""
    import inspect

    from peft import LoraConfig

    d = LoraConfig()
    ours = inspect.signature(LoRALinear.__init__).parameters
    le_scale = LoRALinear(nn.Linear(8, 8), r=4).scaling
    return [
        {"lora_edu": "le.add_lora(model, targets, r, alpha)", "PEFT": "get_peft_model(model, LoraConfig("
         "target_modules=…, r=…, lora_alpha=…))", "note": "same layers, same frozen base"},
        {"lora_edu": "LoRALinear.A (r×k), .B (d×r)", "PEFT": 'layer.lora_A["default"].weight, '
         'layer.lora_B["default"].weight', "note": "same shapes: nn.Linear(k→r) and nn.Linear(r→d) weights"},
        {"lora_edu": "scaling = α/r", "PEFT": 'layer.scaling["default"] = lora_alpha / r', "note": "same formula"},
        {"lora_edu": f"alpha default: α = r (r = 4 → scaling {le_scale:g})",
         "PEFT": f"lora_alpha default: {d.lora_alpha} (r = 4 → scaling {d.lora_alpha / 4:g})",
         "note": "**differs**: pass α explicitly in both"},
        {"lora_edu": f"init default: {ours['init'].default!r} (A Gaussian, std 1/√k: the paper's §4.1)",
         "PEFT": f"init_lora_weights default: {d.init_lora_weights} (A Kaiming-uniform; 'gaussian' has std 1/r)",
         "note": "**differs**; B = 0 in both, so ΔW = 0 at step 0"},
        {"lora_edu": f"rslora (default {ours['rslora'].default})", "PEFT": f"use_rslora (default {d.use_rslora})",
         "note": "scaling α/√r"},
        {"lora_edu": f"dropout (default {ours['dropout'].default})", "PEFT": f"lora_dropout (default {d.lora_dropout})",
         "note": "training only"},
        {"lora_edu": "le.count_parameters(model)", "PEFT": "model.print_trainable_parameters()", "note": ""},
        {"lora_edu": "le.merge_lora / le.unmerge_lora", "PEFT": "model.merge_adapter() / model.unmerge_adapter()",
         "note": "W ← W ± ΔW in place"},
        {"lora_edu": "le.remove_lora(model, merge=True / False)", "PEFT": "model.merge_and_unload() / model.unload()",
         "note": "plain nn.Linear layers again"},
        {"lora_edu": "le.extract_adapter(model).save(dir, format='peft', overwrite=True)",
         "PEFT": "model.save_pretrained(dir)", "note": "same files: adapter_config.json + adapter_model.safetensors; "
         "ours replaces an existing adapter only with overwrite=True (else FileExistsError), PEFT always does"},
        {"lora_edu": "le.load_adapter(model, dir)", "PEFT": "PeftModel.from_pretrained(model, dir) / "
         "model.load_adapter(dir, adapter_name)", "note": "each reads the other's directories"},
        {"lora_edu": "notebook 06: subtract BA, add B'A'", "PEFT": "model.set_adapter(name)",
         "note": "PEFT switches unmerged adapters: W0 never changes"},
        {"lora_edu": "notebook 06: MultiAdapterModel (mixed batch)", "PEFT": "model(x, adapter_names=[…])",
         "note": "one adapter per row"},
        {"lora_edu": "notebook 08: sum / svd / naive average", "PEFT": "add_weighted_adapter(…, combination_type="
         "'cat' / 'svd' / 'linear')", "note": "'linear' with weights 1 = N² × notebook 08's average"},
    ]


def markdown_table(rows: list[dict], columns=None) -> str:
    """A Markdown table of `rows` (list of dicts), `columns` in order (default: the keys of the first row)."""
    columns = list(rows[0]) if columns is None else list(columns)
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(out)


class NeoXLike(nn.Module):
    """Module names of a GPT-NeoX/Pythia-style model (fused query_key_value, attention.dense, mlp.dense_h_to_4h …),
    tiny and random: a model whose Linear names are not the toy's, for choosing target_modules."""

    def __init__(self, d: int = 16, n_layers: int = 2, vocab: int = 20, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed_in = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList()
        for _ in range(n_layers):
            block = nn.Module()
            block.attention = nn.Module()
            block.attention.query_key_value = nn.Linear(d, 3 * d)
            block.attention.dense = nn.Linear(d, d)
            block.mlp = nn.Module()
            block.mlp.dense_h_to_4h = nn.Linear(d, 4 * d)
            block.mlp.dense_4h_to_h = nn.Linear(4 * d, d)
            self.layers.append(block)
        self.embed_out = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_in(ids)
        for b in self.layers:
            q, k, v = b.attention.query_key_value(h).chunk(3, -1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
            h = h + b.attention.dense(att @ v)
            h = h + b.mlp.dense_4h_to_h(torch.relu(b.mlp.dense_h_to_4h(h)))
        return self.embed_out(h)


def train_adapters(model: nn.Module, tasks, config, steps: int, lr: float = LORA_RECIPE["lr"],
                   weight_decay: float = LORA_RECIPE["weight_decay"], eval_examples: int = 256,
                   first_seed: int = 1) -> dict:
    """Add one adapter per task to a PeftModel (named after the task, LoraConfig `config`), make it the active
    and only trainable one with set_adapter, and train it with the course recipe; returns {task: exact-answer
    accuracy}."""
    check_int(steps, "steps")
    acc = {}
    for seed, task in enumerate(tasks, start=first_seed):
        seed_everything(seed)
        model.add_adapter(task, copy.deepcopy(config))
        model.set_adapter(task)
        train(model, task, steps, lr=lr, seed=seed, weight_decay=weight_decay, progress=False,
              eval_examples=eval_examples)
        acc[task] = evaluate(model, task, eval_examples, metric="sequence")
    return acc


def base_weights(model: nn.Module) -> dict:
    """{name: clone} of the frozen base weights inside a PeftModel (everything that is not a LoRA tensor)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def max_change(model: nn.Module, before: dict) -> float:
    """max |W − W_before| over the base weights recorded by base_weights()."""
    now = dict(model.named_parameters())
    return max(float((now[n].detach().float() - w.float()).abs().max()) for n, w in before.items())


@torch.no_grad()
def peft_switch_drift(model: nn.Module, names, dtype=torch.bfloat16, switches: int = 100, merge: bool = True) -> float:
    """Cycle through the named adapters of a copy of `model` cast to `dtype`: with merge=True each switch is PEFT's
    merge_adapter() + unmerge_adapter() (notebook 06's subtract-and-add); else only set_adapter(). Returns max
    |W − W0| of the base weights afterwards."""
    check_int(switches, "switches")
    m = copy.deepcopy(model).to(dtype)
    before = base_weights(m)
    names = list(names)
    for i in range(switches):
        m.set_adapter(names[i % len(names)])
        if merge:
            m.merge_adapter()
            m.unmerge_adapter()
    return max_change(m, before)

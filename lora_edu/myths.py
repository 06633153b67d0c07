"""Notebook 08, "LoRA myths and facts": the experiments behind each verdict, as plain functions.

Pure computation (no matplotlib, no widgets): functions return numbers, tensors, dicts or lists of dict
"rows"; `lora_edu.plots_myths` draws them. Everything runs on the device of the model it is given, and
never changes that model (work is done on copies).

Claims tested (paraphrased from a typical discussion thread):
1. "A LoRA shifts each layer's output" vs "it changes the weights, W = W0 + BA" — `lora_branch_outputs`,
   `shift_decomposition`, `merged_vs_unmerged`, `extra_macs_per_token`.
2. "The base model stays intact, so removing the LoRA brings it back" — `switch_drift`.
3. "Every additional LoRA costs detail until the model descends into nonsense" — `combined_deltas`,
   `cross_terms`, `merge_sweep`.
4. "A LoRA bludgeons whole rows and columns by the same few deltas" — `delta_anatomy`.
5. "A LoRA can't remove a bias in the base weights; stacking corrective LoRAs degrades quality" —
   `biased_copy_task`, `make_biased_model`, `skew_report`, `bias_table`, `correction_sweep`, `delta_cosine`.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import Adapter, extract_adapter, load_adapter, merge_adapter, unmerge_adapter
from .inject import add_lora, lora_layers, remove_lora
from .lowrank import numerical_rank, singular_values
from .runtime import seed_everything
from .tasks import N_SYMBOLS, Task, get_task
from .train import EVAL_SEED, evaluate, generate, train

__all__ = [
    "DEFAULT_TARGETS", "COMBINE_METHODS", "SWITCH_STRATEGIES",
    "train_adapter", "full_finetune", "weight_deltas", "adapter_deltas",
    "lora_branch_outputs", "shift_decomposition", "merged_vs_unmerged", "extra_macs_per_token",
    "switch_drift",
    "combined_deltas", "apply_deltas", "cross_terms", "merge_sweep",
    "delta_anatomy",
    "biased_copy_task", "make_biased_model", "skew_report", "bias_table", "correction_sweep", "delta_cosine",
    "verdict", "summary_markdown",
]

DEFAULT_TARGETS = ("q_proj", "v_proj")
COMBINE_METHODS = ("sum", "scaled", "svd", "avg_AB", "switch")
SWITCH_STRATEGIES = ("subtract", "keep_original", "fp32_master", "unmerged")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------
# small checks
def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_plain(model, name: str = "base") -> None:
    _check_model(model)
    if lora_layers(model):
        raise ValueError(f"{name} must be a plain model without LoRA layers (use remove_lora first)")


def _pos_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _adapter_list(adapters, name: str = "adapters") -> list[Adapter]:
    if isinstance(adapters, Adapter):
        adapters = [adapters]
    if isinstance(adapters, dict):
        adapters = list(adapters.values())
    try:
        adapters = list(adapters)
    except TypeError as e:
        raise TypeError(f"{name} must be an Adapter, a list of Adapters or a dict of Adapters") from e
    if not adapters:
        raise ValueError(f"{name} must not be empty")
    for a in adapters:
        if not isinstance(a, Adapter):
            raise TypeError(f"{name} must contain lora_edu.Adapter objects, got {type(a).__name__}")
    return adapters


# ---------------------------------------------------------------------------------------------
# training helpers (each run works on a deep copy of `base`)
def train_adapter(base: nn.Module, task, steps: int, r: int = 4, alpha: float | None = None,
                  targets=DEFAULT_TARGETS, lr: float = 1e-2, seed: int = 0, n_examples: int = 512):
    """Train a LoRA on a copy of the plain model `base`; returns (Adapter on base's device, token accuracy)."""
    _check_plain(base)
    model = copy.deepcopy(base)
    seed_everything(seed)
    add_lora(model, targets, r=r, alpha=alpha)
    hist = train(model, task, steps, lr=lr, seed=seed, progress=False, eval_examples=n_examples)
    return extract_adapter(model), hist["accuracy"][-1]  # = evaluate(model, task, n_examples)


def full_finetune(base: nn.Module, task, steps: int, lr: float = 1e-3, seed: int = 0, n_examples: int = 512):
    """Full fine-tuning of every parameter on a copy of `base`; returns (model in eval mode, token accuracy)."""
    _check_plain(base)
    model = copy.deepcopy(base)
    seed_everything(seed)
    for p in model.parameters():
        p.requires_grad_(True)
    hist = train(model, task, steps, lr=lr, seed=seed, progress=False, eval_examples=n_examples)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), hist["accuracy"][-1]


def weight_deltas(before: nn.Module, after: nn.Module, names=None) -> dict[str, torch.Tensor]:
    """{Linear name: W_after − W_before} in float64 on the CPU (default: every nn.Linear of `before`)."""
    _check_model(before)
    _check_model(after)
    wb = {n: m.weight for n, m in before.named_modules() if isinstance(m, nn.Linear)}
    wa = {n: m.weight for n, m in after.named_modules() if isinstance(m, nn.Linear)}
    names = list(wb) if names is None else list(names)
    missing = [n for n in names if n not in wb or n not in wa]
    if missing:
        raise ValueError(f"names: {missing} are not nn.Linear layers of both models")
    return {n: (wa[n].detach().cpu().double() - wb[n].detach().cpu().double()) for n in names}


def adapter_deltas(adapter: Adapter) -> dict[str, torch.Tensor]:
    """{layer: scaling·B@A} in float64 on the CPU (exactly rank ≤ r, no float32 rounding noise)."""
    (adapter,) = _adapter_list(adapter, "adapter")
    return {n: (B.cpu().double() @ A.cpu().double()) * adapter.scaling for n, (A, B) in adapter.tensors.items()}


# ---------------------------------------------------------------------------------------------
# claim 1: shifting outputs vs changing weights
@torch.no_grad()
def lora_branch_outputs(model: nn.Module, tokens: torch.Tensor, layer: str | None = None) -> dict:
    """Run `model` (with unmerged LoRA layers) on `tokens` and split one layer's output into its two paths.

    Returns x (inputs, N×k), h_base = W0·x + b and h_delta = scaling·B·A·x (each N×d, float32 on the CPU),
    with the layer name. `layer` defaults to the first LoRA layer.
    """
    _check_model(model)
    layers = lora_layers(model)
    if not layers:
        raise ValueError("model has no LoRA layers; call add_lora or load_adapter first")
    if layer is None:
        layer = next(iter(layers))
    if layer not in layers:
        raise ValueError(f"layer must be one of {list(layers)}, got {layer!r}")
    m = layers[layer]
    if m.merged:
        raise ValueError(f"layer {layer!r} is merged: its two paths no longer exist separately")
    seen = {}

    def hook(_mod, args, _out):
        seen["x"] = args[0].detach()

    handle = m.register_forward_hook(hook)
    try:
        model(tokens)
    finally:
        handle.remove()
    x = seen["x"].reshape(-1, m.in_features)
    h_base = F.linear(x, m.base.weight, m.base.bias)
    h_delta = F.linear(F.linear(x, m.A), m.B) * m.scaling
    return {"layer": layer, "x": x.float().cpu(), "h_base": h_base.float().cpu(), "h_delta": h_delta.float().cpu()}


def shift_decomposition(h_delta: torch.Tensor, h_base: torch.Tensor | None = None) -> dict:
    """How much of the LoRA path's output Δh (N×d) is one constant shift, the same for every input?

    constant_fraction = N·‖mean Δh‖² / ‖Δh‖² (1.0 = a pure constant shift like a bias; near 0 = the change
    depends on the input); rank = numerical rank of the N×d matrix Δh (≤ r: outputs move in r directions);
    relative_size = ‖Δh‖ / ‖h_base‖ when h_base is given.
    """
    if not isinstance(h_delta, torch.Tensor) or h_delta.ndim != 2:
        raise ValueError("h_delta must be a 2-D tensor (inputs × features)")
    hd = h_delta.detach().cpu().double()
    total = float(hd.pow(2).sum())
    mean = hd.mean(0, keepdim=True)
    out = {
        "constant_fraction": 0.0 if total == 0 else float(hd.shape[0] * mean.pow(2).sum()) / total,
        "rank": numerical_rank(hd, tol=1e-4 * float(singular_values(hd)[0])) if total > 0 else 0,
    }
    if h_base is not None:
        out["relative_size"] = math.sqrt(total) / float(h_base.detach().cpu().double().norm())
    return out


@torch.no_grad()
def merged_vs_unmerged(base: nn.Module, adapter: Adapter, tokens: torch.Tensor) -> dict:
    """The same adapter used two ways on copies of `base`: unmerged (W0·x + B·A·x) and merged ((W0 + BA)·x).

    Returns max_abs (max |logits difference|), max_logit (max |logit|, for scale), and what "intact" means:
    w0_intact_unmerged / w0_intact_merged (are the adapted weights bit-identical to base's W0?),
    merged_weight_change (max |W − W0| in the merged model); and both logits tensors (CPU) for plotting.
    """
    _check_plain(base)
    (adapter,) = _adapter_list(adapter, "adapter")
    dev = _device_of(base)
    adapter = adapter.to(device=dev)
    unmerged, merged = copy.deepcopy(base).eval(), copy.deepcopy(base).eval()
    load_adapter(unmerged, adapter)
    merge_adapter(merged, adapter)
    a, b = unmerged(tokens).float(), merged(tokens).float()
    w0 = {n: m.weight for n, m in base.named_modules() if isinstance(m, nn.Linear)}
    wu = {n: m.base.weight for n, m in lora_layers(unmerged).items()}
    wm = {n: m.weight for n, m in merged.named_modules() if n in adapter.tensors}
    return {
        "max_abs": float((a - b).abs().max()),
        "max_logit": float(a.abs().max()),
        "w0_intact_unmerged": all(torch.equal(wu[n], w0[n]) for n in adapter.tensors),
        "w0_intact_merged": all(torch.equal(wm[n], w0[n]) for n in adapter.tensors),
        "merged_weight_change": max(float((wm[n].float() - w0[n].float()).abs().max()) for n in adapter.tensors),
        "logits_unmerged": a.cpu(), "logits_merged": b.cpu(),
    }


def extra_macs_per_token(adapter: Adapter, base: nn.Module) -> dict:
    """Multiply-adds per token in the adapted layers: base W0·x (d·k each) and the extra unmerged B·(A·x) (r·(d+k))."""
    (adapter,) = _adapter_list(adapter, "adapter")
    _check_model(base)
    base_macs = extra = 0
    for A, B in adapter.tensors.values():
        d, k, r = B.shape[0], A.shape[1], A.shape[0]
        base_macs += d * k
        extra += r * (d + k)
    total = sum(m.weight.numel() for m in base.modules() if isinstance(m, nn.Linear))
    return {"adapted_base_macs": base_macs, "extra_macs": extra, "model_linear_macs": total,
            "extra_fraction_of_model": extra / total}


# ---------------------------------------------------------------------------------------------
# claim 2: does removing an adapter give the base back?
@torch.no_grad()
def switch_drift(base: nn.Module, adapters, dtype="bfloat16", checkpoints=(1, 10, 100, 1000),
                 strategy: str = "subtract", task=None, n_examples: int = 256) -> list[dict]:
    """How far the adapted weights wander from W0 after n task switches, cycling through `adapters`.

    One switch = put the next adapter in, then take it out again. Strategies:
      "subtract"      merge W ← W + ΔW, unmerge W ← W − ΔW, each rounded to `dtype` (§4.1's recipe);
      "keep_original" LoRALinear.merge(keep_original=True) then unmerge(): W0 copied back bit for bit;
      "fp32_master"   keep W0 in float32 beside the model; W ← (W0 + ΔW) rounded, restore W ← W0 rounded;
      "unmerged"      never merge: load the adapter's A, B into LoRA layers (W0 is never written).
    Row per checkpoint: strategy, dtype, switches, max_abs = max |W − W0| and rel_fro = ‖W − W0‖_F / ‖W0‖_F
    over the adapted weights (W0 = base's weights rounded to `dtype`); with `task`, also `accuracy`: the
    drifted base's token accuracy on it (run in float32, so only the drift of the weights is measured).
    """
    _check_plain(base)
    adapters = _adapter_list(adapters)
    if isinstance(dtype, torch.dtype):
        dtype = next((k for k, v in _DTYPES.items() if v == dtype), str(dtype))
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}")
    if strategy not in SWITCH_STRATEGIES:
        raise ValueError(f"strategy must be one of {SWITCH_STRATEGIES}, got {strategy!r}")
    checkpoints = tuple(checkpoints)
    if not checkpoints or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in checkpoints) \
            or list(checkpoints) != sorted(set(checkpoints)):
        raise ValueError(f"checkpoints must be increasing positive ints, got {checkpoints!r}")
    if task is not None:
        task = get_task(task)
    _pos_int(n_examples, "n_examples")
    names = sorted(adapters[0].tensors)
    for a in adapters[1:]:
        if sorted(a.tensors) != names or (a.r, a.alpha, a.rslora) != (adapters[0].r, adapters[0].alpha,
                                                                        adapters[0].rslora):
            raise ValueError("all adapters must share r, alpha, rslora and layers to be switched in one model")
    dt = _DTYPES[dtype]
    dev = _device_of(base)
    model = copy.deepcopy(base).to(dtype=dt)
    adapters = [a.to(device=dev, dtype=dt) for a in adapters]
    modules = dict(model.named_modules())
    missing = [n for n in names if not isinstance(modules.get(n), nn.Linear)]
    if missing:
        raise ValueError(f"adapter layers {missing} are not nn.Linear layers of base")
    W0 = {n: modules[n].weight.detach().clone() for n in names}
    master = {n: base.get_submodule(n).weight.detach().float().clone() for n in names}
    deltas = [{n: a.delta(n) for n in names} for a in adapters]  # float32, computed once
    if strategy in ("keep_original", "unmerged"):
        load_adapter(model, adapters[0])
        layers = lora_layers(model)

    def weight(n):
        return layers[n].base.weight if strategy in ("keep_original", "unmerged") else modules[n].weight

    rows, done = [], 0
    for c in checkpoints:
        while done < c:
            i = done % len(adapters)
            if strategy == "subtract":
                for n in names:
                    w = modules[n].weight
                    w.copy_((w.float() + deltas[i][n]).to(dt))
                for n in names:
                    w = modules[n].weight
                    w.copy_((w.float() - deltas[i][n]).to(dt))
            elif strategy == "fp32_master":
                for n in names:
                    modules[n].weight.copy_((master[n] + deltas[i][n]).to(dt))
                for n in names:
                    modules[n].weight.copy_(master[n].to(dt))
            elif strategy == "keep_original":
                load_adapter(model, adapters[i])
                for m in layers.values():
                    m.merge(keep_original=True)
                for m in layers.values():
                    m.unmerge()
            else:  # unmerged: swap A and B only
                load_adapter(model, adapters[i])
            done += 1
        diffs = {n: weight(n).float() - W0[n].float() for n in names}
        num = math.sqrt(sum(float(d.pow(2).sum()) for d in diffs.values()))
        den = math.sqrt(sum(float(W0[n].float().pow(2).sum()) for n in names))
        row = {"strategy": strategy, "dtype": dtype, "switches": c,
               "max_abs": max(float(d.abs().max()) for d in diffs.values()), "rel_fro": num / den}
        if task is not None:
            plain = copy.deepcopy(model)
            if lora_layers(plain):
                remove_lora(plain, merge=False)
            row["accuracy"] = evaluate(plain.float(), task, n_examples=n_examples)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# claim 3: combining several adapters
def combined_deltas(adapters, method: str = "sum", weights=None, rank: int | None = None) -> dict[str, torch.Tensor]:
    """One ΔW per layer (float64, CPU) that combines several adapters, as PEFT's add_weighted_adapter would.

    "sum"     Σ wᵢ·sᵢ·Bᵢ·Aᵢ, the exact weighted sum (PEFT's "cat"); weights default to 1.
    "scaled"  the same with weights < 1 (default 1/N each: the mean of the ΔW's).
    "svd"     "sum" truncated to its top `rank` singular directions (default: the adapters' r).
    "avg_AB"  naive averaging of the factors: s·(mean Bᵢ)·(mean Aᵢ) = (s/N²)·Σᵢ Σⱼ Bᵢ·Aⱼ — cross terms i ≠ j
              included (needs equal r and scaling).
    """
    adapters = _adapter_list(adapters)
    if method not in ("sum", "scaled", "svd", "avg_AB"):
        raise ValueError(f"method must be one of ('sum', 'scaled', 'svd', 'avg_AB'), got {method!r}")
    n = len(adapters)
    names = list(adapters[0].tensors)
    for a in adapters[1:]:
        if set(a.tensors) != set(names):
            raise ValueError("all adapters must adapt the same layers")
    if weights is None:
        weights = [1.0 / n] * n if method == "scaled" else [1.0] * n
    weights = list(weights)
    if len(weights) != n or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                                    for w in weights):
        raise ValueError(f"weights must be {n} finite numbers, got {weights!r}")
    if method == "avg_AB":
        r, s = adapters[0].r, adapters[0].scaling
        if any(a.r != r or a.scaling != s for a in adapters):
            raise ValueError("avg_AB needs adapters with equal r and scaling (the factors are averaged)")
        out = {}
        for name in names:
            A = sum(a.tensors[name][0].cpu().double() for a in adapters) / n
            B = sum(a.tensors[name][1].cpu().double() for a in adapters) / n
            out[name] = (B @ A) * s
        return out
    out = {name: sum(w * adapter_deltas(a)[name] for w, a in zip(weights, adapters)) for name in names}
    if method == "svd":
        rank = adapters[0].r if rank is None else rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        for name, M in out.items():
            U, S, Vh = torch.linalg.svd(M, full_matrices=False)
            k = min(rank, S.numel())
            out[name] = (U[:, :k] * S[:k]) @ Vh[:k]
    return out


@torch.no_grad()
def apply_deltas(model: nn.Module, deltas: dict, sign: float = 1.0) -> None:
    """W ← W + sign·ΔW for every {layer name: ΔW} on a plain model, in float32 arithmetic, in place."""
    _check_plain(model, "model")
    modules = dict(model.named_modules())
    for n, d in deltas.items():
        m = modules.get(n)
        if not isinstance(m, nn.Linear) or tuple(m.weight.shape) != tuple(d.shape):
            raise ValueError(f"deltas[{n!r}] does not match an nn.Linear weight of the model")
    for n, d in deltas.items():
        w = modules[n].weight
        w.copy_((w.float() + sign * d.to(device=w.device, dtype=torch.float32)).to(w.dtype))


def cross_terms(adapters) -> dict:
    """The N×N matrix of ‖sᵢ·Bᵢ·Aⱼ‖_F (root-sum-square over layers): the diagonal is each adapter's own ΔW,
    the off-diagonal entries are the cross terms that averaging A's and B's separately creates.

    Also returns cross_over_own = ‖Σ_{i≠j} BᵢAⱼ‖ / ‖Σᵢ BᵢAᵢ‖ (summed as matrices, then the norm).
    """
    adapters = _adapter_list(adapters)
    names = list(adapters[0].tensors)
    n = len(adapters)
    norms = torch.zeros(n, n, dtype=torch.float64)
    own = {name: 0 for name in names}
    cross = {name: 0 for name in names}
    for i, ai in enumerate(adapters):
        for j, aj in enumerate(adapters):
            sq = 0.0
            for name in names:
                M = (ai.tensors[name][1].cpu().double() @ aj.tensors[name][0].cpu().double()) * ai.scaling
                sq += float(M.pow(2).sum())
                if i == j:
                    own[name] = own[name] + M
                else:
                    cross[name] = cross[name] + M
            norms[i, j] = math.sqrt(sq)
    own_n = math.sqrt(sum(float(torch.as_tensor(m).pow(2).sum()) for m in own.values()))
    cross_n = math.sqrt(sum(float(torch.as_tensor(m).pow(2).sum()) for m in cross.values()))
    return {"norms": norms, "own_norm": own_n, "cross_norm": cross_n,
            "cross_over_own": cross_n / own_n if own_n > 0 else math.inf}


@torch.no_grad()
def merge_sweep(base: nn.Module, adapters: dict, methods=COMBINE_METHODS, svd_rank: int | None = None,
                n_examples: int = 256, pretrain_task="copy") -> list[dict]:
    """Merge the first N adapters (N = 1 … len) into a copy of `base` by each method and measure accuracy.

    `adapters` is {task name: Adapter}. "switch" means one adapter at a time: task i is scored with only
    adapter i merged, and the pretraining task with none (the base restored). Row per (method, N): method, n,
    tasks (the N merged), pretrain (token accuracy on `pretrain_task`), acc (dict task → accuracy on every
    merged task), mean_task (mean of acc).
    """
    _check_plain(base)
    if not isinstance(adapters, dict) or not adapters:
        raise ValueError("adapters must be a non-empty dict {task name: Adapter}")
    _adapter_list(adapters)
    for t in adapters:
        get_task(t)
    for m in methods:
        if m not in COMBINE_METHODS:
            raise ValueError(f"methods must be among {COMBINE_METHODS}, got {m!r}")
    _pos_int(n_examples, "n_examples")
    tasks = list(adapters)
    work = copy.deepcopy(base).eval()
    ev = {}

    def score(t):
        return evaluate(work, t, n_examples=n_examples)

    base_pre = score(pretrain_task)
    alone = {}
    if "switch" in methods:
        for t in tasks:
            merge_adapter(work, adapters[t])
            alone[t] = score(t)
            unmerge_adapter(work, adapters[t])
        ev["switch_pre"] = score(pretrain_task)  # after switching everything back out
    rows = []
    for method in methods:
        for n in range(1, len(tasks) + 1):
            chosen = tasks[:n]
            if method == "switch":
                acc = {t: alone[t] for t in chosen}
                pre = ev["switch_pre"]
            else:
                deltas = combined_deltas([adapters[t] for t in chosen], method, rank=svd_rank)
                saved = {nm: work.get_submodule(nm).weight.detach().clone() for nm in deltas}
                apply_deltas(work, deltas)
                pre = score(pretrain_task)
                acc = {t: score(t) for t in chosen}
                for nm, w in saved.items():
                    work.get_submodule(nm).weight.copy_(w)
            rows.append({"method": method, "n": n, "tasks": chosen, "pretrain": pre, "acc": acc,
                         "mean_task": sum(acc.values()) / len(acc), "base_pretrain": base_pre})
    return rows


# ---------------------------------------------------------------------------------------------
# claim 4: what ΔW looks like
def delta_anatomy(W0, delta_W, r: int, changed_tol: float = 1e-3, rank_tol: float = 1e-4,
                  energy_fraction: float = 0.9) -> dict:
    """Describe one weight update ΔW next to its W0.

    singular_values; rank (numerical, σ > rank_tol·σ1); effective_rank (fewest directions holding
    `energy_fraction` of ‖ΔW‖²); energy_top_r (share of ‖ΔW‖² in the top r directions); frac_changed (share of
    entries with |ΔW| > changed_tol·max|W0|); relative_norm ‖ΔW‖/‖W0‖; row_rank / col_rank: how many distinct
    directions the d rows and k columns of ΔW span (= rank); amplification (§7.3, U, V from ΔW's top r).
    """
    from .analysis import projection_norms

    W0 = torch.as_tensor(W0).detach().cpu().double()
    dW = torch.as_tensor(delta_W).detach().cpu().double()
    if W0.ndim != 2 or W0.shape != dW.shape:
        raise ValueError(f"W0 and delta_W must be matrices of the same shape, got {tuple(W0.shape)} and "
                         f"{tuple(dW.shape)}")
    _pos_int(r, "r")
    if r > min(W0.shape):
        raise ValueError(f"r must be ≤ {min(W0.shape)}, got {r}")
    s = singular_values(dW)
    s2 = s.pow(2)
    total = float(s2.sum())
    if total == 0:
        raise ValueError("delta_W is all zeros")
    cum = (s2.cumsum(0) / total).tolist()
    eff = next(i + 1 for i, c in enumerate(cum) if c >= energy_fraction - 1e-12)
    rank = int((s > rank_tol * s[0]).sum())
    proj = projection_norms(W0, dW, r)
    return {
        "singular_values": s, "rank": rank, "effective_rank": eff, "energy_top_r": cum[r - 1],
        "frac_changed": float((dW.abs() > changed_tol * W0.abs().max()).double().mean()),
        "relative_norm": float(dW.norm() / W0.norm()), "amplification": proj["amplification"],
        "delta_dirs": proj["delta_dirs"], "W_dirs": proj["W_dirs"], "random_dirs": proj["random_dirs"],
    }


# ---------------------------------------------------------------------------------------------
# claim 5: a toy bias, corrected and removed
def _biased(x: torch.Tensor, digits: tuple[int, ...], to: int) -> torch.Tensor:
    y = x.clone()
    for d in digits:
        y[x == d] = to
    return y


def _check_digits(digits, to) -> tuple[tuple[int, ...], int]:
    digits = tuple(digits)
    for d in (*digits, to):
        if isinstance(d, bool) or not isinstance(d, int) or not 0 <= d < N_SYMBOLS:
            raise ValueError(f"digits and to must be digits 0..{N_SYMBOLS - 1}, got {d!r}")
    if to in digits:
        raise ValueError(f"to ({to}) must not be one of digits {digits}")
    return digits, to


def biased_copy_task(digits=(3, 5), to: int = 7) -> Task:
    """The copy task with a systematic error: every digit in `digits` is written as `to` (empty = clean copy)."""
    digits, to = _check_digits(digits, to)
    label = "".join(map(str, digits)) or "none"
    return Task(f"copy_{label}_to_{to}", lambda x: _biased(x, digits, to),
                f"copy, but write {to} for {', '.join(map(str, digits)) or 'nothing'}")


def make_biased_model(base: nn.Module, steps: int, digits=(3, 5), to: int = 7, lr: float = 1e-3,
                      seed: int = 0) -> nn.Module:
    """Full fine-tuning of a copy of `base` on the biased copy task: the bias then lives in every weight."""
    model, _ = full_finetune(base, biased_copy_task(digits, to), steps, lr=lr, seed=seed, n_examples=64)
    return model


@torch.no_grad()
def skew_report(model: nn.Module, digits=(3, 5), to: int = 7, n_examples: int = 512, seed: int = EVAL_SEED) -> dict:
    """Greedy answers on held-out copy inputs: skew_<d> = share of input digit d written as `to`;
    skew = the same over all biased digits; quality = copy token accuracy; quality_other = copy accuracy on the
    positions whose digit is not biased (collateral damage of a bias or of its correction)."""
    _check_model(model)
    digits, to = _check_digits(digits, to)
    _pos_int(n_examples, "n_examples")
    g = torch.Generator().manual_seed(seed)
    x = get_task("copy").sample_x(n_examples, g)
    y = generate(model, x)
    out = {}
    mask_b = torch.zeros_like(x, dtype=torch.bool)
    for d in digits:
        m = x == d
        mask_b |= m
        out[f"skew_{d}"] = float((y[m] == to).double().mean()) if m.any() else float("nan")
    out["skew"] = float((y[mask_b] == to).double().mean()) if mask_b.any() else float("nan")
    out["quality"] = float((y == x).double().mean())
    out["quality_other"] = float((y[~mask_b] == x[~mask_b]).double().mean())
    return out


@torch.no_grad()
def bias_table(model: nn.Module, configs: dict, digits=(3, 5), to: int = 7, n_examples: int = 512) -> list[dict]:
    """{label: [Adapter, …]} → one skew_report row per label with those adapters merged into a copy of `model`
    (an adapter listed twice is merged twice). After each row the weights are restored exactly."""
    _check_plain(model, "model")
    if not isinstance(configs, dict):
        raise TypeError("configs must be a dict {label: list of Adapters}")
    for k, v in configs.items():
        if v:
            _adapter_list(v, f"configs[{k!r}]")
    work = copy.deepcopy(model).eval()
    saved = {n: m.weight.detach().clone() for n, m in work.named_modules() if isinstance(m, nn.Linear)}
    rows = []
    for label, stack in configs.items():
        for a in stack or []:
            merge_adapter(work, a)
        rows.append({"config": label, "n_adapters": len(stack or []),
                     **skew_report(work, digits, to, n_examples)})
        for n, w in saved.items():
            work.get_submodule(n).weight.copy_(w)
    return rows


@torch.no_grad()
def correction_sweep(model: nn.Module, adapter: Adapter, weights=(0.0, 0.5, 1.0, 1.5, 2.0), digits=(3, 5),
                     to: int = 7, n_examples: int = 512) -> list[dict]:
    """Merge `adapter` at each weight w (W0 + w·sBA) into a copy of `model`; one skew_report row per weight.
    w = 0 is the model itself, w = 1 the adapter as trained, w > 1 over-applies it (like stacking it twice at 2)."""
    _check_plain(model, "model")
    (adapter,) = _adapter_list(adapter, "adapter")
    weights = list(weights)
    if not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                              for w in weights):
        raise ValueError(f"weights must be a non-empty list of finite numbers, got {weights!r}")
    _check_digits(digits, to)
    _pos_int(n_examples, "n_examples")
    work = copy.deepcopy(model).eval()
    saved = {n: work.get_submodule(n).weight.detach().clone() for n in adapter.tensors}
    rows = []
    for w in weights:
        merge_adapter(work, adapter, weight=float(w))
        rows.append({"weight": float(w), **skew_report(work, digits, to, n_examples)})
        for n, t in saved.items():
            work.get_submodule(n).weight.copy_(t)
    return rows


def delta_cosine(d1: dict, d2: dict) -> float:
    """Cosine similarity of two sets of per-layer updates over their shared layers (flattened and concatenated)."""
    shared = [n for n in d1 if n in d2]
    if not shared:
        raise ValueError("d1 and d2 share no layer names")
    a = torch.cat([torch.as_tensor(d1[n]).detach().cpu().double().flatten() for n in shared])
    b = torch.cat([torch.as_tensor(d2[n]).detach().cpu().double().flatten() for n in shared])
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# the summary
def verdict(condition_true: bool, condition_partly: bool = False) -> str:
    """'true' / 'true under these conditions' / 'false' from measured conditions."""
    if condition_true:
        return "true"
    return "true under these conditions" if condition_partly else "false"


def summary_markdown(rows: list[dict]) -> str:
    """A Markdown table from rows {claim, verdict, evidence, numbers}."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("rows must be a non-empty list of dicts")
    out = ["| # | claim | verdict | key numbers (measured above) | evidence |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        cells = [str(r.get(k, "")).replace("|", "\\|").replace("\n", " ")
                 for k in ("claim", "verdict", "numbers", "evidence")]
        out.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(out)

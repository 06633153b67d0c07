"""Notebook 08 (myths and facts): the experiments behind each claim, their verdicts and figures."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..adapters import Adapter, extract_adapter, load_adapter, merge_adapter
from ..inject import lora_layers
from ..lowrank import effective_rank, numerical_rank, singular_values
from ..tasks import N_SYMBOLS, Task, get_task
from ..train import EVAL_SEED, evaluate, generate
from .common import (
    adapter_list,
    check_int,
    check_model,
    check_plain,
    claim,
    device_of,
    figure,
    projection_norms,
    to_numpy,
    train_lora,
)

DEFAULT_TARGETS = ("q_proj", "v_proj")


MERGE_METHODS = ("sum", "scaled", "avg_AB")  # ways to put two adapters into one weight matrix at once


# ---------------------------------------------------------------------------------------------
# training helpers (each run works on a deep copy of `base`); accuracy = whole answers right (all 6 digits)
def train_adapter(base: nn.Module, task, steps: int, r: int = 4, alpha: float | None = 8.0,
                  targets=DEFAULT_TARGETS, lr: float = 1e-2, seed: int = 0, n_examples: int = 512):
    """Train a LoRA (the course recipe: AdamW, weight decay 1.0 on A and B) on a copy of the plain model `base`;
    returns (Adapter on base's device, whole-answer accuracy on `n_examples` held-out prompts)."""
    model, _ = train_lora(task, base=base, targets=targets, r=r, alpha=alpha, lr=lr, steps=steps, seed=seed,
                          progress=False, eval_examples=16)
    return extract_adapter(model), evaluate(model, task, n_examples, metric="sequence")


def full_finetune(base: nn.Module, task, steps: int, lr: float = 3e-4, seed: int = 0, n_examples: int = 512):
    """Full fine-tuning of every parameter (no weight decay) on a copy of `base`; returns (model in eval mode,
    whole-answer accuracy)."""
    model, _ = train_lora(task, base=base, full=True, lr=lr, steps=steps, seed=seed, progress=False,
                          eval_examples=16)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), evaluate(model, task, n_examples, metric="sequence")


def full_finetune_sweep(base: nn.Module, task, steps: int, lrs=(3e-4, 3e-3, 3e-2), seed: int = 0,
                        n_examples: int = 512):
    """full_finetune at each learning rate in `lrs`; returns (best model, its accuracy, its lr, {lr: accuracy}).

    A fair LoRA-versus-full comparison gives full fine-tuning its own best learning rate, not LoRA's. A tie goes
    to the smallest learning rate (the gentlest change that does the job)."""
    lrs = list(lrs)
    if not lrs or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in lrs):
        raise ValueError(f"lrs must be a non-empty list of positive numbers, got {lrs!r}")
    best, accs = None, {}
    for lr in lrs:
        model, accs[lr] = full_finetune(base, task, steps, lr=lr, seed=seed, n_examples=n_examples)
        if best is None or accs[lr] > best[1] or (accs[lr] == best[1] and lr < best[2]):
            best = (model, accs[lr], lr)
    return (*best, accs)


def weight_deltas(before: nn.Module, after: nn.Module, names=None) -> dict[str, torch.Tensor]:
    """{Linear name: W_after − W_before} in float64 on the CPU (default: every nn.Linear of `before`)."""
    check_model(before)
    check_model(after)
    wb = {n: m.weight for n, m in before.named_modules() if isinstance(m, nn.Linear)}
    wa = {n: m.weight for n, m in after.named_modules() if isinstance(m, nn.Linear)}
    names = list(wb) if names is None else list(names)
    missing = [n for n in names if n not in wb or n not in wa]
    if missing:
        raise ValueError(f"names: {missing} are not nn.Linear layers of both models")
    return {n: (wa[n].detach().cpu().double() - wb[n].detach().cpu().double()) for n in names}


def adapter_deltas(adapter: Adapter) -> dict[str, torch.Tensor]:
    """{layer: scaling·B@A} in float64 on the CPU (exactly rank ≤ r, no float32 rounding noise)."""
    (adapter,) = adapter_list(adapter, "adapter")
    return {n: (B.cpu().double() @ A.cpu().double()) * adapter.scaling for n, (A, B) in adapter.tensors.items()}


# ---------------------------------------------------------------------------------------------
# claim 1: shifting outputs vs changing weights
@torch.no_grad()
def lora_branch_outputs(model: nn.Module, tokens: torch.Tensor, layer: str | None = None) -> dict:
    """Run `model` (with unmerged LoRA layers) on `tokens` and split one layer's output into its two paths.

    Returns x (inputs, N×k), h_base = W0·x + b and h_delta = scaling·B·A·x (each N×d, float32 on the CPU),
    with the layer name. `layer` defaults to the first LoRA layer.
    """
    check_model(model)
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
    check_plain(base)
    (adapter,) = adapter_list(adapter, "adapter")
    dev = device_of(base)
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
    (adapter,) = adapter_list(adapter, "adapter")
    check_model(base)
    base_macs = extra = 0
    for A, B in adapter.tensors.values():
        d, k, r = B.shape[0], A.shape[1], A.shape[0]
        base_macs += d * k
        extra += r * (d + k)
    total = sum(m.weight.numel() for m in base.modules() if isinstance(m, nn.Linear))
    return {"adapted_base_macs": base_macs, "extra_macs": extra, "model_linear_macs": total,
            "extra_fraction_of_model": extra / total}


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
    adapters = adapter_list(adapters)
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
    check_plain(model, "model")
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
    adapters = adapter_list(adapters)
    names = list(adapters[0].tensors)
    n = len(adapters)
    norms = torch.zeros(n, n, dtype=torch.float64, device="cpu")
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


def _task_name(t) -> str:
    return t if isinstance(t, str) else get_task(t).name


@torch.no_grad()
def merge_pair(base: nn.Module, adapters: dict, methods=MERGE_METHODS, n_examples: int = 256) -> dict:
    """Several adapters {task: Adapter} (task = a name or a Task) put into one copy of `base` at once, by each
    method of `combined_deltas`, against switching (each task scored with only its own adapter merged).

    Returns tasks (names), alone {task: whole-answer accuracy when switched}, merged {method: {task: accuracy}},
    both_kept_<method>: the smallest merged accuracy over the tasks. `base` is never changed.
    """
    check_plain(base)
    if not isinstance(adapters, dict) or len(adapters) < 2:
        raise ValueError("adapters must be a dict {task: Adapter} with at least two entries")
    adapter_list(adapters)
    tasks = [get_task(t) for t in adapters]
    for m in methods:
        if m not in MERGE_METHODS:
            raise ValueError(f"methods must be among {MERGE_METHODS}, got {m!r}")
    check_int(n_examples, "n_examples")
    work = copy.deepcopy(base).eval()
    saved = {n: m.weight.detach().clone() for n, m in work.named_modules() if isinstance(m, nn.Linear)}

    def restore():
        for n, w in saved.items():
            work.get_submodule(n).weight.copy_(w)

    def score(t):
        return evaluate(work, t, n_examples, metric="sequence")

    out = {"tasks": [t.name for t in tasks], "alone": {}, "merged": {}}
    for t, a in zip(tasks, adapters.values()):
        merge_adapter(work, a)
        out["alone"][t.name] = score(t)
        restore()
    for m in methods:
        apply_deltas(work, combined_deltas(list(adapters.values()), m))
        out["merged"][m] = {t.name: score(t) for t in tasks}
        restore()
    return out


def pair_study(base: nn.Module, adapters: dict, pairs, tasks: dict | None = None, n_examples: int = 256,
               by_construction=(), methods=MERGE_METHODS) -> list[dict]:
    """merge_pair and pair_overlap for every pair of task names in `pairs`, on every seed of `adapters`
    ({seed: {task name: Adapter}}). `tasks` maps names that get_task does not know to their Task (le.TASKS
    already holds rot1-as-add and plus3-as-sub); `by_construction` names the pairs (tuples) that answer one prompt
    two ways. One record per pair: label, by_construction, alone / merged ({task: [accuracy per seed]}, merged =
    exact sum), methods ({method: [smallest task accuracy per seed]}, for each of `methods`, which must include
    "sum"), overlap ({delta_overlap / input_cos / cross_response: [per seed]}), seeds.
    """
    if not isinstance(adapters, dict) or not adapters:
        raise ValueError("adapters must be a non-empty dict {seed: {task name: Adapter}}")
    methods = tuple(methods)
    if "sum" not in methods:
        raise ValueError(f"methods must include 'sum' (the merge every pair is judged by), got {methods!r}")
    tasks = dict(tasks or {})
    seeds = list(adapters)
    out = []
    for a, b in pairs:
        rec = {"label": f"{a} + {b}", "by_construction": (a, b) in set(map(tuple, by_construction)),
               "alone": {a: [], b: []}, "merged": {a: [], b: []}, "methods": {m: [] for m in methods},
               "overlap": {"delta_overlap": [], "input_cos": [], "cross_response": []}, "seeds": seeds}
        for seed in seeds:
            ads = {tasks.get(t, t): adapters[seed][t] for t in (a, b)}
            res = merge_pair(base, ads, methods, n_examples)
            names = dict(zip((a, b), res["tasks"]))
            for t in (a, b):
                rec["alone"][t].append(res["alone"][names[t]])
                rec["merged"][t].append(res["merged"]["sum"][names[t]])
            for m, accs in res["merged"].items():
                rec["methods"][m].append(min(accs.values()))
            for k, v in pair_overlap(base, ads).items():
                rec["overlap"][k].append(v)
        out.append(rec)
    return out


@torch.no_grad()
def prompt_inputs(base: nn.Module, tasks, layer: int = 0) -> dict[str, torch.Tensor]:
    """{task: the vector block `layer`'s attention reads at the op word's position} — LN(word + position 1) for
    layer 0, where it depends on the word alone. Two tasks whose words give nearly the same vector look alike to
    every adapter of that layer."""
    check_model(base)
    out = {}
    for t in tasks:
        t = get_task(t)
        x = torch.zeros(1, t.n, dtype=torch.long, device=device_of(base))
        h = base.tok_emb(t.prefix(x)) + base.pos_emb.weight[: t.n + 4]
        for blk in base.blocks[:layer]:
            h = blk(h)
        out[t.name] = base.blocks[layer].ln1(h)[0, 1].detach().cpu().double()
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    den = float(a.norm() * b.norm())
    return float(a.flatten() @ b.flatten()) / den if den > 0 else 0.0


def pair_overlap(base: nn.Module, adapters: dict, layer: int = 0) -> dict:
    """Where two adapters {task: Adapter} collide. delta_overlap = mean over layers of |cos(ΔW1, ΔW2)| (0: the two
    updates are orthogonal matrices); input_cos = cos of the two prompts' op-word inputs to block `layer`;
    cross_response = mean over block `layer`'s adapted matrices and both directions of ‖ΔWᵢ xⱼ‖ / ‖ΔWᵢ xᵢ‖
    (1: each adapter reacts to the other task's word as strongly as to its own)."""
    if not isinstance(adapters, dict) or len(adapters) != 2:
        raise ValueError("adapters must be a dict {task: Adapter} of exactly two entries")
    (t1, a1), (t2, a2) = adapters.items()
    d1, d2 = adapter_deltas(a1), adapter_deltas(a2)
    shared = [n for n in d1 if n in d2]
    if not shared:
        raise ValueError("the two adapters share no layer")
    x = prompt_inputs(base, [t1, t2], layer)
    x1, x2 = x[_task_name(t1)], x[_task_name(t2)]
    ratios = []
    for n in shared:
        if n.startswith(f"blocks.{layer}."):
            for d, own, other in ((d1, x1, x2), (d2, x2, x1)):
                den = float((d[n] @ own).norm())
                ratios.append(float((d[n] @ other).norm()) / den if den > 0 else 0.0)
    return {"delta_overlap": sum(abs(_cos(d1[n], d2[n])) for n in shared) / len(shared),
            "input_cos": _cos(x1, x2), "cross_response": sum(ratios) / len(ratios) if ratios else float("nan")}


# ---------------------------------------------------------------------------------------------
# claim 4: what ΔW looks like
def delta_anatomy(W0, delta_W, r: int, changed_tol: float = 1e-3, rank_tol: float = 1e-4,
                  energy_fraction: float = 0.9) -> dict:
    """Describe one weight update ΔW next to its W0.

    singular_values; rank (numerical, σ > rank_tol·σ1); effective_rank (fewest directions holding
    `energy_fraction` of ‖ΔW‖²); energy_top1 / energy_top_r (share of ‖ΔW‖² in the top 1 / top r directions: near
    1 for the top one means ΔW ≈ σ₁u₁v₁ᵀ, every row one pattern v₁ scaled by u₁ᵢ); frac_changed (share of
    entries with |ΔW| > changed_tol·max|W0|); relative_norm ‖ΔW‖/‖W0‖; row_rank / col_rank: how many distinct
    directions the d rows and k columns of ΔW span (= rank); amplification (§7.3, U, V from ΔW's top r).
    """
    W0 = torch.as_tensor(W0).detach().cpu().double()
    dW = torch.as_tensor(delta_W).detach().cpu().double()
    if W0.ndim != 2 or W0.shape != dW.shape:
        raise ValueError(f"W0 and delta_W must be matrices of the same shape, got {tuple(W0.shape)} and "
                         f"{tuple(dW.shape)}")
    check_int(r, "r")
    if r > min(W0.shape):
        raise ValueError(f"r must be ≤ {min(W0.shape)}, got {r}")
    s = singular_values(dW)
    s2 = s.pow(2)
    total = float(s2.sum())
    if total == 0:
        raise ValueError("delta_W is all zeros")
    cum = (s2.cumsum(0) / total).tolist()
    eff = effective_rank(s, energy_fraction)
    rank = int((s > rank_tol * s[0]).sum())
    proj = projection_norms(W0, dW, r)
    return {
        "singular_values": s, "rank": rank, "effective_rank": eff, "energy_top1": cum[0], "energy_top_r": cum[r - 1],
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


@dataclass(frozen=True)
class BiasedCopy(Task):
    """Copy (rot 0, the prompt `rot 0`) with a systematic error: every digit in `digits` is written as `to`."""

    digits: tuple[int, ...] = (3, 5)
    to: int = 7

    def __post_init__(self):
        super().__post_init__()
        _check_digits(self.digits, self.to)

    @property
    def name(self) -> str:
        return f"rot0_{''.join(map(str, self.digits)) or 'none'}_to_{self.to}"

    @property
    def description(self) -> str:
        return f"copy, but write {self.to} for {', '.join(map(str, self.digits)) or 'nothing'}"

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        return _biased(x, self.digits, self.to)


COPY = Task("rot", 0)  # rot 0 = copy, one of the pretraining skills


def biased_copy_task(digits=(3, 5), to: int = 7) -> Task:
    """The copy task (rot 0) with a systematic error: every digit in `digits` is written as `to` (empty = copy)."""
    digits, to = _check_digits(digits, to)
    return BiasedCopy("rot", 0, digits=digits, to=to)


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
    check_model(model)
    digits, to = _check_digits(digits, to)
    check_int(n_examples, "n_examples")
    g = torch.Generator().manual_seed(seed)
    x = COPY.sample_x(n_examples, g)
    y = generate(model, x, COPY)
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
    check_plain(model, "model")
    if not isinstance(configs, dict):
        raise TypeError("configs must be a dict {label: list of Adapters}")
    for k, v in configs.items():
        if v:
            adapter_list(v, f"configs[{k!r}]")
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
    check_plain(model, "model")
    (adapter,) = adapter_list(adapter, "adapter")
    weights = list(weights)
    if not weights or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                              for w in weights):
        raise ValueError(f"weights must be a non-empty list of finite numbers, got {weights!r}")
    _check_digits(digits, to)
    check_int(n_examples, "n_examples")
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
# the verdicts: each one a function of measured numbers and thresholds stated up front, returning
# (value, sentence); the sentence is rendered from the same numbers, so it can never disagree with them
TRUE, FALSE, CONDITIONAL, UNSETTLED = "true", "false", "true under conditions", "not settled"


def say_verdict(key: str, label: str, value: str, sentence: str) -> str:
    """Print a verdict through common.claim (recorded for `make claims`): it holds unless the run could not settle
    the question."""
    text = f"Verdict {label}: {value} — {sentence}."
    return claim(key, value != UNSETTLED, text, text)


def _need(thresholds, *keys) -> list[float]:
    if not isinstance(thresholds, dict):
        raise TypeError(f"thresholds must be a dict {{name: number}}, got {type(thresholds).__name__}")
    missing = [k for k in keys if k not in thresholds]
    if missing:
        raise ValueError(f"thresholds: missing {missing}")
    return [float(thresholds[k]) for k in keys]


def verdict_claim1(rel_diff: float, constant_share: float, thresholds: dict) -> tuple[str, str]:
    """Claim 1, "a LoRA shifts each layer's output": rel_diff = max |merged − unmerged logit| / max |logit|;
    constant_share = share of ‖Δh‖² that is one constant vector (shift_decomposition's constant_fraction)."""
    eq, shift = _need(thresholds, "equal_rel", "constant_shift")
    if not rel_diff < eq:
        return UNSETTLED, (f"merged and unmerged logits differ by {rel_diff:.1e} of the largest logit, not below the "
                           f"{eq:.0e} that counts as equal, so this run cannot call them one function")
    same = f"merged and unmerged are one function (they agree to {rel_diff:.0e}, below {eq:.0e})"
    if constant_share > shift:
        return TRUE, (f"{same}, and {constant_share:.0%} of ‖Δh‖² is one constant vector (over {shift:.0%}): on this "
                      "layer the LoRA acts like a bias, a shift of the output — computed by changed weights")
    return CONDITIONAL, (f"{same}; the output does move, but only {constant_share:.1%} of ‖Δh‖² is one constant shift "
                         f"(a shift would need over {shift:.0%}): Δh = sBAx depends on the input, which is what a "
                         "weight change does — 'shift' and 'weight change' are two names for one function")


def verdict_claim2(subtract_drift: float, kept_drift: float, thresholds: dict) -> tuple[str, str]:
    """Claim 2, "remove the LoRA and the base comes back": subtract_drift = largest max |W − W0| after merging and
    subtracting (every dtype and switch count); kept_drift = the same for the strategies that keep W0."""
    (tol,) = _need(thresholds, "restore_tol")
    within = "bit for bit" if tol == 0 else f"to within {tol:g}"
    if subtract_drift <= tol and kept_drift <= tol:
        return TRUE, (f"every strategy gives W0 back {within}, merge-and-subtract included (largest drift "
                      f"{max(subtract_drift, kept_drift):.1e})")
    if kept_drift <= tol:
        return CONDITIONAL, (f"only if W0 is kept: those strategies give it back {within} (drift {kept_drift:g}), "
                             f"while merging then subtracting leaves up to {subtract_drift:.1e}")
    return FALSE, (f"no strategy gives W0 back {within}: keeping W0 drifts {kept_drift:.1e}, subtracting "
                   f"{subtract_drift:.1e}")


def answer_conflict(tasks, n_examples: int = 512, seed: int = EVAL_SEED) -> float:
    """Share of random prompts on which the tasks demand different answers (1.0: no prompt has one right answer
    for all of them, so no single model — merged or not — can serve them all at once)."""
    tasks = [get_task(t) for t in tasks]
    check_int(n_examples, "n_examples")
    x = tasks[0].sample_x(n_examples, torch.Generator().manual_seed(seed))
    ys = torch.stack([t.fn(x) for t in tasks])
    return float((ys != ys[:1]).any(dim=2).any(dim=0).double().mean())


def pair_kept(pair: dict, keep: float) -> tuple[int, int]:
    """(seeds on which every task of the merged pair kept ≥ keep, seeds) for a pair record (see verdict_claim3)."""
    runs = list(zip(*pair["merged"].values()))
    return sum(min(r) >= keep for r in runs), len(runs)


def _mean(v) -> float:
    v = list(v)
    return sum(v) / len(v)


def verdict_claim3(pairs: list[dict], thresholds: dict) -> tuple[str, str]:
    """Claim 3, "each added LoRA costs detail, until nonsense", tested on pairs of adapters merged at once.

    Each pair is {"label", "by_construction" (bool: one prompt, two answers), "merged": {task: [whole-answer
    accuracy per seed, both adapters merged]}, "alone": {task: [accuracy per seed, switched]}}. A pair keeps both
    when every task reaches `keep` on more than half of the seeds. Values: not settled (an adapter alone misses
    `keep`: there is nothing to lose); false (every pair keeps both, even the conflicting one); true (no pair
    keeps both); true under conditions (some pairs keep both, others conflict)."""
    keep, nonsense = _need(thresholds, "keep", "nonsense")
    if not pairs:
        raise ValueError("pairs must hold at least one pair")
    weak = sorted({t for p in pairs for t, v in p["alone"].items() if _mean(v) < keep})
    if weak:
        return UNSETTLED, (f"switched one at a time, {', '.join(weak)} already misses {keep:.2f} with its own adapter, "
                           "so merging has nothing to lose")
    kept = [p for p in pairs if 2 * pair_kept(p, keep)[0] > pair_kept(p, keep)[1]]
    lost = [p for p in pairs if p not in kept]
    switch = (f"switching (each adapter alone) keeps every task at "
              f"{min(_mean(v) for p in pairs for v in p['alone'].values()):.2f} or more")

    def worst(p):
        t = min(p["merged"], key=lambda t: _mean(p["merged"][t]))
        m = _mean(p["merged"][t])
        return f"{p['label']} ({t} falls to {m:.2f}{', nonsense' if m < nonsense else ''})"

    def kept_s(p):
        return f"{p['label']} ({' / '.join(f'{_mean(v):.2f}' for v in p['merged'].values())})"

    if not lost:
        even = " — even the pair built to conflict" if any(p.get("by_construction") for p in kept) else ""
        return FALSE, (f"every pair keeps both tasks ≥ {keep:.2f} when merged — {', '.join(map(kept_s, kept))}{even}; "
                       "merging cost nothing here")
    loses = f"merged at once, {', '.join(map(worst, lost))} lose{'s' if len(lost) == 1 else ''} a task"
    if not kept:
        return TRUE, (f"for merging: {loses} — no pair keeps both ≥ {keep:.2f}, not even adapters for different "
                      f"skills; but {switch}, so it is merging, not adding adapters, that costs")
    return CONDITIONAL, (f"only for adapters that conflict: {', '.join(map(kept_s, kept))} keep both ≥ {keep:.2f} "
                         f"merged, while {loses}; {switch}")


def verdict_claim4(frac_changed: float, rank: int, r: int, acc_lora: float, acc_full: float,
                   thresholds: dict) -> tuple[str, str]:
    """Claim 4, "a LoRA bludgeons every value with the same few deltas, and the model limps": frac_changed = the
    median share of entries a LoRA ΔW changes over its matrices; rank = the largest rank among them; acc_* = task
    accuracy."""
    dense, limp = _need(thresholds, "dense", "limp")
    coarse = frac_changed > dense and rank <= r
    what = (f"the LoRA changes a median {frac_changed:.1%} of each matrix's entries with a ΔW of rank ≤ {rank} "
            f"(dense: over {dense:.0%}; few deltas: rank ≤ r = {r})")
    acc = f"accuracy {acc_lora:.2f} against full fine-tuning's {acc_full:.2f}"
    if not coarse:
        return FALSE, f"{what}: not the broad-strokes update the claim describes"
    if acc_full - acc_lora > limp:
        return TRUE, f"{what}, and it falls short: {acc} (more than {limp:.2f} below)"
    return CONDITIONAL, (f"broad strokes, yes — {what} — but the model does not limp: {acc} "
                         f"(within {limp:.2f})")


def verdict_claim5a(skew_biased: float, skew_fixed: float, skew_removed: float, weights_identical: bool,
                    thresholds: dict) -> tuple[str, str]:
    """Claim 5a, "a LoRA can't remove a bias in the base weights": skew of the biased model, with the corrective
    LoRA, and after removing it; weights_identical = the weights after removal equal the biased model's."""
    (thr,) = _need(thresholds, "skew")
    if not skew_fixed < thr:
        return TRUE, (f"the LoRA leaves skew at {skew_fixed:.2f} (from {skew_biased:.2f}; corrected means below "
                      f"{thr:.2f}): here it does not remove the biased behaviour")
    if weights_identical and skew_removed == skew_biased:
        return CONDITIONAL, (f"it removes the behaviour while on (skew {skew_biased:.2f} → {skew_fixed:.2f}, below "
                             f"{thr:.2f}) but not the bias in W0: removed, the skew is back at {skew_removed:.2f} — "
                             "true by construction, since an unmerged LoRA never writes to W0")
    return FALSE, (f"skew {skew_biased:.2f} → {skew_fixed:.2f} with the LoRA and {skew_removed:.2f} after removing it "
                   f"(weights identical to the biased model: {weights_identical})")


def verdict_claim5b(pair_drop: float, double_drop: float, thresholds: dict) -> tuple[str, str]:
    """Claim 5b, "stacking corrective LoRAs degrades quality": quality lost (copy accuracy, against one full fix)
    by two complementary fixes stacked (pair_drop) and by the same fix stacked twice (double_drop)."""
    (thr,) = _need(thresholds, "quality_drop")
    hurt_pair, hurt_double = pair_drop > thr, double_drop > thr
    nums = (f"complementary fixes stacked lose {pair_drop:+.3f}, the same fix twice {double_drop:+.3f} "
            f"(degraded means a loss over {thr:.2f})")
    if hurt_pair and hurt_double:
        return TRUE, f"both stacks degrade quality: {nums}"
    if hurt_pair or hurt_double:
        which = "the same fix twice (overlapping updates)" if hurt_double else "the complementary pair"
        return CONDITIONAL, f"only {which} degrades: {nums}"
    return FALSE, f"neither stack degrades quality: {nums}"


# ---------------------------------------------------------------------------------------------
# the summary
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


_FLOOR = 1e-12  # where exact zeros are drawn on a log axis


def plot_merged_vs_unmerged(logits_unmerged, logits_merged, latency_rows: list[dict],
                            title: str = "Claim 1: one function, two ways to compute it"):
    """Left: merged vs unmerged logits (on the diagonal = equal). Right: forward time of base / merged /
    unmerged per batch size (median, with 10–90 % whiskers)."""
    import numpy as np

    fig, (a1, a2) = figure(2, 1, width=4.6, height=3.3)
    u, m = to_numpy(logits_unmerged).ravel(), to_numpy(logits_merged).ravel()
    k = min(len(u), 20000)
    a1.scatter(u[:k], m[:k], s=2, alpha=0.3)
    lim = [min(u.min(), m.min()), max(u.max(), m.max())]
    a1.plot(lim, lim, "k--", lw=0.8)
    a1.set_xlabel("logit, unmerged  W0·x + B·A·x")
    a1.set_ylabel("logit, merged  (W0 + BA)·x")
    a1.set_title(f"max |difference| = {np.abs(u - m).max():.1e}")
    names = [("base", "tab:gray"), ("merged", "tab:blue"), ("unmerged", "tab:red")]
    x = np.arange(len(latency_rows))
    w = 0.27
    for i, (key, color) in enumerate(names):
        med = np.array([r[f"{key}_ms"] for r in latency_rows])
        lo = med - np.array([r[f"{key}_p10_ms"] for r in latency_rows])
        hi = np.array([r[f"{key}_p90_ms"] for r in latency_rows]) - med
        a2.bar(x + (i - 1) * w, med, w, yerr=[lo, hi], color=color, label=key, capsize=2)
    a2.set_xticks(x, [f"batch {r['batch']}" for r in latency_rows])
    a2.set_ylabel("ms per forward pass (median)")
    a2.set_yscale("log")
    a2.legend(fontsize=8)
    a2.set_title("inference time on this device")
    fig.suptitle(title)
    return fig


def plot_shift(h_delta, h_base=None, n_show: int = 40, title: str = "What the LoRA path adds: Δh = s·B·A·x"):
    """Heat map of Δh for `n_show` input tokens (rows) — a different shift for every token — next to the
    singular values of the whole N×d matrix Δh (at most r nonzero: outputs move in r directions only)."""
    import numpy as np

    fig, (a1, a2) = figure(2, 1, width=4.4, height=3.3)
    hd = to_numpy(h_delta)
    v = np.abs(hd[:n_show]).max()
    im = a1.imshow(hd[:n_show], cmap="RdBu_r", vmin=-v, vmax=v, aspect="auto", interpolation="nearest")
    fig.colorbar(im, ax=a1, shrink=0.8)
    a1.set_xlabel("output feature")
    a1.set_ylabel("token (input x)")
    share = shift_decomposition(torch.as_tensor(hd))["constant_fraction"]
    a1.set_title(f"Δh per token (constant-shift share {share:.2f})", fontsize=10)
    s = np.linalg.svd(hd, compute_uv=False)
    s = np.maximum(s / s[0], _FLOOR)
    a2.semilogy(np.arange(1, len(s) + 1), s, "o-", ms=3)
    a2.set_xlabel("singular value index")
    a2.set_ylabel("σᵢ / σ₁ of Δh over all tokens")
    a2.set_title("Δh lives in r directions")
    a2.set_ylim(bottom=1e-9)
    fig.suptitle(title)
    return fig


def plot_drift(rows: list[dict], title: str = "Claim 2: base-weight drift after n task switches"):
    """max |W − W0| against the number of switches, one line per (dtype, strategy) that drifts; the
    (dtype, strategy) pairs whose drift is exactly zero are drawn as one line at the bottom edge."""
    fig, ax = figure(1, 1, width=6.5, height=3.8)
    groups = {}
    for r in rows:
        groups.setdefault((r["dtype"], r["strategy"]), []).append(r)
    colors = {"float32": "tab:blue", "bfloat16": "tab:red", "float16": "tab:orange"}
    zero = []
    for (dtype, strategy), rs in groups.items():
        if all(r["max_abs"] == 0 for r in rs):
            zero.append((dtype, strategy))
            continue
        ax.loglog([r["switches"] for r in rs], [max(r["max_abs"], _FLOOR) for r in rs], "-o",
                  color=colors.get(dtype, "k"), label=f"{dtype}, {strategy}")
    if zero:
        xs = sorted({r["switches"] for r in rows})
        ax.loglog(xs, [_FLOOR] * len(xs), "--o", color="tab:green", mfc="none")
        strategies = ", ".join(dict.fromkeys(s for _, s in zero))
        dtypes = ", ".join(dict.fromkeys(d for d, _ in zero))
        ax.text(xs[0], _FLOOR * 4, f"exactly 0: {strategies}\n({dtypes})", fontsize=8, color="tab:green")
    ax.set_xlabel("task switches (merge then unmerge)")
    ax.set_ylabel("max |W − W0| over adapted weights")
    ax.set_ylim(_FLOOR / 3, None)
    ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.12))
    ax.set_title(title)
    return fig


def plot_pairs(pairs: list[dict], keep: float = 0.9, title: str = "Claim 3: two adapters merged at once vs switched"):
    """Left: per pair, each task's whole-answer accuracy switched (light) and merged (dark), bars = seed mean, dots =
    seeds, the `keep` line dashed. Right: per pair, where the adapters collide — |cos(ΔW1, ΔW2)|, the cosine of
    their prompts' inputs, and each adapter's response to the other's prompt (seed mean, dots = seeds)."""
    import numpy as np

    fig, (a1, a2) = figure(1, 2, width=max(6.0, 1.35 * len(pairs)), height=3.0)
    w = 0.2
    for i, p in enumerate(pairs):
        for j, t in enumerate(p["merged"]):
            for k, (vals, shade) in enumerate(((p["alone"][t], 0.35), (p["merged"][t], 1.0))):
                x = i + (2 * j + k - 1.5) * w
                color = ("tab:blue", "tab:orange")[j]
                a1.bar(x, np.mean(vals), w, color=color, alpha=shade,
                       label=(f"{('first', 'second')[j]} task, " + ("switched", "merged")[k]) if i == 0 else None)
                a1.plot([x] * len(vals), vals, "k.", ms=3)
    a1.axhline(keep, color="k", ls="--", lw=0.8)
    a1.set_xticks(range(len(pairs)), [p["label"].replace(" + ", "\n+ ") for p in pairs], fontsize=7)
    a1.set_ylim(0, 1.05)
    a1.set_ylabel("whole-answer accuracy")
    a1.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    a1.set_title(f"keeping both means ≥ {keep:g} (dashed)", fontsize=10)
    keys = [("delta_overlap", "|cos(ΔW₁, ΔW₂)|", "tab:gray"), ("input_cos", "cos of the prompts' inputs", "tab:green"),
            ("cross_response", "response to the other prompt", "tab:red")]
    for k, (key, label, color) in enumerate(keys):
        for i, p in enumerate(pairs):
            vals = p["overlap"][key]
            x = i + (k - 1) * 0.27
            a2.bar(x, np.mean(vals), 0.27, color=color, label=label if i == 0 else None)
            a2.plot([x] * len(vals), vals, "k.", ms=3)
    a2.set_xticks(range(len(pairs)), [p["label"].replace(" + ", "\n+ ") for p in pairs], fontsize=7)
    top = max([1.0] + [v for p in pairs for k, _, _ in keys for v in p["overlap"][k] if math.isfinite(v)])
    a2.set_ylim(0, 1.1 * top)
    a2.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    a2.set_title("where the two adapters collide (block 0 for the last two)", fontsize=10)
    fig.suptitle(title)
    return fig


def plot_spectra(anatomies: dict, r: int, title: str = "Claim 4: singular values of ΔW"):
    """Normalized singular values σᵢ/σ₁ of each ΔW in {label: delta_anatomy(...) dict}, with the rank r marked."""
    import numpy as np

    fig, ax = figure(1, 1, width=5.5, height=3.6)
    for label, a in anatomies.items():
        s = to_numpy(a["singular_values"])
        s = np.maximum(s / s[0], _FLOOR)
        ax.semilogy(np.arange(1, len(s) + 1), s, "o-", ms=3,
                    label=f"{label}: rank {a['rank']}, 90 % energy in {a['effective_rank']}")
    ax.axvline(r, color="k", ls=":", lw=0.8)
    ax.text(r + 0.5, 1e-6, f"r = {r}", fontsize=8)
    ax.set_ylim(1e-9, 2)
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("σᵢ / σ₁")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def plot_delta_images(W0, deltas: dict, layer: str = "", title: str | None = None):
    """W0 next to each ΔW in {label: matrix}, each on its own symmetric colour scale (printed in the title)."""
    import numpy as np

    mats = {"W0": W0, **deltas}
    fig, axes = figure(len(mats), 1, width=3.3, height=3.3)
    for ax, (label, M) in zip(axes, mats.items()):
        A = to_numpy(M)
        v = float(np.abs(A).max()) or 1.0
        im = ax.imshow(A, cmap="RdBu_r", vmin=-v, vmax=v, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.7)
        ax.set_title(f"{label}\n‖·‖_F = {np.linalg.norm(A):.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"Claim 4: the weight and its updates ({layer})")
    return fig


def plot_bias(rows: list[dict], title: str = "Claim 5: a toy bias, corrected by LoRAs"):
    """Grouped bars per configuration: skew (share of biased digits written as the wrong digit) and quality
    (copy accuracy on all positions and on the unbiased digits only)."""
    import numpy as np

    fig, ax = figure(1, 1, width=max(6.0, 1.1 * len(rows)), height=3.8)
    x = np.arange(len(rows))
    w = 0.27
    series = [("skew", "tab:red", "skew (biased digits → wrong digit)"),
              ("quality", "tab:blue", "quality: copy accuracy"),
              ("quality_other", "tab:cyan", "copy accuracy on unbiased digits")]
    for i, (key, color, label) in enumerate(series):
        vals = [r[key] for r in rows]
        bars = ax.bar(x + (i - 1) * w, vals, w, color=color, label=label)
        for b, v in zip(bars, vals):
            if not math.isnan(v):
                ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", fontsize=6)
    ax.set_xticks(x, [r["config"] for r in rows], fontsize=8, rotation=15)
    ax.set_ylim(0, 1.3)
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    ax.set_title(title)
    return fig


def plot_correction_sweep(rows: list[dict], title: str = "Claim 5: how much correction? W_biased + w·ΔW_fix"):
    """Skew and quality against the weight w of a corrective LoRA (0 = the biased model, 1 = as trained)."""
    fig, ax = figure(1, 1, width=5.5, height=3.6)
    ws = [r["weight"] for r in rows]
    ax.plot(ws, [r["skew"] for r in rows], "o-", color="tab:red", label="skew")
    ax.plot(ws, [r["quality"] for r in rows], "s-", color="tab:blue", label="quality: copy accuracy")
    ax.plot(ws, [r["quality_other"] for r in rows], "^--", color="tab:cyan", label="copy accuracy, unbiased digits")
    ax.axvline(1.0, color="k", ls=":", lw=0.8)
    ax.text(1.02, 0.5, "as trained", fontsize=8)
    ax.set_xlabel("weight w of the corrective LoRA")
    ax.set_ylim(-0.02, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig

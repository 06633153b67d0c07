"""Plumbing shared by the course modules: figures, tables, argument checks, timing, one LoRA trainer."""

from __future__ import annotations

import copy
import io
import math
import os
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..adapters import Adapter, load_adapter, merge_adapter, unmerge_adapter
from ..inject import add_lora, check_model, lora_layers, merge_lora, normalize_targets, remove_lora, unmerge_lora
from ..lowrank import amplification_factor, as_matrix, compression_ratio, lora_param_count, projection_norm
from ..pretrained import load_pretrained
from ..runtime import device_of, fast_mode, get_device, seed_everything
from ..tasks import NEW_WORDS, Task, get_task
from ..train import evaluate, train

ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------
# small argument checks
def check_int(value, name: str, lo: int = 1) -> int:
    """`value` if it is an int ≥ lo, else a TypeError (not an int; bools refused) or ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < lo:
        kind = "a positive int" if lo == 1 else f"an int ≥ {lo}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


targets_tuple = normalize_targets


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated q-quantile of an ascending list (q = 0.5 is the median)."""
    pos = q * (len(sorted_values) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _example_tokens(task, batch_size: int, device, seed: int = 0) -> torch.Tensor:
    inputs, _ = get_task(task).batch(batch_size, torch.Generator().manual_seed(seed), device)
    return inputs


# ---------------------------------------------------------------------------------------------
# notebook 06: merging, latency, switching, precision, mixed batches
@torch.no_grad()
def time_forward(model: nn.Module, tokens: torch.Tensor, repeats: int = 30, warmup: int = 3) -> list[float]:
    """Wall-clock seconds of `repeats` forward passes (after `warmup`), CUDA-synchronized; sorted ascending."""
    check_model(model)
    check_int(repeats, "repeats")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
    dev = tokens.device
    out = []
    for i in range(warmup + repeats):
        sync(dev)
        t0 = time.perf_counter()
        model(tokens)
        sync(dev)
        if i >= warmup:
            out.append(time.perf_counter() - t0)
    return sorted(out)


@torch.no_grad()
def max_output_diff(model_a: nn.Module, model_b: nn.Module, tokens: torch.Tensor) -> float:
    """max |logits_a − logits_b| on the same tokens."""
    check_model(model_a)
    check_model(model_b)
    return float((model_a(tokens).float() - model_b(tokens).float()).abs().max())


def latency_comparison(base: nn.Module, adapter: Adapter, batch_sizes=(1, 16, 256), repeats: int = 30,
                       warmup: int = 3, task="plus3") -> list[dict]:
    """Forward latency of the base model, the merged model (W0 + BA as one matrix) and the unmerged LoRA model.

    `base` must be a plain model (it is copied, never changed). Measurements are interleaved round-robin so
    that background load hits all three alike. Row per batch size: batch, tokens, and for each model its
    median and 10th/90th-percentile milliseconds, plus unmerged/base and merged/base ratios.
    """
    check_model(base)
    if not isinstance(adapter, Adapter):
        raise TypeError(f"adapter must be a lora_edu.Adapter, got {type(adapter).__name__}")
    if lora_layers(base):
        raise ValueError("base must be a plain model without LoRA layers")
    batch_sizes = tuple(batch_sizes)
    if not batch_sizes:
        raise ValueError("batch_sizes must not be empty")
    for b in batch_sizes:
        check_int(b, "batch_sizes")
    check_int(repeats, "repeats")
    dev = device_of(base)
    models = {"base": copy.deepcopy(base).eval(), "merged": copy.deepcopy(base).eval(),
              "unmerged": copy.deepcopy(base).eval()}
    merge_adapter(models["merged"], adapter.to(device=dev))
    load_adapter(models["unmerged"], adapter.to(device=dev))
    rows = []
    for b in batch_sizes:
        tokens = _example_tokens(task, b, dev)
        samples = {k: [] for k in models}
        for m in models.values():
            time_forward(m, tokens, repeats=1, warmup=warmup)
        for _ in range(repeats):
            for k, m in models.items():
                samples[k].extend(time_forward(m, tokens, repeats=1, warmup=0))
        row = {"batch": b, "tokens": b * tokens.shape[1]}
        for k, s in samples.items():
            s = sorted(s)
            row[f"{k}_ms"] = 1000 * statistics.median(s)
            row[f"{k}_p10_ms"] = 1000 * _percentile(s, 0.1)
            row[f"{k}_p90_ms"] = 1000 * _percentile(s, 0.9)
        row["unmerged_over_base"] = row["unmerged_ms"] / row["base_ms"]
        row["merged_over_base"] = row["merged_ms"] / row["base_ms"]
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1000 or abs(v) < 1e-3:
            return f"{v:.3g}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    if isinstance(v, (tuple, list)):
        return "+".join(str(x).replace("_proj", "") for x in v)
    return "—" if v is None else str(v)


def format_table(rows: list[dict], columns=None, headers=None) -> str:
    """A plain-text table of `rows` (lists of dict), `columns` in order (default: all scalar keys of row 0)."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("rows must be a non-empty list of dicts")
    if columns is None:
        columns = [k for k, v in rows[0].items() if not isinstance(v, (dict, list))]
    headers = list(columns) if headers is None else list(headers)
    if len(headers) != len(columns):
        raise ValueError(f"headers has {len(headers)} names for {len(columns)} columns")
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if c[:1].isdigit() or c[:1] == "-" else c.ljust(w) for c, w in zip(row, widths))
            for row in cells]
    return "\n".join(out)


def human_bytes(n) -> str:
    """1234567 → "1.23 MB" (decimal units, as disk sizes are quoted)."""
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n < 0:
        raise ValueError(f"n must be a non-negative number of bytes, got {n!r}")
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


@contextmanager
def cpu_threads(n: int | None, device):
    """Run the block with `n` torch intra-op threads when `device` is the CPU (None: leave torch's setting).

    The toy model's matrices are 64×64: a second thread buys little, and on a shared or oversubscribed CPU two
    OpenMP threads spin-wait on each other (measured here: one default lab run 5 s with 1 thread, 30–60 s with 2).
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"threads must be a positive int or None, got {n!r}")
    if n is None or torch.device(device).type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


COLORS = {"base": "#4c72b0", "merged": "#55a868", "unmerged": "#c44e52", "lora": "#c44e52", "full": "#4c72b0",
           "float32": "#4c72b0", "bfloat16": "#dd8452", "float16": "#8172b3"}
# singular values below ZERO_TOL·σ₁ are float round-off, not directions ΔW uses
ZERO_TOL = 1e-6


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    import numpy as np

    return np.asarray(x, dtype=float)


def figure(ncols: int = 1, nrows: int = 1, width: float = 4.0, height: float = 3.2, axes: bool = True, **kw):
    """A new (fig, axes) pair, sized per panel, with constrained layout (the course's one figure helper).

    Not attached to pyplot's state, so nothing leaks between cells; a notebook shows it by returning it.
    With ``axes=False`` only the Figure is returned (width × height in total), for custom layouts.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained", dpi=kw.pop("dpi", 90))
    if not axes:
        return fig
    return fig, fig.subplots(nrows, ncols, squeeze=True, **kw)


def save(fig, path, dpi: int = 90) -> None:
    """Save a figure to a file (PNG, SVG, … from the suffix)."""
    fig.savefig(path, dpi=dpi)


def close(fig) -> None:
    """Release a figure made with pyplot (figures from `figure()` need no closing)."""
    import matplotlib.pyplot as plt

    plt.close(fig)


def smooth(y, k: int = 10) -> list[float]:
    """Trailing moving average over k points (fewer at the start), for noisy loss curves."""
    out, acc = [], 0.0
    for i, v in enumerate(y):
        acc += v
        if i >= k:
            acc -= y[i - k]
        out.append(acc / min(i + 1, k))
    return out


def to_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a figure (for an ipywidgets.Image)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- builders
def show_in(out, result) -> None:
    """Put a callback's result (Figure or message; or a function producing one) into an Output widget.

    The value shown is also kept as ``out.last_result`` so tests can see what a slider move produced.
    """
    from IPython.display import display

    with out:
        out.clear_output(wait=True)
        try:
            value = result() if callable(result) else result
        except Exception as e:  # noqa: BLE001 — a widget shows a message, never a traceback
            value = f"Could not draw this setting ({type(e).__name__}: {e})."
        out.last_result = value
        if isinstance(value, str):
            print(value)
        else:
            display(value)


# ------------------------------------------------------------------------------------ parameter counts
def param_count_summary(d, k, r) -> dict | str:
    """Numbers for the d, k, r sliders: full d·k versus LoRA r·(d + k), or a message for a bad combination."""
    for name, v in (("d", d), ("k", k), ("r", r)):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{name} must be a whole number, got {v!r}."
    if d < 1 or k < 1:
        return f"d and k must be at least 1 (got d = {d}, k = {k})."
    if r < 1:
        return (f"r = {r}: LoRA needs at least one rank (B is d×r, A is r×k); with r = 0 there is no update "
                f"to train and no compression ratio to compute.")
    try:
        ratio = compression_ratio(d, k, r)  # checks that d, k, r stay in float range
    except ValueError as e:
        return f"Cannot count this setting: {e}."
    full = d * k
    lora = lora_param_count(d, k, r)
    out = {"d": d, "k": k, "r": r, "full": full, "lora": lora, "ratio": ratio,
           "fraction": lora / full, "break_even_r": d * k / (d + k), "note": ""}
    if r > min(d, k):
        out["note"] = (f"r = {r} > min(d, k) = {min(d, k)}: B·A can never have rank above {min(d, k)}, "
                       f"so the extra rank buys nothing (LoRALinear refuses it).")
    elif lora >= full:
        out["note"] = (f"At r = {r} the factors store {lora:,} ≥ {full:,} numbers: no saving. "
                       f"LoRA only pays off for r < d·k/(d + k) ≈ {out['break_even_r']:.1f}.")
    return out


def known_word_twin(task) -> str:
    """'plus3' → 'add3': the pretraining skill a downstream task asks for with its new word (same rule, known word)."""
    t = get_task(task)
    if not isinstance(t, Task) or t.op not in NEW_WORDS:
        raise ValueError(f"task must be a downstream task (a new word: {list(NEW_WORDS)}), got {t.name!r}")
    return f"{NEW_WORDS[t.op]}{t.k}"


LORA_RECIPE = {"targets": ("q_proj", "v_proj"), "r": 4, "alpha": 8.0, "lr": 1e-2, "weight_decay": 1.0,
               "steps": 300, "batch_size": 64}  # the course's LoRA budget (benchmarks/vehicle.py measures it)


def train_lora(task, *, base: nn.Module | None = None, targets=("q_proj", "v_proj"), r: int = 4,
               alpha: float | None = 8.0, lr: float = 1e-2, steps: int = 300, seed: int = 0, full: bool = False,
               weight_decay: float | None = None, device=None, threads: int | None = None,
               **train_kwargs) -> tuple[nn.Module, dict]:
    """The course's one fine-tuning run: a copy of `base` (default: the shipped pretrained toy) trained on `task`.

    LoRA(r, alpha) on `targets` with everything else frozen, or every parameter with ``full=True``. `seed` fixes
    A's random init and the order of the training data, so two seeds are two independent runs. weight_decay
    defaults to LORA_RECIPE's 1.0 for LoRA (AdamW's decay on A and B keeps ΔW = BA small and low-rank) and to 0
    for full fine-tuning (decay would pull W toward 0, not toward W0). Everything after the model is built is
    `le.train` (extra keyword arguments go to it). Returns (model, train()'s history).
    """
    if not isinstance(full, bool):
        raise TypeError(f"full must be a bool, got {type(full).__name__}")
    if base is not None:
        check_model(base)
        if lora_layers(base):
            raise ValueError("base must be a plain model without LoRA layers (use remove_lora first)")
    seed_everything(seed)  # before the model is built: load_pretrained draws the unused random init
    model = load_pretrained(device) if base is None else copy.deepcopy(base)
    if device is not None:
        model = model.to(get_device(device))
    if full:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        add_lora(model, targets, r=r, alpha=alpha)  # validates targets, r, alpha before touching the model
    with cpu_threads(threads, device_of(model)):
        wd = (0.0 if full else LORA_RECIPE["weight_decay"]) if weight_decay is None else weight_decay
        hist = train(model, task, steps, lr=lr, seed=seed, weight_decay=wd, **train_kwargs)
    return model, hist



SWITCH_STRATEGIES = ("subtract", "keep_original", "fp32_master", "unmerged")


def check_plain(model, name: str = "base") -> None:
    check_model(model)
    if lora_layers(model):
        raise ValueError(f"{name} must be a plain model without LoRA layers (use remove_lora first)")


def adapter_list(adapters, name: str = "adapters") -> list[Adapter]:
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
# claim 2: does removing an adapter give the base back?
@torch.no_grad()
def switch_drift(base: nn.Module, adapters, dtype="bfloat16", checkpoints=(1, 10, 100, 1000),
                 strategy: str = "subtract", task=None, n_examples: int = 256) -> list[dict]:
    """How far the adapted weights wander from W0 after n task switches, cycling through `adapters`.

    The one drift study of the course (notebooks 06 and 08), built on the public merge API. One switch = put
    the next adapter in, then take it out again. Strategies:
      "subtract"      merge_adapter (W ← W + ΔW) then unmerge_adapter (W ← W − ΔW), each rounded to `dtype`:
                      §4.1's recipe;
      "keep_original" LoRA layers merged with merge_lora(keep_original=True), then unmerge_lora: W0 copied back;
      "fp32_master"   a float32 copy of W0 kept beside the model: W ← (W0 + ΔW) rounded, then W ← W0 rounded;
      "unmerged"      never merge: load_adapter swaps A and B in the LoRA layers (W0 is never written).
    Row per checkpoint: strategy, dtype, switches, max_abs = max |W − W0| and rel_fro = ‖W − W0‖_F / ‖W0‖_F
    over the adapted weights (W0 = base's weights rounded to `dtype`); with `task`, also `accuracy`: the
    drifted base's token accuracy on it (run in float32, so only the drift of the weights is measured).
    """
    check_plain(base)
    adapters = adapter_list(adapters)
    if isinstance(dtype, torch.dtype):
        dtype = next((k for k, v in DTYPES.items() if v == dtype), str(dtype))
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if strategy not in SWITCH_STRATEGIES:
        raise ValueError(f"strategy must be one of {SWITCH_STRATEGIES}, got {strategy!r}")
    checkpoints = tuple(checkpoints)
    if not checkpoints or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in checkpoints) \
            or list(checkpoints) != sorted(set(checkpoints)):
        raise ValueError(f"checkpoints must be increasing positive ints, got {checkpoints!r}")
    if task is not None:
        task = get_task(task)
    check_int(n_examples, "n_examples")
    names = sorted(adapters[0].tensors)
    for a in adapters[1:]:
        if sorted(a.tensors) != names or (a.r, a.alpha, a.rslora) != (adapters[0].r, adapters[0].alpha,
                                                                        adapters[0].rslora):
            raise ValueError("all adapters must share r, alpha, rslora and layers to be switched in one model")
    dt = DTYPES[dtype]
    model = copy.deepcopy(base).to(dtype=dt)
    adapters = [a.to(device=device_of(base), dtype=dt) for a in adapters]
    modules = dict(model.named_modules())
    missing = [n for n in names if not isinstance(modules.get(n), nn.Linear)]
    if missing:
        raise ValueError(f"adapter layers {missing} are not nn.Linear layers of base")
    W0 = {n: modules[n].weight.detach().clone() for n in names}
    lora = strategy in ("keep_original", "unmerged")
    if lora:
        load_adapter(model, adapters[0])
        layers = lora_layers(model)
    if strategy == "fp32_master":
        master = {n: base.get_submodule(n).weight.detach().float().clone() for n in names}
        deltas = [{n: a.delta(n) for n in names} for a in adapters]
    rows, done = [], 0
    for c in checkpoints:
        while done < c:
            a = adapters[done % len(adapters)]
            if strategy == "subtract":
                merge_adapter(model, a)
                unmerge_adapter(model, a)
            elif strategy == "fp32_master":
                for n in names:
                    modules[n].weight.copy_((master[n] + deltas[done % len(adapters)][n]).to(dt))
                for n in names:
                    modules[n].weight.copy_(master[n].to(dt))
            else:
                load_adapter(model, a)
                if strategy == "keep_original":
                    merge_lora(model, keep_original=True)
                    unmerge_lora(model)
            done += 1
        diffs = {n: (layers[n].base.weight if lora else modules[n].weight).float() - W0[n].float() for n in names}
        num = math.sqrt(sum(float(d.pow(2).sum()) for d in diffs.values()))
        den = math.sqrt(sum(float(W0[n].float().pow(2).sum()) for n in names))
        row = {"strategy": strategy, "dtype": dtype, "switches": c,
               "max_abs": max(float(d.abs().max()) for d in diffs.values()), "rel_fro": num / den}
        if task is not None:
            plain = copy.deepcopy(model)
            if lora:
                remove_lora(plain, merge=False)
            row["accuracy"] = evaluate(plain.float(), task, n_examples=n_examples)
        rows.append(row)
    return rows


def random_gaussian_like(M, seed: int = 0) -> torch.Tensor:
    """A matrix of the same shape with i.i.d. N(0, 1) entries (the paper's control in Figure 4)."""
    M = as_matrix(M, "M")
    g = torch.Generator().manual_seed(check_int(seed, "seed", 0))
    return torch.randn(tuple(M.shape), generator=g, dtype=torch.float64, device="cpu")


def projection_norms(W, delta_W, r: int, seed: int = 0) -> dict:
    """The Table 7 numbers for one matrix: ‖UᵀWVᵀ‖_F with U (d×r), V (r×k) taken from the top-r singular
    vectors of ΔW, of W itself, or of a random Gaussian matrix; plus ‖W‖_F, ‖ΔW‖_F and the amplification
    factor ‖ΔW‖_F / ‖UᵀWVᵀ‖_F (U, V from ΔW), as in §7.3.
    """
    W = as_matrix(W).to(torch.float64).cpu()
    delta_W = as_matrix(delta_W, "delta_W").to(torch.float64).cpu()
    if W.shape != delta_W.shape:
        raise ValueError(f"W and delta_W must have the same shape, got {tuple(W.shape)} and {tuple(delta_W.shape)}")
    check_int(r, "r", 1)
    if r > min(W.shape):
        raise ValueError(f"r must be ≤ min(d, k) = {min(W.shape)}, got {r}")
    out = {"r": r}
    sources = {"delta_dirs": delta_W, "W_dirs": W, "random_dirs": random_gaussian_like(W, seed)}
    for key, M in sources.items():
        U, _, Vh = torch.linalg.svd(M, full_matrices=False)
        out[key] = projection_norm(W, U[:, :r], Vh[:r])
    out["W_norm"] = float(torch.linalg.matrix_norm(W))
    out["delta_norm"] = float(torch.linalg.matrix_norm(delta_W))
    out["amplification"] = amplification_factor(W, delta_W, r)  # = delta_norm / delta_dirs
    return out


def growth_exponent(switches, drifts) -> float:
    """Slope p of a least-squares fit drift ∝ switchesᵖ on log–log axes (points with drift 0 left out; nan if fewer
    than two remain): p = 0.5 is a random walk of independent roundings, p = 1 errors that all push one way."""
    pts = [(math.log(s), math.log(d)) for s, d in zip(switches, drifts) if s > 0 and d > 0]
    if len(pts) < 2:
        return float("nan")
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den > 0 else float("nan")


def results_dir() -> Path:
    """Where measured results live: $LORA_EDU_RESULTS, else the clone's benchmarks/results.

    The clone is found above this package (an editable install) or above the working directory (a notebook in
    notebooks/, notebooks/student/ or notebooks/solutions/). Not found: a relative path that holds nothing.
    """
    if os.environ.get("LORA_EDU_RESULTS"):
        return Path(os.environ["LORA_EDU_RESULTS"])
    for start in (Path(__file__).resolve().parent, Path.cwd().resolve()):
        for d in (start, *start.parents):
            if (d / "benchmarks" / "results").is_dir():
                return d / "benchmarks" / "results"
    return Path("benchmarks") / "results"


# ---------------------------------------------------------------------------------------------
# how drift grows: notebooks 06 and 08 read it the same way

RANDOM_WALK, SYSTEMATIC = 0.5, 1.0
GROWTH_TOL = 0.15  # p within 0.15 of 0.5 reads as a random walk, within 0.15 of 1 as systematic


def growth_kind(p: float, tol: float = GROWTH_TOL) -> str:
    """"random walk" (p ≈ 0.5), "systematic" (p ≈ 1) or "neither" for a growth exponent p (drift ∝ nᵖ)."""
    if not isinstance(p, (int, float)) or isinstance(p, bool):
        raise TypeError(f"p must be a number, got {type(p).__name__}")
    if abs(p - RANDOM_WALK) <= tol:
        return "random walk"
    if abs(p - SYSTEMATIC) <= tol:
        return "systematic"
    return "neither"


def plateau_start(switches, drifts) -> int | None:
    """The first checkpoint from which the drift no longer changes (None if it still changed at the last one)."""
    s, d = list(switches), list(drifts)
    if len(s) < 2 or d[-1] != d[-2]:
        return None
    i = len(d) - 1
    while i > 0 and d[i - 1] == d[-1]:
        i -= 1
    return s[i]


@torch.no_grad()
def drift_directions(base: nn.Module, adapters, dtype="bfloat16", cycles: int = 100) -> dict:
    """Per weight entry, the direction of every move over `cycles` rounds of merge → unmerge through all `adapters`.

    Merging rounds W0 + ΔW to the dtype, unmerging rounds again; both are monotone in W, so a whole round is a
    monotone map of each entry onto itself, and an entry it moves up can never later move down. Returns the
    number of entries, those that moved, those that ever reversed direction, and those still moving in the last
    round (the rest have reached a fixed point).
    """
    check_plain(base)
    adapters = adapter_list(adapters)
    check_int(cycles, "cycles")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    dt = DTYPES[dtype]
    model = copy.deepcopy(base).to(dtype=dt)
    adapters = [a.to(device=device_of(base), dtype=dt) for a in adapters]
    names = sorted({n for a in adapters for n in a.tensors})
    weights = [model.get_submodule(n).weight for n in names]
    prev = [w.detach().float().clone() for w in weights]
    first = [torch.zeros_like(p) for p in prev]
    reversed_ = [torch.zeros_like(p, dtype=torch.bool) for p in prev]
    still = 0
    for _ in range(cycles):
        for a in adapters:
            merge_adapter(model, a)
            unmerge_adapter(model, a)
        still = 0
        for i, w in enumerate(weights):
            now = w.detach().float()
            step = torch.sign(now - prev[i])
            reversed_[i] |= (step != 0) & (first[i] != 0) & (step != first[i])
            first[i] = torch.where(first[i] == 0, step, first[i])
            still += int((step != 0).sum())
            prev[i] = now.clone()
    return {"dtype": dtype, "cycles": cycles, "switches": cycles * len(adapters),
            "entries": sum(p.numel() for p in prev), "moved": sum(int((f != 0).sum()) for f in first),
            "reversed": sum(int(r.sum()) for r in reversed_), "still_moving": still}


def drift_reading(rows: list[dict], directions: dict | None = None) -> dict:
    """What the drift rows of one dtype (strategy "subtract") show: the growth exponent p of max |W − W0| over all
    checkpoints, its kind (growth_kind), where the drift stopped growing, and — with drift_directions' counts —
    whether the entries moved one way (systematic) or back and forth (a random walk reverses half its steps)."""
    if not rows:
        raise ValueError("rows must not be empty")
    s, d = [r["switches"] for r in rows], [r["max_abs"] for r in rows]
    p = growth_exponent(s, d)
    stop = plateau_start(s, d)
    grow = [(a, b) for a, b in zip(s, d) if stop is None or a <= stop]
    p_grow = growth_exponent([a for a, _ in grow], [b for _, b in grow]) if len(grow) >= 2 else float("nan")
    out = {"dtype": rows[0]["dtype"], "p": p, "kind": growth_kind(p) if math.isfinite(p) else "neither",
           "plateau_from": stop, "p_growing": p_grow,
           "kind_growing": growth_kind(p_grow) if math.isfinite(p_grow) else "neither"}
    if directions is not None:
        moved = directions["moved"]
        out["reversed_fraction"] = directions["reversed"] / moved if moved else 0.0
        out["one_way"] = moved > 0 and directions["reversed"] == 0
    return out


# ---------------------------------------------------------------------------------------------
# claims: every comparative sentence is chosen by the numbers it rests on

def spread(values, fmt: str = "{:.3f}") -> str:
    """'mean [min–max] over n' of a list of numbers: how head-to-head comparisons show seed spread."""
    v = [float(x) for x in values]
    if not v:
        return "no runs"
    mean = fmt.format(sum(v) / len(v))
    return mean if len(v) == 1 else f"{mean} [{fmt.format(min(v))}–{fmt.format(max(v))}] over {len(v)}"


def claim(key: str, holds, said: str, otherwise: str, expected: bool = True) -> str:
    """Print the sentence the measured numbers support — `said` if `holds`, else `otherwise` — and return it.

    Both sentences are written by the caller with the numbers in them; `otherwise` says what happened instead
    and, where the toy departs from the paper, why. `expected` marks a claim the lesson is built on: in full mode
    `make claims` (tools/claims.py) fails when it does not hold. With $LORA_EDU_CLAIMS set, each call appends
    a JSON line there (key, holds, expected, fast mode, text) for that tool to collect.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"key must be a non-empty str, got {key!r}")
    ok = bool(holds)
    text = ("✅ " + said) if ok else ("⚠️ " + otherwise)
    if fast_mode():
        text += " (fast mode: fewer steps and seeds; the full run is the one checked)"
    print(text)
    path = os.environ.get("LORA_EDU_CLAIMS")
    if path:
        import json

        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "holds": ok, "expected": bool(expected), "fast": fast_mode(),
                                "text": text}) + "\n")
    return text

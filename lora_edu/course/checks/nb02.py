"""Self-checks for notebook 02 (the LoRA update). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import functools
import math

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .feedback import (
    Exercises,
    call,
    fail,
    judge_prediction,
    library_calls,
    not_answered,
    ok,
    read_number,
    read_tensor,
    short,
)

__all__ = ["ex1", "ex2", "ex3", "ex4", "hint"]

EX = Exercises("nb02", hints={
    1: ["PyTorch stores a weight as out × in: W0 is d×k, and B·A must have the same shape.",
        "In B·A the inner sizes meet at r: B has r columns and A has r rows.",
        "B produces the d outputs; A reads the k inputs."],
    2: ["Two paths see the same x: the frozen one W0·x and the update path B·(A·x), scaled by α/r.",
        "Rows of x are examples, so W0·x is x @ W0.T; apply A first (x @ A.T has r columns), then B.",
        "r is a property of A and B, not a number to type in: read it off a shape. Which shape holds r?"],
    3: ["Start from a fresh model: le.load_pretrained(device) — not `pretrained`, which is the reference the check "
        "compares with.",
        "le.add_lora(model, targets=…, r=…) wraps every layer whose name ends in one of the targets; the attention "
        "projections are named q_proj, k_proj, v_proj and o_proj.",
        "Do not touch A or B after add_lora: its B = 0 is what keeps the output unchanged."],
    4: ["Write h = W0x + (α/r)·B·A·x and ask: what is ∂L/∂B, and what is ∂L/∂A?",
        "∂L/∂B contains A·x; ∂L/∂A contains Bᵀ times the error. Evaluate both at A = 0 and B = 0.",
        "Adam moves a parameter only when its gradient is nonzero."],
})
hint = EX.hint


def _shape(x):
    if isinstance(x, torch.Tensor) and x.ndim == 2:
        return "tensor"
    try:
        dims = tuple(x)
    except TypeError:
        return None
    if len(dims) != 2:
        return None
    out = []
    for v in dims:
        n, problem = read_number(v, whole=True)
        if problem or isinstance(v, str):
            return None
        out.append(n)
    return tuple(out)


@EX.check(1)
def ex1(answer, d: int = 64, k: int = 256, r: int = 8) -> bool:
    """(shape of B, shape of A) for a LoRA update of a d×k weight (out d, in k) at rank r."""
    if answer is None:
        return not_answered("give a pair of shapes, (shape of B, shape of A), each a pair of whole numbers.")
    try:
        b, a = answer
    except Exception:  # noqa: BLE001 - anything that is not a pair
        return fail(f"give a pair (B_shape, A_shape) such as ((1, 2), (3, 4)); got {short(answer, 40)}.")
    b, a = _shape(b), _shape(a)
    if "tensor" in (b, a):
        return fail("give the shapes, e.g. tuple(B.shape), not the tensors themselves.")
    if b is None or a is None:
        return fail("each shape should be a pair of whole numbers like (5, 7).")
    want_b, want_a = (d, r), (r, k)
    if (b, a) == (want_a, want_b):
        return fail("you swapped them: the first shape is B's, the second A's.")
    msgs = []
    if b != want_b:
        msgs.append("your B cannot be right: B turns the r numbers in the middle into the layer's d outputs")
    if a != want_a:
        msgs.append("your A cannot be right: A reads the layer's k inputs and turns them into r numbers")
    if msgs:
        return fail("; ".join(msgs) + f" (here d = {d} outputs, k = {k} inputs, r = {r}).")
    return ok(f"B {want_b} @ A {want_a} is {d}×{k}, like W0, with {r * (d + k):,} trainable numbers.")


_PRODUCTS = ("matmul", "mm", "einsum", "dot", "linear", "tensordot", "bmm", "outer", "ger", "kron")


class _ProductLog(TorchFunctionMode):
    """Records whether any product of tensors produced a d×k (or k×d) matrix, i.e. formed B·A."""

    def __init__(self, d: int, k: int):
        super().__init__()
        self.shapes, self.formed = {(d, k), (k, d)}, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if isinstance(out, torch.Tensor) and tuple(out.shape) in self.shapes and any(p in name for p in _PRODUCTS):
            self.formed = True
        return out


# (d, k, r, n, alpha): r differs from d, k and n (and n from 2), α from r, so that every wrong choice shows
_CASES2 = ((6, 5, 2, 3, 3.0), (7, 4, 3, 5, 8.0), (5, 9, 1, 4, 0.5), (8, 6, 5, 3, 2.0))


def _scale_message(scaled) -> str:
    """What a wrong scale c (with the right update path) tells, from all the (c, case) pairs where it was seen."""
    def near(x, y):
        return math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-9)

    def every(rule):
        return all(rule(c, *case) for c, case in scaled)

    rules = [
        (lambda c, d, k, r, n, a: near(c, 1.0), "the update path is right, but you left out the scaling α/r."),
        (lambda c, d, k, r, n, a: near(c, a), "the update path is right, but it is scaled by α alone: divide by r "
                                               "as well."),
        (lambda c, d, k, r, n, a: near(c, a / math.sqrt(r)), "that is rsLoRA's α/√r; the paper's LoRA scales the "
                                                             "update by α/r."),
        (lambda c, d, k, r, n, a: near(c, r / a), "the scale is upside down: r/α instead of α/r."),
        (lambda c, d, k, r, n, a: near(c, (a / r) ** 2), "the scale α/r is applied twice."),
        (lambda c, d, k, r, n, a: any(near(c, a / m) for m in (d, k, n)),
         "the update path is right, but the scale used the wrong r: r is the number of rows of A (and of columns "
         "of B); the other sizes are d, k and the batch."),
    ]
    for rule, msg in rules:
        if every(rule):
            return msg
    c0, case0 = scaled[0]
    if len(scaled) > 1 and every(lambda c, *case: near(c, c0)):
        return ("your scale is the same number whatever α and r are: compute it from the alpha argument and from "
                "r read off a shape, not from a constant.")
    if c0 and len(scaled) > 1 and every(lambda c, d, k, r, n, a: c != 0 and near(a / c, case0[4] / c0)):
        return (f"your function divides α by {case0[4] / c0:g} whatever the rank is: read r off a shape of A or B "
                "instead of typing it in.")
    return "the update path is right, but its scale is not α/r."


@EX.check(2)
def ex2(fn) -> bool:
    """A function lora_forward(x, W0, A, B, alpha) returning h = W0 x + (α/r) B A x for a batch x (n, k)."""
    if fn is None:
        return not_answered("write lora_forward in the cell above, then pass the function itself: "
                            "checks.nb02.ex2(lora_forward).")
    if not callable(fn):
        return fail(f"pass your function itself (lora_forward, without brackets), not a {type(fn).__name__}.")
    used = library_calls(fn, {"LoRALinear", "add_lora", "merge_lora", "load_adapter", "merge_adapter"})
    if used:
        return fail(f"your function uses le.{sorted(used)[0]}; the exercise is to write the forward pass of Eq. (3) "
                    "yourself, from x, W0, A and B.")
    g = torch.Generator().manual_seed(3)
    scaled, formed = [], False
    for d, k, r, n, alpha in _CASES2:
        x, W0 = torch.randn(n, k, generator=g), torch.randn(d, k, generator=g)
        A, B = torch.randn(r, k, generator=g), torch.randn(d, r, generator=g)
        log = _ProductLog(d, k)
        with log:
            out, problem = call(fn, x, W0, A, B, alpha, name="lora_forward")
        formed |= log.formed
        if problem:
            return fail(problem + ". x is (n, k), W0 is (d, k), A is (r, k), B is (d, r).")
        h, problem = read_tensor(out, what=f"lora_forward's output for x of shape {(n, k)}")
        if problem:
            return fail(problem)
        if tuple(h.shape) == (d, n):
            return fail("your output is transposed: rows are examples, so h has one row per row of x.")
        if tuple(h.shape) != (n, d):
            return fail(f"your output has shape {tuple(h.shape)}, but for x of shape (n, k) = {(n, k)} it should "
                        f"have one row per example and one column per output (d = {d}).")
        x, W0, A, B = (t.double() for t in (x, W0, A, B))
        base, upd = x @ W0.T, x @ A.T @ B.T
        tol = 1e-4 * float(base.abs().max() + upd.abs().max() * max(1.0, alpha))
        if torch.allclose(h, base + alpha / r * upd, atol=tol, rtol=0):
            continue
        if torch.allclose(h, base, atol=tol, rtol=0):
            return fail("your output ignores A and B: the update path (α/r)·B·A·x is missing.")
        rest = h - base
        c = float((rest * upd).sum() / (upd * upd).sum())
        if torch.allclose(rest, c * upd, atol=tol, rtol=0):
            scaled.append((c, (d, k, r, n, alpha)))
            continue
        c = float((h * upd).sum() / (upd * upd).sum())
        if torch.allclose(h, c * upd, atol=tol, rtol=0):
            return fail("you dropped the frozen path W0·x; LoRA adds its update to W0·x instead of replacing it.")
        return fail("the numbers differ from W0x + (α/r)·BAx: check the update path — x goes through A first "
                    "(r numbers per example), then through B.")
    if scaled:
        return fail(_scale_message(scaled))
    if formed:
        return fail("the numbers are right, but your function forms the d×k matrix B·A (or its transpose). The "
                    "exercise says not to: LoRA never needs it while training — send x through A, then through B.")
    return ok("on four shapes, ranks and α ≠ r: h = W0x + (α/r)·B(Ax) (Eq. 3), two paths that see the same x, "
              "and never a d×k product.")


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@EX.check(3)
def ex3(model, reference, x, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r: int = 2) -> bool:
    """LoRA at rank r on all four attention projections of a fresh pretrained model, its output unchanged."""
    from ...inject import lora_layers
    from ...pretrained import load_pretrained

    if model is None:
        return not_answered("load a fresh pretrained model into `my_model`, put LoRA on it, and run the cell.")
    if not isinstance(model, nn.Module):
        return fail(f"`my_model` should be a model (an nn.Module), got {type(model).__name__}.")
    if model is reference:
        return fail("that is `pretrained` itself, the reference the check compares with: load a fresh model with "
                    "le.load_pretrained(device) and put LoRA on that one.")
    if isinstance(reference, nn.Module) and lora_layers(reference):
        return fail("`pretrained`, the reference model, has LoRA layers now: LoRA was added to it. Rerun the cell "
                    "of section 3 that loads `pretrained`, then put LoRA on a fresh model of your own.")
    if isinstance(reference, nn.Module) and {id(p) for p in model.parameters()} & {id(p) for p in
                                                                                reference.parameters()}:
        return fail("your model shares its weights with `pretrained`; load a separate fresh model.")
    layers = lora_layers(model)
    if not layers:
        return fail("the model has no LoRA layers yet: put LoRA on it with le.add_lora.")
    have = {n.rsplit(".", 1)[-1] for n in layers}
    if set(targets) - have:
        return fail(f"LoRA is missing on {sorted(set(targets) - have)}; the exercise asks for all four attention "
                    "projections.")
    if have - set(targets):
        return fail(f"LoRA is also on {sorted(have - set(targets))}; only the attention projections were asked for.")
    ranks = sorted({m.r for m in layers.values()})
    if ranks != [r]:
        return fail(f"your LoRA layers have rank {ranks}; the exercise asks for r = {r}.")
    fresh = load_pretrained(device="cpu")
    frozen = {n: p for n, p in model.named_parameters() if not n.endswith((".A", ".B"))}
    ref = {n.replace(".base.", "."): p for n, p in frozen.items()}
    fresh_sd = fresh.state_dict()
    if any(n not in fresh_sd or not torch.equal(p.detach().cpu(), fresh_sd[n]) for n, p in ref.items()):
        return fail("the frozen weights are not the pretrained checkpoint's: start from le.load_pretrained(device), "
                    "not from a model that was trained or changed.")
    if any(p.requires_grad for p in frozen.values()):
        return fail("some pretrained weights are still trainable; LoRA trains only A and B (le.add_lora freezes "
                    "the rest).")
    nonzero = [n for n, m in layers.items() if bool(m.B.detach().abs().sum() > 0)]
    if nonzero:
        return fail(f"B is not zero in {nonzero[:2]}{'…' if len(nonzero) > 2 else ''}, so ΔW = BA ≠ 0 and the "
                    "output changed before any training. LoRA starts B at zero.")
    with torch.no_grad():
        xx = torch.as_tensor(x)
        dev = next(model.parameters()).device
        diff = float((model(xx.to(dev)).cpu() - fresh(xx.cpu())).abs().max())
    if diff != 0.0:
        return fail(f"the output differs from the pretrained model's by up to {diff:.3g} before any training.")
    return ok(f"{len(layers)} LoRA layers at r = {r} on a fresh model ({_trainable(model):,} trainable numbers), and "
              "its output is bit-identical to the pretrained model's: with B = 0, ΔW = BA = 0.")


@functools.lru_cache(maxsize=1)
def _stuck(steps: int = 50) -> dict:
    """‖ΔW‖_F after `steps` Adam steps from A = B = 0, and from the paper's init (A Gaussian, B = 0)."""
    from ...layer import LoRALinear

    out = {}
    with torch.random.fork_rng(devices=[]):
        for init in ("both zero", "paper"):
            torch.manual_seed(0)
            g = torch.Generator().manual_seed(1)
            X, T = torch.randn(256, 16, generator=g), torch.randn(12, 16, generator=g)
            layer = LoRALinear(nn.Linear(16, 12), r=4, alpha=8)
            if init == "both zero":
                with torch.no_grad():
                    layer.A.zero_()
            opt = torch.optim.AdamW([layer.A, layer.B], lr=1e-2, weight_decay=0.0)
            for _ in range(steps):
                loss = (layer(X) - X @ T.T).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            out[init] = float(layer.delta_weight().detach().norm())
    return out


REASONS4 = {
    "a": "Adam moves every parameter whose gradient is not zero by about lr per step; 50 steps would show. So the "
         "gradients themselves must be zero — why?",
    "b": "",
    "c": "W0 being frozen only means W0 gets no update. With the paper's init the same frozen W0 is there, and A "
         "and B train (measured above).",
    "d": "rank can grow: with the paper's init ΔW = 0 has rank 0 too, and it trains (measured above).",
}


@EX.check(4)
def ex4(prediction=None, why=None) -> bool:
    """Predict ‖ΔW‖_F after 50 Adam steps of a LoRA layer whose A and B both start at zero; then explain."""
    if prediction is None:
        return not_answered("write your prediction of ‖ΔW‖_F after 50 steps (a number) into `prediction` before "
                            "anything is measured, and run the cell.")
    v, problem = read_number(prediction)
    if problem:
        return fail(problem)
    if v < 0:
        return fail("a norm is never negative.")
    first = EX.first_prediction(4, v)
    m = _stuck()
    good = v == 0 or v < 1e-12
    diag = ("a nonzero ΔW needs a nonzero gradient on A or on B at some step. Write both gradients for "
            "h = W0x + (α/r)·BAx and evaluate them at A = B = 0.")
    return judge_prediction(v, first, f"‖ΔW‖_F = {m['both zero']:g} from A = B = 0, and {m['paper']:.3g} from the "
                            "paper's init (A Gaussian, B = 0), same 50 steps", good, diag, why, REASONS4, "b",
                            "∂L/∂B = (α/r)·(error)·(Ax)ᵀ and ∂L/∂A = (α/r)·Bᵀ·(error)·xᵀ: each factor's gradient "
                            "goes through the other factor. With both at zero neither ever moves — a saddle point. "
                            "That is why §4.1 starts A random and only B at zero: ΔW = 0 at step 0, yet B gets a "
                            "gradient from the first step.")

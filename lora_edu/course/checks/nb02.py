"""Self-checks for notebook 02 (the LoRA update). Each prints what is right or what is wrong; never raises."""

from __future__ import annotations

import math

import torch

from .feedback import fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3"]


def _shape(x):
    try:
        return tuple(int(v) for v in x)
    except Exception:  # noqa: BLE001
        return None


def ex1(answer, d: int = 64, k: int = 256, r: int = 8) -> bool:
    """(shape of B, shape of A) for a LoRA update of a d×k weight (out d, in k) at rank r."""
    if answer is None:
        return not_answered("W0 is d×k (out × in). B·A must also be d×k, with r in the middle.")
    try:
        b, a = answer
    except Exception:  # noqa: BLE001
        return fail(f"give a pair (B_shape, A_shape), e.g. ((1, 2), (3, 4)); got {answer!r}.")
    b, a = _shape(b), _shape(a)
    want_b, want_a = (d, r), (r, k)
    if b is None or a is None or len(b) != 2 or len(a) != 2:
        return fail("each shape should be a pair of whole numbers like (64, 8).")
    msgs = []
    if b != want_b:
        why = " (that is A's shape: you swapped them)" if b == want_a else ""
        msgs.append(f"your B has shape {b}{why}; B maps from rank r back to d, so it should be {want_b}")
    if a != want_a:
        why = " (that is B's shape: you swapped them)" if a == want_b else ""
        msgs.append(f"your A has shape {a}{why}; A reads the k-dimensional input and maps it down to r, so it "
                    f"should be {want_a}")
    if msgs:
        return fail("; ".join(msgs) + ".")
    return ok(f"B {want_b} @ A {want_a} is {d}×{k}, like W0, with {r * (d + k):,} trainable numbers.")


def ex2(fn, seed: int = 0) -> bool:
    """A function lora_forward(x, W0, A, B, alpha) returning h = W0 x + (α/r) B A x for a batch x (n, k)."""
    if fn is None:
        return not_answered("h = x @ W0.T + (alpha / r) * (x @ A.T) @ B.T, with r = A.shape[0].")
    if not callable(fn):
        return fail(f"pass your function itself (lora_forward), not {type(fn).__name__}.")
    g = torch.Generator().manual_seed(seed)
    d, k, r, n, alpha = 6, 5, 2, 3, 3.0
    x, W0 = torch.randn(n, k, generator=g), torch.randn(d, k, generator=g)
    A, B = torch.randn(r, k, generator=g), torch.randn(d, r, generator=g)
    try:
        h = fn(x, W0, A, B, alpha)
    except Exception as e:  # noqa: BLE001
        return fail(f"your function raised {type(e).__name__}: {e}. Check the shapes: x is (n, k), W0 is (d, k), "
                    "A is (r, k), B is (d, r).")
    h = torch.as_tensor(h)
    base, upd = x @ W0.T, x @ A.T @ B.T
    truth = base + alpha / r * upd
    if h.shape != truth.shape:
        return fail(f"your output has shape {tuple(h.shape)}; for x of shape (n, k) = {(n, k)} it should be "
                    f"(n, d) = {tuple(truth.shape)}.")
    h = h.to(truth.dtype)
    if torch.allclose(h, truth, atol=1e-5):
        return ok("both paths see the same x and their outputs add up: h = W0x + (α/r)·BAx (Eq. 3).")
    if torch.allclose(h, base + upd, atol=1e-5):
        return fail("you left out the scaling α/r on the update path.")
    if torch.allclose(h, base + alpha / math.sqrt(r) * upd, atol=1e-5):
        return fail("that is rsLoRA's α/√r; the paper's LoRA scales by α/r.")
    if torch.allclose(h, base + alpha * upd, atol=1e-5):
        return fail("you scaled by α; divide by r as well (α/r).")
    if torch.allclose(h, base, atol=1e-5):
        return fail("your output ignores A and B: add the update path (α/r)·B·A·x.")
    if torch.allclose(h, alpha / r * upd, atol=1e-5):
        return fail("you dropped the frozen path W0·x; LoRA adds the update to it.")
    return fail("the numbers differ from W0x + (α/r)·BAx; compare your update path with (x @ A.T) @ B.T.")


def ex3(model, reference, x, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r: int = 2) -> bool:
    """LoRA at rank r on all four attention projections, and the output unchanged at step 0."""
    from ...inject import lora_layers

    if model is None:
        return not_answered("le.add_lora(model, targets=[...], r=...) on a fresh le.load_pretrained().")
    try:
        layers = lora_layers(model)
    except Exception:  # noqa: BLE001
        return fail(f"pass the model (an nn.Module), got {type(model).__name__}.")
    if not layers:
        return fail("the model has no LoRA layers yet: call le.add_lora on it.")
    have = {n.rsplit(".", 1)[-1] for n in layers}
    missing = [t for t in targets if t not in have]
    if missing:
        return fail(f"LoRA is missing on {missing}; the exercise asks for all of {list(targets)}.")
    extra = sorted(have - set(targets))
    if extra:
        return fail(f"LoRA is also on {extra}; only the attention projections {list(targets)} were asked for.")
    ranks = sorted({m.r for m in layers.values()})
    if ranks != [r]:
        return fail(f"your LoRA ranks are {ranks}; the exercise asks for r = {r}.")
    with torch.no_grad():
        diff = float((model(x) - reference(x)).abs().max())
    if diff != 0.0:
        nz = [n for n, m in layers.items() if bool(m.B.detach().abs().sum() > 0)]
        why = f" B is not zero in {nz[:2]}…" if nz else ""
        return fail(f"the output changed by up to {diff:.3g} before any training.{why} With B = 0, ΔW = BA = 0.")
    return ok(f"{len(layers)} LoRA layers at r = {r}, and the output is bit-identical to the pretrained model's.")

"""The synthetic fitting experiment of notebooks 02 and 03: LoRA fitted to a planted ΔW with Adam."""

from __future__ import annotations

import math

import torch

from .common import check_int


def planted_update(d: int = 64, k: int = 64, rank: int = 4, seed: int = 0, top: float = 1.0,
                   bottom: float = 0.5, device=None) -> torch.Tensor:
    """A d×k matrix of exactly rank `rank` with singular values spaced evenly from `top` down to `bottom`.

    Random orthonormal singular vectors from a seeded generator: same matrix on every machine.
    """
    check_int(d, "d")
    check_int(k, "k")
    check_int(rank, "rank")
    if rank > min(d, k):
        raise ValueError(f"rank must be ≤ min(d, k) = {min(d, k)}, got {rank}")
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d, rank, generator=g, device="cpu"))
    V, _ = torch.linalg.qr(torch.randn(k, rank, generator=g, device="cpu"))
    s = torch.linspace(top, bottom, rank, device="cpu")
    return ((U * s) @ V.T).to(device)


def _lrs_tensor(lrs, device):
    lrs = [lrs] if isinstance(lrs, (int, float)) else list(lrs)
    if not lrs or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in lrs):
        raise ValueError(f"lrs must be a positive number or a non-empty list of them, got {lrs!r}")
    return torch.tensor(lrs, dtype=torch.float32, device=device)


def _adam(params, grads, state, lr, t, b1=0.9, b2=0.999, eps=1e-8):
    """One Adam step on each parameter (batched over runs along dim 0; lr has shape (n, 1, 1))."""
    for p, g, (m, v) in zip(params, grads, state):
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.sub_(lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps))


def _loss(E, nrm, batch, gx):
    """Relative error ‖E‖²/‖ΔW*‖² (exact), and the minibatch estimate used for the gradient."""
    exact = E.pow(2).sum((1, 2)) / nrm
    if not batch:
        return exact, exact
    X = torch.randn(E.shape[2], batch, generator=gx, device="cpu").to(E.device)
    return exact, (E @ X).pow(2).sum((1, 2)) / (batch * nrm)


def fit_lora(target: torch.Tensor, r: int, lrs, steps: int, scaling, seed: int = 0,
             batch: int | None = None, init: str = "gaussian") -> dict:
    """Fit scaling·B·A ≈ target with Adam, one independent run per learning rate, all from the same A, B = 0.

    batch=None: exact gradient of ‖scaling·BA − target‖²_F / ‖target‖²_F. batch=n: the gradient comes from
    n fresh white-noise inputs per step (as in real minibatch training), so too large a learning rate is
    punished by noise. `scaling` is one number, or one per learning rate (runs with different scalings side by
    side). Returns {"loss": (n_lr, steps) exact relative errors, "delta": (n_lr, d, k) final ΔW}.
    """
    target = as_target(target)
    d, k = target.shape
    check_int(r, "r")
    check_int(steps, "steps", 0)
    if r > min(d, k):
        raise ValueError(f"r must be ≤ min(d, k) = {min(d, k)}, got {r}")
    if init not in ("gaussian", "kaiming"):
        raise ValueError(f"init must be 'gaussian' or 'kaiming', got {init!r}")
    dev = target.device
    lr = _lrs_tensor(lrs, dev)
    n = lr.numel()
    g = torch.Generator().manual_seed(seed)
    if init == "gaussian":
        A0 = torch.randn(r, k, generator=g, device="cpu") / math.sqrt(k)
    else:  # kaiming-uniform with a=√5, as nn.Linear / loralib / PEFT: U(−1/√k, 1/√k)
        A0 = (torch.rand(r, k, generator=g, device="cpu") * 2 - 1) / math.sqrt(k)
    A = A0.to(dev).expand(n, r, k).clone().requires_grad_()
    B = torch.zeros(n, d, r, device=dev, requires_grad=True)
    state = [(torch.zeros_like(A), torch.zeros_like(A)), (torch.zeros_like(B), torch.zeros_like(B))]
    nrm = target.pow(2).sum()
    gx = torch.Generator().manual_seed(seed + 1)
    out = torch.empty(n, steps, device="cpu")
    lr = lr.view(n, 1, 1)
    scaling = _scalings(scaling, n, dev)
    for t in range(1, steps + 1):
        exact, loss = _loss(scaling * B @ A - target, nrm, batch, gx)
        gA, gB = torch.autograd.grad(loss.sum(), [A, B])
        with torch.no_grad():
            _adam([A, B], [gA, gB], state, lr, t)
        out[:, t - 1] = exact.detach().cpu()
    with torch.no_grad():
        delta = (scaling * B @ A).detach()
    return {"loss": out, "delta": delta}


def fit_full(target: torch.Tensor, lrs, steps: int, seed: int = 0, batch: int | None = None) -> dict:
    """Full fine-tuning of the same layer: train ΔW (d×k, starting at 0) directly with Adam."""
    target = as_target(target)
    check_int(steps, "steps", 0)
    dev = target.device
    lr = _lrs_tensor(lrs, dev)
    n = lr.numel()
    D = torch.zeros(n, *target.shape, device=dev, requires_grad=True)
    state = [(torch.zeros_like(D), torch.zeros_like(D))]
    nrm = target.pow(2).sum()
    gx = torch.Generator().manual_seed(seed + 1)
    out = torch.empty(n, steps, device="cpu")
    lr = lr.view(n, 1, 1)
    for t in range(1, steps + 1):
        exact, loss = _loss(D - target, nrm, batch, gx)
        (gD,) = torch.autograd.grad(loss.sum(), [D])
        with torch.no_grad():
            _adam([D], [gD], state, lr, t)
        out[:, t - 1] = exact.detach().cpu()
    return {"loss": out, "delta": D.detach()}


def _scalings(scaling, n, device):
    vals = [scaling] if isinstance(scaling, (int, float)) else list(scaling)
    if len(vals) not in (1, n) or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                      for v in vals):
        raise ValueError(f"scaling must be a finite number or one per learning rate ({n}), got {scaling!r}")
    return torch.tensor(vals, dtype=torch.float32, device=device).expand(n).reshape(n, 1, 1)


def as_target(target):
    if not isinstance(target, torch.Tensor) or target.ndim != 2:
        raise ValueError(f"target must be a 2-D torch tensor, got {getattr(target, 'shape', type(target).__name__)}")
    return target.detach().float()

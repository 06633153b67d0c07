"""Shared helpers for the self-check functions: the verdict messages and tolerant answer parsing."""

from __future__ import annotations

import math

import torch

__all__ = ["ok", "fail", "not_answered", "as_number", "as_int", "svals"]


def ok(msg: str = "") -> bool:
    print("✅ Correct!" + (f" {msg}" if msg else ""))
    return True


def fail(msg: str) -> bool:
    print(f"❌ Not yet: {msg}")
    return False


def not_answered(hint: str = "") -> bool:
    print("⏳ Not answered yet — replace the `None` with your answer." + (f" Hint: {hint}" if hint else ""))
    return False


def as_number(answer) -> float | None:
    """The answer as a finite float (a number, a numeric string or a one-element tensor), else None."""
    if isinstance(answer, bool):
        return None
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    try:
        v = float(answer)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def as_int(answer) -> int | None:
    """The answer as an int when it is a whole number (7, 7.0, tensor(7)), else None."""
    v = as_number(answer)
    return int(v) if v is not None and v == int(v) else None


def svals(T) -> torch.Tensor:
    """Singular values of a matrix in float64 on the CPU (the reference the checks compare with)."""
    return torch.linalg.svdvals(torch.as_tensor(T).detach().to("cpu", torch.float64))

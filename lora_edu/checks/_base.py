"""Shared helpers for the self-check functions."""

from __future__ import annotations

import torch

__all__ = ["ok", "fail", "not_answered", "as_tensor"]


def ok(msg: str = "") -> bool:
    print("✅ Correct!" + (f" {msg}" if msg else ""))
    return True


def fail(msg: str) -> bool:
    print(f"❌ Not yet: {msg}")
    return False


def not_answered(hint: str = "") -> bool:
    print("⏳ Not answered yet — replace the `None` with your answer." + (f" Hint: {hint}" if hint else ""))
    return False


def as_tensor(x):
    """Answer as a float64 tensor, or None if it cannot be one."""
    try:
        return torch.as_tensor(x, dtype=torch.float64)
    except Exception:  # noqa: BLE001
        return None

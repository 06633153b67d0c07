"""Offline synthetic sequence tasks: a pretraining task and downstream tasks to adapt to with LoRA.

Every example is ``BOS x1 … xn SEP y1 … yn`` over the digits 0–9. The pretraining task is *copy*
(y = x); downstream tasks ask for a different y (reversed, incremented, sorted, rotated), which the
pretrained model gets mostly wrong until it is fine-tuned. Data is generated on the fly from a seed:
nothing is downloaded, and the same seed gives the same batch on every machine.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .runtime import brief, get_device

__all__ = ["Task", "get_task", "TASKS", "PRETRAIN_TASK", "DOWNSTREAM_TASKS", "BOS", "SEP",
           "VOCAB_SIZE", "N_DIGITS", "decode", "encode"]

N_SYMBOLS = 10
BOS, SEP = 10, 11
VOCAB_SIZE = 16  # 10 digits, BOS, SEP, and spare ids for later experiments
N_DIGITS = 8


def _copy(x):
    return x.clone()


def _reverse(x):
    return x.flip(-1)


def _increment(x):
    return (x + 1) % N_SYMBOLS


def _sort(x):
    return x.sort(-1).values


def _rotate(x):
    return x.roll(-1, dims=-1)


@dataclass(frozen=True)
class Task:
    """A sequence-to-sequence rule y = fn(x) over n digits, with a seeded batch sampler and metrics."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    description: str
    n: int = N_DIGITS

    @property
    def seq_len(self) -> int:
        """Length of one model input: BOS + n digits + SEP + n answers − 1 (the last answer is only a target)."""
        return 2 * self.n + 1

    def sample_x(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, N_SYMBOLS, (batch_size, self.n), generator=generator)

    def batch(self, batch_size: int, generator: torch.Generator | None = None, device=None):
        """(inputs, targets), each (batch, 2n+1); targets are −100 except at the n answer positions."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        x = self.sample_x(batch_size, g)
        return self.make(x, device)

    def make(self, x: torch.Tensor, device=None):
        """Build (inputs, targets) for given digit sequences x of shape (batch, n)."""
        if not isinstance(x, torch.Tensor) or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"x must be an integer tensor of digits, got {brief(x)}")
        if x.ndim != 2 or x.shape[1] != self.n or x.numel() and (x.min() < 0 or x.max() >= N_SYMBOLS):
            raise ValueError(f"x must be a (batch, {self.n}) tensor of digits 0..9, got {brief(x)}")
        device = None if device is None else get_device(device)
        b = x.shape[0]
        y = self.fn(x)
        seq = torch.cat([torch.full((b, 1), BOS, device=x.device), x, torch.full((b, 1), SEP, device=x.device), y],
                        dim=1)
        inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
        targets[:, : self.n + 1] = -100  # only the answer tokens are scored (x1..xn and SEP are given)
        return inputs.to(device), targets.to(device)

    def answer_slice(self) -> slice:
        """Positions in `targets` that hold the answer y1 … yn."""
        return slice(self.n + 1, 2 * self.n + 1)


TASKS: dict[str, Task] = {
    "copy": Task("copy", _copy, "repeat the digits: 3 1 4 → 3 1 4 (the pretraining task)"),
    "reverse": Task("reverse", _reverse, "reverse the digits: 3 1 4 → 4 1 3"),
    "increment": Task("increment", _increment, "add one to each digit, mod 10: 3 1 9 → 4 2 0"),
    "sort": Task("sort", _sort, "sort the digits: 3 1 4 → 1 3 4"),
    "rotate": Task("rotate", _rotate, "rotate left by one: 3 1 4 → 1 4 3"),
}
PRETRAIN_TASK = "copy"
DOWNSTREAM_TASKS = ("reverse", "increment", "sort", "rotate")


def get_task(task) -> Task:
    """A Task from its name (or the Task itself)."""
    if isinstance(task, Task):
        return task
    if not isinstance(task, str):
        raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return TASKS[task]


_NAMES = {BOS: "<bos>", SEP: "|"}


def decode(tokens) -> str:
    """Readable text of a token sequence: '<bos> 3 1 4 | 3 1 4'."""
    try:
        ids = [operator.index(t) for t in tokens]
    except TypeError as e:
        raise TypeError(f"tokens must be a 1-D sequence of integer token ids, got {brief(tokens)}") from e
    return " ".join(_NAMES.get(t, str(t)) for t in ids)


def encode(digits) -> torch.Tensor:
    """Digits (string '314' or a sequence) → a (1, n) tensor."""
    try:
        x = [int(c) for c in "".join(digits.split())] if isinstance(digits, str) else list(map(operator.index, digits))
    except (TypeError, ValueError) as e:
        raise (ValueError if isinstance(digits, str) else TypeError)(
            f"digits must be a string or sequence of digits 0..9, got {brief(digits)}") from e
    if not x or min(x) < 0 or max(x) >= N_SYMBOLS:
        raise ValueError(f"digits must be a non-empty sequence of ints in 0..9, got {brief(digits)}")
    return torch.tensor(x)[None]

"""Offline synthetic sequence tasks: a family of skills to pretrain on, and new ones to adapt to with LoRA.

Every example is ``BOS op k x1 … xn SEP y1 … yn`` over the digits 0–9: the prompt (op, k) names a skill.
Each op reads digit i together with the digit k places further on (cyclically), so k is a *route*:

    rot k:  y_i = x_(i+k)                 add k:  y_i = (x_i + x_(i+k)) mod 10
    sub k:  y_i = (x_i − x_(i+k)) mod 10  rsub k: y_i = (x_(i+k) − x_i) mod 10

Pretraining sees every route under several ops, except the pairs add3, sub5 and rsub1. A downstream task
asks for one of those pairs with a word pretraining never used (plus3 = add3, minus5 = sub5, rminus1 =
rsub1): the pretrained model cannot answer it, but adapting is small — bind the new word to a known op and
meet a known route. The mod-10 arithmetic needs the pretrained MLPs, which a random model lacks.
Data is generated on the fly from a seed: the same seed gives the same batch on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BOS", "DOWNSTREAM_TASKS", "N_DIGITS", "OPS", "PRETRAIN_TASK", "SEP", "TASKS", "VOCAB_SIZE",
           "Mixture", "Task", "decode", "encode", "get_task"]

N_SYMBOLS = 10
BOS, SEP = 10, 11
OPS = {"rot": 12, "add": 13, "sub": 14, "rsub": 15,  # op tokens; k is written as a digit token
       "plus": 16, "minus": 17, "rminus": 18}  # new words, never seen in pretraining (downstream only)
_SAME = {"plus": "add", "minus": "sub", "rminus": "rsub"}  # what each new word asks for
VOCAB_SIZE = 20  # one spare id
N_DIGITS = 6
_RULES = {
    "rot": ("rotate left by {k}: y_i = x_(i+{k})", lambda x, xk: xk),
    "add": ("add the digit {k} places on: y_i = x_i + x_(i+{k}) mod 10", lambda x, xk: (x + xk) % N_SYMBOLS),
    "sub": ("subtract the digit {k} places on: y_i = x_i − x_(i+{k}) mod 10", lambda x, xk: (x - xk) % N_SYMBOLS),
    "rsub": ("subtract from the digit {k} places on: y_i = x_(i+{k}) − x_i mod 10",
             lambda x, xk: (xk - x) % N_SYMBOLS),
}


@dataclass(frozen=True)
class Task:
    """The skill y = op(x, x rotated by k) over n digits, with a seeded batch sampler."""

    op: str
    k: int
    n: int = N_DIGITS

    @property
    def name(self) -> str:
        return f"{self.op}{self.k}"

    @property
    def description(self) -> str:
        return _RULES[_SAME.get(self.op, self.op)][0].format(k=self.k)

    @property
    def seq_len(self) -> int:
        """Length of one model input: BOS op k + n digits + SEP + n answers − 1 (the last is only a target)."""
        return 2 * self.n + 3

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """The answer y for digit sequences x of shape (batch, n)."""
        return _RULES[_SAME.get(self.op, self.op)][1](x, x.roll(-self.k, dims=-1))

    def prefix(self, x: torch.Tensor) -> torch.Tensor:
        """What the model is given: BOS op k x1 … xn SEP, shape (batch, n + 4)."""
        b = x.shape[0]
        head = torch.tensor([BOS, OPS[self.op], self.k], device=x.device).expand(b, 3)
        return torch.cat([head, x, torch.full((b, 1), SEP, device=x.device)], 1)

    def sample_x(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, N_SYMBOLS, (batch_size, self.n), generator=generator)

    def batch(self, batch_size: int, generator: torch.Generator | None = None, device=None):
        """(inputs, targets), each (batch, 2n+3); targets are −100 except at the n answer positions."""
        _check_batch_size(batch_size)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        return self.make(self.sample_x(batch_size, g), device)

    def make(self, x: torch.Tensor, device=None):
        """Build (inputs, targets) for given digit sequences x of shape (batch, n)."""
        seq = torch.cat([self.prefix(x), self.fn(x)], 1)
        inputs, targets = seq[:, :-1].clone(), seq[:, 1:].clone()
        targets[:, : self.n + 3] = -100  # only the answer tokens are scored (the prompt and x are given)
        return inputs.to(device), targets.to(device)

    def answer_slice(self) -> slice:
        """Positions in `targets` that hold the answer y1 … yn."""
        return slice(self.n + 3, 2 * self.n + 3)


@dataclass(frozen=True)
class Mixture:
    """Several tasks trained together: each example of a batch is drawn from `parts` (repeats weigh more)."""

    name: str
    parts: tuple[str, ...]
    description: str

    def batch(self, batch_size: int, generator: torch.Generator | None = None, device=None):
        _check_batch_size(batch_size)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        tasks = [TASKS[p] for p in self.parts]
        x = tasks[0].sample_x(batch_size, g)
        which = torch.randint(0, len(tasks), (batch_size,), generator=g)
        inputs = torch.empty(batch_size, tasks[0].seq_len, dtype=torch.long)
        targets = torch.empty_like(inputs)
        for i, t in enumerate(tasks):
            m = which == i
            inputs[m], targets[m] = t.make(x[m])
        return inputs.to(device), targets.to(device)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


DOWNSTREAM_TASKS = ("plus3", "minus5", "rminus1")
_HELD_OUT = ("add3", "sub5", "rsub1", "sub0", "rsub0")  # the pairs asked for downstream; x − x = 0 is no skill
TASKS: dict[str, Task | Mixture] = {t.name: t for t in (Task(op, k) for op in OPS for k in range(N_DIGITS))}
_SKILLS = [n for n, t in TASKS.items() if t.op in _RULES and n not in _HELD_OUT]
PRETRAIN_TASK = "pretrain"
TASKS[PRETRAIN_TASK] = Mixture(PRETRAIN_TASK, tuple(n for n in _SKILLS if n.startswith("rot"))
                               + 2 * tuple(n for n in _SKILLS if not n.startswith("rot")),
                               "every skill of the four pretraining ops except the held-out pairs; arithmetic ×2")


def get_task(task) -> Task | Mixture:
    """A Task (or the pretraining Mixture) from its name, or the object itself."""
    if isinstance(task, (Task, Mixture)):
        return task
    if not isinstance(task, str):
        raise TypeError(f"task must be a task name or a Task, got {type(task).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return TASKS[task]


_NAMES = {BOS: "<bos>", SEP: "|", **{v: k for k, v in OPS.items()}}


def decode(tokens) -> str:
    """Readable text of a token sequence: '<bos> add 3 3 1 4 1 5 9 | …'."""
    return " ".join(_NAMES.get(int(t), str(int(t))) for t in tokens)


def encode(digits) -> torch.Tensor:
    """Digits (string '314159' or a sequence) → a (1, n) tensor."""
    if isinstance(digits, str):
        digits = [int(c) for c in digits if not c.isspace()]
    x = torch.as_tensor(list(digits), dtype=torch.long)
    if x.ndim != 1 or (x < 0).any() or (x >= N_SYMBOLS).any():
        raise ValueError(f"digits must be a sequence of ints in 0..9, got {digits!r}")
    return x[None]

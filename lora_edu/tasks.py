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

import operator
from dataclasses import dataclass

import torch

from .runtime import brief, get_device

__all__ = ["BOS", "DOWNSTREAM_TASKS", "N_DIGITS", "OPS", "PRETRAIN_TASK", "REBOUND_TASKS", "SEP", "TASKS", "VOCAB_SIZE",
           "Mixture", "Task", "decode", "encode", "get_task"]

N_SYMBOLS = 10
BOS, SEP = 10, 11
OPS = {"rot": 12, "add": 13, "sub": 14, "rsub": 15,  # op tokens; k is written as a digit token
       "plus": 16, "minus": 17, "rminus": 18}  # new words, never seen in pretraining (downstream only)
NEW_WORDS = {"plus": "add", "minus": "sub", "rminus": "rsub"}  # what each new word asks for
VOCAB_SIZE = 20  # one spare id
N_DIGITS = 6
RULES = {
    "rot": ("rotate left by {k}: y_i = x_(i+{k})", lambda x, xk: xk),
    "add": ("add the digit {k} places on: y_i = x_i + x_(i+{k}) mod 10", lambda x, xk: (x + xk) % N_SYMBOLS),
    "sub": ("subtract the digit {k} places on: y_i = x_i − x_(i+{k}) mod 10", lambda x, xk: (x - xk) % N_SYMBOLS),
    "rsub": ("subtract from the digit {k} places on: y_i = x_(i+{k}) − x_i mod 10",
             lambda x, xk: (xk - x) % N_SYMBOLS),
}


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _generator(generator) -> torch.Generator:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator if generator is not None else torch.Generator().manual_seed(0)


@dataclass(frozen=True)
class Task:
    """The skill y = op(x, x rotated by k) over n digits, with a seeded batch sampler.

    `rule` re-binds the prompt's word to another op's rule: Task("rot", 1, rule="add") is asked as `rot 1` and
    answered as `add 1` (notebook 08 merges and stacks such adapters)."""

    op: str
    k: int
    n: int = N_DIGITS
    rule: str | None = None

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"op must be one of {list(OPS)}, got {self.op!r}")
        if self.rule is not None and self.rule not in RULES:
            raise ValueError(f"rule must be None or one of {list(RULES)}, got {self.rule!r}")
        if not 2 <= self.n <= N_SYMBOLS or not isinstance(self.k, int) or not 0 <= self.k < self.n:
            raise ValueError(f"need 2 ≤ n ≤ 10 and k an int in 0..n−1, got n={self.n!r}, k={self.k!r}")

    @property
    def name(self) -> str:
        return f"{self.op}{self.k}" + (f"-as-{self.rule}" if self.rule else "")

    @property
    def _rule(self) -> str:
        return self.rule or NEW_WORDS.get(self.op, self.op)

    @property
    def description(self) -> str:
        return RULES[self._rule][0].format(k=self.k)

    @property
    def seq_len(self) -> int:
        """Length of one model input: BOS op k + n digits + SEP + n answers − 1 (the last is only a target)."""
        return 2 * self.n + 3

    def fn(self, x: torch.Tensor) -> torch.Tensor:
        """The answer y for digit sequences x of shape (batch, n)."""
        return RULES[self._rule][1](x, x.roll(-self.k, dims=-1))

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
        return self.make(self.sample_x(batch_size, _generator(generator)), device)

    def make(self, x: torch.Tensor, device=None):
        """Build (inputs, targets) for given digit sequences x of shape (batch, n)."""
        if not isinstance(x, torch.Tensor) or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"x must be an integer tensor of digits, got {brief(x)}")
        if x.ndim != 2 or x.shape[1] != self.n or x.numel() and (x.min() < 0 or x.max() >= N_SYMBOLS):
            raise ValueError(f"x must be a (batch, {self.n}) tensor of digits 0..9, got {brief(x)}")
        device = None if device is None else get_device(device)
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
        g = _generator(generator)
        tasks = [TASKS[p] for p in self.parts]
        x = tasks[0].sample_x(batch_size, g)
        which = torch.randint(0, len(tasks), (batch_size,), generator=g)
        inputs = torch.empty(batch_size, tasks[0].seq_len, dtype=torch.long)
        targets = torch.empty_like(inputs)
        for i, t in enumerate(tasks):
            m = which == i
            inputs[m], targets[m] = t.make(x[m])
        device = None if device is None else get_device(device)
        return inputs.to(device), targets.to(device)


DOWNSTREAM_TASKS = ("plus3", "minus5", "rminus1")
HELD_OUT = ("add3", "sub5", "rsub1")  # the pairs asked for downstream, never seen in pretraining
TASKS: dict[str, Task | Mixture] = {t.name: t for t in (Task(op, k) for op in OPS for k in range(N_DIGITS))}
_SKILLS = [n for n, t in TASKS.items() if t.op in RULES and n not in HELD_OUT + ("sub0", "rsub0")]  # x − x = 0
# Notebook 08's merge lesson: a known word answered by another rule (its adapter merges with the new-word ones),
# and plus3's own prompt answered by another rule (its adapter conflicts with plus3's by construction).
REBOUND_TASKS = ("rot1-as-add", "plus3-as-sub")
TASKS.update((t.name, t) for t in (Task("rot", 1, rule="add"), Task("plus", 3, rule="sub")))
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
    """Readable text of a token sequence: '<bos> add 3 3 1 4 1 5 9 | …' (the k after an op is a digit)."""
    try:
        ids = [operator.index(t) for t in tokens]
    except TypeError as e:
        raise TypeError(f"tokens must be a 1-D sequence of integer token ids, got {brief(tokens)}") from e
    return " ".join(_NAMES.get(t, str(t)) for t in ids)


def encode(digits) -> torch.Tensor:
    """Digits (string '314159' or a sequence) → a (1, n) tensor."""
    try:
        x = [int(c) for c in "".join(digits.split())] if isinstance(digits, str) else list(map(operator.index, digits))
    except (TypeError, ValueError) as e:
        raise (ValueError if isinstance(digits, str) else TypeError)(
            f"digits must be a string or sequence of digits 0..9, got {brief(digits)}") from e
    if not x or min(x) < 0 or max(x) >= N_SYMBOLS:
        raise ValueError(f"digits must be a non-empty sequence of ints in 0..9, got {brief(digits)}")
    return torch.tensor(x)[None]

"""The self-check protocol: how every exercise check answers, helps and stays out of the way of the solution.

A check is written once per exercise, in `checks/nbNN.py`, and declared on that notebook's `Exercises`:

    EX = Exercises("nb01", hints={1: ["first hint", "a more precise one"], 2: [...]})
    hint = EX.hint                                # learners call checks.nb01.hint(1)

    @EX.check(1)
    def ex1(answer, W) -> bool:
        if answer is None:
            return not_answered("give the smallest rank r (a whole number).")    # 1. what to do, nothing more
        r, problem = read_number(answer, whole=True)
        if problem:
            return fail(problem)                                                   # 2. what is wrong with it
        ...
        return fail("that keeps the plain σᵢ, not the energy σᵢ²")                # 3. the likely mistake
        return ok("r = … keeps …")                                                # 4. why it is right

The protocol, for every exercise of the course (notebook 10's checks can adopt it as they are):
1. Unanswered (`None`): `not_answered(what to do)` — the task only, never the method or the answer.
2. Wrong: `fail(diagnosis)` — the likely mistake, named without the right value or the code that computes it.
3. More help: `hint(n)` reveals exercise n's hints one at a time ("💡 Hint 1/3: …"); from the second wrong attempt
   on, each wrong attempt also reveals the next hint by itself. Hints teach the method, never the answer.
4. Right: `ok(why)` — and a predict-measure-explain exercise also shows the learner's first prediction.
5. Never raises: whatever a check is given (None, text, NaN, a tensor of the wrong shape, a function that raises
   or returns None), it prints what is wrong and returns False. `read_number`, `read_tensor`, `read_choice` and
   `call` turn bad input into a sentence; `Exercises.check` catches anything left over.
6. Not passable by the library: `library_calls` finds a submitted function that is, wraps or calls the lora_edu
   function it is meant to reproduce; predictions are taken before the check measures.
7. The answer lives only in the solution cells and the solutions edition. A solution cell starts with
   `%%solution nbNN.exK`: on Run All it prints that it is hidden and runs nothing. `show_solutions()` (or the
   environment variable LORA_EDU_SOLUTIONS=1, which the tests set) runs it.

Adopting it in a checks module that predates it (notebook 10's): replace its own hint list, seen-counter and
never-raise decorator by `EX = Exercises("nb10", hints=...)`, `hint = EX.hint` and `@EX.check(k)` on each check;
parse answers with `read_number` / `read_choice` / `call`; finish a prediction exercise with `judge_prediction`;
start each solution cell with `%%solution nb10.exK`. ok / fail / not_answered / as_number keep their meaning.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import types

import torch

__all__ = ["ok", "fail", "not_answered", "as_number", "as_int", "svals", "read_fraction", "read_number", "read_tensor",
           "read_choice", "call", "library_calls", "short", "judge_prediction", "Exercises", "show_solutions",
           "solutions_shown", "register_solution_magic"]

_last: list[str | None] = [None]  # the verdict the running check printed: "ok", "fail" or "todo"


def ok(msg: str = "") -> bool:
    print("✅ Correct!" + (f" {msg}" if msg else ""))
    _last[0] = "ok"
    return True


def fail(msg: str) -> bool:
    print(f"❌ Not yet: {msg}")
    _last[0] = "fail"
    return False


def not_answered(what: str = "") -> bool:
    print("⏳ Not answered yet: " + (what or "replace the `None` with your answer."))
    _last[0] = "todo"
    return False


def short(x, n: int = 60) -> str:
    """A repr of the learner's answer short enough for one line of feedback."""
    try:
        s = repr(x)
    except Exception:  # noqa: BLE001 - a broken __repr__ is still an answer we must describe
        s = f"<{type(x).__name__}>"
    return s if len(s) <= n else s[: n - 1] + "…"


def read_number(answer, whole: bool = False):
    """(value, None) when the answer is one finite number (a whole one if `whole`), else (None, what is wrong).

    Accepts ints, floats, numeric strings ("407"), one-element tensors and numpy scalars alike."""
    if isinstance(answer, bool):
        return None, f"{answer} is a truth value; the answer is a number."
    if isinstance(answer, (list, tuple, dict, set)):
        return None, f"give one number, not a {type(answer).__name__} ({short(answer, 40)})."
    if hasattr(answer, "numel") or hasattr(answer, "size") and hasattr(answer, "item"):
        n = answer.numel() if hasattr(answer, "numel") else answer.size
        if n != 1:
            return None, f"give one number, not an array of shape {tuple(answer.shape)}."
        if getattr(answer, "dtype", None) in (torch.bool,):
            return None, "that is a truth value; the answer is a number."
        answer = answer.item()
    if isinstance(answer, int):
        return (answer, None) if abs(answer) < 10**300 else (None, "that number is far too large to be the answer.")
    try:
        v = float(answer.replace("_", "") if isinstance(answer, str) else answer)
    except OverflowError:
        return None, "that number is far too large to be the answer."
    except (TypeError, ValueError):
        what = f"the text {short(answer, 30)}" if isinstance(answer, str) else f"a {type(answer).__name__}"
        return None, f"give a number (like 12 or 0.5), not {what}."
    if math.isnan(v):
        return None, "that is NaN (not a number): a step of your computation produced 0/0 or used NaN."
    if math.isinf(v):
        return None, "that is infinite: look for a division by zero in your computation."
    if whole:
        if v != int(v):
            return None, f"{v:g} is not a whole number, and the answer is a count."
        return int(v), None
    return v, None


def read_fraction(answer):
    """(value, None) for one number in [0, 1] (an accuracy), else (None, what is wrong): a percentage written as 25
    is named as such."""
    v, problem = read_number(answer)
    if problem:
        return None, problem
    if 1 < v <= 100:
        return None, "accuracy is a fraction between 0 and 1 here: write 25 % as 0.25."
    if not 0 <= v <= 1:
        return None, f"{v:g} is not an accuracy; it lies between 0 and 1."
    return v, None


def as_number(answer) -> float | None:
    """The answer as a finite float (a number, a numeric string or a one-element tensor), else None."""
    v, problem = read_number(answer)
    return None if problem else float(v)


def as_int(answer) -> int | None:
    """The answer as an int when it is a whole number (7, 7.0, "7", tensor(7)), else None."""
    v, problem = read_number(answer, whole=True)
    return None if problem else v


def read_tensor(answer, shape=None, what: str = "your answer"):
    """(float64 CPU tensor, None), or (None, what is wrong): not a tensor, wrong shape, NaN or inf entries."""
    if isinstance(answer, (str, bytes)):
        return None, f"{what} is text; it should be a tensor."
    if isinstance(answer, bool) or answer is None:
        return None, f"{what} is {answer!r}; it should be a tensor."
    try:
        t = torch.as_tensor(answer.detach() if isinstance(answer, torch.Tensor) else answer).to("cpu", torch.float64)
    except Exception:  # noqa: BLE001 - anything that is not array-like
        return None, f"{what} should be a tensor, got {type(answer).__name__}."
    if shape is not None and tuple(t.shape) != tuple(shape):
        return None, f"{what} has shape {tuple(t.shape)}, but it should be {'×'.join(map(str, shape))}."
    if not torch.isfinite(t).all():
        return None, f"{what} contains NaN or inf entries."
    return t, None


def read_choice(answer, options: str = "abcd"):
    """(letter, None) for one of `options` ('b', 'B', '(b)', 'b)'), else (None, what is wrong)."""
    if not isinstance(answer, str):
        return None, f"answer with one letter in quotes, one of {', '.join(options)} — got {short(answer, 30)}."
    a = answer.strip().strip("()[].").strip().lower()
    if len(a) != 1 or a not in options:
        return None, f"{short(answer, 30)} is not one of the options {', '.join(options)}."
    return a, None


def call(fn, *args, name: str = "your function"):
    """(result, None) from fn(*args) on copies of the tensors, or (None, what went wrong): raised, returned None."""
    copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    try:
        out = fn(*copies)
    except Exception as e:  # noqa: BLE001 - the learner's code may raise anything
        shapes = ", ".join(f"{tuple(a.shape)}" if isinstance(a, torch.Tensor) else short(a, 20) for a in args)
        return None, f"{name}({shapes}) raised {type(e).__name__}: {str(e)[:160]}"
    if out is None:
        return None, f"{name} returned None: did you forget the `return`?"
    return out, None


def _codes(code):
    yield code
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


def library_calls(fn, names) -> set[str]:
    """Which of `names` (lora_edu functions or classes) a learner's function is, wraps or calls.

    Reads the function's code objects (nested ones too), the globals and closures they use, partials, bound
    methods and functions of the learner's own that it calls; library code itself is not searched, so a library
    function that is allowed does not count even when it uses a forbidden one inside."""
    names, found, seen = set(names), set(), set()

    def from_library(obj) -> bool:
        return (getattr(obj, "__module__", None) or "").startswith("lora_edu")

    def visit(obj, depth: int) -> None:
        if obj is None or depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, functools.partial):
            return visit(obj.func, depth + 1)
        if isinstance(obj, types.MethodType):
            return visit(obj.__func__, depth + 1)
        if from_library(obj):
            if getattr(obj, "__name__", None) in names:
                found.add(obj.__name__)
            return
        visit(getattr(obj, "__wrapped__", None), depth + 1)
        code = getattr(obj, "__code__", None)
        if code is None:
            if callable(obj) and not isinstance(obj, type):
                visit(next((c.__dict__["__call__"] for c in type(obj).__mro__ if "__call__" in c.__dict__), None),
                      depth + 1)
            return
        g = getattr(obj, "__globals__", {}) or {}
        refs = list(obj.__defaults__ or ()) + list((obj.__kwdefaults__ or {}).values())
        refs += [c.cell_contents for c in obj.__closure__ or () if _has_contents(c)]
        for c in _codes(code):
            used = set(c.co_names)
            modules = [g.get(n) for n in used if isinstance(g.get(n), types.ModuleType)]
            via_lib = "lora_edu" in used or any(m.__name__.startswith("lora_edu") for m in modules)
            via_lib = via_lib or any(isinstance(r, types.ModuleType) and r.__name__.startswith("lora_edu")
                                     for r in refs)
            if via_lib:
                found.update(used & names)
            refs += [g[n] for n in used if n in g and not isinstance(g[n], types.ModuleType)]
        for r in refs:
            if callable(r) or isinstance(r, functools.partial):
                visit(r, depth + 1)

    visit(fn, 0)
    return found


def _has_contents(cell) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty closure cell raises ValueError
        return True
    except ValueError:
        return False


def svals(T) -> torch.Tensor:
    """Singular values of a matrix in float64 on the CPU (the reference the checks compare with)."""
    return torch.linalg.svdvals(torch.as_tensor(T).detach().to("cpu", torch.float64))


class Exercises:
    """One notebook's exercises: wraps each check so it never raises, counts wrong attempts and serves hints."""

    def __init__(self, notebook: str, hints: dict[int, list[str]]):
        self.notebook, self.hints = notebook, hints
        self.reset()

    def reset(self) -> None:
        """Forget attempts, hints shown and recorded predictions (a fresh start, as after a kernel restart)."""
        self.wrong: dict[int, int] = {}
        self.shown: dict[int, int] = {}
        self.predictions: dict[int, object] = {}

    def hint(self, exercise: int | None = None) -> None:
        """Print the hints of an exercise revealed so far, plus one more each call."""
        if exercise not in self.hints:
            print(f"Exercises of {self.notebook} are numbered {sorted(self.hints)}: e.g. "
                  f"checks.{self.notebook}.hint({min(self.hints)}).")
            return
        hs = self.hints[exercise]
        k = min(self.shown.get(exercise, 0) + 1, len(hs))
        self.shown[exercise] = k
        for i, h in enumerate(hs[:k], 1):
            print(f"💡 Hint {i}/{len(hs)}: {h}")
        if k == len(hs):
            print("   That was the last hint; the worked solution is in the hidden cell below the exercise.")

    def first_prediction(self, exercise: int, value):
        """Record the learner's first prediction for an exercise and return it (later ones do not replace it)."""
        return self.predictions.setdefault(exercise, value)

    def _after(self, exercise: int, verdict: str | None) -> None:
        more = f"checks.{self.notebook}.hint({exercise})"
        remaining = len(self.hints.get(exercise, ())) - self.shown.get(exercise, 0)
        if verdict == "fail":
            self.wrong[exercise] = self.wrong.get(exercise, 0) + 1
            if self.wrong[exercise] >= 2 and remaining > 0:
                print(f"   (wrong attempt {self.wrong[exercise]}: here is some help)")
                self.hint(exercise)
            elif remaining > 0:
                print(f"   More help: {more}")
        elif verdict == "todo" and remaining > 0 and self.shown.get(exercise, 0) == 0:
            print(f"   Stuck? {more} gives a hint.")

    def check(self, exercise: int):
        """Decorator: the check prints one verdict and returns True only if it is ✅; it never raises."""
        def wrap(fn):
            @functools.wraps(fn)
            def checked(*args, **kwargs) -> bool:
                _last[0] = None
                try:
                    fn(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - a check must finish whatever it is given
                    fail(f"the check could not use your answer ({type(e).__name__}: {str(e)[:160]}).")
                verdict = _last[0]
                self._after(exercise, verdict)
                return verdict == "ok"
            checked.exercise = exercise
            return checked
        return wrap


# ---- solution cells: hidden on Run All, one call away ----------------------------------------------------------

_show = [False]


def show_solutions(show: bool = True) -> None:
    """Let the `%%solution` cells run from now on (show=False hides them again)."""
    _show[0] = bool(show)
    print("Solution cells will run when you run them." if show else "Solution cells are hidden again.")


def solutions_shown() -> bool:
    return _show[0] or os.environ.get("LORA_EDU_SOLUTIONS", "") not in ("", "0")


def register_solution_magic(shell=None) -> None:
    """Register the `%%solution` cell magic in a running IPython (does nothing outside one)."""
    if shell is None:
        ipython = sys.modules.get("IPython")  # not imported: not running inside IPython
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None or not hasattr(shell, "register_magic_function"):
        return

    def solution(line: str, cell: str) -> None:
        """Run this cell only when solutions are shown; otherwise say how to see it."""
        if solutions_shown():
            exec(compile(shell.transform_cell(cell), "<solution>", "exec"), shell.user_ns)  # noqa: S102
            return
        where = line.strip()
        nb, _, ex = where.partition(".ex")
        helper = f"checks.{nb}.hint({ex})" if nb and ex.isdigit() else "the exercise's hint()"
        print(f"🔒 Solution hidden, so that Run All does not give it away. Try the exercise above first; {helper} "
              "gives a hint. To read this solution, expand the cell (click the … on its left); to run it, call "
              "checks.show_solutions() once and run the cell again.")

    shell.register_magic_function(solution, "cell", "solution")


def judge_prediction(value, first, measured: str, good: bool, diagnosis: str, why, reasons: dict[str, str],
                     right: str, explanation: str) -> bool:
    """The end of every predict → measure → explain check, once the check has measured.

    Shows the measurement next to the prediction; a prediction that misses gets `diagnosis` (the measurement is the
    answer to the prediction, not to the exercise); a prediction that agrees is followed by the question why, graded
    against `reasons` (letter → diagnosis of that wrong explanation)."""
    print(f"📏 Measured: {measured}   (your prediction: {value:g})")
    if not good:
        return fail(diagnosis + " Explain the gap to yourself, then predict again.")
    if why is None:
        return not_answered("your prediction agrees with the measurement. Now explain it: set `why` to the letter "
                            "of the explanation you think is right (the options are in the exercise text).")
    letter, problem = read_choice(why, "".join(sorted(reasons)))
    if problem:
        return fail(problem)
    if letter != right:
        return fail(reasons[letter])
    note = "" if first == value else f" (Your first prediction was {first:g}: worth a second look at what changed.)"
    return ok(explanation + note)

"""The self-check protocol (checks/feedback.py) and how the notebooks use it: parsing, never raising, hints,
library detection, hidden solution cells, and the student edition run from its own folder."""

from __future__ import annotations

import functools
import json
import re
import sys

import nbformat
import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import feedback as fb

from .nbtools import NOTEBOOKS, ROOT, execute, problems

sys.path.insert(0, str(ROOT / "tools"))
import solutions as solutions_tool  # noqa: E402
import student as student_tool  # noqa: E402


def _raises(*args):
    raise RuntimeError("boom inside the learner's code")


def _returns_none(*args):
    return None


# What a learner might pass to any check: each must be answered with ⏳ or ❌, never an exception.
FUZZ = [None, "x", "", float("nan"), float("inf"), [], {}, (), 10 ** 400, -1e308, 1e308, True, object(),
        torch.tensor([1.0, 2.0]), torch.tensor(float("nan")), _raises, _returns_none, lambda *a: "text"]
FUZZ_IDS = ["None", "str", "empty-str", "nan", "inf", "list", "dict", "tuple", "huge-int", "neg-huge", "huge",
            "bool", "object", "tensor2", "tensor-nan", "fn-raises", "fn-none", "fn-text"]


def run(capsys, check, *args, **kwargs):
    """Call a check; return (verdict, printed text). A check returns a bool and prints exactly one verdict."""
    result = check(*args, **kwargs)
    out = capsys.readouterr().out
    assert isinstance(result, bool)
    verdicts = [line for line in out.splitlines() if line.startswith(("✅", "❌", "⏳"))]
    assert len(verdicts) == 1, out
    return result, out


def assert_safe(capsys, check, *args, **kwargs):
    """Not ✅ and no exception, whatever the input: the learner reads a sentence."""
    ok, out = run(capsys, check, *args, **kwargs)
    assert not ok and out.lstrip().startswith(("❌", "⏳", "📏")), out
    return out


# ---- parsing ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer, value", [(407, 407), (407.0, 407), ("407", 407), (" 407 ", 407), ("9_216", 9216),
                                           (torch.tensor(7), 7), (torch.tensor([7.0]), 7)])
def test_read_number_accepts_numbers_and_numeric_text_alike(answer, value):
    assert fb.read_number(answer, whole=True) == (value, None)


@pytest.mark.parametrize("answer, says", [("four", "not the text"), ("9,216", "not the text"), (True, "truth value"),
                                          ([1], "not a list"), (torch.ones(2), "shape (2,)"), (float("nan"), "NaN"),
                                          (float("inf"), "infinite"), (10 ** 400, "too large"), (2.5, "whole"),
                                          (object(), "not a object")])
def test_read_number_says_what_is_wrong(answer, says):
    v, problem = fb.read_number(answer, whole=True)
    assert v is None and says in problem


def test_read_choice_and_tensor():
    assert fb.read_choice(" (B) ") == ("b", None) and fb.read_choice("b)") == ("b", None)
    assert "one letter" in fb.read_choice(2)[1] and "not one of" in fb.read_choice("e")[1]
    t, problem = fb.read_tensor([[1, 2], [3, 4]], shape=(2, 2))
    assert problem is None and t.dtype == torch.float64
    assert "shape (2, 2)" in fb.read_tensor(t, shape=(3, 2))[1] and "NaN" in fb.read_tensor([float("nan")])[1]
    assert "text" in fb.read_tensor("W")[1] and "should be a tensor" in fb.read_tensor(object())[1]


def test_call_reports_exceptions_and_missing_returns():
    assert fb.call(lambda x: x * 2, torch.ones(2))[1] is None
    assert "raised RuntimeError" in fb.call(_raises, torch.ones(3, 2), name="f")[1]
    assert "forget the `return`" in fb.call(_returns_none, 1)[1]
    x = torch.zeros(2)
    fb.call(lambda t: t.add_(1), x)
    assert torch.equal(x, torch.zeros(2)), "the learner's function works on copies"


# ---- library detection -----------------------------------------------------------------------------------------

_alias = le.eckart_young_error


def _via_alias(s, r):
    return _alias(torch.diag(s), r)


def _helper(s, r):
    return le.eckart_young_error(torch.diag(s), r)


def _via_helper(s, r):
    return _helper(s, r) * 1.0


def _local_import(s, r):
    from lora_edu import eckart_young_error

    return eckart_young_error(torch.diag(s), r)


def _honest(s, r):
    return float(s[r:].pow(2).sum().sqrt())


def _allowed_library(s, r):
    return le.singular_values(torch.diag(s)).pow(2)[r:].sum().sqrt()


@pytest.mark.parametrize("fn", [le.eckart_young_error, lambda s, r: le.eckart_young_error(torch.diag(s), r),
                                _via_alias, _via_helper, _local_import,
                                functools.partial(le.eckart_young_error), le.lowrank.eckart_young_error],
                         ids=["itself", "lambda", "alias", "helper", "local-import", "partial", "submodule"])
def test_library_calls_finds_the_function_however_it_is_reached(fn):
    assert fb.library_calls(fn, {"eckart_young_error"}) == {"eckart_young_error"}


def test_library_calls_leaves_honest_code_and_other_library_functions_alone():
    assert fb.library_calls(_honest, {"eckart_young_error"}) == set()
    assert fb.library_calls(_allowed_library, {"eckart_young_error"}) == set()
    assert fb.library_calls(le.relative_error, {"eckart_young_error"}) == set()  # library internals are not searched
    assert fb.library_calls(le.LoRALinear, {"LoRALinear"}) == {"LoRALinear"}


# ---- one notebook's exercises: hints, attempts, never raising ---------------------------------------------------

def _toy_exercises():
    EX = fb.Exercises("nbXX", hints={1: ["first", "second", "third"]})

    @EX.check(1)
    def ex1(answer):
        if answer is None:
            return fb.not_answered("give a number.")
        if answer == "crash":
            raise ValueError("a bug in the check itself")
        return fb.ok("yes") if answer == 42 else fb.fail("no.")

    return EX, ex1


def test_hints_come_one_more_per_call_and_after_repeated_wrong_attempts(capsys):
    EX, ex1 = _toy_exercises()
    assert not ex1(None) and "checks.nbXX.hint(1)" in capsys.readouterr().out
    assert not ex1(1)
    out = capsys.readouterr().out
    assert "More help: checks.nbXX.hint(1)" in out and "Hint 1/3" not in out
    assert not ex1(2) and "💡 Hint 1/3: first" in capsys.readouterr().out  # second wrong attempt: a hint
    EX.hint(1)
    out = capsys.readouterr().out
    assert "Hint 1/3" in out and "Hint 2/3: second" in out and "Hint 3/3" not in out
    EX.hint(1)
    out = capsys.readouterr().out
    assert out.count("💡") == 3 and "Hint 3/3: third" in out and "last hint" in out
    EX.hint(1)
    assert capsys.readouterr().out.count("💡") == 3
    EX.hint(7)
    assert "numbered [1]" in capsys.readouterr().out
    assert ex1(42) is True and capsys.readouterr().out.startswith("✅")
    EX.reset()
    assert EX.wrong == {} and EX.shown == {}


def test_a_check_that_breaks_still_answers(capsys):
    _, ex1 = _toy_exercises()
    assert ex1("crash") is False and "could not use your answer (ValueError" in capsys.readouterr().out


def test_first_prediction_is_kept():
    EX, _ = _toy_exercises()
    assert EX.first_prediction(1, 0.3) == 0.3 and EX.first_prediction(1, 0.1) == 0.3


# ---- hidden solution cells ---------------------------------------------------------------------------------------

@pytest.fixture
def shell(monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.delenv("LORA_EDU_SOLUTIONS", raising=False)
    sh = InteractiveShell.instance()
    fb.register_solution_magic(sh)
    yield sh
    fb.show_solutions(False)


def test_solution_cells_are_hidden_until_asked_for(shell, capsys, monkeypatch):
    fb.show_solutions(False)
    capsys.readouterr()
    shell.run_cell("%%solution nb01.ex2\nsecret = 41 + 1\nprint('the answer is', secret)")
    out = capsys.readouterr().out
    assert "Solution hidden" in out and "checks.nb01.hint(2)" in out and "answer is" not in out
    assert "secret" not in shell.user_ns
    fb.show_solutions()
    shell.run_cell("%%solution nb01.ex2\nsecret = 41 + 1\nprint('the answer is', secret)")
    assert "the answer is 42" in capsys.readouterr().out and shell.user_ns["secret"] == 42
    fb.show_solutions(False)
    monkeypatch.setenv("LORA_EDU_SOLUTIONS", "1")  # what the tests set
    result = shell.run_cell("%%solution nb01.ex2\nassert False, 'a failing solution must fail the cell'")
    assert not result.success


MAIN = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _tags(c):
    return c["metadata"].get("tags", [])


@pytest.mark.parametrize("path", MAIN, ids=lambda p: p.name)
def test_every_solution_is_hidden_and_every_exercise_is_checked(path):
    nn = path.name[:2]
    cells = _cells(path)
    sols = ["".join(c["source"]) for c in cells if "solution" in _tags(c)]
    exs = ["".join(c["source"]) for c in cells if "exercise" in _tags(c)]
    assert len(sols) == len(exs) >= 2
    for k, (ex, sol) in enumerate(zip(exs, sols), 1):
        assert sol.startswith(f"%%solution nb{nn}.ex{k}\n"), sol[:80]
        assert f"checks.nb{nn}.ex{k}(" in ex and f"assert checks.nb{nn}.ex{k}(" in sol
        last = ex.rstrip().splitlines()[-1].split("#")[0].rstrip()
        assert last.endswith(";"), f"{path.name} exercise {k}: end the check call with ; (no stray output)"
        assert "None" in ex, "an exercise cell starts unanswered"
    # every solution cell is collapsed too, and the solutions edition shows it without the magic line
    assert all(c["metadata"].get("jupyter", {}).get("source_hidden") for c in cells if "solution" in _tags(c))
    edition = solutions_tool.solutions_notebook(nbformat.read(path, as_version=4), path.name)
    assert all(not c.source.startswith("%%") for c in edition.cells if "solution" in c.metadata.get("tags", []))


@pytest.mark.parametrize("path", MAIN, ids=lambda p: p.name)
def test_every_notebook_has_a_predict_measure_explain_exercise(path):
    md = "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")
    assert "predict → measure → explain" in md


def test_exercises_are_distinct_across_notebooks():
    """No notebook reuses another notebook's check, and no two exercise cells are the same."""
    seen = set()
    for path in MAIN:
        nn = path.name[:2]
        for c in _cells(path):
            if "exercise" in _tags(c):
                src = "".join(c["source"])
                assert set(re.findall(r"checks\.nb(\d\d)\.", src)) == {nn}, src
                assert src not in seen
                seen.add(src)


# ---- notebooks as a learner opens them ----------------------------------------------------------------------------

@pytest.mark.notebook
def test_run_all_shows_no_solution(tmp_path):
    """Run All in notebook 00 as a learner: every solution cell says it is hidden and prints nothing else."""
    nb = execute(NOTEBOOKS / "00_start_here.ipynb", solutions=False)
    assert not problems(nb)
    for c in nb.cells:
        if "solution" in c.metadata.get("tags", []):
            text = "".join(o.get("text", "") for o in c.outputs)
            assert text.startswith("🔒 Solution hidden") and "✅" not in text and "Measured" not in text


@pytest.mark.notebook
def test_student_edition_runs_from_its_own_folder(tmp_path):
    """`make student` output works where it is written: notebook 00 finds the measured times and runs its checks."""
    assert student_tool.main([str(NOTEBOOKS), str(tmp_path)]) == 0
    nb = execute(tmp_path / "00_start_here.ipynb")
    assert not problems(nb)
    outs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "CPU: not measured yet" not in outs and "CPU (" in outs
    assert not any("solution" in c.metadata.get("tags", []) for c in nb.cells)
    assert "Student edition" in nb.cells[0].source and nb.cells[0].source.startswith("# 00")


def test_the_magic_is_registered_only_inside_ipython():
    import subprocess

    code = "import lora_edu.course.checks, sys; print('IPython' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_solution_code_strips_only_the_magic_line():
    assert solutions_tool.solution_code("%%solution nb01.ex1\nx = 1\n") == "x = 1\n"
    assert solutions_tool.solution_code("x = 1") == "x = 1"

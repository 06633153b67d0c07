"""Exercises, worked solutions and the student edition stay consistent."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest

from .nbtools import NOTEBOOKS, ROOT

MAIN = sorted(NOTEBOOKS.glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
import export_html  # noqa: E402
import solutions as solutions_tool  # noqa: E402
import student as student_tool  # noqa: E402


def _tags(c):
    return c.get("metadata", {}).get("tags", [])


@pytest.mark.parametrize("path", MAIN, ids=lambda p: p.name)
def test_exercises_have_checks_and_solutions(path):
    nb = nbformat.read(path, as_version=4)
    ex = [c for c in nb.cells if "exercise" in _tags(c)]
    sol = [c for c in nb.cells if "solution" in _tags(c)]
    assert 2 <= len(ex) <= 4, f"{path.name}: {len(ex)} exercise cells (want 2–4)"
    assert len(sol) >= len(ex), f"{path.name}: {len(ex)} exercises but {len(sol)} solution cells"
    for c in ex + sol:
        assert "checks." in c.source, f"{path.name}: exercise/solution cell without a self-check:\n{c.source}"
    for c in sol:
        assert "assert " in c.source, f"{path.name}: a solution cell must assert its check passes"


def test_solutions_edition_is_built_from_the_main_notebooks(tmp_path):
    assert solutions_tool.main([str(tmp_path)]) == 0
    for path in MAIN:
        src = nbformat.read(path, as_version=4)
        out = tmp_path / f"{path.stem}_solutions.ipynb"
        sol = nbformat.read(out, as_version=4)
        want = [c.source for c in src.cells if "solution" in _tags(c)]
        assert [c.source for c in sol.cells if "solution" in _tags(c)] == want and want
        assert not any("exercise" in _tags(c) for c in sol.cells)
    assert not (NOTEBOOKS / "solutions").exists() or not subprocess.run(
        ["git", "ls-files", "--error-unmatch", "notebooks/solutions"], cwd=ROOT, capture_output=True).returncode == 0, \
        "notebooks/solutions is build output: it must not be committed"


def test_solution_builder_keeps_setup_and_solutions_only():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("import x"),
                nbformat.v4.new_code_cell("lesson = 1"), nbformat.v4.new_markdown_cell("## Exercises"),
                nbformat.v4.new_code_cell("answer = None", metadata={"tags": ["exercise"]}),
                nbformat.v4.new_code_cell("answer = 2\nassert checks.ex1(answer)",
                                          metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}})]
    out = solutions_tool.solutions_notebook(nb, "t.ipynb")
    sources = [c.source for c in out.cells]
    assert "import x" in sources and "lesson = 1" in sources and "answer = None" not in sources
    assert out.cells[0].source.startswith("# Solutions — T")
    assert out.cells[-1].metadata.get("jupyter") is None  # shown, not hidden


def test_student_edition_strips_every_solution(tmp_path):
    assert student_tool.main([str(NOTEBOOKS), str(tmp_path)]) == 0
    for path in MAIN:
        src = json.loads(path.read_text())
        stu = json.loads((tmp_path / path.name).read_text())
        n_sol = sum("solution" in _tags(c) for c in src["cells"])
        assert not any("solution" in _tags(c) for c in stu["cells"])
        assert len(stu["cells"]) == len(src["cells"]) - n_sol
        assert [c["source"] for c in stu["cells"] if "exercise" in _tags(c)] == \
               [c["source"] for c in src["cells"] if "exercise" in _tags(c)]


def test_html_export_writes_pages_and_an_index(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# 42 · A tiny lesson\n\n**Objectives**\n- add two numbers"),
                nbformat.v4.new_code_cell("print(40 + 2)")]
    src = tmp_path / "src" / "42_tiny.ipynb"
    src.parent.mkdir()
    nbformat.write(nb, src)
    index = export_html.export([src], tmp_path / "html")
    page = (tmp_path / "html" / "42_tiny.html").read_text()
    assert "42" in page and "A tiny lesson" in page  # executed: the output 42 is in the page
    assert ">42\n<" in page or "42\n" in page
    listing = index.read_text()
    assert 'href="42_tiny.html"' in listing and "A tiny lesson" in listing and "add two numbers" in listing

"""Exercises, worked solutions and the student edition stay consistent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import nbformat
import pytest

from .nbtools import NOTEBOOKS, ROOT

MAIN = sorted(NOTEBOOKS.glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
import export_html  # noqa: E402
import nbrun  # noqa: E402
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
        want = [solutions_tool.solution_code(c.source) for c in src.cells if "solution" in _tags(c)]
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


TINY_WIDGETS = """\
import ipywidgets as w, matplotlib.pyplot as plt
from IPython.display import display
from tqdm.auto import tqdm
for _ in tqdm(range(3), desc="warm-up", leave=False):  # tqdm hides a leave=False bar when it closes
    pass
out = w.Output()
with out:
    fig, ax = plt.subplots(figsize=(2, 1)); ax.plot([0, 1], [1, 0]); display(fig); plt.close(fig)
w.VBox([w.IntSlider(value=7, min=0, max=10, description="rank r"), w.Dropdown(options=["q", "v"], value="v"),
        w.Play(), out])
"""


def _links(page: str) -> dict[str, str]:
    """{rel: href} of the navigation links (top and bottom bars must agree)."""
    from bs4 import BeautifulSoup

    bars = [{a["rel"][0]: a["href"] for a in nav.find_all("a")}
            for nav in BeautifulSoup(page, "html.parser").select("nav.lora-nav")]
    assert len(bars) == 2 and bars[0] == bars[1], bars
    return bars[0]


def test_html_export_reads_offline(tmp_path):
    """Two executed pages: MathML equations, widgets drawn from saved state, a finished progress bar, links to
    the neighbours and the index, and no script, stylesheet or image fetched from anywhere."""
    md = nbformat.v4.new_markdown_cell
    one = nbformat.v4.new_notebook(cells=[
        md("# 41 · A tiny lesson\n\n**Objectives**\n- add $a + b$\n\nThe update $\\Delta W = BA$ has rank "
           "$\\le r$:\n\n$$\\lVert W - W_r \\rVert_F = \\sqrt{\\textstyle\\sum_{i>r} \\sigma_i^2}$$"),
        nbformat.v4.new_code_cell("print(40 + 2)"), nbformat.v4.new_code_cell(TINY_WIDGETS),
        nbformat.v4.new_code_cell("secret_answer = 6 * 7", metadata={"tags": ["solution"]})])
    two = nbformat.v4.new_notebook(cells=[md("# 42 · The next lesson\n\nNothing to run.")])
    src = tmp_path / "src"
    src.mkdir()
    for nb, name in ((one, "41_tiny.ipynb"), (two, "42_next.ipynb")):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, src / name)
    index = export_html.export([src / "41_tiny.ipynb", src / "42_next.ipynb"], tmp_path / "html", fast=True)
    page = (tmp_path / "html" / "41_tiny.html").read_text()
    assert "A tiny lesson" in page and "42\n" in page  # executed: the printed 42 is on the page
    assert page.count("<math") == 4 and 'display="block"' in page
    assert "$" not in re.sub(r"<(pre|code|script)\b.*?</\1>", "", page, flags=re.S)  # no TeX left for MathJax
    widget = page[page.index('class="lora-widget"'):]
    assert 'type="range"' in widget and 'value="7"' in widget and "rank r" in widget
    assert "<option>v</option>" in widget and "Play: run the notebook to use it" in widget
    assert re.search(r'class="lora-w-output"><img alt="figure" src="data:image/png;base64,', widget)
    assert re.search(r'warm-up: 100%.*?<progress[^>]*max="3(\.0)?" value="3(\.0)?"', page, re.S)
    assert _links(page) == {"next": "42_next.html", "index": "index.html"}
    assert _links((tmp_path / "html" / "42_next.html").read_text()) == {"prev": "41_tiny.html", "index": "index.html"}
    for ref in re.findall(r'<(?:script|link|img)\b[^>]*\b(?:src|href)="([^"]+)"', page):
        assert ref.startswith("data:"), f"the page fetches {ref}"
    assert "application/vnd.jupyter.widget-state+json" not in page
    assert "secret_answer" not in page and "worked solutions are left out" in page  # no answers on the page
    listing = index.read_text()
    assert 'href="41_tiny.html"' in listing and "A tiny lesson" in listing
    assert re.search(r"<small>add <math[^>]*>.*</math></small>", listing) and "$" not in listing


@pytest.mark.parametrize("path", MAIN, ids=lambda p: p.name)
def test_every_equation_converts_to_mathml(path):
    """The HTML export turns each notebook's LaTeX into MathML (latex2mathml): nothing it cannot convert."""
    errors: list[str] = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            rendered = export_html.markdown_to_html(cell.source, errors)
            assert "$" not in re.sub(r"<(pre|code)\b.*?</\1>", "", rendered, flags=re.S), cell.source[:300]
    assert errors == [], errors


def test_output_widgets_do_not_stall_execution():
    """Cells that write into an Output widget again and again: with nbclient's own Output mimic some cells sit until
    the cell timeout (measured: 24 such cells, 15 s timeout: 33–48 s against 4–5 s); tools/nbrun's client never."""
    code = ("import ipywidgets as w\nfrom IPython.display import display\nout = w.Output()\n"
            "for i in range({n}):\n    with out:\n        out.clear_output(wait=True)\n        display(i)\nout")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code.format(n=n)) for n in (1, 5, 20, 50, 3) * 3])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    timeout = 60  # a stalled cell waits this long; a healthy one takes well under a second
    t0 = time.perf_counter()
    nbrun.notebook_client(nb, timeout=timeout, kernel_name="python3", store_widget_state=True).execute()
    assert time.perf_counter() - t0 < timeout, "a cell waited for the cell timeout"
    state = nb.metadata.widgets["application/vnd.jupyter.widget-state+json"]["state"]
    shown = [m["state"]["outputs"] for m in state.values() if m["model_name"] == "OutputModel"]
    assert len(shown) == 15 and all(len(o) == 1 for o in shown)  # wait=True: only the last display is kept
    assert sorted(o[0]["data"]["text/plain"] for o in shown) == sorted(str(n - 1) for n in (1, 5, 20, 50, 3) * 3)

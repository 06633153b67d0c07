"""Every notebook executes top to bottom headless in fast mode, with no error and no traceback anywhere."""

from __future__ import annotations

import time

import nbformat
import pytest

from .nbtools import NOTEBOOKS, ROOT, all_notebooks, execute, problems

PER_NOTEBOOK_TIMEOUT = 240  # seconds per cell; fast mode targets are 30–60 s per notebook

NBS = all_notebooks()


def test_series_present():
    names = {p.name for p in NOTEBOOKS.glob("*.ipynb")}
    for expected in ("00_start_here.ipynb", "01_low_rank_matrices.ipynb", "02_the_lora_update.ipynb",
                     "03_lora_generalizes_full_finetuning.ipynb"):
        assert expected in names


@pytest.mark.notebook
@pytest.mark.parametrize("path", NBS, ids=[str(p.relative_to(NOTEBOOKS)) for p in NBS])
def test_notebook_executes_cleanly(path):
    t0 = time.perf_counter()
    nb = execute(path, timeout=PER_NOTEBOOK_TIMEOUT)
    seconds = time.perf_counter() - t0
    found = problems(nb)
    assert not found, f"{path.name}: " + "\n".join(found)
    out = ROOT / "build" / "executed" / path.relative_to(NOTEBOOKS)
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    print(f"{path.name}: executed in {seconds:.1f} s (fast mode)")


def test_problem_scanner_catches_tracebacks():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("1/0")
    cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="x", traceback=["tb"])]
    nb.cells.append(cell)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"m": {"state": {
        "outputs": [{"output_type": "stream", "text": "Traceback (most recent call last):\n"}]}}}}}
    found = problems(nb)
    assert any("cell 0" in f for f in found) and any("widget state" in f for f in found)

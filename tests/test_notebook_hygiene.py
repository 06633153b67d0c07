"""Notebooks are committed clean (no outputs, no execution counts) and follow the series' structure."""

from __future__ import annotations

import json

import pytest

from .nbtools import all_notebooks

NBS = all_notebooks()
IDS = [p.name for p in NBS]


@pytest.mark.parametrize("path", NBS, ids=IDS)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs", []) == [], f"{path.name} cell {i} has outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.get("metadata", {}), f"{path.name} has saved widget state"


@pytest.mark.parametrize("path", [p for p in NBS if p.parent.name == "notebooks"],
                         ids=[p.name for p in NBS if p.parent.name == "notebooks"])
def test_structure(path):
    nb = json.loads(path.read_text())
    md = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown").lower()
    assert nb["cells"][0]["cell_type"] == "markdown" and "".join(nb["cells"][0]["source"]).startswith("#")
    assert "objective" in md, f"{path.name}: no learning objectives"
    assert "summary" in md, f"{path.name}: no Summary"
    assert "exercise" in md, f"{path.name}: no Exercises"
    assert nb["metadata"].get("kernelspec", {}).get("name") == "python3"
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] == "code":
            n = len("".join(c["source"]).splitlines())
            assert n <= 25, f"{path.name} cell {i} has {n} lines; import from lora_edu instead"

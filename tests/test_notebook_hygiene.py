"""Notebooks are committed clean (no outputs, no execution counts) and follow the series' structure."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .nbtools import NOTEBOOKS as NOTEBOOKS_DIR
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
            # A cell that *is* the lesson (tagged "lesson": a layer or a loop written out) may be long; any other
            # cell stays short — sweeps, figure layout and tables belong in lora_edu/course/nbNN.py.
            n = len("".join(c["source"]).splitlines())
            cap = 40 if "lesson" in c["metadata"].get("tags", []) else 25
            assert n <= cap, f"{path.name} cell {i} has {n} lines (cap {cap}); move plumbing to lora_edu/course"


def test_the_lora_layer_is_written_in_notebook_02():
    """The learner sees LoRA's code: a complete layer (Gaussian A, zero B, α/r, forward, merge, unmerge) in ≤ 25
    lines, and a plain training loop, both tagged as lesson cells."""
    nb = json.loads((NOTEBOOKS_DIR / "02_the_lora_update.ipynb").read_text())
    lessons = ["".join(c["source"]) for c in nb["cells"] if "lesson" in c["metadata"].get("tags", [])]
    layer = next(s for s in lessons if s.startswith("class LoRA("))
    assert len(layer.splitlines()) <= 25
    for piece in ("torch.randn(r, k)", "torch.zeros(d, r)", "alpha / r", "def forward", "def merge", "def unmerge"):
        assert piece in layer, piece
    assert any("opt.step()" in s and "loss.backward()" in s for s in lessons)


@pytest.mark.parametrize("path", [p for p in NBS if p.parent.name == "notebooks"],
                         ids=[p.name for p in NBS if p.parent.name == "notebooks"])
def test_first_code_cell_says_what_to_install_outside_a_clone(path, tmp_path):
    """Opened where lora_edu is not installed, the first cell fails with the exact install instructions."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    setup = "".join(cells[0]["source"])
    assert "setup" in cells[0]["metadata"].get("tags", [])
    blocker = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'lora_edu': raise ModuleNotFoundError(name)\n"
               "sys.meta_path.insert(0, Block())\n")
    out = subprocess.run([sys.executable, "-c", blocker + setup], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr
    for words in ("make lab", "make wheel", "%pip install lora_edu-0.1.0-py3-none-any.whl", "restart the kernel"):
        assert words in out.stderr, words
    ok = subprocess.run([sys.executable, "-c", setup], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr  # in this environment lora_edu is installed: the cell is silent

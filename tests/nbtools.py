"""Shared notebook helpers for the tests: find, execute (fast mode) and scan notebooks for tracebacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def all_notebooks() -> list[Path]:
    """Every notebook of the series (not the generated solutions and student editions, nor checkpoints).

    Solution cells live in these notebooks, so executing them runs each solution once."""
    found = sorted(NOTEBOOKS.glob("*.ipynb"))
    return [p for p in found if ".ipynb_checkpoints" not in p.parts]


def _nbrun():
    """tools/nbrun.py: nbclient without the Output-widget echo that can stall a cell until its timeout."""
    import importlib.util
    import sys

    if "nbrun" not in sys.modules:
        spec = importlib.util.spec_from_file_location("nbrun", ROOT / "tools" / "nbrun.py")
        sys.modules["nbrun"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["nbrun"]


def execute(path: Path, timeout: int = 300, store_widget_state: bool = True, solutions: bool = True):
    """Run a notebook top to bottom in fast mode with its own folder as cwd; returns it executed.

    With `solutions` (the default) every %%solution cell runs too, so each worked solution is tested once;
    solutions=False runs it as a learner's Run All does, with the solution cells hidden."""
    nb = nbformat.read(path, as_version=4)
    # fast mode, and every %%solution cell runs (Run All hides them from learners): each solution is tested once
    env_before = {k: os.environ.get(k) for k in ("LORA_EDU_FAST", "LORA_EDU_SOLUTIONS")}
    os.environ.update(LORA_EDU_FAST="1", LORA_EDU_SOLUTIONS="1" if solutions else "0")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # kernels run two at a time on a 2-core CI machine
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        client = _nbrun().notebook_client(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                                          store_widget_state=store_widget_state,
                                          resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


_BAD = ("Traceback (most recent call last)", "Error displaying widget", "model not found")


def _texts(output: dict):
    if output.get("output_type") == "error":
        yield "ERROR OUTPUT: " + output.get("ename", "") + ": " + output.get("evalue", "")
    if "text" in output:
        yield "".join(output["text"]) if isinstance(output["text"], list) else output["text"]
    for key, val in (output.get("data") or {}).items():
        if key.startswith("text/"):
            yield "".join(val) if isinstance(val, list) else str(val)
    if "traceback" in output:
        yield "\n".join(output["traceback"])


def problems(nb) -> list[str]:
    """Error outputs or tracebacks anywhere: cell outputs and saved widget state (Output widgets)."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            for text in _texts(out):
                if text.startswith("ERROR OUTPUT") or any(b in text for b in _BAD):
                    found.append(f"cell {i}: {text[:500]}")
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    blob = json.dumps(state)
    for bad in _BAD + ('"output_type": "error"',):
        if bad in blob:
            at = blob.index(bad)
            found.append(f"widget state: ...{blob[max(0, at - 200): at + 300]}...")
    return found

"""Notebook 00 (start here): the hello slider and the course's measured notebook times."""

from __future__ import annotations

import json

from .common import results_dir


def hello_slider():
    """A tiny slider and a label that echoes its square: proves widgets render and respond (notebook 00)."""
    import ipywidgets as w

    s = w.IntSlider(value=3, min=0, max=10, description="x")
    label = w.Label()

    def update(change=None):
        label.value = f"x = {s.value}, x² = {s.value ** 2}"

    s.observe(update, names="value")
    update()
    return w.VBox([s, label])


def notebook_times(kind: str = "cpu") -> list[dict]:
    """The measured time of every notebook (benchmarks/notebook_times.py --save), [] if never measured."""
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"kind must be 'cpu' or 'gpu', got {kind!r}")
    path = results_dir() / f"notebook_times_{kind}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

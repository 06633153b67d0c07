"""Execute every notebook and export it to HTML with an index page, so a learner can read without running.

Usage: python tools/export_html.py OUT_DIR [--reuse build/executed] [notebook ...]
Notebooks run in full mode unless LORA_EDU_FAST=1 is set. With --reuse, already-executed copies
(what `make test` leaves in build/executed) are exported without running them again.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from course_map import objectives  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


_TEX = {r"\Delta": "Δ", r"\alpha": "α", r"\phi": "φ", r"\sigma": "σ", r"\le": "≤", r"\ll": "≪",
        r"\times": "×", r"\mathbb{R}": "ℝ", r"\operatorname{rank}": "rank", r"\sqrt": "√", r"\min": "min",
        r"\lVert": "‖", r"\rVert": "‖", r"\top": "ᵀ"}


def plain(text: str) -> str:
    """Markdown/LaTeX of an objective line as plain text for the index (no MathJax needed offline)."""
    for tex, uni in _TEX.items():
        text = text.replace(tex, uni)
    text = re.sub(r"[$*`{}]", "", text)
    return text.replace("\\", "").replace("_", "").strip().rstrip(";.")


def title_and_goal(nb) -> tuple[str, str]:
    """First heading of the notebook and its learning objectives (for the index)."""
    title = next((line.lstrip("#").strip() for c in nb.cells if c.cell_type == "markdown"
                  for line in c.source.splitlines() if line.strip().startswith("#")), "")
    return title, "; ".join(plain(g) for g in objectives(nb))


def execute(path: Path, timeout: int = 600):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def export(notebooks: list[Path], out: Path, reuse: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter()
    rows = []
    for path in notebooks:
        rel = path.relative_to(ROOT / "notebooks") if path.is_relative_to(ROOT / "notebooks") else Path(path.name)
        cached = reuse / rel if reuse else None
        t0 = time.perf_counter()
        if cached is not None and cached.exists():
            nb = nbformat.read(cached, as_version=4)
        else:
            nb = execute(path)
        body, _ = exporter.from_notebook_node(nb)
        target = out / rel.with_suffix(".html")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
        title, goal = title_and_goal(nb)
        rows.append((str(rel.with_suffix(".html")), title or rel.stem, goal))
        print(f"{rel}: {time.perf_counter() - t0:.1f} s -> {target}", flush=True)
    items = "\n".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a>'
                      + (f"<br><small>{html.escape(g)}</small>" if g else "") + "</li>" for h, t, g in rows)
    index = out / "index.html"
    index.write_text(f"""<!doctype html><html><head><meta charset="utf-8"><title>lora-edu</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.5}}li{{margin:.6em 0}}</style>
</head><body><h1>lora-edu: LoRA from the matrix up</h1>
<p>The notebook series, executed and exported to HTML. Run them yourself with <code>make lab</code>.</p>
<ol>{items}</ol></body></html>
""", encoding="utf-8")
    (out / "index.json").write_text(json.dumps(rows, indent=1))
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--reuse", type=Path, default=None, help="folder of already-executed notebooks")
    args = ap.parse_args(argv)
    nbs = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    nbs = [p.resolve() for p in nbs]
    print(f"index: {export(nbs, args.out, args.reuse)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the README's course map from the notebooks and the measured times in benchmarks/results/.

Objectives are the notebooks' own first objective lines; times come from `benchmarks/notebook_times.py`
(`notebook_times_cpu.jsonl`, and `notebook_times_gpu.jsonl` when a GPU run exists). Nothing is typed by hand.
Usage: python tools/course_map.py [--check]
Without --check it rewrites the course map between the markers in README.md; with --check it writes nothing and
exits with 1 if the README's map is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- course-map:start -->", "<!-- course-map:end -->"

PREREQS = {
    "00": "Python; a working `make lab`",
    "01": "matrix multiplication; what a vector space is",
    "02": "01; gradient descent / Adam in one sentence",
    "03": "01, 02",
    "04": "02; what attention computes (Q, K, V)",
    "05": "04",
    "06": "02, 05",
    "07": "01, 05",
    "08": "05, 06",
    "09": "05",
    "10": "05, 06, 08",
}


def objectives(nb) -> list[str]:
    """The bullet or numbered lines right after the notebook's 'objectives' line."""
    for cell in nb.cells:
        if cell.cell_type != "markdown" or "objective" not in cell.source.lower():
            continue
        lines, on = [], False
        for line in cell.source.splitlines():
            if "objective" in line.lower():
                on = True
                continue
            m = re.match(r"\s*(?:[-*]|\d+\.)\s+(.*)", line)
            if on and m:
                lines.append(m.group(1).strip())
            elif on and lines and not line.strip():
                break
        return lines
    return []


def load_times(kind: str) -> dict[tuple[str, str], float]:
    path = RESULTS / f"notebook_times_{kind}.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return {(r["notebook"], r["mode"]): r["seconds"] for r in rows}


def _fmt(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def course_map() -> str:
    cpu, gpu = load_times("cpu"), load_times("gpu")
    cpu_dev = gpu_dev = ""
    for kind in ("cpu", "gpu"):
        p = RESULTS / f"notebook_times_{kind}.jsonl"
        if p.exists():
            first = json.loads(p.read_text().splitlines()[0])
            dev = f"{first['device']}, torch {first['torch']}"
            cpu_dev, gpu_dev = (dev, gpu_dev) if kind == "cpu" else (cpu_dev, dev)
    rows = ["| # | notebook | prerequisites | CPU, full | CPU, fast mode | GPU, full |",
            "|---|---|---|---|---|---|"]
    goals = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        n = path.name[:2]
        title = nb.cells[0].source.splitlines()[0].lstrip("# ").strip()
        rows.append(f"| {n} | [{title}](notebooks/{path.name}) | {PREREQS.get(n, '—')} | "
                    f"{_fmt(cpu.get((path.name, 'full')))} | {_fmt(cpu.get((path.name, 'fast')))} | "
                    f"{_fmt(gpu.get((path.name, 'full')))} |")
        goals.append(f"- **{title}**")
        goals += [f"  - {g.rstrip(';.')}" for g in objectives(nb)]
    gpu_note = f"on {gpu_dev}" if gpu_dev else "not measured yet (no GPU run so far)"
    notes = [f"Times measured by `benchmarks/notebook_times.py` or `make claims` (top to bottom, fresh kernel, "
             f"OMP_NUM_THREADS=1, a quiet machine): CPU on "
             f"{cpu_dev or 'not measured yet'}; GPU {gpu_note}. Fast mode is `LORA_EDU_FAST=1`, what CI runs.",
             "Order: 00 → 01 → 02 → 03 is the mathematics of §4.1; 04 → 05 → 06 → 07 is LoRA on a transformer "
             "(§4.2, §7); 08 (myths) and 09 (rank lab) build on 05–06; 10 takes it all to Hugging Face PEFT. "
             "Solutions: `make solutions` "
             "(written to `notebooks/solutions/`); "
             "lesson plans: [`notebooks/INSTRUCTOR.md`](notebooks/INSTRUCTOR.md)."]
    return ("\n".join(rows) + "\n\n" + "\n\n".join(notes) + "\n\n**Learning objectives** — after each notebook "
            "you can:\n\n" + "\n".join(goals))


def render(text: str) -> str:
    block = f"{START}\n{course_map()}\n{END}"
    if START in text:
        return re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    return text.replace("COURSE_MAP_PLACEHOLDER", block)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if the README's map is stale")
    args = ap.parse_args(argv)
    text = README.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print("README course map is stale: run python tools/course_map.py")
            return 1
        return 0
    README.write_text(new)
    print("README course map written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write the student edition: copies of the notebooks with every cell tagged `solution` removed.

Usage: python tools/student.py SRC_DIR OUT_DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

TAG = "solution"


NOTE = ("\n\n> **Student edition.** The worked solutions are not in this copy: where the text mentions a hidden "
        "solution cell, ask your instructor (they build them with `make solutions`).")


def strip_solutions(nb):
    """The notebook without solution-tagged cells, outputs cleared, its title cell saying it is the student edition."""
    nb = nbformat.from_dict(nb)
    kept = [c for c in nb.cells if TAG not in c.get("metadata", {}).get("tags", [])]
    if len(kept) < len(nb.cells) and kept and kept[0].cell_type == "markdown":
        kept[0].source += NOTE
    nb.cells = kept
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="folder of notebooks (e.g. notebooks)")
    ap.add_argument("out", type=Path, help="folder to write the student copies to (e.g. notebooks/student)")
    args = ap.parse_args(argv)
    src, out = args.src, args.out
    if out.resolve() == src.resolve():
        ap.error("OUT_DIR must differ from SRC_DIR: the student copies would overwrite the notebooks")
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for path in sorted(src.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        student = strip_solutions(nb)
        removed = len(nb.cells) - len(student.cells)
        nbformat.write(student, out / path.name)
        print(f"{path.name}: {removed} solution cells removed")
        n += 1
    print(f"wrote {n} student notebooks to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

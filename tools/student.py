"""Write the student edition: copies of the notebooks with every cell tagged `solution` removed.

Usage: python tools/student.py SRC_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

TAG = "solution"


def strip_solutions(nb):
    """The notebook without solution-tagged cells, outputs cleared."""
    nb = nbformat.from_dict(nb)
    nb.cells = [c for c in nb.cells if TAG not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nb.metadata.pop("widgets", None)
    return nb


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, out = Path(argv[0]), Path(argv[1])
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

"""Time every notebook top to bottom in fast and/or full mode on this machine; prints a table and JSON lines.

Usage: python benchmarks/notebook_times.py [--mode fast|full|both] [--json PATH | --save] [notebook ...]
--save writes benchmarks/results/notebook_times_{cpu,gpu}.jsonl, which tools/course_map.py puts in the README.
Targets (issues 3–5 and 11): fast ≤ 30 s (00–03), ≤ 45 s (04–10 but 08), ≤ 60 s (08); full ≤ 2 min (00–03),
≤ 3 min (04–10). Nothing is asserted: this is a measurement, not a test. `tools/claims.py --save-times` writes the
same rows from its own runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from nbrun import notebook_client  # noqa: E402  (no 600-second stalls on Output widgets)


def target(name: str, mode: str) -> float:
    n = int(name[:2]) if name[:2].isdigit() else 99
    if n <= 3:
        return 30 if mode == "fast" else 120
    if n == 8:
        return 60 if mode == "fast" else 180
    return 45 if mode == "fast" else 180


def run(path: Path, mode: str) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["LORA_EDU_FAST"] = "1" if mode == "fast" else "0"
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"  # figures inline, as in JupyterLab
    t0 = time.perf_counter()
    notebook_client(nb, timeout=900, kernel_name="python3",
                    resources={"metadata": {"path": str(path.parent)}}).execute()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--mode", choices=["fast", "full", "both"], default="both")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--save", action="store_true", help="write benchmarks/results/notebook_times_<cpu|gpu>.jsonl")
    args = ap.parse_args(argv)
    nbs = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    modes = ["fast", "full"] if args.mode == "both" else [args.mode]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    rows = []
    print(f"device: {device}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"{'notebook':45s} {'mode':5s} {'seconds':>8s} {'target':>7s}  ratio")
    for p in nbs:
        for mode in modes:
            s = run(p, mode)
            t = target(p.name, mode)
            rows.append({"notebook": p.name, "mode": mode, "seconds": round(s, 1), "target_s": t,
                         "ratio": round(s / t, 2), "device": device, "torch": torch.__version__})
            print(f"{p.name:45s} {mode:5s} {s:8.1f} {t:7.0f}  {s / t:.2f}", flush=True)
    if args.save:
        kind = "gpu" if torch.cuda.is_available() else "cpu"
        args.json = ROOT / "benchmarks" / "results" / f"notebook_times_{kind}.jsonl"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make claims`: run every notebook in full mode and check each claim its prose is built on.

Each notebook prints its comparative sentences through `lora_edu.course.common.claim`, which picks the sentence
the numbers support and, with $LORA_EDU_CLAIMS set, records it. This tool executes the notebooks (full mode,
one after another), collects those records and writes benchmarks/results/claims.json (atomically). It exits 1
when a claim marked `expected` does not hold in full mode, a notebook fails, or a notebook runs over its time
budget (3 min full, 60 s fast; issue 11), so a vehicle change that breaks a lesson cannot land silently. Fast mode
(--mode fast) trains less, so its expected claims are reported but not required: claim() then prints the sentence
the fast numbers support.

Usage: python tools/claims.py [--out PATH] [--mode full|fast] [--save-times] [notebook ...]
--save-times also records each notebook's run time in benchmarks/results/notebook_times_<cpu|gpu>.jsonl (the rows
benchmarks/notebook_times.py writes, replacing those of the same notebook and mode), which the course map reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from nbrun import notebook_client  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from notebook_times import target  # noqa: E402  (one list of time targets)

BUDGET_S = {"full": 180, "fast": 60}


def run(path: Path, mode: str) -> dict:
    """Execute one notebook; its claims, seconds and error (None if it ran to the end)."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "claims.jsonl"
        os.environ.update(LORA_EDU_FAST="1" if mode == "fast" else "0", LORA_EDU_CLAIMS=str(log),
                          MPLBACKEND="module://matplotlib_inline.backend_inline")
        nb = nbformat.read(path, as_version=4)
        t0, error = time.perf_counter(), None
        try:
            notebook_client(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
        except Exception as e:  # noqa: BLE001 — reported, and the run fails
            error = f"{type(e).__name__}: {str(e)[-800:]}"
        seconds = time.perf_counter() - t0
        claims = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {"notebook": path.name, "mode": mode, "seconds": round(seconds, 1), "budget_s": BUDGET_S[mode],
            "error": error, "claims": claims}


def save_times(results: list[dict]) -> None:
    import platform

    import torch

    kind = "gpu" if torch.cuda.is_available() else "cpu"
    device = torch.cuda.get_device_name() if kind == "gpu" else f"cpu ({os.cpu_count()} cores)"
    path = ROOT / "benchmarks" / "results" / f"notebook_times_{kind}.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    new = {(r["notebook"], r["mode"]): {"notebook": r["notebook"], "mode": r["mode"], "seconds": r["seconds"],
                                       "target_s": target(r["notebook"], r["mode"]),
                                       "ratio": round(r["seconds"] / target(r["notebook"], r["mode"]), 2),
                                       "device": device, "torch": torch.__version__,
                                       "python": platform.python_version()} for r in results if not r["error"]}
    rows = [new.pop((r["notebook"], r["mode"]), r) for r in rows] + list(new.values())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--mode", choices=["full", "fast"], default="full")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/claims[_fast].json")
    ap.add_argument("--save-times", action="store_true", help="record the run times for the course map")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / f"claims{'' if args.mode == 'full' else '_fast'}.json"
    nbs = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    results, failures = [], []
    for p in nbs:
        r = run(p, args.mode)
        results.append(r)
        bad = [c for c in r["claims"] if c["expected"] and not c["holds"]]
        if args.mode == "fast":
            bad, note = [], bad
        else:
            note = []
        print(f"{p.name:45s} {r['seconds']:6.1f} s  {len(r['claims']):3d} claims  "
              f"{sum(c['holds'] for c in r['claims']):3d} hold  {len(bad)} expected ones fail"
              + (f" ({len(note)} expected ones do not hold in fast mode; not required)" if note else ""))
        for c in bad:
            failures.append(f"{p.name}: claim {c['key']!r} does not hold: {c['text']}")
        if r["error"]:
            failures.append(f"{p.name}: {r['error']}")
        if r["seconds"] > r["budget_s"]:
            failures.append(f"{p.name}: {r['seconds']:.0f} s, over the {r['budget_s']} s {args.mode}-mode budget")
    if args.notebooks and out.exists():  # a partial run updates its notebooks' entries and keeps the others'
        old = json.loads(out.read_text())
        if old.get("mode") == args.mode:
            ran = {r["notebook"] for r in results}
            kept = [r for r in old["notebooks"] if r["notebook"] not in ran]
            failures = [f for f in old["failures"] if f.split(":", 1)[0] not in ran] + failures
            results = sorted(kept + results, key=lambda r: r["notebook"])
    doc = {"mode": args.mode, "cpu_count": os.cpu_count(), "notebooks": results, "failures": failures}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"wrote {out}")
    if args.save_times:
        save_times(results)
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

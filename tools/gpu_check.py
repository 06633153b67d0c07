"""Run the GPU checks on a CUDA machine and save what they measure under benchmarks/results/.

Usage: python tools/gpu_check.py [--skip tests,notebooks,bench] [--pytest-args "..."]   (or: make gpu-check)

1. the test suite with LORA_EDU_DEVICE=cuda (browser tests left out);
2. notebooks 05 and 06 in full mode, timed: benchmarks/results/notebook_times_gpu.jsonl (the course map's GPU column);
3. the lora_edu-vs-PEFT benchmark with CUDA graphs: benchmarks/results/<device>_<date>.jsonl.
A summary goes to benchmarks/results/gpu_check_<date>.json. Without a CUDA device it says so and exits with 2;
if any step fails it runs the others and exits with 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STEPS = ("tests", "notebooks", "bench")


def cuda_device() -> str | None:
    """The CUDA device torch sees (name), or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def bench_command() -> list[str]:
    """The PEFT benchmark with CUDA graphs, saving its rows (benchmarks/peft_bench.py, or the older module)."""
    script = ROOT / "benchmarks" / "peft_bench.py"
    base = [sys.executable, str(script)] if script.exists() else [sys.executable, "-m", "lora_edu.bench"]
    return base + ["--device", "cuda", "--cuda-graphs", "--save"]


def commands(pytest_args: str) -> dict[str, list[str]]:
    nbs = [str(p) for n in ("05", "06") for p in sorted((ROOT / "notebooks").glob(f"{n}_*.ipynb"))]
    return {
        "tests": [sys.executable, "-m", "pytest", "-m", "not browser", *shlex.split(pytest_args)],
        "notebooks": [sys.executable, str(ROOT / "benchmarks" / "notebook_times.py"), "--mode", "full", "--save",
                      *nbs],
        "bench": bench_command(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip", default="", help=f"comma-separated steps to leave out: {', '.join(STEPS)}")
    ap.add_argument("--pytest-args", default="-n 4 -q", help="extra pytest arguments (default: -n 4 -q)")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(STEPS):
        ap.error(f"--skip takes {', '.join(STEPS)}; got {sorted(skip - set(STEPS))}")
    import torch

    device = cuda_device()
    if device is None:
        print(f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}) sees no GPU. "
              "The GPU checks need an NVIDIA GPU and a CUDA build of torch: on such a machine "
              "`python tools/install_torch.py --index cuda --force` installs one.")
        return 2
    print(f"GPU checks on {device}, torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    env = dict(os.environ, LORA_EDU_DEVICE="cuda", MPLBACKEND="module://matplotlib_inline.backend_inline")
    summary = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
               "date": datetime.date.today().isoformat(), "steps": {}}
    for name, cmd in commands(args.pytest_args).items():
        if name in skip:
            continue
        print(f"\n== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        summary["steps"][name] = {"returncode": rc, "seconds": round(time.perf_counter() - t0, 1),
                                  "command": " ".join(cmd[1:])}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"gpu_check_{summary['date']}.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print("\n" + "\n".join(f"{k:10s} {'ok' if v['returncode'] == 0 else 'FAILED'} ({v['seconds']} s)"
                           for k, v in summary["steps"].items()) + f"\nsummary: {out.relative_to(ROOT)}")
    return 0 if all(v["returncode"] == 0 for v in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

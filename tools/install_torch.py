"""Install the tested torch (pinned in constraints.txt) into this Python, the CPU-only build where there is no GPU.

Usage: python tools/install_torch.py [--index auto|cpu|cuda|default|cuXYZ|URL] [--dry-run] [--force]

--index (default: $TORCH_INDEX, else auto) picks where the torch wheel comes from:
  auto     Linux without an NVIDIA GPU: PyTorch's CPU-only index (a ~190 MB wheel); otherwise the default index
  cpu      PyTorch's CPU-only index, https://download.pytorch.org/whl/cpu
  cuda     the default index (PyPI): on Linux that is the CUDA build, ~2.7 GB with its CUDA libraries
  default  the default index, whatever pip is configured with
  cuXYZ    PyTorch's index for one CUDA version, e.g. cu126
  URL      any other index
If the chosen PyTorch index does not answer within a few seconds, the default index is used instead.
A torch of the pinned version that is already installed (any build) is kept unless --force is given.
Afterwards it prints which build was installed and its size on disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
CPU_INDEX = f"{PYTORCH_INDEX}/cpu"
PROBE_TIMEOUT_S = 5
CHOICES = "auto, cpu, cuda, default, cuXYZ (e.g. cu126) or an index URL"
# What the installed torch is made of, measured from the installed files (torch, its CUDA libraries, triton).
_REPORT = r"""
import importlib.metadata as md, json, torch
size = 0
for d in md.distributions():
    name = (d.metadata["Name"] or "").lower()
    if name == "torch" or name == "triton" or name.startswith(("nvidia-", "cuda-")):
        size += sum(f.size or 0 for f in d.files or [])
print(json.dumps({"version": torch.__version__, "cuda": torch.version.cuda, "bytes": size}))
"""


def pinned_torch(constraints: Path = CONSTRAINTS) -> str:
    """The torch version constraints.txt pins (torch==X)."""
    m = re.search(r"^torch==([^\s#;]+)", constraints.read_text(), re.M)
    if not m:
        raise ValueError(f"{constraints} pins no torch version (want a line torch==X)")
    return m.group(1)


def has_nvidia_gpu(proc: Path = Path("/proc/driver/nvidia/gpus"), smi: str = "nvidia-smi") -> bool:
    """True if the NVIDIA driver lists a GPU (/proc/driver/nvidia/gpus, or `nvidia-smi -L`, e.g. on WSL)."""
    if proc.is_dir() and any(proc.iterdir()):
        return True
    exe = shutil.which(smi)
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def choose_index(choice: str | None, gpu: bool, system: str | None = None) -> str | None:
    """The index URL to take torch from, or None for pip's default index."""
    choice = (choice or "auto").strip()
    system = system or platform.system()
    if choice == "auto":
        return CPU_INDEX if system == "Linux" and not gpu else None
    if choice in ("cuda", "default", "pypi"):
        return None
    if choice == "cpu":
        return CPU_INDEX
    if re.fullmatch(r"cu\d{2,3}|rocm[\d.]+", choice):
        return f"{PYTORCH_INDEX}/{choice}"
    if re.match(r"(https?|file)://", choice):
        return choice.rstrip("/")
    raise ValueError(f"TORCH_INDEX must be one of {CHOICES}; got {choice!r}")


def reachable(index: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the index answers for torch within `timeout` seconds (no retries)."""
    try:
        with urllib.request.urlopen(f"{index}/torch/", timeout=timeout) as r:
            return r.status < 400
    except Exception:  # noqa: BLE001 — DNS failure, refused, timeout, HTTP error: all mean "not usable now"
        return False


def pip_command(version: str, index: str | None, python: str = sys.executable) -> list[str]:
    """pip install of the pinned torch; a PyTorch index is added beside the default one, so the other
    packages still come from where pip usually takes them, and torch's local version (+cpu) wins."""
    cmd = [python, "-m", "pip", "install", "-q", "-c", str(CONSTRAINTS), f"torch=={version}"]
    if index:
        cmd += ["--extra-index-url", index, "--timeout", "10"]
    return cmd


def installed(python: str = sys.executable) -> dict | None:
    """{version, cuda, bytes} of the torch importable by `python`, or None."""
    out = subprocess.run([python, "-c", _REPORT], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def describe(info: dict) -> str:
    build = f"CUDA {info['cuda']} build" if info["cuda"] else "CPU-only build"
    extra = " with its CUDA libraries" if info["cuda"] else ""
    return f"torch {info['version']} ({build}), {info['bytes'] / 1e6:,.0f} MB on disk{extra}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", default=os.environ.get("TORCH_INDEX") or "auto", help=CHOICES)
    ap.add_argument("--dry-run", action="store_true", help="say what would be installed, install nothing")
    ap.add_argument("--force", action="store_true", help="install even if the pinned version is there")
    args = ap.parse_args(argv)
    version = pinned_torch()
    try:
        index = choose_index(args.index, has_nvidia_gpu())
    except ValueError as e:
        ap.error(str(e))
    have = None if args.force else installed()
    if have and have["version"].split("+")[0] == version:
        print(f"keeping the installed {describe(have)} (pinned: {version}; --force to reinstall)")
        return 0
    if index and not reachable(index):
        print(f"torch index {index} is not reachable (waited ≤ {PROBE_TIMEOUT_S} s): using the default index")
        index = None
    where = index or "the default index"
    print(f"installing torch=={version} from {where}" + (" (dry run)" if args.dry_run else ""), flush=True)
    cmd = pip_command(version, index)
    if args.dry_run:
        print(" ".join(cmd))
        return 0
    if subprocess.run(cmd).returncode != 0:
        hint = " (TORCH_INDEX=default takes the default index instead)" if index else ""
        print(f"pip could not install torch=={version} from {where}{hint}", file=sys.stderr)
        return 1
    info = installed()
    if info is None:
        print("torch was installed but does not import", file=sys.stderr)
        return 1
    print(f"installed {describe(info)}")
    if index == CPU_INDEX and info["cuda"]:
        print("warning: asked for the CPU-only build but got a CUDA one", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

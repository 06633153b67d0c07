"""Time one rank-lab run with the default settings (notebook 09's Train button) on this machine.

Usage: python benchmarks/rank_lab_time.py [--repeats N] [--threads T (0 = torch's default)] [--device cpu|cuda|mps]
Target (issue 4): one run with default settings ≤ 30 s on a CPU. Prints the time of each repeat, the median, and
the ratio median / 30 s; nothing is asserted (a measurement, not a test). The first run also loads the checkpoint
and evaluates the pretrained model once (cached afterwards), so it is reported separately.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

TARGET_S = 30.0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for each run: the lab's default is 1; 0 = torch's own setting")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    import torch

    import lora_edu as le
    from lora_edu.course.nb09 import DEFAULTS, RankLab

    threads = args.threads or None
    device = le.get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    used = threads or torch.get_num_threads()
    print(f"device {device} ({name}) · torch {torch.__version__} · CPU threads per run {used}")
    print(f"defaults: {DEFAULTS}")
    lab = RankLab(device=device, threads=threads)
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        run = lab.run_training(**DEFAULTS)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        label = "first (incl. checkpoint load + base eval)" if i == 0 else f"repeat {i}"
        print(f"{label:42s} {dt:6.2f} s  (training loop {run.seconds:5.2f} s, final accuracy {run.accuracy:.3f})")
        if i > 0:
            times.append(dt)
    med = statistics.median(times) if times else float("nan")
    print(f"median of {len(times)}: {med:.2f} s per default run · ratio to the {TARGET_S:.0f} s target: "
          f"{med / TARGET_S:.2f}")


if __name__ == "__main__":
    main()

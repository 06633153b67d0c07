"""Latency of every matrix-widget callback at a few slider values, against the 0.5 s target (prints, no asserts).

Each callback is timed as a slider move costs it: compute the figure and render it to PNG (what the notebook
front end receives). The SVD is computed once beforehand, as the widgets do. Writes no file.
Usage: python benchmarks/widget_latency.py
"""

from __future__ import annotations

import argparse
import io
import time

TARGET_S = 0.5


def _timed(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    if not isinstance(out, str):
        out.savefig(io.BytesIO(), format="png")
    return time.perf_counter() - t0


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    import torch

    import lora_edu as le
    from lora_edu.course import nb01, nb02

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; target ≤ {TARGET_S} s per slider move")
    t0 = time.perf_counter()
    hopper = nb01.MatrixSVD(nb01.grace_hopper(2), "Grace Hopper")
    print(f"one-off SVD of the {hopper.shape} image: {time.perf_counter() - t0:.2f} s")
    svds = nb01.WeightSVDs(le.load_pretrained("cpu"))
    rows = []
    _timed(nb01.low_rank_figure, hopper, 1, image=True)  # warm-up (matplotlib import, fonts)
    rows.append(("low_rank_figure (image)",
                 [_timed(nb01.low_rank_figure, hopper, r, image=True) for r in (0, 1, 20, 100, hopper.max_rank, 999)]))
    times = []
    for name in ("blocks.0.attn.q_proj", "blocks.0.mlp.up_proj", "lm_head"):
        svds.get(name)  # SVD once, as when the dropdown first shows a matrix
        times += [_timed(nb01.weight_rank_figure, svds, name, r) for r in (0, 1, 8, svds.get(name).max_rank)]
    rows.append(("weight_rank_figure", times))
    rows.append(("param_count_figure",
                 [_timed(nb01.param_count_figure, d, k, r) for d, k, r in
                  [(1, 1, 1), (64, 64, 4), (4096, 4096, 8), (4096, 4096, 256), (64, 64, 0)]]))
    rows.append(("scaling_figure (uncached)",
                 [_timed(nb02.scaling_figure, r, a) for r, a in [(1, 0.25), (4, 4.0), (64, 64.0), (16, 2.0)]]))
    rows.append(("scaling_figure (cached)", [_timed(nb02.scaling_figure, r, a) for r, a in [(1, 0.25), (64, 64.0)]]))
    print(f"{'callback':28s} {'worst s':>8s} {'mean s':>8s} {'worst/target':>12s}")
    for name, ts in rows:
        worst = max(ts)
        print(f"{name:28s} {worst:8.3f} {sum(ts) / len(ts):8.3f} {worst / TARGET_S:11.2f}×")


if __name__ == "__main__":
    main()

"""`python benchmarks/peft_bench.py`: runs, writes well-formed rows, works without PEFT, and its helpers behave.

No timing assertions: the numbers are checked for shape and sanity (finite, positive), never for speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ROOT, bench_row, finite, load_tool

bench = load_tool("benchmarks/peft_bench.py")


def _read_rows(path: Path) -> list[dict]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [json.loads(ln) for ln in lines]


def _check_common(row: dict, has_peft: bool) -> None:
    assert set(row) == set(bench.FIELDS)
    assert row["r"] == 8 and row["alpha"] == 16 and row["targets"] == ["q_proj", "v_proj"]
    assert row["device"] == "cpu" and row["torch"] == torch.__version__
    assert row["tokens"] == row["batch"] * row["seq"]
    for k in ["infer_ms_base", "infer_ms_ours_unmerged", "infer_ms_ours_merged", "infer_ms_ours_plain",
              "merge_ms_ours", "unmerge_ms_ours", "switch_ms_ours", "train_ms_full", "train_ms_lora",
              "train_state_MiB_full", "train_state_MiB_lora", "merged_over_base", "plain_over_base",
              "unmerged_over_base", "train_lora_over_full", "state_mem_lora_over_full"]:
        assert finite(row[k]) and row[k] > 0, (row["config"], k, row[k])
    # LoRA trains far fewer parameters and holds less state than full fine-tuning
    assert 0 < row["trainable_lora"] < row["trainable_full"]
    assert row["state_mem_lora_over_full"] < 1
    # the exact restore is exact; the default one stays small
    assert row["drift_1_ours_exact"] == 0 and row["drift_100_ours_exact"] == 0
    assert 0 <= row["drift_100_ours"] < 0.05
    # merging does not change what the model computes (up to the dtype's rounding)
    tol = 1e-4 if row["dtype"] == "float32" else 0.5
    assert row["maxabs_merged_vs_unmerged"] < tol
    # CPU: no honest peak-memory counter, no CUDA graphs
    assert math.isnan(row["train_peak_MiB_full"]) and math.isnan(row["peak_mem_lora_over_full"])
    assert math.isnan(row["infer_ms_ours_unmerged_graph"]) and row["cuda_graphs"] is False
    peft_keys = ["infer_ms_peft_unmerged", "infer_ms_peft_merged", "merge_ms_peft", "switch_ms_peft",
                 "train_ms_lora_peft", "ours_over_peft_unmerged", "merge_ours_over_peft", "switch_ours_over_peft",
                 "maxabs_unmerged_ours_vs_peft", "drift_100_peft"]
    if has_peft:
        assert row["peft"] and row["peft_adapter_dtype"] == "float32"
        for k in peft_keys:
            assert finite(row[k]), (row["config"], k, row[k])
        if row["dtype"] == "float32":  # same W0, A, B → the same numbers as PEFT
            assert row["maxabs_unmerged_ours_vs_peft"] <= 1e-5
            assert row["maxabs_merged_ours_vs_peft"] <= 1e-5
            assert row["maxabs_merged_weights_ours_vs_peft"] <= 1e-6
    else:
        assert row["peft"] is None and row["peft_adapter_dtype"] is None
        for k in peft_keys:
            assert math.isnan(row[k]), (k, row[k])


def test_cli_quick_json(tmp_path):
    """The smoke run used in CI: every configuration, every field, a table on stdout."""
    out = tmp_path / "rows.jsonl"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    tool = str(ROOT / "benchmarks" / "peft_bench.py")
    proc = subprocess.run([sys.executable, tool, "--quick", "--threads", "1", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _read_rows(out)
    expected = [c.name for c in bench.get_configs("cpu", quick=True)]
    assert [r["config"] for r in rows] == expected
    has_peft = bench._import_peft() is not None
    for row in rows:
        _check_common(row, has_peft)
        assert row["quick"] is True and row["threads"] == 1
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    for name in expected:
        assert name in proc.stdout
    assert "merged / base" in proc.stdout and f"wrote {out}" in proc.stdout


def test_without_peft(tmp_path, monkeypatch, capsys):
    """PEFT missing (import fails): the benchmark says so and measures lora_edu alone."""
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    assert bench._import_peft() is None
    out = tmp_path / "alone.jsonl"
    assert bench.main(["--quick", "--configs", "d128x2-fp32", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "PEFT is not installed" in captured.err
    rows = _read_rows(out)
    assert len(rows) == 1 and rows[0]["config"] == "d128x2-fp32"
    _check_common(rows[0], has_peft=False)
    table_lines = captured.out.splitlines()
    assert not any(ln.startswith("PEFT unmerged") for ln in table_lines)  # unmeasured rows are left out
    assert any(ln.startswith("lora_edu unmerged") for ln in table_lines)
    assert "merge time ≤ PEFT: not measured (no PEFT)" in captured.out


def test_no_matplotlib_at_import():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); import peft_bench; "
            "assert 'matplotlib' not in sys.modules; assert 'peft' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_configs_sized_for_device():
    cpu = {c.name: c for c in bench.get_configs("cpu")}
    gpu = {c.name: c for c in bench.get_configs("cuda")}
    assert "d4096x4-bf16" in gpu and "d4096x4-bf16" not in cpu
    assert {"toy", "d128x4-fp32", "d1024x8-bf16"} <= set(cpu)
    for name in cpu:
        assert cpu[name].tokens <= gpu[name].tokens
    assert gpu["d1024x8-bf16"].dtype == torch.bfloat16 and gpu["d128x4-fp32"].dtype == torch.float32
    assert (gpu["d1024x8-bf16"].d, gpu["d1024x8-bf16"].layers) == (1024, 8)
    with pytest.raises(ValueError, match="configs"):
        bench.run("cpu", quick=True, configs=["nope"], use_peft=False, log=lambda s: None)


def test_bench_stack_parameter_count():
    """q, k, v, o and a 4d MLP with biases, no norms: 12d² + 9d parameters per block (the anchors' count)."""
    d, layers = 128, 4
    stack = bench.BenchStack(d, layers)
    assert sum(p.numel() for p in stack.parameters()) == layers * (12 * d * d + 9 * d) == 791040
    x = torch.randn(2, 5, d)
    assert stack(x).shape == x.shape


def test_ratio_is_median_of_paired_ratios():
    samples = {"a": [2.0, 4.0, 30.0], "b": [1.0, 4.0, 10.0]}
    assert bench._ratio(samples, "a", "b") == 2.0  # per-round 2, 1, 3
    assert math.isnan(bench._ratio(samples, "a", "missing"))
    assert math.isnan(bench._safe_div(1.0, 0.0)) and math.isnan(bench._safe_div(math.nan, 1.0))
    assert bench._safe_div(1.0, 4.0) == 0.25


def test_table_and_targets_text():
    rows = [bench_row("toy", merged_over_base=1.004, ours_over_peft_unmerged=0.9, infer_ms_base=1.5, dtype="float32",
                 drift_100_ours_exact=0.0),
            bench_row("d1024", merged_over_base=1.2, dtype="bfloat16", drift_ours_over_peft=0.02,
                      drift_100_ours_exact=0.0)]
    table = bench.format_table(rows)
    assert "toy" in table and "d1024" in table and "1.004" in table
    assert "PEFT merged" not in table  # never measured → not shown
    targets = bench.format_targets(rows)
    assert "toy 1.004 ok" in targets and "d1024 1.200 MISSED" in targets
    assert "d1024 0.020 ok" in targets



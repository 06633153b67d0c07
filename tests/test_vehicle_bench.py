"""benchmarks/vehicle.py (make vehicle) runs end to end and reports every issue-11 target; a few steps only."""

from __future__ import annotations

import json

from .conftest import load_tool


def test_vehicle_table_runs_and_reports_every_target(tmp_path):
    vehicle = load_tool("benchmarks/vehicle.py")
    res = vehicle.main(["--seeds", "2", "--skip-t6", "--steps", "2", "--n-eval", "16", "--out", str(tmp_path),
                        "--cache", str(tmp_path / "runs.json")])
    saved = json.loads((tmp_path / "vehicle.json").read_text())
    assert saved["targets"].keys() == res["targets"].keys()
    assert {k[0] for k in res["targets"]} == set("acdef")
    assert all(isinstance(v["met"], bool) for v in res["targets"].values())
    assert "targets (issue 11)" in (tmp_path / "vehicle.txt").read_text()
    assert res["recipe"]["steps"] == 2 and res["seeds"] == [0, 1]
    # two steps of LoRA cannot solve a downstream task: the table reports what happened, it does not assume success
    assert not res["targets"]["a. pretrained LoRA r=4 ≥ 0.95 on every task, ≥ 4/5 seeds"]["met"]
    cached = json.loads((tmp_path / "runs.json").read_text())
    assert cached["recipe"]["steps"] == 2 and len(cached) > 2

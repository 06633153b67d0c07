"""Self-checks of notebook 09: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lora_edu.course import nb09
from lora_edu.course.checks import nb09 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


def test_ex1_matches_the_lab_count(capsys):
    want = nb09.RankLab().count_trainable(check.EX1_TARGETS, check.EX1_R)
    assert run(capsys, check.ex1, want)[0] and run(capsys, check.ex1, float(want))[0]
    assert run(capsys, check.ex1, str(want))[0], "numeric text is read as a number, as in every check"
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and str(want) not in out
    assert want == 3 * 8 * (128 + 128 + 320), "3 blocks; q, v 64×64, up 256×64"
    for wrong, says in [(want // 3, "one block"), (3 * 3 * 8 * 128, "up_proj was taken as 64×64"),
                        (3 * (64 * 64 * 2 + 256 * 64), "full matrices"),
                        (3 * 8 * (64 + 64 + 256), "or only one of the two factors"), (want + 1, "in every block"),
                        (want + 0.5, "whole")]:
        ok, out = run(capsys, check.ex1, wrong)
        assert not ok and says in out and f"{want:,}" not in out
    ok, out = run(capsys, check.ex1, 3 * 8 * 64, targets=("q_proj",))  # 3·8·(64+64+64) is also one block's
    assert not ok and "count both factors" in out
    ok, out = run(capsys, check.ex1, 3 * 8 * 128, targets=("up_proj",))  # alone, the square mistake is distinct
    assert not ok and "up_proj is not 64×64" in out


def test_ex2_predict_then_explain(capsys):
    ok, out = run(capsys, check.ex2)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex2, 1)
    assert not ok and "ratio after 1 step 1.000" in out and "after 30 steps" in out and "`why`" in out
    assert run(capsys, check.ex2, 1.0, "a")[0]


@pytest.mark.parametrize("prediction, says", [(2, "plain gradient descent"), (0.5, "only the learning rate"),
                                              (4, "enters twice"), (0.25, "enters twice"), (1.5, "one Adam step"),
                                              (-1, "never negative")])
def test_ex2_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex2, prediction, "a")
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("b", "plain gradient descent's"), ("c", "sets the size of Adam's first step"),
                                       ("d", "forward pass")])
def test_ex2_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex2, 1.0, why)
    assert not ok and says in out


@dataclass
class FakeRun:
    r: int
    exact: float
    task: str = check.EX3_SETTINGS["task"]
    targets: tuple = check.EX3_SETTINGS["targets"]
    alpha: float = check.EX3_SETTINGS["alpha"]
    lr: float = check.EX3_SETTINGS["lr"]
    steps: int = check.EX3_SETTINGS["steps"]


@dataclass
class FakeLab:
    runs: list


def test_ex3_reads_the_runs(capsys):
    lab = FakeLab([FakeRun(1, 0.5), FakeRun(2, 0.95), FakeRun(4, 1.0), FakeRun(8, 1.0)])
    assert run(capsys, check.ex3, 2, lab)[0] and run(capsys, check.ex3, "2", lab)[0]
    ok, out = run(capsys, check.ex3, None, lab)
    assert not ok and out.startswith("⏳") and "0.95" not in out, "unanswered: no run is read out"
    for wrong, says in [(4, "a smaller candidate does too"), (1, "reached 0.500"), ("none", "does reach"),
                        (3, "answer one of"), ("two", "answer one of")]:
        ok, out = run(capsys, check.ex3, wrong, lab)
        assert not ok and says in out


def test_ex3_needs_the_runs_with_these_settings(capsys):
    other = FakeLab([FakeRun(1, 0.99, steps=500), FakeRun(2, 0.95)])
    ok, out = run(capsys, check.ex3, 2, other)
    assert not ok and "no run with r in [1]" in out
    none = FakeLab([FakeRun(r, 0.3) for r in check.EX3_CANDIDATES])
    assert run(capsys, check.ex3, "none", none)[0]
    ok, out = run(capsys, check.ex3, 8, none)
    assert not ok and f"below {check.EX3_THRESHOLD}" in out
    ok, out = run(capsys, check.ex3, 2, FakeLab([FakeRun(1, 0.3)]))
    assert not ok and "Train them too" in out
    ok, out = run(capsys, check.ex3, 2, object())
    assert not ok and "RankLab" in out
    ok, out = run(capsys, check.ex3, 2, FakeLab([object(), FakeRun(1, 0.3), FakeRun(2, 0.95)]))
    assert ok, "an odd entry in lab.runs is skipped"


def test_ex3_with_a_real_lab(capsys, monkeypatch):
    monkeypatch.setitem(check.EX3_SETTINGS, "steps", 30)  # the check's code path, at a test's budget
    lab = nb09.RankLab(eval_examples=64, n_evals=1)
    for r in check.EX3_CANDIDATES:
        lab.run_training(r=r, **check.EX3_SETTINGS)
    lab.run_training(r=1, **dict(check.EX3_SETTINGS, steps=10))  # other settings: ignored by the check
    acc = {run_.r: run_.exact for run_ in lab.runs[:4]}
    smallest = next((r for r in check.EX3_CANDIDATES if acc[r] >= check.EX3_THRESHOLD), "none")
    assert run(capsys, check.ex3, smallest, lab)[0]
    wrong = 8 if smallest != 8 else 4
    ok, out = run(capsys, check.ex3, wrong, lab)
    assert not ok and "Not yet" in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    lab = FakeLab([FakeRun(r, 0.95) for r in check.EX3_CANDIDATES])
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex2, 1.0, bad)
    assert_safe(capsys, check.ex3, bad, lab)
    assert_safe(capsys, check.ex3, 1, bad)

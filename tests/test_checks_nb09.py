"""Self-checks of notebook 09 accept the right answer and explain typical wrong ones."""

from __future__ import annotations

from dataclasses import dataclass

from lora_edu.course import nb09
from lora_edu.course.checks import nb09 as check


def test_ex1_matches_the_lab_count(capsys):
    want = nb09.RankLab().count_trainable(check.EX1_TARGETS, check.EX1_R)
    assert check.ex1(want) is True and "Correct" in capsys.readouterr().out
    assert check.ex1(want // 2) is False and "one block" in capsys.readouterr().out
    assert check.ex1(2 * 3 * 8 * 128) is False and "up_proj is not 64×64" in capsys.readouterr().out
    assert check.ex1(2 * (64 * 64 * 2 + 256 * 64)) is False and "full matrices" in capsys.readouterr().out
    assert check.ex1(2 * 8 * (64 + 64 + 64)) is False and "both factors" in capsys.readouterr().out
    assert check.ex1(want + 1) is False and check.ex1(None) is False and check.ex1("9216") is False
    assert check.ex1(float(want)) is True and check.ex1(want + 0.5) is False


def test_ex2(capsys):
    assert check.ex2(4) is True
    assert check.ex2(64) is False and "at most r = 4" in capsys.readouterr().out
    assert check.ex2(0) is False and check.ex2(8) is False and check.ex2(None) is False and check.ex2(4.5) is False


@dataclass
class FakeRun:
    r: int
    accuracy: float
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
    assert check.ex3(2, lab) is True and "r = 2 is the smallest" in capsys.readouterr().out
    assert check.ex3(4, lab) is False and "r = 2 already reaches" in capsys.readouterr().out
    assert check.ex3(1, lab) is False and "only 0.500" in capsys.readouterr().out
    assert check.ex3(None, lab) is False
    assert check.ex3(3, lab) is False and "answer one of" in capsys.readouterr().out
    # a run with other settings does not count
    other = FakeLab([FakeRun(1, 0.99, steps=500), FakeRun(2, 0.95)])
    assert check.ex3(2, other) is False and "no run with r in [1]" in capsys.readouterr().out
    none = FakeLab([FakeRun(r, 0.3) for r in check.EX3_CANDIDATES])
    assert check.ex3(None, none) is True
    assert check.ex3(8, none) is False and "None" in capsys.readouterr().out
    assert check.ex3(None, FakeLab([])) is False and "Not answered" in capsys.readouterr().out
    assert check.ex3(2, FakeLab([FakeRun(1, 0.3)])) is False and "untested" in capsys.readouterr().out
    assert check.ex3(2, object()) is False and "RankLab" in capsys.readouterr().out


def test_ex3_with_a_real_lab(capsys):
    lab = nb09.RankLab(eval_examples=64, n_evals=1)
    for r in check.EX3_CANDIDATES:
        lab.run_training(r=r, **check.EX3_SETTINGS)
    lab.run_training(r=1, **dict(check.EX3_SETTINGS, steps=10))  # other settings: ignored by the check
    acc = {run.r: run.accuracy for run in lab.runs[:4]}
    smallest = next((r for r in check.EX3_CANDIDATES if acc[r] >= check.EX3_THRESHOLD), None)
    assert check.ex3(smallest, lab) is True
    wrong = 8 if smallest != 8 else 4
    assert check.ex3(wrong, lab) is False and "Not yet" in capsys.readouterr().out

"""Self-checks of notebook 07: right answers pass, each plausible mistake gets its diagnosis, nothing raises."""

from __future__ import annotations

import pytest
import torch

import lora_edu as le
from lora_edu.course.checks import nb07 as check

from .test_checks_feedback import FUZZ, FUZZ_IDS, assert_safe, run


@pytest.fixture(autouse=True)
def fresh():
    check.EX.reset()


def _right(A1, A2, i, j):
    U1 = torch.linalg.svd(A1, full_matrices=False).Vh[:i].T
    U2 = torch.linalg.svd(A2, full_matrices=False).Vh[:j].T
    return torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j)


def _vh_columns(A1, A2, i, j):
    V1 = torch.linalg.svd(A1, full_matrices=False).Vh[:, :i]
    V2 = torch.linalg.svd(A2, full_matrices=False).Vh[:, :j]
    return torch.linalg.matrix_norm(V1.T @ V2) ** 2 / min(i, j)


def _left_when_square(A1, A2, i, j):  # a first try that happens to run when both A are square
    if A1.shape[0] != A2.shape[0]:
        return _right(A1, A2, i, j)
    U1, U2 = torch.linalg.svd(A1).U[:, :i], torch.linalg.svd(A2).U[:, :j]
    return torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j)


def _left(A1, A2, i, j):
    U1, U2 = torch.linalg.svd(A1).U[:, :i], torch.linalg.svd(A2).U[:, :j]
    return torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j)


WRONG1 = {
    "the library": (le.subspace_similarity, "uses le.subspace_similarity"),
    "a wrapper of the library": (lambda A1, A2, i, j: le.subspace_similarity(A1, A2, i, j), "uses le.subspace"),
    "the grid": (lambda A1, A2, i, j: le.subspace_similarity_grid(A1, A2, i, j)[-1, -1], "uses le.subspace"),
    "not squared": (lambda A1, A2, i, j: (_right(A1, A2, i, j) * min(i, j)).sqrt() / min(i, j), "*squared*"),
    "divided by max": (lambda A1, A2, i, j: _right(A1, A2, i, j) * min(i, j) / max(i, j), "not max"),
    "not divided": (lambda A1, A2, i, j: _right(A1, A2, i, j) * min(i, j), "left out the division"),
    "columns of Vh": (_vh_columns, "ROWS"),
    "left vectors on square A": (_left_when_square, "left-singular"),
    "left vectors": (_left, "left-singular"),
    "constant": (lambda A1, A2, i, j: 0.5, "not Eq. (4)'s value"),
    "stub": (lambda A1, A2, i, j: None, "forget the `return`"),
    "a tensor of values": (lambda A1, A2, i, j: torch.ones(2), "one number"),
    "not a function": (0.3, "pass your function itself"),
}


def test_ex1(capsys):
    assert run(capsys, check.ex1, _right)[0]
    ok, out = run(capsys, check.ex1, None)
    assert not ok and out.startswith("⏳") and "Vh" not in out and "min(i, j)" not in out


@pytest.mark.parametrize("name", WRONG1)
def test_ex1_wrong_functions(capsys, name):
    fn, says = WRONG1[name]
    ok, out = run(capsys, check.ex1, fn)
    assert not ok and out.startswith("❌") and says in out


def test_ex2_predict_then_explain(capsys):
    ok, out = run(capsys, check.ex2)
    assert not ok and out.startswith("⏳") and "Measured" not in out
    ok, out = run(capsys, check.ex2, 1)
    assert not ok and "φ(A1, M·A1, 4, 4) = 1.0000" in out and "`why`" in out
    assert run(capsys, check.ex2, 0.999, "a")[0]


@pytest.mark.parametrize("prediction, says", [(4 / 64, "chance level"), (0.0, "orthogonal"), (0.5, "made of"),
                                              (1.5, "outside [0, 1]"), ("one", "not the text")])
def test_ex2_wrong_predictions(capsys, prediction, says):
    ok, out = run(capsys, check.ex2, prediction, "a")
    assert not ok and says in out


@pytest.mark.parametrize("why, says", [("b", "not independent"), ("c", "only when the two top-i"),
                                       ("d", "individual singular vectors"), (None, "Now explain")])
def test_ex2_wrong_explanations(capsys, why, says):
    ok, out = run(capsys, check.ex2, 1.0, why)
    assert not ok and says in out


def _amp(W, dW, r):
    U, S, Vh = torch.linalg.svd(dW, full_matrices=False)
    return float(torch.linalg.matrix_norm(dW) / torch.linalg.matrix_norm(U[:, :r].T @ W @ Vh[:r].T))


def _amp_with(proj):
    fro = torch.linalg.matrix_norm
    return lambda W, dW, r: float(fro(dW) / fro(proj(W, dW, r)))


def _svd(M):
    return torch.linalg.svd(M, full_matrices=False)


WRONG3 = {
    "the library": (le.amplification_factor, "uses le.amplification_factor"),
    "projection_norm": (lambda W, dW, r: float(torch.linalg.matrix_norm(dW)) / le.projection_norm(
        W, _svd(dW).U[:, :r], _svd(dW).Vh[:r]), "uses le.projection_norm"),
    "inverted": (lambda W, dW, r: 1 / _amp(W, dW, r), "inverted"),
    "squared norms": (lambda W, dW, r: _amp(W, dW, r) ** 2, "squared norms"),
    "W's own directions": (_amp_with(lambda W, dW, r: _svd(W).U[:, :r].T @ W @ _svd(W).Vh[:r].T), "W's own"),
    "the whole W": (_amp_with(lambda W, dW, r: W), "divided by ‖W‖_F"),
    "ΔW projected": (_amp_with(lambda W, dW, r: _svd(dW).U[:, :r].T @ dW @ _svd(dW).Vh[:r].T), "projected ΔW"),
    "Vh columns": (_amp_with(lambda W, dW, r: _svd(dW).U[:, :r].T @ W @ _svd(dW).Vh[:, :r]), "rows of Vh"),
    "stub": (lambda W, dW, r: None, "forget the `return`"),
    "U on both sides": (_amp_with(lambda W, dW, r: _svd(dW).U[:, :r].T @ W @ _svd(dW).U[:, :r]), "not §7.3's"),
    "raises": (lambda W, dW, r: torch.zeros(3) @ W, "raised RuntimeError"),
    "not a function": (21.5, "pass your function itself"),
}


def test_ex3(capsys):
    assert run(capsys, check.ex3, _amp)[0]
    ok, out = run(capsys, check.ex3, None)
    assert not ok and out.startswith("⏳") and "svd(" not in out


@pytest.mark.parametrize("name", WRONG3)
def test_ex3_wrong_functions(capsys, name):
    fn, says = WRONG3[name]
    ok, out = run(capsys, check.ex3, fn)
    assert not ok and out.startswith("❌") and says in out


@pytest.mark.parametrize("bad", FUZZ, ids=FUZZ_IDS)
def test_never_raises(capsys, bad):
    assert_safe(capsys, check.ex1, bad)
    assert_safe(capsys, check.ex2, bad)
    assert_safe(capsys, check.ex2, 1.0, bad)
    assert_safe(capsys, check.ex3, bad)

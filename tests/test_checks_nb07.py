"""Self-checks of notebook 07 accept the right answer and explain typical wrong ones."""

from __future__ import annotations

import torch

import lora_edu as le
from lora_edu.course.checks import nb07 as check


def _right(A1, A2, i, j):
    U1 = torch.linalg.svd(A1, full_matrices=False).Vh[:i].T
    U2 = torch.linalg.svd(A2, full_matrices=False).Vh[:j].T
    return torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j)


def test_ex1(capsys):
    assert check.ex1(_right) is True
    assert check.ex1(lambda A1, A2, i, j: le.subspace_similarity(A1, A2, i, j)) is True
    assert "Correct" in capsys.readouterr().out

    def not_squared(A1, A2, i, j):
        return _right(A1, A2, i, j).mul(min(i, j)).sqrt() / min(i, j)

    def by_max(A1, A2, i, j):
        return _right(A1, A2, i, j) * min(i, j) / max(i, j)

    def vh_columns(A1, A2, i, j):
        V1 = torch.linalg.svd(A1, full_matrices=False).Vh[:, :i]
        V2 = torch.linalg.svd(A2, full_matrices=False).Vh[:, :j]
        return torch.linalg.matrix_norm(V1.T @ V2) ** 2 / min(i, j)

    def left(A1, A2, i, j):
        U1 = torch.linalg.svd(A1, full_matrices=False).U[:, :i]
        U2 = torch.linalg.svd(A2, full_matrices=False).U[:, :j]
        return torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j)

    assert check.ex1(not_squared) is False and "square" in capsys.readouterr().out
    assert check.ex1(by_max) is False and "min(i, j), not max" in capsys.readouterr().out
    assert check.ex1(lambda A1, A2, i, j: _right(A1, A2, i, j) * min(i, j)) is False
    assert "forgot to divide" in capsys.readouterr().out
    assert check.ex1(vh_columns) is False
    out = capsys.readouterr().out
    assert "ROWS of Vh" in out or "raised" in out
    assert check.ex1(left) is False
    out = capsys.readouterr().out
    assert "left-singular" in out or "raised" in out
    assert check.ex1(lambda A1, A2, i, j: 0.5) is False and "expected" in capsys.readouterr().out
    assert check.ex1(None) is False and "Not answered" in capsys.readouterr().out
    assert check.ex1(0.3) is False and "function" in capsys.readouterr().out


def test_ex1_left_vectors_are_named_when_shapes_allow(capsys):
    def left_square_only(A1, A2, i, j):  # works only when both A are square, as a learner's first try might
        if A1.shape[0] != A2.shape[0]:
            return _right(A1, A2, i, j)
        U1 = torch.linalg.svd(A1).U[:, :i]
        U2 = torch.linalg.svd(A2).U[:, :j]
        return torch.linalg.matrix_norm(U1.T @ U2) ** 2 / min(i, j)

    assert check.ex1(left_square_only) is False and "left-singular" in capsys.readouterr().out


def test_ex2(capsys):
    assert check.ex2(0.25) is True and check.ex2(16 / 64) is True and check.ex2(0.27) is True
    assert check.ex2(4 / 64) is False and "min(i, j)/k" in capsys.readouterr().out
    assert check.ex2(1.0) is False and "divides by min" in capsys.readouterr().out
    assert check.ex2(0) is False and "not orthogonal" in capsys.readouterr().out
    assert check.ex2(0.6) is False and check.ex2("a quarter") is False and check.ex2(None) is False


def test_ex3(capsys):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 64, generator=g) * 0.3
    dW = torch.randn(64, 4, generator=g) @ torch.randn(4, 64, generator=g)
    want = le.amplification_factor(W, dW, 4)
    assert check.ex3(want, W, dW) is True and "Correct" in capsys.readouterr().out
    assert check.ex3(1 / want, W, dW) is False and "inverted" in capsys.readouterr().out
    assert check.ex3(want ** 2, W, dW) is False and "squared" in capsys.readouterr().out
    fro = torch.linalg.matrix_norm
    assert check.ex3(float(fro(dW) / fro(W)), W, dW) is False and "divided by ‖W‖_F" in capsys.readouterr().out
    U, S, Vh = torch.linalg.svd(W.double())
    own = float(fro(dW.double())) / float(fro(U[:, :4].T @ W.double() @ Vh[:4].T))
    assert check.ex3(own, W, dW) is False and "W's own top directions" in capsys.readouterr().out
    assert check.ex3(want * 1.5, W, dW) is False and "Recipe" in capsys.readouterr().out
    assert check.ex3(None, W, dW) is False and check.ex3("big", W, dW) is False

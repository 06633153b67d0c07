"""Training: LoRA (r=4 on q, v) fixes every downstream task; the checkpoint is what it says; runs repeat on CPU."""

from __future__ import annotations

import copy

import pytest
import torch

import lora_edu as le

# Fast-mode budgets (steps at lr 1e-2): sort learns slowest with q, v only.
STEPS = {"increment": 150, "reverse": 200, "rotate": 200, "sort": 500}


def test_every_downstream_task_has_a_budget():
    assert set(STEPS) == set(le.DOWNSTREAM_TASKS)


@pytest.mark.parametrize("task", le.DOWNSTREAM_TASKS)
def test_lora_beats_the_pretrained_model(pretrained, device, task):
    before = le.evaluate(pretrained, task)
    assert before < 0.5  # the pretrained model (a copier) is bad at the downstream task
    frozen = {k: v.clone() for k, v in pretrained.state_dict().items()}
    le.seed_everything(0)
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4)
    hist = le.train(pretrained, task, STEPS[task], lr=1e-2, progress=False, eval_examples=128)
    after = le.evaluate(pretrained, task)
    assert after >= before + 0.15, f"{task}: {before:.3f} → {after:.3f}"
    if task == "increment":
        assert after >= 0.9
    assert sum(hist["loss"][-10:]) < sum(hist["loss"][:10])
    assert all(p.device.type == device.type for p in pretrained.parameters())
    # LoRA training moved only A and B: every pretrained tensor is bit-identical
    le.remove_lora(pretrained, merge=False)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_shipped_checkpoint_reaches_its_stated_accuracy(pretrained):
    stated = le.pretrained_info()["lora_edu_accuracy"]
    assert set(stated) == {le.PRETRAIN_TASK}
    acc = le.evaluate(pretrained, le.PRETRAIN_TASK, n_examples=2048)
    assert acc >= stated[le.PRETRAIN_TASK] - 0.005
    assert acc >= 0.99


def test_training_is_deterministic_on_cpu(_pretrained_cpu):
    def run(seed):
        m = copy.deepcopy(_pretrained_cpu)
        le.seed_everything(0)
        le.add_lora(m, ("q_proj", "v_proj"), r=4, dropout=0.1)
        h = le.train(m, "reverse", 12, lr=1e-2, seed=seed, progress=False, eval_examples=32)
        return h["loss"], le.lora_state_dict(m)

    (l1, s1), (l2, s2), (l3, _) = run(0), run(0), run(1)
    assert l1 == l2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert l1 != l3


def test_history_callback_and_eval_every(pretrained):
    le.add_lora(pretrained, "q_proj", r=2)
    calls = []
    hist = le.train(pretrained, "rotate", 6, eval_every=2, eval_examples=16, progress=False,
                    callback=lambda step, loss: calls.append((step, loss)))
    assert hist["task"] == "rotate"
    assert hist["step"] == [1, 2, 3, 4, 5, 6] and len(hist["loss"]) == 6
    assert calls == list(zip(hist["step"], hist["loss"]))
    assert hist["eval_step"] == [2, 4, 6] and len(hist["accuracy"]) == 3
    assert all(0.0 <= a <= 1.0 for a in hist["accuracy"])
    assert hist["seconds"] > 0 and hist["steps_per_second"] > 0
    assert not pretrained.training


def test_progress_bar_runs(pretrained, capsys):
    le.add_lora(pretrained, "v_proj", r=2)
    hist = le.train(pretrained, "copy", 3, progress=True, eval_examples=8)
    assert len(hist["loss"]) == 3


def test_full_fine_tuning_also_trains(pretrained):
    hist = le.train(pretrained, "increment", 5, lr=1e-3, progress=False, eval_examples=8)
    assert len(hist["loss"]) == 5  # no LoRA: every parameter of the model is trainable


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(steps=-1), "steps"),
    (dict(steps=2.0), "steps"),
    (dict(steps=True), "steps"),
    (dict(lr=0), "lr"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr="1e-3"), "lr"),
    (dict(eval_every=0), "eval_every"),
    (dict(task="transpose"), "task"),
])
def test_bad_arguments_leave_model_untouched(pretrained, snapshot, kwargs, match):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=2)
    snap = snapshot(pretrained)
    args = {"task": "reverse", "steps": 3, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        le.train(pretrained, **args)
    snap.assert_unchanged(pretrained)


def test_nothing_trainable_is_refused(pretrained, snapshot):
    for p in pretrained.parameters():
        p.requires_grad_(False)
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="no trainable parameters"):
        le.train(pretrained, "reverse", 3, progress=False)
    snap.assert_unchanged(pretrained)

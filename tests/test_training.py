"""Training: LoRA (r=4 on q, v) fixes every downstream task; the checkpoint is what it says; runs repeat on CPU."""

from __future__ import annotations

import copy

import pytest
import torch

import lora_edu as le

STEPS = 100  # a third of the notebooks' budget: enough for every downstream task from the checkpoint


@pytest.mark.parametrize("task", le.DOWNSTREAM_TASKS)
def test_lora_beats_the_pretrained_model(pretrained, device, task):
    before = le.evaluate(pretrained, task, metric="sequence")
    assert before < 0.2  # a word the pretrained model never saw: it cannot answer yet
    frozen = {k: v.clone() for k, v in pretrained.state_dict().items()}
    le.seed_everything(0)
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=4, alpha=8)
    hist = le.train(pretrained, task, STEPS, lr=1e-2, weight_decay=1.0, progress=False, eval_examples=128)
    after = le.evaluate(pretrained, task, metric="sequence")
    assert after >= 0.9, f"{task}: {before:.3f} → {after:.3f}"
    assert sum(hist["loss"][-10:]) < sum(hist["loss"][:10])
    assert all(p.device.type == device.type for p in pretrained.parameters())
    # LoRA training moved only A and B: every pretrained tensor is bit-identical
    le.remove_lora(pretrained, merge=False)
    for k, v in pretrained.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_shipped_checkpoint_reaches_its_stated_accuracy(pretrained):
    stated = le.pretrained_info()["lora_edu_accuracy"]  # whole-answer accuracy per skill, 2048 examples each
    assert set(stated) == set(le.TASKS[le.PRETRAIN_TASK].parts)
    for skill in ("rot3", "add1", "sub2", "rsub4"):  # a sample: evaluating all 19 skills would take too long
        acc = le.evaluate(pretrained, skill, n_examples=512, metric="sequence")
        assert acc >= min(stated[skill] - 0.02, 0.97), skill


def test_training_is_deterministic_on_cpu(_pretrained_cpu):
    def run(seed):
        m = copy.deepcopy(_pretrained_cpu)
        le.seed_everything(0)
        le.add_lora(m, ("q_proj", "v_proj"), r=4, dropout=0.1)
        h = le.train(m, "plus3", 12, lr=1e-2, seed=seed, progress=False, eval_examples=32)
        return h["loss"], le.lora_state_dict(m)

    (l1, s1), (l2, s2), (l3, _) = run(0), run(0), run(1)
    assert l1 == l2
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert l1 != l3


def test_history_callback_and_eval_every(pretrained):
    le.add_lora(pretrained, "q_proj", r=2)
    calls = []
    hist = le.train(pretrained, "rminus1", 6, eval_every=2, eval_examples=16, progress=False,
                    callback=lambda step, loss: calls.append((step, loss)))
    assert hist["task"] == "rminus1"
    assert hist["step"] == [1, 2, 3, 4, 5, 6] and len(hist["loss"]) == 6
    assert calls == list(zip(hist["step"], hist["loss"]))
    assert hist["eval_step"] == [2, 4, 6] and len(hist["accuracy"]) == 3
    assert all(0.0 <= a <= 1.0 for a in hist["accuracy"])
    assert hist["seconds"] > 0 and hist["steps_per_second"] > 0
    assert not pretrained.training


def test_progress_bar_runs(pretrained, capsys):
    le.add_lora(pretrained, "v_proj", r=2)
    hist = le.train(pretrained, "rot0", 3, progress=True, eval_examples=8)
    assert len(hist["loss"]) == 3


def test_full_fine_tuning_also_trains(pretrained):
    hist = le.train(pretrained, "minus5", 5, lr=1e-3, progress=False, eval_examples=8)
    assert len(hist["loss"]) == 5  # no LoRA: every parameter of the model is trainable


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    (dict(steps=-1), ValueError, "steps"),
    (dict(steps=2.0), TypeError, "steps"),
    (dict(steps=True), TypeError, "steps"),
    (dict(lr=0), ValueError, "lr"),
    (dict(lr=-1e-3), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(lr=float("inf")), ValueError, "lr"),  # was accepted: the weights became NaN
    (dict(lr=10**400), ValueError, "lr"),  # was an OverflowError
    (dict(lr="1e-3"), TypeError, "lr"),
    (dict(eval_every=0), ValueError, "eval_every"),
    (dict(eval_every=True), TypeError, "eval_every"),
    (dict(eval_examples=0), ValueError, "eval_examples"),  # was: every step trained, then an error, history lost
    (dict(batch_size=0), ValueError, "batch_size"),  # was caught inside the loop, model left in train mode
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(weight_decay="x"), TypeError, "weight_decay"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(seed="x"), TypeError, "seed"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(callback=5), TypeError, "callback"),  # was: one optimizer step changed B, then a TypeError
    (dict(progress="no"), TypeError, "progress"),
    (dict(desc=3), TypeError, "desc"),
    (dict(task="transpose"), ValueError, "task"),
    (dict(task=None), TypeError, "task"),
])
def test_bad_arguments_leave_model_untouched(pretrained, snapshot, kwargs, exc, match):
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=2)
    snap = snapshot(pretrained)
    args = {"task": "plus3", "steps": 3, "progress": False, **kwargs}
    with pytest.raises(exc, match=match):
        le.train(pretrained, **args)
    snap.assert_unchanged(pretrained)


def test_merged_lora_model_is_refused_before_training(pretrained, snapshot):
    """Was autograd's "element 0 of tensors does not require grad" after the model had been put in train mode."""
    le.add_lora(pretrained, ("q_proj", "v_proj"), r=2)
    le.merge_lora(pretrained)
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="merged LoRA layers .*unmerge_lora"):
        le.train(pretrained, "plus3", 3, progress=False)
    snap.assert_unchanged(pretrained)


def test_an_error_while_training_restores_the_mode(pretrained):
    le.add_lora(pretrained, "q_proj", r=2)
    pretrained.eval()

    def stop(step, loss):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        le.train(pretrained, "plus3", 3, progress=False, callback=stop)
    assert not pretrained.training


def test_nothing_trainable_is_refused(pretrained, snapshot):
    for p in pretrained.parameters():
        p.requires_grad_(False)
    snap = snapshot(pretrained)
    with pytest.raises(ValueError, match="no trainable parameters"):
        le.train(pretrained, "plus3", 3, progress=False)
    snap.assert_unchanged(pretrained)

"""The toy transformer, the synthetic tasks, the shipped checkpoint and the runtime knobs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import lora_edu as le
from lora_edu import tasks as T
from lora_edu.pretrained import CHECKPOINT

# ---- model ---------------------------------------------------------------------------------------------


def test_forward_shapes_and_attention_maps(pretrained, tokens):
    logits = pretrained(tokens)
    assert logits.shape == (8, 15, 20)
    logits2, atts = pretrained(tokens, return_attn=True)
    assert len(atts) == 3
    for att in atts:
        assert att.shape == (8, 4, 15, 15)
        torch.testing.assert_close(att.sum(-1), torch.ones_like(att.sum(-1)))
        assert torch.all(att.triu(1) == 0)  # causal: no position looks ahead
    torch.testing.assert_close(logits2, logits, rtol=1e-5, atol=1e-5)  # explicit softmax path == SDPA path


def test_causality(pretrained, tokens):
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 3) % 10
    a, b = pretrained(tokens), pretrained(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_separate_projections_with_peft_names():
    m = le.ToyTransformer(le.ToyConfig(d_model=32, n_layer=3, n_head=2, d_ff=48))
    attn = m.blocks[2].attn
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        lin = getattr(attn, name)
        assert type(lin) is nn.Linear and lin.weight.shape == (32, 32)
    assert m.blocks[0].mlp.up_proj.weight.shape == (48, 32)
    assert m.blocks[0].mlp.down_proj.weight.shape == (32, 48)
    assert len(m.weight_matrices()) == 3 * 6 + 1
    assert m.cfg.to_dict()["d_ff"] == 48


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    (dict(d_model=30, n_head=4), ValueError, "divisible"),
    (dict(n_layer=0), ValueError, "n_layer"),
    (dict(n_layer=10**6), ValueError, "n_layer"),  # would ask for terabytes
    (dict(d_model=2**20), ValueError, "d_model"),
    (dict(vocab_size=2.5), TypeError, "vocab_size"),
    (dict(d_ff=True), TypeError, "d_ff"),
    (dict(dropout=1.0), ValueError, "dropout"),
    (dict(dropout="0"), TypeError, "dropout"),
    (dict(bias="yes"), TypeError, "bias"),
])
def test_bad_config(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        le.ToyConfig(**kwargs)


def test_bad_tokens(pretrained, device):
    with pytest.raises(ValueError, match="tokens must have shape"):
        pretrained(torch.zeros(5, dtype=torch.long, device=device))
    with pytest.raises(ValueError, match="max_len"):
        pretrained(torch.zeros(1, 33, dtype=torch.long, device=device))


# ---- tasks ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "x", "y"), [
    ("rot0", "314159", "314159"),
    ("rot1", "314159", "141593"),
    ("add1", "314159", "455642"),  # x_i + x_(i+1) mod 10, wrapping around: 9 + 3 = 12 → 2
    ("sub2", "314159", "909228"),  # x_i − x_(i+2) mod 10: 3 − 4 → 9
    ("rsub2", "314159", "101882"),  # x_(i+2) − x_i mod 10
    ("plus3", "314159", "463463"),  # plus3 asks for add3's rule
    ("minus5", "314159", "483744"),  # minus5 asks for sub5's
    ("rminus1", "314159", "837444"),  # rminus1 asks for rsub1's
    ("rot1-as-add", "314159", "455642"),  # the prompt says rot 1, the answer follows add 1
    ("plus3-as-sub", "314159", "265845"),  # plus3's prompt answered with sub3's rule
])
def test_task_rules(name, x, y):
    task = le.get_task(name)
    assert task.fn(T.encode(x)).tolist() == T.encode(y).tolist()
    assert le.get_task(task) is task


def test_task_registry():
    assert le.PRETRAIN_TASK == "pretrain" and le.PRETRAIN_TASK in le.TASKS
    assert len(le.DOWNSTREAM_TASKS) >= 3
    assert set(le.DOWNSTREAM_TASKS) <= set(le.TASKS) and le.PRETRAIN_TASK not in le.DOWNSTREAM_TASKS
    assert all(le.TASKS[n].description for n in le.TASKS)
    mix = le.TASKS[le.PRETRAIN_TASK]
    # a downstream task is never pretrained: neither its word nor the (op, k) pair it asks for
    for name in le.DOWNSTREAM_TASKS:
        t = le.get_task(name)
        assert t.op in T.NEW_WORDS and name not in mix.parts
        assert f"{T.NEW_WORDS[t.op]}{t.k}" in T.HELD_OUT and f"{T.NEW_WORDS[t.op]}{t.k}" not in mix.parts
        assert torch.equal(t.fn(T.encode("314159")), le.get_task(f"{T.NEW_WORDS[t.op]}{t.k}").fn(T.encode("314159")))
    assert all(le.get_task(p).op in T.RULES for p in mix.parts)
    assert {p for p in mix.parts if p.startswith("rot")} == {f"rot{k}" for k in range(T.N_DIGITS)}


@pytest.mark.parametrize("name", [n for n in le.TASKS if n != le.PRETRAIN_TASK])
def test_batch_layout(name, device):
    task = le.get_task(name)
    inputs, targets = task.batch(32, torch.Generator().manual_seed(3), device)
    n = task.n
    assert inputs.shape == targets.shape == (32, task.seq_len) == (32, 2 * n + 3)
    assert inputs.device.type == device.type and inputs.dtype == torch.long
    assert torch.all(inputs[:, 0] == T.BOS) and torch.all(inputs[:, 1] == T.OPS[task.op])
    assert torch.all(inputs[:, 2] == task.k) and torch.all(inputs[:, n + 3] == T.SEP)
    x = inputs[:, 3:n + 3].cpu()
    assert torch.all((x >= 0) & (x < 10))
    assert torch.all(targets[:, :n + 3] == -100)  # the prompt, the digits and SEP are given, not scored
    assert torch.all(targets[:, n + 3:] >= 0)
    answer = targets[:, task.answer_slice()].cpu()
    assert torch.equal(answer, task.fn(x))
    assert torch.equal(inputs[:, n + 4:].cpu(), answer[:, :-1])  # teacher forcing: input is target shifted


def test_pretraining_mixture_batches():
    mix = le.get_task(le.PRETRAIN_TASK)
    inputs, targets = mix.batch(512, torch.Generator().manual_seed(0))
    ops = {T.OPS[le.get_task(p).op] for p in mix.parts}
    assert set(inputs[:, 1].tolist()) == ops  # every pretraining op appears, and no new word
    for i in range(0, 512, 37):  # each row is one of its skills, answered by that skill's rule
        task = le.get_task(f"{T.decode(inputs[i, 1:2])}{int(inputs[i, 2])}")
        assert task.name in mix.parts
        assert torch.equal(targets[i, task.answer_slice()], task.fn(inputs[i:i + 1, 3:task.n + 3])[0])
    a, b = mix.batch(64, torch.Generator().manual_seed(1)), mix.batch(64, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_batches_are_seeded():
    task = le.get_task("add2")
    a = task.batch(16, torch.Generator().manual_seed(5))
    b = task.batch(16, torch.Generator().manual_seed(5))
    c = task.batch(16, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_encode_decode():
    assert T.encode("3 1 4").tolist() == [[3, 1, 4]]
    assert T.encode([0, 9]).tolist() == [[0, 9]]
    copy3 = dataclasses.replace(le.get_task("rot0"), n=3)  # make() needs exactly n digits per row
    inputs, _ = copy3.make(T.encode("314"))
    assert T.decode(inputs[0]) == "<bos> rot 0 3 1 4 | 3 1"
    assert T.decode(T.encode(torch.tensor([7, 0]))[0].int()) == "7 0"  # tensors of any integer dtype
    inputs32, targets32 = copy3.make(T.encode("314").int())
    assert torch.equal(inputs32, inputs) and targets32.dtype == torch.long


@pytest.mark.parametrize(("call", "exc", "match"), [
    (lambda: le.get_task("transpose"), ValueError, "task must be one of"),
    (lambda: le.get_task(3), TypeError, "task must be"),
    (lambda: T.encode("3a"), ValueError, "digits must"),
    (lambda: T.encode(3), TypeError, "digits must"),
    (lambda: T.decode("<bos> 3"), TypeError, "tokens must"),
    (lambda: le.get_task("rot0").make(torch.zeros(1, 6)), TypeError, "x must be an integer tensor"),
    (lambda: le.get_task("rot0").make(torch.zeros(1, 9, dtype=torch.long)), ValueError, r"x must be a \(batch, 6\)"),
    (lambda: le.get_task("rot0").batch(2, generator=5), TypeError, "generator must"),
    (lambda: le.get_task(le.PRETRAIN_TASK).batch(2, generator=5), TypeError, "generator must"),
    (lambda: le.get_task(le.PRETRAIN_TASK).batch(0), ValueError, "batch_size"),
    (lambda: T.Task("mul", 1), ValueError, "op must be one of"),
    (lambda: T.Task("add", 6), ValueError, "k an int"),
    (lambda: T.Task("add", 1.0), ValueError, "k an int"),
    (lambda: T.Task("add", 1, rule="plus"), ValueError, "rule must"),
    (lambda: T.encode([1, 10]), ValueError, "digits"),
    (lambda: T.encode([-1]), ValueError, "digits"),
    (lambda: le.get_task("rot0").batch(0), ValueError, "batch_size"),
    (lambda: le.get_task("rot0").batch(2.0), ValueError, "batch_size"),
])
def test_task_bad_inputs(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# ---- checkpoint ----------------------------------------------------------------------------------------

def test_checkpoint_is_small_safetensors_with_metadata():
    assert CHECKPOINT.suffix == ".safetensors" and CHECKPOINT.stat().st_size <= 2 * 1024 * 1024
    info = le.pretrained_info()
    assert set(info) >= {"lora_edu_config", "lora_edu_recipe", "lora_edu_accuracy"}
    assert info["lora_edu_recipe"]["task"] == le.PRETRAIN_TASK
    assert le.ToyConfig(**info["lora_edu_config"]) == le.ToyConfig()


def test_load_pretrained(device):
    m = le.load_pretrained()
    assert isinstance(m, le.ToyTransformer) and not m.training
    assert next(m.parameters()).device.type == device.type
    assert le.count_parameters(m)[0] == le.count_parameters(le.ToyTransformer())[0]
    cpu = le.load_pretrained(device="cpu")
    assert next(cpu.parameters()).device.type == "cpu"


def test_pretrained_info_refuses_other_files(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(ValueError, match="not a lora_edu toy checkpoint"):
        le.pretrained_info(p)


def test_generate_and_evaluate(pretrained):
    x = T.encode("314159").repeat(3, 1)
    out = le.generate(pretrained, x, "rot0")
    assert out.shape == (3, 6) and out.device.type == "cpu"
    assert torch.equal(out, x)  # the pretrained model copies (rot 0)
    assert torch.equal(le.generate(pretrained, x, "add1"), le.get_task("add1").fn(x))  # and adds
    info = le.pretrained_info()["lora_edu_accuracy"]
    assert set(info) == set(le.TASKS[le.PRETRAIN_TASK].parts) and min(info.values()) >= 0.99  # every skill learned
    assert le.evaluate(pretrained, "add1", n_examples=64, metric="sequence") >= 0.95
    for name in le.DOWNSTREAM_TASKS:  # a new word: the pretrained model cannot answer until adapted
        seq = le.evaluate(pretrained, name, n_examples=256, metric="sequence")
        tok = le.evaluate(pretrained, name, n_examples=256)
        assert 0.0 <= seq <= tok and seq < 0.2
    mix = le.evaluate(pretrained, le.PRETRAIN_TASK, n_examples=32, metric="sequence")
    assert mix >= 0.95  # the mixture's accuracy is the mean over its skills
    with pytest.raises(ValueError, match="mixture"):
        le.generate(pretrained, x, le.PRETRAIN_TASK)
    with pytest.raises(ValueError, match=r"x must be a \(batch, 6\)"):
        le.generate(pretrained, T.encode("3141"), "rot0")
    assert pretrained.training is False


@pytest.mark.parametrize(("kwargs", "exc", "match"), [
    (dict(metric="f1"), ValueError, "metric"),
    (dict(n_examples=0), ValueError, "n_examples"),
    (dict(n_examples=True), TypeError, "n_examples"),
    (dict(batch_size=0), ValueError, "batch_size"),  # was "range() arg 3 must not be zero"
    (dict(batch_size=-1), ValueError, "batch_size"),  # was ZeroDivisionError
    (dict(seed="1"), TypeError, "seed"),
])
def test_evaluate_bad_inputs(pretrained, snapshot, kwargs, exc, match):
    pretrained.train()
    snap = snapshot(pretrained)
    with pytest.raises(exc, match=match):
        le.evaluate(pretrained, "rot0", **kwargs)
    snap.assert_unchanged(pretrained)


# ---- runtime -------------------------------------------------------------------------------------------

def test_get_device(monkeypatch):
    monkeypatch.delenv("LORA_EDU_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert le.get_device().type == expected
    monkeypatch.setenv("LORA_EDU_DEVICE", "cpu")
    assert le.get_device() == torch.device("cpu")
    assert le.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LORA_EDU_DEVICE", "")
    assert le.get_device().type == expected
    with pytest.raises(ValueError, match="device must be one of"):
        le.get_device("meta")
    for bad in ("bogus", "gpu", "CPU", " cpu", "cuda:-1", -1):
        with pytest.raises(ValueError, match="device must be one of"):
            le.get_device(bad)
        monkeypatch.setenv("LORA_EDU_DEVICE", str(bad))
        with pytest.raises(ValueError, match="LORA_EDU_DEVICE must be one of"):
            le.get_device()
        assert le.get_device("cpu") == torch.device("cpu")  # an explicit device wins over the variable
    monkeypatch.delenv("LORA_EDU_DEVICE")
    with pytest.raises(TypeError, match="device must be"):
        le.get_device(1.5)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            le.get_device("cuda")


def test_seed_everything():
    g = le.seed_everything(3)
    a = torch.randn(4)
    b = torch.randn(4, generator=g)
    le.seed_everything(3)
    assert torch.equal(torch.randn(4), a)
    assert torch.equal(torch.randn(4, generator=torch.Generator().manual_seed(3)), b)
    with pytest.raises(TypeError, match="seed"):
        le.seed_everything("3")


def test_fast_mode_and_pick(monkeypatch):
    for value, expected in (("1", True), ("true", True), ("YES", True), ("0", False), ("", False)):
        monkeypatch.setenv("LORA_EDU_FAST", value)
        assert le.fast_mode() is expected
        assert le.pick(600, 60) == (60 if expected else 600)
    monkeypatch.delenv("LORA_EDU_FAST")
    assert le.fast_mode() is False


def test_make_keeps_the_device_of_x(device):
    x = T.encode("314159").to(device)
    inputs, targets = le.get_task("plus3").make(x)
    assert inputs.device.type == device.type
    assert T.decode(inputs[0].cpu()) == "<bos> plus 3 3 1 4 1 5 9 | 4 6 3 4 6"

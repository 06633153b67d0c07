"""`python -m lora_edu.pretrain` is deterministic and the shipped checkpoint records the recipe that made it."""

from __future__ import annotations

import torch

import lora_edu as le
from lora_edu import pretrain


def test_pretraining_is_deterministic_on_cpu():
    torch.set_num_threads(1)
    a, ra = pretrain.pretrain(steps=25, progress=False)
    b, rb = pretrain.pretrain(steps=25, progress=False)
    assert ra == rb
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    fresh = le.ToyTransformer(a.cfg).state_dict()
    assert not torch.equal(sa["blocks.0.attn.q_proj.weight"], fresh["blocks.0.attn.q_proj.weight"])


def test_shipped_checkpoint_records_recipe_and_config():
    info = le.pretrained_info()
    assert info["lora_edu_recipe"] == pretrain.RECIPE
    model = le.load_pretrained("cpu")
    assert model.cfg.to_dict() == info["lora_edu_config"]
    from lora_edu.pretrained import CHECKPOINT

    assert CHECKPOINT.stat().st_size <= 2 * 1024 * 1024


def test_save_and_reload_round_trip(tmp_path):
    model, recipe = pretrain.pretrain(steps=5, progress=False)
    path = tmp_path / "ck.safetensors"
    acc = pretrain.save_checkpoint(model, recipe, path)
    again = le.load_pretrained("cpu", path=path)
    assert le.pretrained_info(path)["lora_edu_accuracy"] == acc
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])

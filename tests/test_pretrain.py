"""`python -m lora_edu.pretrain` is deterministic and the shipped checkpoint records the recipe that made it."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import lora_edu as le
from lora_edu import pretrain
from lora_edu.pretrained import CHECKPOINT as CK


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
    acc = pretrain.save_checkpoint(model, recipe, path, n_examples=64)
    again = le.load_pretrained("cpu", path=path)
    assert le.pretrained_info(path)["lora_edu_accuracy"] == acc
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


# ---- a corrupted or foreign checkpoint is a clear ValueError, before any model is built ------------------------

def _write(path, tensors=None, **meta):
    with safe_open(str(CK), "pt") as f:
        base = f.metadata()
    save_file(load_file(str(CK)) if tensors is None else tensors, str(path), metadata={**base, **meta})
    return path


def _cfg(**changes):
    import json

    return json.dumps({**le.pretrained_info()["lora_edu_config"], **changes})


def _nan(t):
    t = dict(t)
    t["blocks.0.attn.q_proj.weight"] = t["blocks.0.attn.q_proj.weight"].clone()
    t["blocks.0.attn.q_proj.weight"][0, 0] = float("nan")
    return t


@pytest.mark.parametrize(("make", "match"), [
    (lambda p: p.write_bytes(b"not a checkpoint"), "not a safetensors file"),
    (lambda p: p.write_bytes(_write(p).read_bytes()[:1000]), "safetensors"),
    (lambda p: _write(p, lora_edu_config="{not json"), "lora_edu_config is not valid JSON"),
    (lambda p: _write(p, lora_edu_config='{"a": ' * 5000 + "1" + "}" * 5000), "nested too deeply"),
    (lambda p: _write(p, lora_edu_config=_cfg(n_layer=10**6)), "n_layer"),  # would allocate terabytes
    (lambda p: _write(p, lora_edu_config=_cfg(d_model=10**400)), "d_model"),
    (lambda p: _write(p, lora_edu_config=_cfg(n_layer=2)), "do not fit"),
    (lambda p: _write(p, lora_edu_config=_cfg(extra=1)), "lora_edu_config"),
    (lambda p: _write(p, lora_edu_config="[1, 2]"), "lora_edu_config"),
    (lambda p: _write(p, {"x": torch.zeros(2)}), "do not fit"),
    (lambda p: _write(p, _nan(load_file(str(CK)))), "NaN or inf"),
])
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, make, match):
    path = tmp_path / "ck.safetensors"
    make(path)
    with pytest.raises(ValueError, match=match):
        le.load_pretrained("cpu", path=path)


def test_checkpoint_path_and_device_are_checked(tmp_path):
    with pytest.raises(FileNotFoundError):
        le.load_pretrained("cpu", path=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="regular file"):
        le.load_pretrained("cpu", path=tmp_path)
    with pytest.raises(TypeError, match="path"):
        le.load_pretrained("cpu", path=3)
    with pytest.raises(ValueError, match="device"):
        le.load_pretrained("gpu")
    big = tmp_path / "big.safetensors"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: only its size is looked at
    with pytest.raises(ValueError, match="allowed"):
        le.load_pretrained("cpu", path=big)
    with pytest.raises(ValueError, match="allowed"):
        le.pretrained_info(big)

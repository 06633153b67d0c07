"""Against references nobody here wrote: Microsoft's loralib and Hugging Face PEFT (CPU, float64, offline).

With the same W0, A and B, our layer must give their outputs, unmerged and merged. Equality is the point,
so the comparisons run in float64, where any CPU's or BLAS kernel's reordering of sums stays ~1e-16 of the
magnitudes involved, and the tolerance (1e-9 of the largest magnitude) is a million times that while a wrong
scaling, sign or transpose is off by O(1). Conventions checked on the way: A is r×k and B is d×r in all
three; scaling is lora_alpha / r (lora_alpha / √r with PEFT's use_rslora); loralib and PEFT initialise A
Kaiming-uniform, B = 0.
"""

from __future__ import annotations

import copy
import math

import loralib
import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from torch import nn

import lora_edu as le


def close(actual, expected):
    """Equal up to float64 rounding, scaled to the magnitude of the values compared."""
    assert actual.dtype == expected.dtype == torch.float64
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-9 * max(1.0, expected.abs().max().item()))


def x_for(k, *lead, seed=1):
    return torch.randn(*lead, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


class Tiny(nn.Module):
    """A small model with named Linear layers, as PEFT expects (target_modules by name)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.q_proj = nn.Linear(12, 10)
        self.v_proj = nn.Linear(12, 12)
        self.head = nn.Linear(22, 3)
        self.double()

    def forward(self, x):
        return self.head(torch.cat([self.q_proj(x), self.v_proj(x)], -1))


def peft_layer(peft_model, name):
    return peft_model.base_model.model.get_submodule(name)


def twins(base, targets, r, alpha, rslora, randomize, seed=0):
    """(ours, peft) built from copies of `base`, with our random A, B copied into PEFT's lora_A/lora_B."""
    ours = copy.deepcopy(base)
    le.add_lora(ours, targets, r=r, alpha=alpha, rslora=rslora)
    randomize(ours, seed=seed, std=0.2)
    cfg = LoraConfig(r=r, lora_alpha=r if alpha is None else alpha, target_modules=list(targets),
                     lora_dropout=0.0, use_rslora=rslora)
    ref = get_peft_model(copy.deepcopy(base), cfg).double()
    with torch.no_grad():
        for n, m in le.lora_layers(ours).items():
            p = peft_layer(ref, n)
            assert p.lora_A["default"].weight.shape == m.A.shape  # same A: r×k, B: d×r convention
            assert p.lora_B["default"].weight.shape == m.B.shape
            assert p.scaling["default"] == pytest.approx(m.scaling, rel=1e-12)
            p.lora_A["default"].weight.copy_(m.A)
            p.lora_B["default"].weight.copy_(m.B)
    return ours.eval(), ref.eval()


# ---- loralib -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("r", "alpha"), [(4, 8), (1, 1), (8, 2), (3, 7)])
def test_matches_loralib_unmerged_and_merged(make_linear, randomize, r, alpha):
    base = make_linear(k=24, d=40, seed=r, dtype=torch.float64)
    ref = loralib.Linear(24, 40, r=r, lora_alpha=alpha, merge_weights=True).double()
    ours = le.LoRALinear(copy.deepcopy(base), r=r, alpha=alpha)
    randomize(ours, seed=r, std=0.3)
    with torch.no_grad():
        ref.weight.copy_(base.weight)
        ref.bias.copy_(base.bias)
        ref.lora_A.copy_(ours.A)
        ref.lora_B.copy_(ours.B)
    assert ref.scaling == pytest.approx(ours.scaling, rel=1e-12)
    x = x_for(24, 5, 7)

    ref.train()  # loralib: training mode = unmerged
    assert not torch.allclose(ours(x), base(x), atol=1e-3)  # ΔW matters in this comparison
    close(ours(x), ref(x))
    close(ours.delta_weight(), (ref.lora_B @ ref.lora_A) * ref.scaling)

    ref.eval()  # loralib merges on eval()
    ours.merge()
    assert ref.merged and ours.merged
    close(ours.weight, ref.weight)
    close(ours(x), ref(x))

    ref.train()
    ours.unmerge()
    close(ours.weight, ref.weight)
    close(ours(x), ref(x))


def test_kaiming_init_is_loralibs_initialisation():
    torch.manual_seed(123)
    ref = loralib.Linear(24, 40, r=4, lora_alpha=4)  # RNG order: W, b (nn.Linear), W, b, A (its reset_parameters)
    torch.manual_seed(123)
    base = nn.Linear(24, 40)
    base.reset_parameters()
    ours = le.LoRALinear(base, r=4, init="kaiming")
    assert torch.equal(ours.weight, ref.weight)
    assert torch.equal(ours.A, ref.lora_A)
    assert torch.equal(ours.B, ref.lora_B) and torch.count_nonzero(ours.B) == 0


# ---- PEFT ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("r", "alpha", "rslora"), [(4, 8, False), (2, None, False), (1, 3, False),
                                                     (4, 16, True), (8, 8, True)])
def test_matches_peft_unmerged_merged_and_unmerged_again(randomize, r, alpha, rslora):
    base = Tiny(seed=r)
    ours, ref = twins(base, ("q_proj", "v_proj"), r, alpha, rslora, randomize, seed=r)
    expected_scaling = (r if alpha is None else alpha) / (math.sqrt(r) if rslora else r)
    assert all(m.scaling == pytest.approx(expected_scaling) for m in le.lora_layers(ours).values())
    x = x_for(12, 4, 6)
    assert not torch.allclose(ours(x), base(x), atol=1e-3)  # ΔW matters in this comparison
    close(ours(x), ref(x))

    le.merge_lora(ours)
    ref.merge_adapter()
    for n in ("q_proj", "v_proj"):
        close(ours.get_submodule(n).weight, peft_layer(ref, n).base_layer.weight)
    close(ours(x), ref(x))

    le.unmerge_lora(ours)
    ref.unmerge_adapter()
    close(ours(x), ref(x))


@pytest.mark.parametrize("rslora", [False, True])
def test_merge_adapter_matches_peft_merge_and_unload(randomize, rslora):
    base = Tiny(seed=5)
    ours, ref = twins(base, ("q_proj", "v_proj"), 4, 6, rslora, randomize, seed=5)
    adapter = le.extract_adapter(ours)
    plain = copy.deepcopy(base)
    le.merge_adapter(plain, adapter)
    unloaded = ref.merge_and_unload()
    assert type(unloaded) is Tiny
    assert all(type(m) is nn.Linear for m in (unloaded.q_proj, unloaded.v_proj))
    for n in ("q_proj", "v_proj", "head"):
        close(plain.get_submodule(n).weight, unloaded.get_submodule(n).weight)
        torch.testing.assert_close(plain.get_submodule(n).bias, unloaded.get_submodule(n).bias, rtol=0, atol=0)
    x = x_for(12, 9)
    close(plain(x), unloaded(x))
    # and our remove_lora(merge=True) is the same operation on a LoRA model
    le.remove_lora(ours, merge=True)
    close(ours(x), unloaded(x))


def test_toy_transformer_matches_peft(_pretrained_cpu, randomize):
    targets = ("q_proj", "v_proj")
    ours, ref = twins(copy.deepcopy(_pretrained_cpu).double(), targets, 4, 8, False, randomize, seed=3)
    tokens, _ = le.get_task("rminus1").batch(16, torch.Generator().manual_seed(0))
    close(ours(tokens), ref(tokens))
    trainable, _ = ref.get_nb_trainable_parameters()
    assert le.count_parameters(ours)[0] == trainable
    # the same checkpoint content under the two naming schemes
    peft_sd = get_peft_model_state_dict(ref)
    ours_sd = le.lora_state_dict(ours)
    mapping = {f"base_model.model.{k[:-2]}.lora_{k[-1]}.weight": k for k in ours_sd}
    assert set(peft_sd) == set(mapping)
    for pk, ok in mapping.items():
        assert torch.equal(peft_sd[pk], ours_sd[ok])
    le.merge_lora(ours)
    ref.merge_adapter()
    close(ours(tokens), ref(tokens))


def test_peft_and_ours_agree_at_init(_pretrained_cpu):
    """Both start with B = 0, so neither changes the pretrained model's outputs."""
    tokens, _ = le.get_task("minus5").batch(4, torch.Generator().manual_seed(0))
    expected = _pretrained_cpu(tokens)
    ours = copy.deepcopy(_pretrained_cpu)
    le.add_lora(ours, ("q_proj", "v_proj"), r=4, init="kaiming")
    ref = get_peft_model(copy.deepcopy(_pretrained_cpu),
                         LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"])).eval()
    assert torch.equal(ours(tokens), expected)
    torch.testing.assert_close(ref(tokens), expected, rtol=0, atol=0)
    for n, m in le.lora_layers(ours).items():
        pA = peft_layer(ref, n).lora_A["default"].weight
        bound = 1 / math.sqrt(m.A.shape[1])  # both: kaiming_uniform(a=√5) → U(−1/√k, 1/√k)
        assert pA.abs().max() <= bound and m.A.abs().max() <= bound
        assert torch.count_nonzero(peft_layer(ref, n).lora_B["default"].weight) == 0

"""Self-checks for notebook 10 (from lora_edu to PEFT). Each prints what is right or what is wrong; never raises.

Unanswered: what to do. Wrong: the likely mistake, not the answer. `hint(n)` gives more help each time it is called.
"""

from __future__ import annotations

import functools
import inspect
import math

import torch
from torch import nn

from .feedback import as_number, fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3", "hint"]

_HINTS = {
    1: ["Each library computes scaling = α / r. The rank is the same on both sides; only the default α differs.",
        "Read both defaults off the name-map table of section 8 (or off LoraConfig() and le.add_lora's docstring).",
        "The fix does not change r: it passes lora_edu the α that PEFT used."],
    2: ["Every PEFT key has the form prefix + layer name + '.lora_A.weight' or '.lora_B.weight'.",
        "str.removeprefix and str.rsplit('.', 2) take a key apart; group the two tensors of each layer.",
        "lora_A holds A (r × k) and lora_B holds B (d × r): keep the tensors as they are, no transpose, no cast."],
    3: ["PEFT adapts a module when its full name equals an entry of target_modules or ends with '.' + that entry.",
        "Print le.linear_names(neox) and mark which names belong to attention and which to the MLP.",
        "An entry that is a whole last name component cannot match inside a longer component."],
}
_seen: dict[int, int] = {}


def hint(exercise: int) -> None:
    """Print the next hint for an exercise (1, 2 or 3); each call reveals one more."""
    if exercise not in _HINTS:
        print(f"Exercises are numbered {sorted(_HINTS)}.")
        return
    k = min(_seen.get(exercise, 0) + 1, len(_HINTS[exercise]))
    _seen[exercise] = k
    for i, h in enumerate(_HINTS[exercise][:k], 1):
        print(f"💡 Hint {i}/{len(_HINTS[exercise])}: {h}")


def _never_raises(check):
    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  - a check must finish whatever it is given
            return fail(f"the check could not use your answer ({type(e).__name__}: {str(e)[:200]}).")
    return wrapper


def _defaults() -> tuple[float, float]:
    """(PEFT's default lora_alpha, lora_edu's default alpha for a given r: None means α = r), read from the code."""
    from peft import LoraConfig

    from ...layer import LoRALinear

    return float(LoraConfig().lora_alpha), inspect.signature(LoRALinear.__init__).parameters["alpha"].default


@_never_raises
def ex1(ratio=None, alpha=None, r: int = 16) -> bool:
    """Predict lora_edu's ΔW / PEFT's ΔW when A, B trained with LoraConfig(r) are copied into le.add_lora(r), both α
    left at their defaults; then the alpha to pass to le.add_lora so that both apply the same ΔW."""
    peft_alpha, le_alpha = _defaults()
    le_scaling = (r if le_alpha is None else le_alpha) / r
    peft_scaling = peft_alpha / r
    want = le_scaling / peft_scaling
    if ratio is None:
        return not_answered(f"predict one number: the update lora_edu applies divided by the update PEFT applied, "
                            f"at r = {r}, before you measure it below.")
    v = as_number(ratio)
    if v is None:
        return fail(f"give the ratio as one number, got {type(ratio).__name__} {str(ratio)[:40]!r}.")

    def near(x, y):
        return math.isclose(x, y, rel_tol=1e-6)

    if not near(v, want):
        if near(v, 1 / want):
            return fail("that ratio is upside down: it is PEFT's update divided by lora_edu's.")
        if near(v, 1.0):
            return fail("the same update would need the same α on both sides. Are the two default α equal?")
        if v in (peft_alpha, float(r)) or (le_alpha is not None and v == le_alpha):
            return fail(f"{v:g} is a value of α. The update is scaled by α / r on each side; compare the scalings.")
        return fail("compute scaling = α / r for each library with its own default α, then divide lora_edu's by "
                    "PEFT's. hint(1) helps.")
    if alpha is None:
        return not_answered(f"prediction right ({want:g}×). Now give `alpha`: what to pass to le.add_lora(model, "
                            f"targets, r={r}, alpha=...) so that it applies exactly PEFT's update.")
    a = as_number(alpha)
    if a is None:
        return fail(f"alpha should be a number, got {type(alpha).__name__}.")
    if near(a, peft_alpha):
        return ok(f"lora_edu scales by α/r = {le_scaling:g} by default and PEFT by {peft_scaling:g}, so copied tensors "
                  f"act {want:g}× as strongly. Passing alpha={peft_alpha:g} makes both scalings {peft_scaling:g}. "
                  "le.load_adapter(model, peft_dir) reads lora_alpha from the config, so it never has this problem.")
    if near(a, peft_scaling) or near(a, le_scaling):
        return fail(f"{a:g} is a scaling (α / r), but le.add_lora takes α itself; it divides by r.")
    return fail("with that α, lora_edu's scaling α / r differs from PEFT's. Which α did PEFT use?")


def _state_dicts(seed: int = 0) -> list[dict]:
    """Fresh PEFT-style state dicts the learner has not seen: odd layer names, a rank per layer, mixed dtypes."""
    g = torch.Generator().manual_seed(seed)
    layers = [("encoder.layer.3.attention.self.query", 12, 20, 2, torch.float32),
              ("weight_net.fc", 7, 9, 3, torch.bfloat16),
              ("h.0.attn.c_proj", 10, 6, 5, torch.float16),
              ("lm_head", 5, 8, 1, torch.float32)]
    sds = []
    for cut in (4, 2):
        sd = {}
        for name, k, d, r, dt in layers[:cut]:
            sd[f"base_model.model.{name}.lora_A.weight"] = torch.randn(r, k, generator=g).to(dt)
            sd[f"base_model.model.{name}.lora_B.weight"] = torch.randn(d, r, generator=g).to(dt)
        sds.append(sd)
    return sds


def _library_error(msg: str) -> bool:
    return any(s in msg for s in ("tensors[", "one dtype", "targets", "Adapter", "adapter_config"))


@_never_raises
def ex2(fn=None) -> bool:
    """A function peft_to_pairs(state_dict) -> {layer name: (A, B)} for PEFT's key layout, tested on fresh inputs."""
    if fn is None:
        return not_answered("write peft_to_pairs(state_dict) returning {layer name: (A, B)}, then pass the function "
                            "itself: checks.nb10.ex2(peft_to_pairs).")
    if not callable(fn):
        return fail(f"pass your function itself (peft_to_pairs), not a {type(fn).__name__}.")
    for sd in _state_dicts():
        want = {k.removeprefix("base_model.model.").rsplit(".", 2)[0] for k in sd}
        try:
            got = fn(dict(sd))
        except Exception as e:  # noqa: BLE001
            msg = f"{type(e).__name__}: {str(e)[:160]}"
            if _library_error(str(e)):
                return fail(f"your function raised {msg}. lora_edu's Adapter needs one r and one dtype for all layers; "
                            "these test dicts have a rank and a dtype per layer. Do the renaming yourself.")
            return fail(f"your function raised {msg}.")
        if got is None:
            return fail("your function returned None: did you forget `return`?")
        if isinstance(got, dict) and not got:
            return not_answered("your function returns an empty dict: fill pairs[layer name] = (A, B) for every "
                                "layer of the state dict.")
        if not isinstance(got, dict):
            return fail(f"return a dict {{layer name: (A, B)}}, got a {type(got).__name__}.")
        keys = set(got)
        if keys != want:
            sample = sorted(map(str, keys))[:2]
            if any(str(k).endswith((".weight", ".lora_A", ".lora_B")) for k in keys) or len(keys) == len(sd):
                return fail(f"one entry per layer, not per tensor: your keys look like {sample}.")
            if any(str(k).startswith("base_model.model.") for k in keys):
                return fail(f"your keys still carry PEFT's prefix, e.g. {sample}: a layer name is what follows it.")
            return fail(f"expected {len(want)} layer names like {sorted(want)[0]!r}, got {sample}.")
        for name in sorted(want):
            A = sd[f"base_model.model.{name}.lora_A.weight"]
            B = sd[f"base_model.model.{name}.lora_B.weight"]
            pair = got[name]
            if not isinstance(pair, (tuple, list)) or len(pair) != 2 or \
                    not all(isinstance(t, torch.Tensor) for t in pair):
                return fail(f"each value should be a pair (A, B) of tensors; for {name!r} got {type(pair).__name__}.")
            a, b = pair
            if a.shape == B.shape and b.shape == A.shape and (a.shape != A.shape):
                return fail(f"A and B are swapped for {name!r}: A is r×k = {tuple(A.shape)}.")
            if a.shape != A.shape or b.shape != B.shape:
                if a.shape == A.shape[::-1] or b.shape == B.shape[::-1]:
                    return fail(f"a tensor of {name!r} is transposed: PEFT stores A as r×k and B as d×r already.")
                return fail(f"wrong shapes for {name!r}: got {tuple(a.shape)} and {tuple(b.shape)}.")
            if a.dtype != A.dtype or b.dtype != B.dtype:
                return fail(f"{name!r} is stored as {A.dtype} but you returned {a.dtype}: keep the tensors as stored "
                            "(a converter that casts cannot round-trip bit for bit).")
            if not (torch.equal(a, A) and torch.equal(b, B)):
                return fail(f"the numbers of {name!r} changed; return the stored tensors unchanged.")
    return ok("PEFT's names are the layer name wrapped in 'base_model.model.' and '.lora_A/B.weight'; the tensors "
              "themselves already have the paper's shapes, so moving an adapter is renaming, nothing else.")


def _wanted(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".attention." in f".{n}."}


@_never_raises
def ex3(target_modules=None) -> bool:
    """target_modules for LoraConfig that adapt every attention projection of NeoXLike and nothing else."""
    from peft import LoraConfig, get_peft_model

    from ..nb10 import NeoXLike

    if target_modules is None:
        return not_answered("give target_modules: a list of module-name endings (or one regex string) selecting "
                            "the attention projections of every layer and nothing else.")
    ok_type = isinstance(target_modules, str) or (isinstance(target_modules, (list, tuple, set)) and target_modules
                                                  and all(isinstance(t, str) for t in target_modules))
    if not ok_type:
        return fail(f"target_modules is a list of strings or one regex string, got {str(target_modules)[:60]!r}.")
    model = NeoXLike()
    want = _wanted(model)
    tm = target_modules if isinstance(target_modules, str) else list(target_modules)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pm = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=tm))
    except ValueError as e:
        why = ("PEFT found none of your names in the model" if "not found" in str(e) else
               "PEFT refused it: a name selects a module that is not a Linear layer (a whole block?)")
        return fail(f"{why}. List the Linear layers with le.linear_names(neox).")
    got = {n.removeprefix("base_model.model.") for n, m in pm.named_modules()
           if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    extra, missing = sorted(got - want), sorted(want - got)
    if extra:
        where = " and ".join(w for w, hit in (("the MLP", any(".mlp." in n for n in extra)),
                                              ("the output layer", any(".attention." not in f".{n}." and ".mlp."
                                                                       not in n for n in extra))) if hit)
        return fail(f"your targets also adapt {where}: {extra[:3]}{' …' if len(extra) > 3 else ''}.")
    if missing:
        return fail(f"{len(missing)} attention layers are not adapted, e.g. {missing[0]!r}.")
    return ok(f"{len(got)} layers adapted: both attention projections of every layer. A plain name matches a whole "
              "last component, so it never reaches into the MLP's longer names.")

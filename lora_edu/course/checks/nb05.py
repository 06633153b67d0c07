"""Self-checks for notebook 05 (fine-tuning the toy with LoRA)."""

from __future__ import annotations

import math

from ...model import ToyConfig, ToyTransformer
from .feedback import as_int, fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3"]


def _total_params() -> int:
    return sum(p.numel() for p in ToyTransformer(ToyConfig()).parameters())


def ex1(answer) -> bool:
    """How many times fewer trainable parameters LoRA r = 1 on W_q alone has than full fine-tuning."""
    if answer is None:
        return not_answered("full fine-tuning trains every parameter; LoRA trains r·(d + k) per adapted matrix")
    try:
        x = float(answer)
    except (TypeError, ValueError):
        return fail(f"the answer should be a number (a ratio), got {answer!r}")
    cfg = ToyConfig()
    total = _total_params()
    lora = cfg.n_layer * 1 * (cfg.d_model + cfg.d_model)
    right = total / lora
    if math.isclose(x, right, rel_tol=1e-3):
        return ok(f"{total:,} / {lora} ≈ {right:.0f}×. At GPT-3's width (d_model = 12,288) the same "
                  "arithmetic gives thousands, because the ratio grows with d_model / r.")
    if math.isclose(x, lora / total, rel_tol=1e-3):
        return fail("you computed LoRA ÷ full; the question asks how many times *fewer*, i.e. full ÷ LoRA.")
    if math.isclose(x, total / (lora / cfg.n_layer), rel_tol=1e-3):
        return fail(f"W_q exists in each of the {cfg.n_layer} blocks, and LoRA adapts every one of them.")
    if math.isclose(x, total / (lora / 2), rel_tol=1e-3):
        return fail("count both A (r×k) and B (d×r) for each adapted matrix.")
    attn = 4 * cfg.n_layer * cfg.d_model ** 2
    if any(math.isclose(x, n / lora, rel_tol=1e-3) for n in (attn, cfg.n_layer * cfg.d_model ** 2)):
        return fail("full fine-tuning trains *every* parameter of the model (embeddings, MLP, norms, head), "
                    "not only the attention matrices.")
    return fail(f"{x:g} is not it. Hint: le.count_parameters on a fresh pretrained model and on one with "
                "le.add_lora(model, ('q_proj',), r=1).")


def ex2(answer) -> bool:
    """Bytes of AdamW optimizer state for full fine-tuning of the toy in float32."""
    if answer is None:
        return not_answered("AdamW keeps two running averages per trainable parameter")
    n = as_int(answer)
    if n is None:
        return fail(f"the answer should be a whole number of bytes, got {answer!r}")
    total = _total_params()
    right = 2 * total * 4
    if n == right:
        return ok(f"2 moments × {total:,} parameters × 4 bytes = {right:,} bytes. With LoRA only the adapter's "
                  "parameters have optimizer state — this is the paper's main memory saving.")
    if n == total * 4:
        return fail("AdamW keeps *two* tensors per parameter: the running mean (exp_avg) and the running mean of "
                    "squares (exp_avg_sq).")
    if n == 2 * total:
        return fail("that is a number of values; the question asks for bytes (float32 = 4 bytes each).")
    if n == 4 * total * 4:
        return fail("that is weights + gradients + optimizer state; only the optimizer state is asked for.")
    if n == 3 * total * 4:
        return fail("that includes the gradients (or the weights); only the two AdamW moments count here.")
    return fail(f"{n:,} is not it. Hint: parameters × moments per parameter × bytes per float32.")


def ex3(answer) -> bool:
    """A results row of a LoRA fine-tune on the MLP (up_proj, down_proj) with r = 2."""
    if answer is None:
        return not_answered("call experiments.finetune(task, 'lora', targets=('up_proj', 'down_proj'), r=2, ...)")
    if not isinstance(answer, dict):
        return fail(f"give the results row (a dict) that experiments.finetune returns, got {type(answer).__name__}")
    need = {"method", "targets", "r", "trainable", "accuracy"}
    if not need <= set(answer):
        return fail(f"this row lacks {sorted(need - set(answer))}; pass the second value finetune returns")
    if answer["method"] != "lora":
        return fail(f"method is {answer['method']!r}; the exercise asks for a LoRA fine-tune")
    if set(answer["targets"]) != {"up_proj", "down_proj"}:
        return fail(f"targets are {tuple(answer['targets'])}; adapt the MLP: ('up_proj', 'down_proj')")
    if answer["r"] != 2:
        return fail(f"r is {answer['r']}; use r = 2")
    cfg = ToyConfig()
    expected = cfg.n_layer * 2 * 2 * (cfg.d_model + cfg.d_ff)
    if answer["trainable"] != expected:
        return fail(f"{answer['trainable']} trainable parameters; expected {expected} "
                    f"(2 blocks × 2 matrices × r·(64 + 256)) — was something else trainable?")
    acc = answer["accuracy"]
    if not isinstance(acc, float) or not 0.0 <= acc <= 1.0:
        return fail(f"accuracy should be a number between 0 and 1, got {acc!r}")
    return ok(f"LoRA on the MLP with {expected} parameters reached accuracy {acc:.2f}. The paper adapted only "
              "attention (§4.2) and left the MLP to future work; compare with the attention rows of Table 5 — "
              "but mind the budget: it is not the same number of parameters.")

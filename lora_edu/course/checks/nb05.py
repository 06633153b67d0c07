"""Self-checks for notebook 05 (fine-tuning the toy with LoRA). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import math

import torch
from torch import nn

from ...model import ToyConfig, ToyTransformer
from ...runtime import pick
from .feedback import Exercises, fail, judge_prediction, not_answered, ok, read_number

__all__ = ["ex1", "ex2", "ex3", "hint", "EX2_TARGETS", "EX2_R", "EX3_TARGETS", "EX3_TASK"]

EX = Exercises("nb05", hints={
    1: ["Full fine-tuning trains every parameter of the model: embeddings, attention, MLP, norms and head.",
        "LoRA with r = 1 on W_q trains r·(d + k) numbers per W_q, and there is a W_q in every block.",
        "le.count_parameters on a fresh pretrained model and on one after le.add_lora(model, ('q_proj',), r=1) give "
        "both counts."],
    2: ["AdamW keeps two running averages (exp_avg and exp_avg_sq) for each parameter it trains, each the "
        "parameter's size, in float32 here.",
        "A frozen parameter has no gradient, so AdamW keeps nothing for it.",
        "Count LoRA's trainable parameters for these targets and this r (mind the shape of down_proj), then "
        "multiply by moments and bytes."],
    3: ["nb05.finetune returns (model, row); pass both to the check.",
        "Use Table 5's task and the notebook's budget (\"plus3\", STEPS, eval_examples=EVAL) so the rows compare.",
        "targets=EX3_TARGETS and r=2; nb05.finetune starts from a fresh pretrained model by itself."],
})
hint = EX.hint

EX2_TARGETS, EX2_R = ("k_proj", "down_proj"), 6
EX3_TARGETS = ("up_proj", "down_proj")
EX3_TASK = "plus3"


def _ex3_steps() -> int:
    return pick(300, 60)  # the notebook's STEPS


def _ex3_evals() -> set[int]:
    return {pick(512, 256), 512, 256}  # the notebook's EVAL, in either mode


def _total_params() -> int:
    return sum(p.numel() for p in ToyTransformer(ToyConfig()).parameters())


@EX.check(1)
def ex1(answer) -> bool:
    """How many times fewer trainable parameters LoRA r = 1 on W_q alone has than full fine-tuning."""
    if answer is None:
        return not_answered("give the ratio full ÷ LoRA (one number) for LoRA with r = 1 on W_q alone.")
    x, problem = read_number(answer)
    if problem:
        return fail(problem)
    cfg = ToyConfig()
    total = _total_params()
    lora = cfg.n_layer * 1 * (cfg.d_model + cfg.d_model)
    right = total / lora

    def near(y):
        return math.isclose(x, y, rel_tol=1e-3)

    if near(right):
        return ok(f"{total:,} / {lora} ≈ {right:.0f}×. At GPT-3's width (d_model = 12,288) the same arithmetic "
                  "gives thousands, because the ratio grows with d_model / r.")
    if near(lora / total):
        return fail("you computed LoRA ÷ full; the question asks how many times *fewer*: full ÷ LoRA.")
    if near(2 * right):
        return fail("that counts half of LoRA's parameters: there is a W_q in each block, and each adapted matrix "
                    "gets both A and B.")
    attn = 4 * cfg.n_layer * cfg.d_model ** 2
    if any(near(n / lora) for n in (attn, cfg.n_layer * cfg.d_model ** 2, attn + cfg.n_layer * 8 * cfg.d_model ** 2)):
        return fail("full fine-tuning trains *every* parameter of the model (embeddings, norms and head too), "
                    "not only the weight matrices.")
    return fail(f"{x:g} is not the ratio of the two trainable-parameter counts.")


def _ex2_counts() -> tuple[int, int]:
    cfg = ToyConfig()
    shapes = {"q_proj": (cfg.d_model, cfg.d_model), "k_proj": (cfg.d_model, cfg.d_model),
              "v_proj": (cfg.d_model, cfg.d_model), "o_proj": (cfg.d_model, cfg.d_model),
              "up_proj": (cfg.d_ff, cfg.d_model), "down_proj": (cfg.d_model, cfg.d_ff)}
    per_block = [EX2_R * sum(shapes[t]) for t in EX2_TARGETS]
    return cfg.n_layer * sum(per_block), cfg.n_layer


def _ex2_measure() -> int:
    from ...inject import add_lora
    from ...pretrained import load_pretrained
    from ..nb05 import training_memory

    with torch.random.fork_rng(devices=[]):
        m = load_pretrained(device="cpu")
        add_lora(m, EX2_TARGETS, r=EX2_R)
        return int(training_memory(m)["optimizer_bytes"])


REASONS2 = {
    "a": "",
    "b": "every parameter here is float32 — the frozen ones too. The saving comes from somewhere else.",
    "c": "a frozen parameter indeed has no gradient and no state, but the state is not the gradients' size: "
         "compare the measurement with the number of trainable parameters.",
    "d": "LoRA does nothing to the optimizer: AdamW is plain AdamW, and its state is as large as what it trains.",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict, then measure, then explain: bytes of AdamW state for LoRA r = EX2_R on EX2_TARGETS (float32)."""
    if prediction is None:
        return not_answered("write your prediction of the AdamW state in bytes (a whole number) into `prediction` "
                            "before anything is measured, and run the cell.")
    n, problem = read_number(prediction, whole=True)
    if problem:
        return fail(problem)
    first = EX.first_prediction(2, n)
    p, blocks = _ex2_counts()
    measured = _ex2_measure()
    total = _total_params()
    cfg = ToyConfig()
    if n == measured:
        diag = ""
    elif n == measured // 2:
        diag = "that is half: AdamW keeps *two* moments per trainable parameter, and every block has its adapters."
    elif n == 2 * p:
        diag = "that is a number of values; the question asks for bytes, and a float32 takes 4."
    elif n == 2 * measured:
        diag = "that is twice too much: two moments of 4 bytes per parameter, nothing more."
    elif n in (8 * total, 8 * (total + p)):
        diag = "that is AdamW's state for *every* parameter; with LoRA, frozen parameters get no state."
    elif n == 8 * blocks * EX2_R * 2 * 2 * cfg.d_model:
        diag = "down_proj is not square: it maps 256 inputs to 64 outputs."
    elif n in (8 * blocks * EX2_R * (cfg.d_model + cfg.d_ff), 8 * blocks * EX2_R * 2 * cfg.d_model):
        diag = "that counts only one of the two factors; each adapted matrix gets both A (r×k) and B (d×r)."
    else:
        diag = "count the trainable parameters first (both factors, every block, the shape of each matrix)."
    return judge_prediction(n, first, f"{measured:,} bytes of AdamW state after one real training step "
                            f"({p:,} trainable parameters)", n == measured, diag, why, REASONS2, "a",
                            "two float32 moments per *trainable* parameter and nothing for the frozen ones: LoRA "
                            "shrinks the optimizer state by exactly the trainable-parameter ratio. §4.2: \"we do not "
                            "need to store the optimizer states for the frozen parameters\" — on GPT-3 175B, training "
                            "memory falls from 1.2TB to 350GB.")


def _fail_row(row) -> str | None:
    need = {"method", "task", "targets", "r", "steps", "trainable", "accuracy", "history"}
    if not need <= set(row):
        return f"this row lacks {sorted(need - set(row))}: pass the row that nb05.finetune returned, unchanged."
    if row["method"] != "lora":
        return f"method is {row['method']!r}; the exercise asks for a LoRA fine-tune."
    if row["task"] != EX3_TASK:
        return f"this run trained on {row['task']!r}; the exercise compares with Table 5's {EX3_TASK!r}."
    if set(row["targets"] or ()) != set(EX3_TARGETS):
        return f"targets are {tuple(row['targets'])}; adapt the MLP matrices up_proj and down_proj."
    if row["r"] != 2:
        return f"r is {row['r']}; use r = 2."
    steps = _ex3_steps()
    if row["steps"] != steps:
        return f"this run trained {row['steps']} steps; use STEPS (here {steps}) so it compares with Table 5."
    if len(row["history"].get("loss", ())) != steps:
        return "this row's training history does not match its step count: pass the row of a real run."
    return None


@EX.check(3)
def ex3(model=None, row=None) -> bool:
    """A LoRA fine-tune of a fresh model on the MLP (up_proj, down_proj), r = 2, Table 5's task and steps."""
    from ...inject import lora_layers
    from ...pretrained import load_pretrained
    from ..nb05 import exact_accuracy

    if model is None and row is None:
        return not_answered("run nb05.finetune for the MLP, keep both values it returns (model, row) and pass "
                            "them to the check.")
    if not isinstance(model, nn.Module) or not isinstance(row, dict):
        return fail("pass both values nb05.finetune returns: checks.nb05.ex3(my_model, my_row) — the model first, "
                    "then the results row (a dict).")
    problem = _fail_row(row)
    if problem:
        return fail(problem)
    layers = lora_layers(model)
    kinds = {n.rsplit(".", 1)[-1] for n in layers}
    cfg = ToyConfig()
    if kinds != set(EX3_TARGETS) or len(layers) != 2 * cfg.n_layer or {m.r for m in layers.values()} != {2}:
        return fail("this model's LoRA layers are not r = 2 on up_proj and down_proj of every block: pass the model "
                    "of the same run as the row.")
    expected = cfg.n_layer * 2 * 2 * (cfg.d_model + cfg.d_ff)  # blocks × matrices × r × (d + k)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable != expected or row["trainable"] != expected:
        return fail(f"{trainable} trainable parameters in the model and {row['trainable']} in the row, but LoRA "
                    "r = 2 on the two MLP matrices trains a different number: was something else trainable?")
    fresh = load_pretrained(device="cpu").state_dict()
    for n, p in model.named_parameters():
        key = n.replace(".base.", ".")
        if not n.endswith((".A", ".B")) and (key not in fresh or not torch.equal(p.detach().cpu(), fresh[key])):
            return fail("the frozen weights are not the pretrained checkpoint's: the run must start from a fresh "
                        "pretrained model (nb05.finetune does that when you do not pass model=).")
    if all(bool((m.B == 0).all()) for m in layers.values()):
        return fail("every B is still zero: this model was not trained.")
    measured = {n: exact_accuracy(model, EX3_TASK, n) for n in sorted(_ex3_evals())}
    if not any(math.isclose(a, row["accuracy"], abs_tol=1e-9) for a in measured.values()):
        return fail(f"the accuracy in the row is not what this model scores on {EX3_TASK}: pass the model and the "
                    "row of the same nb05.finetune call.")
    return ok(f"LoRA on the MLP with {expected:,} parameters got {row['accuracy']:.3f} of whole answers right on "
              f"{EX3_TASK}. The paper adapted only attention (§4.2) and left the MLP to future work. Compare with "
              "Table 5's rows — but mind the budget: it is not the same number of parameters.")

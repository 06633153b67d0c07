"""Self-checks for notebook 09 (the rank lab). Protocol: see `feedback` — they never raise."""

from __future__ import annotations

import functools
import math

import torch

from ...model import ToyConfig
from .feedback import Exercises, fail, judge_prediction, not_answered, ok, read_number, short

__all__ = ["ex1", "ex2", "ex3", "hint", "EX1_TARGETS", "EX1_R", "EX3_CANDIDATES", "EX3_THRESHOLD", "EX3_SETTINGS"]

EX = Exercises("nb09", hints={
    1: ["Each adapted d×k matrix adds B (d×r) and A (r×k): r·(d + k) numbers.",
        "q_proj and v_proj are 64×64, but up_proj maps 64 inputs to 256 outputs.",
        "Add the three matrices' counts for one block, then multiply by the number of blocks (3)."],
    2: ["At step 0, B = 0. What gradient does A get while B = 0? So which factor moves in the first step?",
        "Adam's first step moves each parameter by lr · g/|g|: exactly lr in the direction against its gradient, "
        "whatever the gradient's size.",
        "After one step ΔW = (α/r)·B·A with B = −lr·sign(…) and A unchanged. Compare α·lr for the two runs."],
    3: ["Train one run per candidate r with exactly the settings in checks.nb09.EX3_SETTINGS.",
        "lab.run_training(r=r, **checks.nb09.EX3_SETTINGS) does it without clicking; the lab's table lists the "
        "whole-answer accuracy of each run (run.exact).",
        "The answer is the smallest candidate whose whole-answer accuracy is at least EX3_THRESHOLD in *your* lab."],
})
hint = EX.hint

# shapes of the toy model's matrices (d_out, k_in) and its number of blocks, from the shipped configuration
_CFG = ToyConfig()
_D, _FF = _CFG.d_model, _CFG.d_ff
_SHAPES = {"q_proj": (_D, _D), "k_proj": (_D, _D), "v_proj": (_D, _D), "o_proj": (_D, _D),
           "up_proj": (_FF, _D), "down_proj": (_D, _FF)}
_N_BLOCKS = _CFG.n_layer

EX1_TARGETS = ("q_proj", "v_proj", "up_proj")
EX1_R = 8


@EX.check(1)
def ex1(answer, targets=EX1_TARGETS, r: int = EX1_R) -> bool:
    """Trainable parameters of a LoRA run on `targets` at rank r (all blocks of the toy model)."""
    if answer is None:
        return not_answered(f"give the number of trainable parameters (a whole number) of a run with LoRA on "
                            f"{', '.join(targets)} at r = {r}.")
    a, problem = read_number(answer, whole=True)
    if problem:
        return fail(problem)
    per_block = sum(r * sum(_SHAPES[t]) for t in targets)
    want = _N_BLOCKS * per_block
    if a == want:
        terms = " + ".join(f"{r}·({_SHAPES[t][0]}+{_SHAPES[t][1]})" for t in targets)
        return ok(f"{want:,} = {_N_BLOCKS} blocks × ({terms}). The rank lab's table shows the same count.")
    if a == per_block:
        return fail("that is one block; every block gets its own A and B.")
    square = a == _N_BLOCKS * sum(r * 2 * _D for _ in targets)
    one_factor = a in (_N_BLOCKS * sum(r * _SHAPES[t][0] for t in targets),
                       _N_BLOCKS * sum(r * _SHAPES[t][1] for t in targets))
    if square and one_factor:
        return fail(f"either up_proj was taken as {_D}×{_D} (it maps {_D} inputs to {_FF} outputs), or only one of "
                    "the two factors was counted (B is d×r and A is r×k).")
    if square:
        return fail(f"up_proj is not {_D}×{_D}: it maps {_D} inputs to {_FF} outputs.")
    if one_factor:
        return fail("count both factors: B is d×r and A is r×k.")
    if a == _N_BLOCKS * sum(_SHAPES[t][0] * _SHAPES[t][1] for t in targets):
        return fail("that is the size of the full matrices (what full fine-tuning trains); LoRA trains r·(d + k).")
    return fail(f"{a:,} is not it: per matrix r·(d + k), summed over {', '.join(targets)}, in every block.")


EX2_TASK = "plus3"
EX2_WEIGHT_DECAY = 0.0


@functools.lru_cache(maxsize=1)
def _alpha_lr() -> dict:
    """‖ΔW‖_F ratio (α = 16, lr = 5e-3) / (α = 8, lr = 1e-2) after 1 and after 30 training steps, r = 4 on W_q.

    Weight decay off (EX2_WEIGHT_DECAY): with the lab's 1.0, AdamW would also shrink A by (1 − lr·1.0) in the
    first step — by a different factor for the two learning rates — and blur the one thing the exercise isolates.
    """
    from ...inject import lora_layers
    from ..common import train_lora

    def norm(alpha, lr, steps):
        m, _ = train_lora(EX2_TASK, targets=("q_proj",), r=4, alpha=alpha, lr=lr, steps=steps, seed=0,
                          weight_decay=EX2_WEIGHT_DECAY, device="cpu", progress=False, eval_examples=8)
        return math.sqrt(sum(float(lyr.delta_weight().detach().double().norm() ** 2)
                             for lyr in lora_layers(m).values()))

    with torch.random.fork_rng(devices=[]):
        return {s: norm(16.0, 5e-3, s) / norm(8.0, 1e-2, s) for s in (1, 30)}


REASONS2 = {
    "a": "",
    "b": "that reasoning is plain gradient descent's, and it does not even hold there: the step of B would grow "
         "with α, and ΔW multiplies by α again. What does Adam do with the size of a gradient?",
    "c": "the learning rate sets the size of Adam's first step exactly; it is the gradient's size that drops out.",
    "d": "α/r multiplies the update B·A in the forward pass; it would rescale the loss only if it multiplied the "
         "whole output.",
}


@EX.check(2)
def ex2(prediction=None, why=None) -> bool:
    """Predict ‖ΔW‖ after one step with (α = 16, lr = 5e-3) divided by the same with (α = 8, lr = 1e-2)."""
    if prediction is None:
        return not_answered("write your prediction of the ratio (one number) into `prediction` before anything is "
                            "measured, and run the cell.")
    v, problem = read_number(prediction)
    if problem:
        return fail(problem)
    if v < 0:
        return fail("a ratio of two norms is never negative.")
    first = EX.first_prediction(2, v)
    ratio = _alpha_lr()

    def near(x):
        return math.isclose(v, x, rel_tol=0.02)

    if near(2):
        diag = ("that is what plain gradient descent would give: there the step of B grows with α, and ΔW "
                "multiplies by α again. The lab trains with Adam.")
    elif near(0.5):
        diag = "that counts only the learning rate; α/r multiplies ΔW too."
    elif near(4) or near(0.25):
        diag = "that assumes α enters twice and the learning rate not at all, or the other way round."
    else:
        diag = "work out what A and B look like after one Adam step from B = 0."
    return judge_prediction(v, first, f"ratio after 1 step {ratio[1]:.5f}; after 30 steps {ratio[30]:.3f}",
                            near(ratio[1]), diag, why, REASONS2, "a",
                            "Adam's first step moves every entry of B by lr (the gradient's size cancels, up to "
                            "Adam's tiny ε), "
                            "and A has no gradient while B = 0. So ΔW after one step is proportional to α·lr. Later "
                            "A moves by about lr too, without the α, and the two runs part ways: 'tuning α is "
                            "roughly the same as tuning the learning rate' (§4.1) — roughly, as measured.")


EX3_CANDIDATES = (1, 2, 4, 8)
EX3_THRESHOLD = 0.6  # whole answers right (run.exact)
EX3_SETTINGS = {"task": "plus3", "targets": ("q_proj",), "alpha": 8.0, "lr": 1e-2, "steps": 100}


@EX.check(3)
def ex3(answer, lab) -> bool:
    """Smallest r in EX3_CANDIDATES whose run with EX3_SETTINGS reaches EX3_THRESHOLD whole-answer accuracy.

    The check reads the runs in your RankLab, so it agrees with what your machine measured. Answer "none" if no
    candidate reaches the threshold.
    """
    runs = getattr(lab, "runs", None)
    if not isinstance(runs, (list, tuple)):
        return fail("pass your RankLab as the second argument: checks.nb09.ex3(answer, lab).")
    s = EX3_SETTINGS
    best = {}
    for run in runs:
        try:
            same = (run.task, tuple(run.targets), run.alpha, run.lr, run.steps) == \
                (s["task"], tuple(s["targets"]), s["alpha"], s["lr"], s["steps"])
            if same and run.r in EX3_CANDIDATES:
                best[run.r] = float(run.exact)
        except (AttributeError, TypeError):
            continue
    if answer is None:
        return not_answered(f"train the runs you need with the settings of checks.nb09.EX3_SETTINGS, then give the "
                            f"smallest r of {EX3_CANDIDATES} that reaches {EX3_THRESHOLD} (or 'none').")
    if isinstance(answer, str) and answer.strip().lower() == "none":
        answer = "none"
    else:
        answer, problem = read_number(answer, whole=True)
        if problem or answer not in EX3_CANDIDATES:
            return fail(f"answer one of {EX3_CANDIDATES}, or 'none'; got {short(answer, 30)}.")
    reached = [r for r in EX3_CANDIDATES if r in best and best[r] >= EX3_THRESHOLD]
    smallest = reached[0] if reached else "none"
    untested = [r for r in EX3_CANDIDATES if r not in best and (smallest == "none" or r < smallest)]
    if untested:
        return fail(f"your lab has no run with r in {untested} and exactly these settings yet; without them you "
                    "cannot know the smallest r. Train them too.")
    shown = ", ".join(f"r={r}: {best[r]:.3f}" for r in EX3_CANDIDATES if r in best)
    if answer == smallest:
        return ok(f"your runs ({shown}): " + (f"r = {smallest} is the smallest that reaches {EX3_THRESHOLD}."
                                              if smallest != "none" else "none reaches the threshold."))
    if answer == "none":
        return fail(f"one of your runs does reach {EX3_THRESHOLD}: read the whole-answer accuracies again "
                    f"({shown}).")
    if best.get(answer, 0.0) < EX3_THRESHOLD:
        return fail(f"your run with r = {answer} reached {best.get(answer, float('nan')):.3f}, below "
                    f"{EX3_THRESHOLD}.")
    return fail(f"r = {answer} reaches the threshold, but a smaller candidate does too ({shown}).")

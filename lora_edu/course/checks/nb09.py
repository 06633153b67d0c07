"""Self-checks for notebook 09 (the rank lab). Each prints what is right or what is wrong; never raises."""

from __future__ import annotations

from .feedback import fail, not_answered, ok

__all__ = ["ex1", "ex2", "ex3", "EX1_TARGETS", "EX1_R", "EX3_CANDIDATES", "EX3_THRESHOLD", "EX3_SETTINGS"]

# shapes of the toy model's matrices (d_out, k_in) and its number of blocks
_SHAPES = {"q_proj": (64, 64), "k_proj": (64, 64), "v_proj": (64, 64), "o_proj": (64, 64),
           "up_proj": (256, 64), "down_proj": (64, 256)}
_N_BLOCKS = 2

EX1_TARGETS = ("q_proj", "v_proj", "up_proj")
EX1_R = 8


def ex1(answer, targets=EX1_TARGETS, r: int = EX1_R) -> bool:
    """Trainable parameters of a LoRA run on `targets` at rank r (all blocks of the toy model)."""
    if answer is None:
        return not_answered("each adapted d×k matrix adds B (d×r) and A (r×k): r·(d + k) numbers; the toy model "
                            f"has {_N_BLOCKS} blocks, and up_proj is 256×64.")
    try:
        a = int(answer)
        if a != answer:
            raise ValueError
    except Exception:  # noqa: BLE001
        return fail(f"give a whole number, got {answer!r}.")
    per_block = sum(r * sum(_SHAPES[t]) for t in targets)
    want = _N_BLOCKS * per_block
    if a == want:
        terms = " + ".join(f"{r}·({_SHAPES[t][0]}+{_SHAPES[t][1]})" for t in targets)
        return ok(f"{want:,} = {_N_BLOCKS} blocks × ({terms}). The rank lab's table shows the same count.")
    if a == per_block:
        return fail(f"{a:,} is one block; the toy model has {_N_BLOCKS} blocks and every block gets its own A and B.")
    if a == _N_BLOCKS * sum(r * 128 for _ in targets):
        return fail("up_proj is not 64×64: it maps 64 → 256, so its LoRA pair has r·(256 + 64) numbers.")
    if a == _N_BLOCKS * sum(_SHAPES[t][0] * _SHAPES[t][1] for t in targets):
        return fail("that is the size of the full matrices (what full fine-tuning trains); LoRA trains r·(d + k).")
    if a in (_N_BLOCKS * sum(r * _SHAPES[t][0] for t in targets), _N_BLOCKS * sum(r * _SHAPES[t][1] for t in targets)):
        return fail("count both factors: B is d×r and A is r×k, so r·(d + k) per matrix.")
    return fail(f"{a:,} is not it. Per matrix r·(d + k), summed over {', '.join(targets)}, times {_N_BLOCKS} blocks.")


def ex2(answer, r: int = 4, d: int = 64, k: int = 64) -> bool:
    """Largest number of non-zero singular values ΔW = (α/r)·B·A can have for a d×k matrix at rank r."""
    if answer is None:
        return not_answered("ΔW = B·A passes everything through r numbers in the middle.")
    try:
        a = int(answer)
        if a != answer:
            raise ValueError
    except Exception:  # noqa: BLE001
        return fail(f"give a whole number, got {answer!r}.")
    want = min(r, d, k)
    if a == want:
        return ok(f"rank(BA) ≤ r = {want}: the spectrum panel shows at most {want} non-zero singular values, "
                  "however long you train. Training decides how the spectrum is spread over those r.")
    if a == min(d, k):
        return fail(f"ΔW is {d}×{k}, but it is a product B ({d}×{r}) · A ({r}×{k}): its rank is at most r = {r}.")
    if a == 0:
        return fail("ΔW starts at zero (B = 0), but after training it is not zero.")
    return fail(f"{a} is not it: the rank of a product is at most the smallest inner dimension.")


EX3_CANDIDATES = (1, 2, 4, 8)
EX3_THRESHOLD = 0.9
EX3_SETTINGS = {"task": "increment", "targets": ("q_proj", "v_proj"), "alpha": 8.0, "lr": 1e-2, "steps": 100}


def ex3(answer, lab) -> bool:
    """Smallest r in EX3_CANDIDATES whose run with EX3_SETTINGS reaches EX3_THRESHOLD final accuracy (in `lab`).

    The check reads the runs in your RankLab, so it agrees with what your machine measured. Answer None if no
    candidate reaches the threshold.
    """
    runs = getattr(lab, "runs", None)
    if runs is None:
        return fail("pass your RankLab as the second argument: checks.nb09.ex3(answer, lab).")
    s = EX3_SETTINGS
    best = {}
    for run in runs:
        if (run.task, tuple(run.targets), run.alpha, run.lr, run.steps) == \
                (s["task"], tuple(s["targets"]), s["alpha"], s["lr"], s["steps"]) and run.r in EX3_CANDIDATES:
            best[run.r] = run.accuracy
    missing = [r for r in EX3_CANDIDATES if r not in best]
    if answer is None and not best:
        return not_answered(f"train one run per r in {EX3_CANDIDATES}: "
                            "lab.run_training(r=r, **checks.nb09.EX3_SETTINGS).")
    reached = [r for r in EX3_CANDIDATES if r in best and best[r] >= EX3_THRESHOLD]
    smallest = reached[0] if reached else None
    if answer is not None and answer not in EX3_CANDIDATES:
        return fail(f"answer one of {EX3_CANDIDATES} (or None), got {answer!r}.")
    if smallest is not None and any(r not in best for r in EX3_CANDIDATES if r < smallest):
        gap = [r for r in EX3_CANDIDATES if r < smallest and r not in best]
        return fail(f"your lab has no run with r in {gap} and these settings yet; train them to know whether a "
                    "smaller r also gets there.")
    if smallest is None and missing:
        return fail(f"no run reached {EX3_THRESHOLD} yet and r = {missing} are untested; train them too.")
    if answer == smallest:
        shown = ", ".join(f"r={r}: {best[r]:.3f}" for r in EX3_CANDIDATES if r in best)
        return ok(f"your runs ({shown}): " + (f"r = {smallest} is the smallest that reaches {EX3_THRESHOLD}." if
                  smallest else "none reaches the threshold."))
    if smallest is None:
        got = best.get(answer, float("nan"))
        return fail(f"none of your runs reaches {EX3_THRESHOLD} (r={answer} reached {got:.3f}); the answer is None.")
    if answer is None:
        return fail(f"your run with r = {smallest} reached {best[smallest]:.3f} ≥ {EX3_THRESHOLD}.")
    if answer in best and best[answer] < EX3_THRESHOLD:
        return fail(f"your run with r = {answer} reached only {best[answer]:.3f} < {EX3_THRESHOLD}.")
    return fail(f"r = {smallest} already reaches {best[smallest]:.3f} ≥ {EX3_THRESHOLD}, and it is smaller than "
                f"{answer}.")

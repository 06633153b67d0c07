# ruff: noqa: E402
"""Issue 11 target table (a–e) for the proposed vehicle: prints table.txt, writes results.json.

Run from /work/vehicle:  OMP_NUM_THREADS=1 nice -n 5 python vehicle_table.py [--seeds 5] [--t6-seeds 5]
Every LoRA run uses the notebook recipe below (one CPU thread); runs are cached in runs.json, so a rerun
only trains what is missing.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "pkg"))  # lora_edu with the proposed tasks/pretrain/train
import torch

torch.set_num_threads(1)
from lora_edu.inject import add_lora, lora_layers
from lora_edu.lowrank import projection_norm, subspace_similarity
from lora_edu.model import ToyConfig, ToyTransformer
from lora_edu.pretrain import CONFIG
from lora_edu.pretrained import load_pretrained
from lora_edu.runtime import seed_everything
from lora_edu.tasks import DOWNSTREAM_TASKS, Task, get_task
from lora_edu.train import evaluate, train

HERE = Path(__file__).parent
CKPT = HERE / "pkg" / "lora_edu" / "data" / "toy_pretrained.safetensors"
RECIPE = {"alpha": 8, "lr": 1e-2, "weight_decay": 1.0, "steps": 300, "batch_size": 64}  # notebooks' LoRA budget
FULL_WD = 0.0  # full fine-tuning: no decay (decay would pull the pretrained weights to 0, not to W0)
QV, Q, ALL4 = ("q_proj", "v_proj"), ("q_proj",), ("q_proj", "k_proj", "v_proj", "o_proj")
RANKS = (1, 2, 4, 8, 64)
FULL_LRS = (3e-4, 1e-3, 3e-3)
N_EVAL = 1024


def fit(base, task, seed, r=4, targets=QV, full_lr=None, steps=None):
    """A fine-tuned copy of base: LoRA (r, targets) with RECIPE, or full fine-tuning at full_lr."""
    m = copy.deepcopy(base)
    seed_everything(seed)
    if full_lr is None:
        add_lora(m, targets, r=r, alpha=RECIPE["alpha"])
        lr, wd = RECIPE["lr"], RECIPE["weight_decay"]
    else:
        for p in m.parameters():
            p.requires_grad_(True)
        lr, wd = full_lr, FULL_WD
    t0 = time.perf_counter()
    train(m, task, steps or RECIPE["steps"], lr=lr, batch_size=RECIPE["batch_size"], seed=seed,
          weight_decay=wd, progress=False)
    return m, time.perf_counter() - t0


def acc(m, task):
    return evaluate(m, task, n_examples=N_EVAL, metric="sequence")


def spread(xs):
    return {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs), "values": xs}


def fmt(s):
    return f"{s['mean']:.3f} [{s['min']:.3f}–{s['max']:.3f}]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--t6-seeds", type=int, default=5)
    ap.add_argument("--skip-t6", action="store_true")
    args = ap.parse_args()
    seeds = list(range(args.seeds))
    cache_path = HERE / "runs.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    pre = load_pretrained("cpu", CKPT)
    seed_everything(12345)
    rnd = ToyTransformer(ToyConfig(**CONFIG)).eval()
    res = {"recipe": RECIPE, "config": CONFIG, "downstream": list(DOWNSTREAM_TASKS), "seeds": seeds}
    out = []

    def say(*a):
        line = " ".join(str(x) for x in a)
        print(line, flush=True)
        out.append(line)

    def run(key, base, task, seed, keep=False, **kw):
        """Accuracy of one run (cached); with keep=True also returns the model (always retrained)."""
        k = f"{key}|{task}|{seed}"
        if k in cache and not keep:
            return cache[k]["acc"], None
        m, sec = fit(base, task, seed, **kw)
        cache[k] = {"acc": acc(m, task), "seconds": sec}
        cache_path.write_text(json.dumps(cache, indent=0))
        return cache[k]["acc"], m

    say(f"recipe: LoRA α={RECIPE['alpha']} lr={RECIPE['lr']} AdamW weight_decay={RECIPE['weight_decay']} "
        f"{RECIPE['steps']} steps batch {RECIPE['batch_size']}, one CPU thread; whole-answer accuracy on {N_EVAL} "
        f"held-out examples; seeds {seeds}")
    res["zero_shot"] = {t: acc(pre, t) for t in DOWNSTREAM_TASKS}
    say("pretrained, no adaptation:", {t: round(v, 3) for t, v in res["zero_shot"].items()})
    res["zero_shot_known_words"] = {p: acc(pre, p) for p in ("add3", "sub5", "rsub1")}
    say("  the same pairs asked with the pretraining words (never trained either):",
        {t: round(v, 3) for t, v in res["zero_shot_known_words"].items()})

    # (a) pretrained vs random init, LoRA r=4 on (W_q, W_v)
    say("\n(a) LoRA r=4 on W_q,W_v — pretrained vs random init")
    models = {}  # (task, seed) -> pretrained r=4 q,v model, for (d) and (e)
    res["a"] = {}
    for t in DOWNSTREAM_TASKS:
        pa, ra, secs = [], [], []
        for s in seeds:
            a_, m = run("pre-qv-r4", pre, t, s, keep=True)
            models[t, s] = m
            pa.append(a_)
            secs.append(cache[f"pre-qv-r4|{t}|{s}"]["seconds"])
            ra.append(run("rnd-qv-r4", rnd, t, s)[0])
        res["a"][t] = {"pretrained": spread(pa), "random": spread(ra), "seconds": spread(secs),
                       "n_seeds_ge_0.95": sum(x >= 0.95 for x in pa)}
        say(f"  {t:6s} pretrained {fmt(res['a'][t]['pretrained'])}  ≥0.95 on {res['a'][t]['n_seeds_ge_0.95']}/"
            f"{len(seeds)}   random init {fmt(res['a'][t]['random'])}   {statistics.fmean(secs):.1f} s/run")

    # (b) Table 6 analogue
    if not args.skip_t6:
        say("\n(b) Table 6 analogue: whole-answer accuracy, mean [min–max] over seeds", list(range(args.t6_seeds)))
        res["b"] = {}
        for t in DOWNSTREAM_TASKS:
            res["b"][t] = {}
            for name, tg in (("Wq", Q), ("Wq,Wv", QV), ("all4", ALL4)):
                row = {}
                for r in RANKS:
                    key = "pre-qv-r4" if (tg == QV and r == 4) else f"pre-{name}-r{r}"
                    row[r] = spread([run(key, pre, t, s, r=r, targets=tg)[0] for s in range(args.t6_seeds)])
                res["b"][t][name] = row
                say(f"  {t:6s} {name:6s} " + "  ".join(f"r={r}: {fmt(row[r])}" for r in RANKS))

    # (c) full fine-tuning, lr chosen by a sweep on seed 0 (mean over tasks)
    say("\n(c) full fine-tuning: lr sweep (seed 0, mean over tasks), then all seeds at the best lr")
    sweep = {lr: statistics.fmean(run(f"full-{lr}", pre, t, 0, full_lr=lr)[0] for t in DOWNSTREAM_TASKS)
             for lr in FULL_LRS}
    best = max(sweep, key=lambda lr: (sweep[lr], -lr))
    say("  sweep:", {f"{lr:g}": round(v, 3) for lr, v in sweep.items()}, "→ best lr", best)
    res["c"] = {"sweep": {str(k): v for k, v in sweep.items()}, "best_lr": best}
    for t in DOWNSTREAM_TASKS:
        full = spread([run(f"full-{best}", pre, t, s, full_lr=best)[0] for s in seeds])
        lora = res["a"][t]["pretrained"]
        res["c"][t] = {"full": full, "lora_r4_qv": lora, "gap": full["mean"] - lora["mean"]}
        say(f"  {t:6s} full FT {fmt(full)}   LoRA r=4 {fmt(lora)}   gap {full['mean'] - lora['mean']:+.3f}")

    # (d) §7.2 subspace similarity of A_{r=8} vs A_{r=64} and §7.3 ΔW vs W
    say("\n(d) §7.2 φ(A_r=8, A_r=64, 1, 1) over all pairs (r=8 seed i, r=64 seed j≠i); chance max(i,j)/k = 1/64"
        " = 0.016;"
        " [in brackets: the same with ΔW's right-singular vectors]")
    res["d"] = {}
    for t in DOWNSTREAM_TASKS:
        mats = {}
        for r in (8, 64):
            for s in seeds:
                m = run(f"pre-Wq,Wv-r{r}", pre, t, s, keep=True, r=r)[1]
                mats[r, s] = {n: (ly.A.detach().clone(), ly.delta_weight().detach().clone())
                              for n, ly in lora_layers(m).items()}
        pairs = [(i, j) for i in seeds for j in seeds if i != j]
        phis = {n: [subspace_similarity(mats[8, i][n][0], mats[64, j][n][0], 1, 1) for i, j in pairs]
                for n in mats[8, 0]}
        phis_dw = {n: [subspace_similarity(mats[8, i][n][1], mats[64, j][n][1], 1, 1) for i, j in pairs]
                   for n in mats[8, 0]}
        res["d"][t] = {"pairs": pairs, "phi11_A": {n: spread(v) for n, v in phis.items()},
                       "phi11_dW": {n: spread(v) for n, v in phis_dw.items()}}
        say(f"  {t:6s} " + "  ".join(f"{n.replace('blocks.', 'b').replace('.attn.', '.').replace('_proj', '')}: "
                                       f"{statistics.fmean(v):.2f} [{statistics.fmean(phis_dw[n]):.2f}]"
                                       for n, v in phis.items()))
    say("    §7.3 (LoRA r=4 on W_q,W_v; U,V = ΔW's top-4 singular vectors; random = random orthonormal U,V)")
    g = torch.Generator().manual_seed(0)
    for t in DOWNSTREAM_TASKS:
        rows = {}
        for n, ly in lora_layers(models[t, 0]).items():
            W, dW = ly.base.weight.detach().double(), ly.delta_weight().detach().double()
            U, S, Vh = torch.linalg.svd(dW)
            Ur, Vr = U[:, :4], Vh[:4]
            Qu = torch.linalg.qr(torch.randn(W.shape[0], 4, generator=g, dtype=torch.float64))[0]
            Qv = torch.linalg.qr(torch.randn(W.shape[1], 4, generator=g, dtype=torch.float64))[0]
            Uw, _, Vw = torch.linalg.svd(W)
            rows[n] = {"rel_norm": float(dW.norm() / W.norm()), "dW_norm": float(dW.norm()), "W_norm": float(W.norm()),
                       "proj_dW_dirs": projection_norm(W, Ur, Vr), "proj_W_dirs": projection_norm(W, Uw[:, :4], Vw[:4]),
                       "proj_random": projection_norm(W, Qu, Qv.T),
                       "top1_energy": float(S[0] ** 2 / (S ** 2).sum())}
            rows[n]["amplification"] = rows[n]["dW_norm"] / rows[n]["proj_dW_dirs"]
        res["d"][t]["s73_seed0"] = rows
        for n, v in rows.items():
            say(f"    {t:6s} {n:22s} ‖ΔW‖/‖W‖ {v['rel_norm']:.3f}  ‖UᵀWVᵀ‖: ΔW dirs {v['proj_dW_dirs']:.3f}"
                f"  W's top {v['proj_W_dirs']:.2f}  random {v['proj_random']:.3f}  amp {v['amplification']:.1f}"
                f"  top-1 energy {v['top1_energy']:.2f}")

    # (e) merging pairs: sum of both ΔW, against switching (each adapter alone on its own task)
    say("\n(e) merge two adapters (W0 + ΔW1 + ΔW2) vs switching (each alone: 'alone'); overlap = mean over the six"
        " layers of |cos(ΔW1, ΔW2)|; seeds", seeds)
    res["e"] = {}
    for r in (4, 1):
        ads = {(t, s): models[t, s] if r == 4 else run(f"pre-Wq,Wv-r{r}", pre, t, s, keep=True, r=r)[1]
               for t in DOWNSTREAM_TASKS for s in seeds}
        for t1, t2 in itertools.combinations(DOWNSTREAM_TASKS, 2):
            m1s, m2s, ov, alone = [], [], [], []
            for s in seeds:
                m = copy.deepcopy(pre)
                d1 = {n: ly.delta_weight().detach() for n, ly in lora_layers(ads[t1, s]).items()}
                d2 = {n: ly.delta_weight().detach() for n, ly in lora_layers(ads[t2, s]).items()}
                with torch.no_grad():
                    for n, dw in d1.items():
                        m.get_submodule(n).weight += dw + d2[n]
                m1s.append(acc(m, t1))
                m2s.append(acc(m, t2))
                alone.append(min(acc(ads[t1, s], t1), acc(ads[t2, s], t2)))
                ov.append(statistics.fmean(float((d1[n] * d2[n]).sum().abs() / (d1[n].norm() * d2[n].norm()))
                                           for n in d1))
            key = f"r{r} {t1}+{t2}"
            res["e"][key] = {t1: spread(m1s), t2: spread(m2s), "overlap": spread(ov), "alone_min": spread(alone),
                             "n_seeds_both_ge_0.9": sum(x >= 0.9 and y >= 0.9 for x, y in zip(m1s, m2s))}
            say(f"  r={r} {t1}+{t2}: merged {t1} {fmt(spread(m1s))}  {t2} {fmt(spread(m2s))}  both ≥0.9 on "
                f"{res['e'][key]['n_seeds_both_ge_0.9']}/{len(seeds)}  overlap {statistics.fmean(ov):.3f}"
                f"  alone ≥ {min(alone):.2f}")
    # (e, control) a pair that conflicts by construction: the same new word bound to two different ops
    class PlusAsSub(Task):
        """The prompt of plus3, answered with sub3's rule: 'plus' bound to subtraction."""

        @property
        def name(self):
            return "plus3-as-sub"

        def fn(self, x):
            return get_task("sub3").fn(x)

    other = PlusAsSub("plus", 3)
    m1s, m2s, alone = [], [], []
    for s in seeds:
        a1 = models["plus3", s]
        a2 = fit(pre, other, s)[0]
        alone.append(acc(a2, other))
        m = copy.deepcopy(pre)
        with torch.no_grad():
            for (n, l1), l2 in zip(lora_layers(a1).items(), lora_layers(a2).values(), strict=True):
                m.get_submodule(n).weight += l1.delta_weight() + l2.delta_weight()
        m1s.append(acc(m, "plus3"))
        m2s.append(acc(m, other))
    res["e"]["r4 plus3+plus3-as-sub"] = {"plus3": spread(m1s), "plus3-as-sub": spread(m2s), "alone": spread(alone)}
    say(f"  r=4 plus3 + plus3-as-sub (same prompt, two answers: conflict by construction): merged plus3 "
        f"{fmt(spread(m1s))}  plus3-as-sub {fmt(spread(m2s))}  (plus3-as-sub alone {fmt(spread(alone))})")
    from lora_edu.pretrained import pretrained_info

    info = pretrained_info(CKPT)
    res["f"] = {"checkpoint_bytes": CKPT.stat().st_size, "recipe": info["lora_edu_recipe"],
                "worst_skill_accuracy": min(info["lora_edu_accuracy"].values())}
    say(f"\n(f) checkpoint {CKPT.stat().st_size / 1024:.0f} KiB, recipe {info['lora_edu_recipe']}, worst pretraining "
        f"skill {min(info['lora_edu_accuracy'].values()):.3f} (time: see NOTES.md)")
    (HERE / "results.json").write_text(json.dumps(res, indent=1))
    (HERE / "table.txt").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

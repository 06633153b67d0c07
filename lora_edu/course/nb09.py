"""Notebook 09 (the rank lab): training runs on demand, their figures and the lab's UI."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import torch

from ..inject import count_parameters, linear_names, lora_layers, normalize_targets
from ..lowrank import effective_rank, lora_param_count, singular_values
from ..pretrained import load_pretrained
from ..runtime import check_number, get_device
from ..tasks import DOWNSTREAM_TASKS, N_SYMBOLS, get_task
from ..train import evaluate
from .common import ZERO_TOL, cpu_threads, figure, smooth, to_png, train_lora

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")


# Slider ranges of the UI (the plain functions accept any valid value, e.g. r up to min(d, k)).
R_RANGE = (1, 64)


ALPHA_RANGE = (1.0, 128.0)


LR_RANGE = (1e-4, 1e-1)


STEPS_RANGE = (10, 1000)


MAX_STEPS = 100_000


HOT = ("plus3", ("q_proj", "v_proj"), 1, ALPHA_RANGE[1], LR_RANGE[1])  # the sliders' hottest corner: α/r = 128


DEFAULTS = {"task": "plus3", "targets": ("q_proj", "v_proj"), "r": 4, "alpha": 8.0, "lr": 1e-2, "steps": 300}


CHANCE_LOSS = math.log(N_SYMBOLS)  # ln 10: the loss of a model that guesses each answer digit uniformly


TAIL = 0.1  # a run's final loss is the mean over its last 10 % of steps (one step's loss is noisy)


DIP = 10  # "had learned" = some window of DIP consecutive steps (640 examples) averaged below LEARNED × ln 10


CHANCE_BAND = (0.98, 1.15)  # "at chance" = final loss within 0.98–1.15 × ln 10 (a collapsed run hovers there)


ROSE = 1.1  # "diverged" also when the final loss ends above 1.1 × the mean of the run's first DIP steps


LEARNED = 0.9  # "collapsed" = the loss had been below 90 % of ln 10 on the way (over DIP steps), then came back


STATUS_TEXT = {"ok": "", "diverged": "diverged", "collapsed": "collapsed to chance", "at chance": "stuck at chance",
               "above chance": "still worse than chance", "no gain": "no better than the pretrained model"}


ADVICE = {"diverged": "lower the learning rate or α", "collapsed": "lower the learning rate or α",
          "at chance": "add steps",
          "above chance": "add steps if the loss is still falling — or lower the learning rate or α",
          "no gain": "add steps or raise the learning rate"}


def run_status(loss, accuracy: float, base_accuracy: float) -> tuple[str, str]:
    """(status, reason) of a finished run, from its loss curve and its final and pretrained accuracies.

    final = mean loss of the last TAIL of the steps; lowest = the lowest mean over DIP consecutive steps.
    "diverged": a loss or the accuracy is not finite, or the run blew up — final above the chance band
    (CHANCE_BAND × ln 10) although the loss had been at chance or below on the way (lowest inside or under the
    band), or above ROSE × the mean of its first DIP steps. Final inside the band (the model guesses the answer
    digit about uniformly): "collapsed" if the loss had been clearly lower (lowest < LEARNED × ln 10) or the
    accuracy ended at or below the pretrained model's (what it knew is gone), else "at chance" (on its way down,
    not past chance yet). Final above the band, never down to it and not rising: "above chance" (e.g. too few
    steps — the pretrained model starts far above chance on a task it answers with the wrong rule).
    "no gain": the accuracy is at or below the pretrained model's; "ok" otherwise (reason "").
    """
    loss = [float(v) for v in loss]
    if not loss:
        raise ValueError("loss must hold at least one value")
    if not all(math.isfinite(v) for v in loss) or not math.isfinite(accuracy):
        return "diverged", "the loss became NaN/inf"
    n, w = max(1, round(TAIL * len(loss))), min(DIP, len(loss))
    final = sum(loss[-n:]) / n
    lowest = min(sum(loss[i:i + w]) / w for i in range(len(loss) - w + 1))
    learned = lowest < LEARNED * CHANCE_LOSS
    chance = f"ln {N_SYMBOLS} = {CHANCE_LOSS:.2f}, the loss of guessing a digit at random"
    was = (f"it had been down to {lowest:.2f}" if learned else f"it was never clearly below (lowest {lowest:.2f})")
    if final >= CHANCE_BAND[1] * CHANCE_LOSS:
        start = sum(loss[:w]) / w
        if lowest < CHANCE_BAND[1] * CHANCE_LOSS or final > ROSE * start:
            how = (f"after it had been down to {lowest:.2f}" if lowest < CHANCE_BAND[1] * CHANCE_LOSS else
                   f"up from {start:.2f} at the start")
            return "diverged", f"final loss {final:.2f} > {CHANCE_BAND[1]:g} × {chance}, {how}: the loss blew up"
        return "above chance", f"final loss {final:.2f} > {CHANCE_BAND[1]:g} × {chance}; lowest {lowest:.2f}"
    if final >= CHANCE_BAND[0] * CHANCE_LOSS:
        lost = accuracy <= base_accuracy
        if lost and not learned:
            was += f", and its accuracy {accuracy:.3f} is at or below the pretrained model's {base_accuracy:.3f}"
        return ("collapsed" if learned or lost else "at chance",
                f"final loss {final:.2f}, within [{CHANCE_BAND[0]:g}, {CHANCE_BAND[1]:g}] × {chance}; {was}")
    if accuracy <= base_accuracy:
        return "no gain", f"accuracy {accuracy:.3f} ≤ the pretrained model's {base_accuracy:.3f}"
    return "ok", ""


def rank_comparison(runs, tol: float = 0.02) -> dict | None:
    """The smallest against the largest r among runs whose other settings are all equal (the first such group),
    seed by seed: whole-answer accuracies of the seeds both ranks ran. None if no two runs differ only in r.

    Keys: task, targets, alpha, lr, steps, lo_r, hi_r, seeds, lo, hi (lists, one per seed), gap (mean hi − mean
    lo), failed (labels of failed runs among them), matches (|gap| ≤ tol, every run ok, ≥ 3 seeds), tol.
    """
    groups = {}
    for run in runs:
        key = (run.task, run.targets, run.alpha, run.lr, run.steps)
        groups.setdefault(key, {}).setdefault(run.r, {})[run.seed] = run
    for (task, targets, alpha, lr, steps), by_r in groups.items():
        if len(by_r) < 2:
            continue
        lo_r, hi_r = min(by_r), max(by_r)
        seeds = sorted(set(by_r[lo_r]) & set(by_r[hi_r]))
        if not seeds:
            continue
        pairs = [(by_r[lo_r][s], by_r[hi_r][s]) for s in seeds]
        lo, hi = [a.exact for a, _ in pairs], [b.exact for _, b in pairs]
        failed = [f"r = {run.r} (seed {run.seed}) {STATUS_TEXT[run.status[0]]}"
                  for pair in pairs for run in pair if run.status[0] != "ok"]
        gap = sum(hi) / len(hi) - sum(lo) / len(lo)
        return {"task": task, "targets": targets, "alpha": alpha, "lr": lr, "steps": steps, "lo_r": lo_r,
                "hi_r": hi_r, "seeds": seeds, "lo": lo, "hi": hi, "gap": gap, "failed": failed, "tol": tol,
                "matches": abs(gap) <= tol and not failed and len(seeds) >= 3}
    return None


def _short(targets) -> str:
    return ",".join(t.removesuffix("_proj") for t in targets)


def percent_of_pretrained(trainable: int, base_total: int) -> float:
    """The lab's one percentage: trainable LoRA numbers per 100 parameters of the pretrained model (LoRA's
    own numbers are not in the denominator, so the same r gives the same percentage in every view)."""
    return 100.0 * trainable / base_total


@dataclass
class Run:
    """One finished fine-tune: its settings, costs, curves and the singular values of every ΔW."""

    id: int
    task: str
    targets: tuple[str, ...]
    r: int
    alpha: float
    lr: float
    steps: int
    trainable: int
    total: int
    accuracy: float
    seconds: float
    step: list = field(repr=False)
    loss: list = field(repr=False)
    eval_step: list = field(repr=False)
    eval_accuracy: list = field(repr=False)
    spectra: dict = field(repr=False)  # {layer name: singular values of ΔW (list of floats, [] if not finite)}
    diverged: bool = False
    seed: int = 0  # A's random init and the order of the batches
    exact: float = math.nan  # final whole-answer accuracy: every answer digit right

    @property
    def status(self) -> tuple[str, str]:
        """run_status of this run: (one of STATUS_TEXT's keys, reason)."""
        return run_status(self.loss, self.accuracy, self.eval_accuracy[0])

    @property
    def label(self) -> str:
        return (f"#{self.id} {self.task} {_short(self.targets)} r={self.r} α={self.alpha:g} lr={self.lr:.0e} "
                f"seed {self.seed}")

    def effective_ranks(self, fraction: float = 0.9) -> dict[str, int]:
        """{layer: number of singular directions of ΔW holding `fraction` of ‖ΔW‖_F²} (0 if ΔW is 0 or diverged)."""
        effective_rank(torch.zeros(1, device="cpu"), fraction)  # checks fraction, even with no spectra
        return {name: effective_rank(torch.tensor(sv, dtype=torch.float64, device="cpu"), fraction) if sv else 0
                for name, sv in self.spectra.items()}

    def row(self) -> dict:
        return {
            "run": self.id, "task": self.task, "targets": _short(self.targets), "r": self.r,
            "alpha": self.alpha, "lr": self.lr, "steps": self.steps, "trainable": self.trainable,
            "trainable %": percent_of_pretrained(self.trainable, self.total - self.trainable),  # total: with LoRA
            "seed": self.seed, "final accuracy": self.accuracy, "whole answers": self.exact,
            "time (s)": self.seconds, "note": ": ".join(filter(None, (STATUS_TEXT[self.status[0]], self.status[1]))),
        }


class RankLab:
    """State of the rank lab: every run kept in `runs`; callbacks `run_training`, `on_train`, `clear`.

    Each run starts from the same pretrained model with the same seed (`seed`, unless a run asks for another),
    so runs differ only in the settings you changed. Runs use the course's LoRA recipe (common.train_lora: AdamW
    with weight decay 1.0 on A and B) with the lab's r, α, learning rate and steps. On the CPU, runs use
    `threads` torch threads (None: torch's setting; see `common.cpu_threads` for why 1 is the default).
    """

    def __init__(self, device=None, seed: int = 0, batch_size: int = 64, eval_examples: int = 256,
                 n_evals: int = 10, threads: int | None = 1):
        for name, v, lo in (("seed", seed, 0), ("batch_size", batch_size, 1), ("eval_examples", eval_examples, 1),
                            ("n_evals", n_evals, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int ≥ {lo}, got {v!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.device = get_device(device)
        self.threads = threads
        self.seed = seed
        self.batch_size = batch_size
        self.eval_examples = eval_examples
        self.n_evals = n_evals
        self.runs: list[Run] = []
        self._next_id = 1
        self._base = None
        self._base_accuracy: dict[str, float] = {}

    # -- the pretrained model, loaded once -------------------------------------------------------
    def base_model(self):
        if self._base is None:
            self._base = load_pretrained(self.device)
        return self._base

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """{target: (d, k)} of each target matrix (the same in every block)."""
        base = self.base_model()
        out = {}
        for n in linear_names(base):
            t = n.rsplit(".", 1)[-1]
            if t in TARGETS and t not in out:
                out[t] = tuple(base.get_submodule(n).weight.shape)
        return out

    def max_rank(self, targets) -> int:
        shapes = self.matrix_shapes()
        return min(min(shapes[t]) for t in targets)

    def count_trainable(self, targets, r: int) -> int:
        """r·(d + k) summed over every adapted matrix in every block: what the run will train."""
        targets = self._check_targets(targets)
        base = self.base_model()
        n = 0
        for name in linear_names(base):
            if name.rsplit(".", 1)[-1] in targets:
                d, k = base.get_submodule(name).weight.shape
                n += lora_param_count(d, k, r)
        return n

    # -- validation: ValueError / TypeError naming the control --------------------------------------
    @staticmethod
    def _check_targets(targets) -> tuple[str, ...]:
        if isinstance(targets, (list, tuple)) and not targets:
            raise ValueError("targets: choose at least one matrix to adapt (for example q_proj and v_proj)")
        targets = normalize_targets(targets)  # the core's rule: a name or a sequence of names
        bad = [t for t in targets if t not in TARGETS]
        if bad:
            raise ValueError(f"targets: unknown matrix {bad[0]!r}; choose from {TARGETS}")
        return tuple(t for t in TARGETS if t in targets)  # canonical order, no duplicates

    def validate(self, task, targets, r, alpha, lr, steps, seed=None) -> dict:
        """The settings, checked and normalised; raises ValueError/TypeError naming the bad control.

        seed None means the lab's own seed."""
        if task not in DOWNSTREAM_TASKS:
            get_task(task)  # a wrong type or an unknown name: get_task's own TypeError / ValueError
            raise ValueError(f"task must be a downstream task {DOWNSTREAM_TASKS}, got {task!r}")
        targets = self._check_targets(targets)
        if isinstance(r, bool) or not isinstance(r, int):
            raise TypeError(f"r must be an int, got {type(r).__name__} {r!r}")
        hi = self.max_rank(targets)
        if not 1 <= r <= hi:
            raise ValueError(f"r must be between 1 and {hi} (= min(d, k) of the chosen matrices), got {r}")
        for name, v in (("alpha", alpha), ("lr", lr)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
            if not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise TypeError(f"steps must be an int, got {type(steps).__name__} {steps!r}")
        if not 1 <= steps <= MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        seed = self.seed if seed is None else seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int ≥ 0 or None, got {seed!r}")
        return {"task": task, "targets": targets, "r": r, "alpha": float(alpha), "lr": float(lr), "steps": steps,
                "seed": seed}

    # -- callbacks ------------------------------------------------------------------------------
    def run_training(self, task, targets, r, alpha, lr, steps, progress=None, seed=None) -> Run:
        """Fine-tune a fresh copy of the pretrained model with LoRA and append the run to `runs`.

        progress(step, steps, loss) is called after every step (e.g. to move a progress bar). seed: A's init and
        the batches' order (None: the lab's seed) — the same settings with three seeds are three independent runs.
        Bad settings raise ValueError/TypeError before anything is trained; `runs` is then unchanged.
        """
        cfg = self.validate(task, targets, r, alpha, lr, steps, seed)
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable or None, got {type(progress).__name__}")
        with cpu_threads(self.threads, self.device):
            return self._run(cfg, progress)

    def _run(self, cfg: dict, progress) -> Run:
        task, steps = cfg["task"], cfg["steps"]
        if task not in self._base_accuracy:  # LoRA starts at ΔW = 0: step 0 is the pretrained model
            self._base_accuracy[task] = evaluate(self.base_model(), task, self.eval_examples)
        def callback(step, loss):
            if progress is not None:
                progress(step, steps, loss)

        every = max(1, steps // self.n_evals)
        model, hist = train_lora(task, base=self.base_model(), targets=cfg["targets"], r=cfg["r"], alpha=cfg["alpha"],
                                 lr=cfg["lr"], steps=steps, seed=cfg["seed"], batch_size=self.batch_size,
                                 eval_every=every if every < steps else None, eval_examples=self.eval_examples,
                                 progress=False, callback=callback)
        trainable, total = count_parameters(model)
        spectra, finite = {}, all(math.isfinite(v) for v in hist["loss"])
        for name, layer in lora_layers(model).items():
            delta = layer.delta_weight().detach().float().cpu()
            if torch.isfinite(delta).all():
                spectra[name] = singular_values(delta).tolist()
            else:
                spectra[name], finite = [], False
        run = Run(id=self._next_id, targets=cfg["targets"], trainable=trainable, total=total, task=task, r=cfg["r"],
                  alpha=cfg["alpha"], lr=cfg["lr"], steps=steps, accuracy=hist["accuracy"][-1],
                  seconds=hist["seconds"], step=hist["step"], loss=hist["loss"],
                  eval_step=[0] + hist["eval_step"], eval_accuracy=[self._base_accuracy[task]] + hist["accuracy"],
                  spectra=spectra, diverged=not finite, seed=cfg["seed"],
                  exact=evaluate(model, task, self.eval_examples, metric="sequence"))
        self._next_id += 1
        self.runs.append(run)
        return run

    def on_train(self, task, targets, r, alpha, lr, steps, progress=None, seed=None) -> str:
        """What the Train button does: run_training, but bad settings give a readable message, not an error."""
        try:
            run = self.run_training(task, targets, r, alpha, lr, steps, progress, seed)
        except (ValueError, TypeError) as e:
            return f"⚠️ {e}"
        status, reason = run.status
        what = (f"final accuracy {run.accuracy:.3f} (whole answers {run.exact:.3f}) after {run.steps} steps in "
                f"{run.seconds:.1f} s, "
                f"{run.trainable:,} trainable parameters")
        if status == "ok":
            return f"Run #{run.id} done: {what}."
        return f"⚠️ Run #{run.id} {STATUS_TEXT[status]}: {reason}; {what}. Try again: {ADVICE[status]}."

    def clear(self) -> str:
        """Forget every run."""
        n = len(self.runs)
        self.runs.clear()
        self._next_id = 1
        return f"Cleared {n} run{'s' if n != 1 else ''}."

    # -- views ----------------------------------------------------------------------------------
    def table_rows(self) -> list[dict]:
        return [run.row() for run in self.runs]

    def table_html(self) -> str:
        rows = self.table_rows()
        if not rows:
            return "<i>No runs yet: choose settings and press Train.</i>"
        head = ("run", "task", "targets", "r", "α", "lr", "steps", "seed", "trainable params (% of pretrained model)",
                "final accuracy (digits)", "whole answers", "time", "note")
        cells = []
        for row in rows:
            vals = (row["run"], row["task"], row["targets"], row["r"], f"{row['alpha']:g}", f"{row['lr']:.1e}",
                    row["steps"], row["seed"], f"{row['trainable']:,} ({row['trainable %']:.2f} %)",
                    f"{row['final accuracy']:.3f}", f"{row['whole answers']:.3f}",
                    f"{row['time (s)']:.1f} s", row["note"])
            warn = " style='background:#fff3cd'" if row["note"] else ""  # a failed run stands out
            cells.append(f"<tr{warn}>" + "".join(f"<td style='padding:2px 8px'>{html.escape(str(v))}</td>"
                                                 for v in vals) + "</tr>")
        header = "<tr>" + "".join(f"<th style='padding:2px 8px'>{h}</th>" for h in head) + "</tr>"
        return f"<table class='lora-lab-table'>{header}{''.join(cells)}</table>"

    def curves(self) -> list[dict]:
        return [{"label": r.label, "step": r.step, "loss": r.loss, "eval_step": r.eval_step,
                 "accuracy": r.eval_accuracy, "status": r.status[0]} for r in self.runs]

    def spectra(self) -> list[dict]:
        return [{"label": r.label, "r": r.r, "spectra": r.spectra} for r in self.runs]

    def figure_curves(self):

        return lab_curves_figure(self.curves())

    def figure_spectra(self):

        return lab_spectra_figure(self.spectra())

    def describe(self, targets, r, alpha) -> str:
        """One line about the chosen settings (updates live as the sliders move); never raises."""
        try:
            targets = self._check_targets(targets)
            hi = self.max_rank(targets)
            if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= hi:
                return f"⚠️ r must be between 1 and {hi} for these matrices."
            alpha = check_number("α", alpha, 0, bounds="(]")
            n = self.count_trainable(targets, r)
            total = sum(p.numel() for p in self.base_model().parameters())
        except Exception as e:  # noqa: BLE001 — a live caption shows a message, never a traceback
            return f"⚠️ {e}"
        return (f"scaling α/r = {alpha:g}/{r} = {alpha / r:.3g} · trainable parameters: {n:,} "
                f"({percent_of_pretrained(n, total):.2f} % of the pretrained model's {total:,}) · "
                f"ΔW of each matrix has rank ≤ {r}")


def rank_lab_ui(lab: RankLab | None = None, device=None, **defaults):
    """The rank lab as widgets: controls, Train / Clear, a live progress bar, curves, runs table, ΔW spectra.

    Returns an ipywidgets.VBox with `.lab` (the RankLab) and `.controls` (the widgets by name).
    `defaults` overrides DEFAULTS (task, targets, r, alpha, lr, steps).
    """
    import ipywidgets as W


    unknown = set(defaults) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"rank_lab_ui got unexpected settings {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    lab = lab if lab is not None else RankLab(device=device)
    d = {**DEFAULTS, **defaults}
    lab.validate(**d)  # wrong defaults are a programming error: raise here, not in the UI
    style = {"description_width": "110px"}
    wide = W.Layout(width="460px")
    task = W.Dropdown(options=list(DOWNSTREAM_TASKS), value=d["task"], description="task", style=style)
    boxes = {t: W.Checkbox(value=t in d["targets"], description=t, indent=False, layout=W.Layout(width="95px"))
             for t in TARGETS}
    r = W.IntSlider(value=d["r"], min=R_RANGE[0], max=R_RANGE[1], description="rank r", style=style,
                    layout=wide, continuous_update=False)
    alpha = W.FloatSlider(value=d["alpha"], min=ALPHA_RANGE[0], max=ALPHA_RANGE[1], step=1.0, description="α",
                          style=style, layout=wide, continuous_update=False)
    lr = W.FloatLogSlider(value=d["lr"], base=10, min=math.log10(LR_RANGE[0]), max=math.log10(LR_RANGE[1]),
                          step=0.25, description="learning rate", readout_format=".1e", style=style, layout=wide,
                          continuous_update=False)
    steps = W.IntSlider(value=d["steps"], min=STEPS_RANGE[0], max=STEPS_RANGE[1], step=10, description="steps",
                        style=style, layout=wide, continuous_update=False)
    train_btn = W.Button(description="Train", button_style="primary", icon="play")
    clear_btn = W.Button(description="Clear runs", icon="trash")
    bar = W.IntProgress(value=0, min=0, max=d["steps"], description="progress", style=style, layout=wide)
    info = W.HTML()
    status = W.HTML("Press <b>Train</b> to fine-tune with these settings.")
    curves_img = W.Image(format="png")
    table = W.HTML()
    spectra_img = W.Image(format="png")
    for wdg, cls in ((train_btn, "lora-lab-train"), (clear_btn, "lora-lab-clear"), (bar, "lora-lab-progress"),
                     (status, "lora-lab-status"), (r, "lora-lab-r")):
        wdg.add_class(cls)

    def chosen_targets():
        return tuple(t for t, b in boxes.items() if b.value)

    def update_info(*_):
        info.value = lab.describe(chosen_targets(), r.value, alpha.value)

    def refresh():  # called by the buttons and at build: a drawing error becomes the status line
        try:
            curves_img.value = to_png(lab.figure_curves())
            table.value = lab.table_html()
            spectra_img.value = to_png(lab.figure_spectra())
        except Exception as e:  # noqa: BLE001 — a widget shows a message, never a traceback
            status.value += "<br>" + html.escape(f"⚠️ could not draw the runs: {type(e).__name__}: {e}")

    def progress(step, total, loss):
        if step == total or step % max(1, total // 100) == 0:
            bar.value = step
            status.value = f"training… step {step}/{total} · loss {loss:.3f}"

    def on_train(_=None):
        train_btn.disabled = clear_btn.disabled = True
        bar.max, bar.value, bar.bar_style = steps.value, 0, "info"
        try:
            msg = lab.on_train(task.value, chosen_targets(), r.value, alpha.value, lr.value, steps.value, progress)
        except Exception as e:  # noqa: BLE001 — a widget shows a message, never a traceback (e.g. out of memory)
            msg = f"⚠️ training stopped: {type(e).__name__}: {e}"
        finally:
            train_btn.disabled = clear_btn.disabled = False
        bar.bar_style = "warning" if msg.startswith("⚠️") else "success"
        status.value = html.escape(msg)
        refresh()

    def on_clear(_=None):
        status.value = html.escape(lab.clear())
        bar.value, bar.bar_style = 0, ""
        refresh()

    for wdg in (r, alpha, *boxes.values()):
        wdg.observe(update_info, names="value")
    train_btn.on_click(on_train)
    clear_btn.on_click(on_clear)
    update_info()
    refresh()
    controls = W.VBox([task, W.HBox([W.Label("targets", layout=W.Layout(width="110px")), *boxes.values()]),
                       r, alpha, lr, steps, info, W.HBox([train_btn, clear_btn]), bar, status])
    box = W.VBox([W.HTML("<h3>Rank lab</h3>"), controls, W.HTML("<b>Curves of every run</b>"), curves_img,
                  W.HTML("<b>Runs</b>"), table, W.HTML("<b>Singular values of each run's ΔW</b>"), spectra_img])
    box.lab = lab
    box.controls = {"task": task, "targets": boxes, "r": r, "alpha": alpha, "lr": lr, "steps": steps,
                    "train": train_btn, "clear": clear_btn, "progress": bar, "status": status, "info": info,
                    "curves": curves_img, "table": table, "spectra": spectra_img}
    return box


def placeholder_figure(text: str = "No runs yet: press Train."):
    fig = figure(width=6.0, height=1.2, axes=False)
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12, color="0.4")
    return fig


LEGEND_CHARS = 170  # characters of legend text (fontsize 7) that fit across the 11-inch figure, handles included


def lab_curves_figure(curves: list[dict]):
    """Overlay of every run's training loss (smoothed, log scale) and held-out accuracy versus step."""
    if not curves:
        return placeholder_figure()
    labels = [c["label"] + (f" — {STATUS_TEXT[c['status']]}" if c.get("status", "ok") != "ok" else "")
              for c in curves]
    # the legend goes under the panels, so it never covers a curve; as many columns as its longest label lets fit
    ncols = max(1, min(3, len(curves), LEGEND_CHARS // (max(map(len, labels)) + 6)))
    fig = figure(width=11.0, height=3.6 + 0.22 * math.ceil(len(curves) / ncols), axes=False)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for c, label in zip(curves, labels):
        window = max(1, len(c["loss"]) // 25)
        failed = c.get("status", "ok") != "ok"
        line, = ax_loss.plot(c["step"], smooth(c["loss"], window), lw=1.3, ls="--" if failed else "-", label=label)
        ax_acc.plot(c["eval_step"], c["accuracy"], marker="o", ms=3, color=line.get_color(), ls=line.get_linestyle())
    ax_loss.axhline(CHANCE_LOSS, color="k", ls=":", lw=0.8)
    ax_loss.text(1.0, CHANCE_LOSS, f"chance: ln {N_SYMBOLS} ", fontsize=7, ha="right", va="bottom",
                 transform=ax_loss.get_yaxis_transform())
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (smoothed)")
    ax_loss.set_title("loss", fontsize=10)
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("token accuracy (held out)")
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_title("accuracy", fontsize=10)
    fig.legend(fontsize=7, loc="outside lower center", ncols=ncols)
    return fig


def lab_spectra_figure(spectra: list[dict], max_panels: int = 12):
    """One panel per adapted matrix (union over runs), one line per run: singular values of that run's ΔW.

    `spectra`: [{"label": str, "r": int, "spectra": {layer name: 1-D singular values}}].
    """
    import numpy as np

    layers = []
    for s in spectra:
        for name in s["spectra"]:
            if name not in layers:
                layers.append(name)
    if not layers:
        return placeholder_figure("No ΔW spectra yet: press Train.")
    layers = layers[:max_panels]
    ncols = min(4, len(layers))
    nrows = math.ceil(len(layers) / ncols)
    fig = figure(width=2.9 * ncols + 0.6, height=2.5 * nrows + 0.5, axes=False)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    colors = [f"C{i % 10}" for i in range(len(spectra))]
    for ax, name in zip(axes, layers):
        for color, s in zip(colors, spectra):
            sv = s["spectra"].get(name)
            if sv is None or len(sv) == 0:
                continue
            sv = np.asarray(sv, dtype=float)
            sv = np.where(sv > ZERO_TOL * np.nanmax(sv), sv, np.nan)
            ax.semilogy(np.arange(1, sv.size + 1), sv, marker="o", ms=2.5, lw=1, color=color, label=s["label"])
        ax.set_title(name.replace("blocks.", "block ").replace(".attn.", " ").replace(".mlp.", " "), fontsize=9)
        ax.set_xlabel("i", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(layers):]:
        ax.axis("off")
    axes[0].set_ylabel("σᵢ of ΔW", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, fontsize=7, loc="outside lower center", ncols=min(3, len(labels)))
    fig.suptitle("singular values of each run's ΔW = (α/r)·B·A (values below 1e-6·σ₁ are zero: not drawn)",
                 fontsize=10)
    return fig

"""plots_transformer draws every figure from real experiment rows and rejects empty input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import lora_edu as le  # noqa: E402
from lora_edu.course import common, nb04, nb05, nb06


@pytest.fixture(scope="module")
def base():
    return le.load_pretrained(device="cpu")


def _done(fig):
    assert fig.axes
    plt.close(fig)


def test_model_figures(base):
    _done(nb04.plot_param_breakdown(nb04.parameter_table(base)))
    _done(nb04.plot_baseline(nb04.baseline_accuracy(base, ("reverse", "sort"), n_examples=16)))
    tokens, _ = le.get_task("copy").make(le.tasks.encode("31415926"))
    _, atts = base(tokens, return_attn=True)
    fig = nb04.plot_attention(atts, le.tasks.decode(tokens[0]).split(), layer=1)
    assert len(fig.axes) == base.cfg.n_head
    _done(fig)
    with pytest.raises(ValueError):
        nb04.plot_attention(atts, layer=5)
    with pytest.raises(ValueError):
        nb04.plot_param_breakdown([])


def test_finetune_figures(base):
    kw = {"steps": 3, "model": base, "progress": False, "eval_examples": 8}
    _, lora = nb05.finetune("increment", **kw)
    _, full = nb05.finetune("increment", "full", **kw)
    _done(nb05.plot_loss_curves([lora, full]))
    _done(nb05.plot_cost_comparison(lora, full))
    t5 = nb05.compare_targets("increment", steps=1, configs=[(("q_proj",), 8), (("q_proj", "v_proj"), 4)],
                            progress=False, eval_examples=8)
    fig = nb05.plot_target_budget({"increment": t5, "again": t5})
    assert len(fig.axes) == 2
    _done(fig)
    _done(nb05.plot_target_budget(t5))
    _done(nb05.plot_rank_sweep(nb05.rank_sweep("increment", ranks=(1, 2), steps=1, progress=False, eval_examples=8)))
    for f in (nb05.plot_loss_curves, nb05.plot_target_budget, nb05.plot_rank_sweep):
        with pytest.raises(ValueError):
            f([])


def test_merge_figures(base):
    m = le.load_pretrained(device="cpu")
    le.add_lora(m, r=2)
    for layer in le.lora_layers(m).values():
        torch.nn.init.normal_(layer.B, std=0.05)
    a = le.extract_adapter(m)
    _done(nb06.plot_latency(common.latency_comparison(base, a, batch_sizes=(1, 2), repeats=2), device="cpu"))
    rows = (common.switch_drift(base, a, "bfloat16", (1, 3))
            + common.switch_drift(base, a, "bfloat16", (1, 3), strategy="keep_original"))
    _done(nb06.plot_drift(rows))
    for f in (nb06.plot_latency, nb06.plot_drift):
        with pytest.raises(ValueError):
            f([])

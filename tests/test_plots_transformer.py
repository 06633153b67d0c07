"""plots_transformer draws every figure from real experiment rows and rejects empty input."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import lora_edu as le  # noqa: E402
from lora_edu import experiments as ex  # noqa: E402
from lora_edu import plots_transformer as pt  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return le.load_pretrained(device="cpu")


def _done(fig):
    assert fig.axes
    plt.close(fig)


def test_model_figures(base):
    _done(pt.plot_param_breakdown(ex.parameter_table(base)))
    _done(pt.plot_baseline(ex.baseline_accuracy(base, ("reverse", "sort"), n_examples=16)))
    tokens, _ = le.get_task("copy").make(le.tasks.encode("31415926"))
    _, atts = base(tokens, return_attn=True)
    fig = pt.plot_attention(atts, le.tasks.decode(tokens[0]).split(), layer=1)
    assert len(fig.axes) == base.cfg.n_head
    _done(fig)
    with pytest.raises(ValueError):
        pt.plot_attention(atts, layer=5)
    with pytest.raises(ValueError):
        pt.plot_param_breakdown([])


def test_finetune_figures(base):
    kw = {"steps": 3, "model": base, "progress": False, "eval_examples": 8}
    _, lora = ex.finetune("increment", **kw)
    _, full = ex.finetune("increment", "full", **kw)
    _done(pt.plot_loss_curves([lora, full]))
    _done(pt.plot_cost_comparison(lora, full))
    t5 = ex.compare_targets("increment", steps=1, configs=[(("q_proj",), 8), (("q_proj", "v_proj"), 4)],
                            progress=False, eval_examples=8)
    fig = pt.plot_target_budget({"increment": t5, "again": t5})
    assert len(fig.axes) == 2
    _done(fig)
    _done(pt.plot_target_budget(t5))
    _done(pt.plot_rank_sweep(ex.rank_sweep("increment", ranks=(1, 2), steps=1, progress=False, eval_examples=8)))
    for f in (pt.plot_loss_curves, pt.plot_target_budget, pt.plot_rank_sweep):
        with pytest.raises(ValueError):
            f([])


def test_merge_figures(base):
    m = le.load_pretrained(device="cpu")
    le.add_lora(m, r=2)
    for layer in le.lora_layers(m).values():
        torch.nn.init.normal_(layer.B, std=0.05)
    a = le.extract_adapter(m)
    _done(pt.plot_latency(ex.latency_comparison(base, a, batch_sizes=(1, 2), repeats=2), device="cpu"))
    rows = ex.merge_drift(base, a, "bfloat16", (1, 3)) + ex.merge_drift(base, a, "bfloat16", (1, 3), exact=True)
    _done(pt.plot_drift(rows))
    for f in (pt.plot_latency, pt.plot_drift):
        with pytest.raises(ValueError):
            f([])

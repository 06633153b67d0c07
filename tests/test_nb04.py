"""Notebook 04's module: parameter tables, baseline accuracy and figures."""

import matplotlib
import pytest

import lora_edu as le
from lora_edu.course import nb04

matplotlib.use("Agg")

from .conftest import figure_done


# ---- notebook 04 -----------------------------------------------------------------------------
def test_parameter_table_sums_to_model_and_groups(base):
    table = nb04.parameter_table(base)
    assert sum(r["params"] for r in table) == le.count_parameters(base)[1]
    q = next(r for r in table if r["name"] == "blocks.0.attn.q_proj.weight")
    assert q["shape"] == (64, 64) and q["params"] == 4096 and q["group"] == "attention"
    groups = nb04.parameter_groups(base)
    assert sum(groups.values()) == le.count_parameters(base)[1]
    assert groups["attention"] == 2 * 4 * (64 * 64 + 64)
    assert groups["mlp"] == 2 * (2 * 64 * 256 + 256 + 64)

def test_baseline_accuracy(base):
    acc = nb04.baseline_accuracy(base, n_examples=32)
    assert set(acc) == set(le.DOWNSTREAM_TASKS)
    assert all(0 <= v <= 1 for v in acc.values())
    assert nb04.baseline_accuracy(base, "copy", n_examples=32) == {"copy": 1.0}
    with pytest.raises(ValueError):
        nb04.baseline_accuracy(base, ("nope",))

def test_model_figures(base):
    figure_done(nb04.plot_param_breakdown(nb04.parameter_table(base)))
    figure_done(nb04.plot_baseline(nb04.baseline_accuracy(base, ("reverse", "sort"), n_examples=16)))
    tokens, _ = le.get_task("copy").make(le.tasks.encode("31415926"))
    _, atts = base(tokens, return_attn=True)
    fig = nb04.plot_attention(atts, le.tasks.decode(tokens[0]).split(), layer=1)
    assert len(fig.axes) == base.cfg.n_head
    figure_done(fig)
    with pytest.raises(ValueError):
        nb04.plot_attention(atts, layer=5)
    with pytest.raises(ValueError):
        nb04.plot_param_breakdown([])

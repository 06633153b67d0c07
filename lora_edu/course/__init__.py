"""The course: one module per notebook (nb00 … nb10) with that notebook's experiments, figures and widgets.

`common` holds the plumbing the notebooks share (figures, tables, argument checks, timing, the one LoRA
trainer, the merge/switch drift study); `matrix_fit` the synthetic fitting experiment of notebooks 02 and 03;
`checks/nbNN.py` the exercise self-checks. These modules may import matplotlib and ipywidgets; the core
(`lora_edu` itself) never does.
"""

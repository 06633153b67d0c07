"""lora_edu — learn LoRA (Hu et al. 2021) from the matrix up.

The core, layers of ideas, each importing only the ones below it:
lowrank (pure math) ← layer (LoRALinear) ← inject, adapters (model level) ← model, tasks, train, pretrained;
runtime (device, seeds, fast mode) stands beside them. The lessons live in `lora_edu.course` (one module per
notebook); they import the core, never the reverse, and only they import matplotlib or ipywidgets.
"""

from . import lowrank
from .adapters import Adapter, extract_adapter, load_adapter, merge_adapter, unmerge_adapter
from .inject import (
    add_lora,
    count_parameters,
    linear_names,
    lora_layers,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    remove_lora,
    unmerge_lora,
)
from .layer import LoRALinear
from .lowrank import (
    amplification_factor,
    compression_ratio,
    eckart_young_error,
    effective_rank,
    energy,
    lora_param_count,
    low_rank_approx,
    numerical_rank,
    projection_norm,
    relative_error,
    singular_values,
    subspace_similarity,
    subspace_similarity_grid,
)
from .model import ToyConfig, ToyTransformer
from .pretrained import load_pretrained, pretrained_info
from .runtime import fast_mode, get_device, pick, seed_everything
from .tasks import DOWNSTREAM_TASKS, PRETRAIN_TASK, TASKS, Task, get_task
from .train import evaluate, generate, train

__version__ = "0.1.0"

__all__ = [
    "Adapter", "DOWNSTREAM_TASKS", "LoRALinear", "PRETRAIN_TASK", "TASKS", "Task", "ToyConfig",
    "ToyTransformer", "add_lora", "amplification_factor", "compression_ratio", "count_parameters",
    "eckart_young_error", "effective_rank", "energy", "evaluate", "extract_adapter", "fast_mode", "generate",
    "get_device", "get_task", "linear_names", "load_adapter", "load_pretrained", "low_rank_approx",
    "lora_layers", "lora_param_count", "lora_state_dict", "lowrank", "mark_only_lora_trainable",
    "merge_adapter", "merge_lora", "numerical_rank", "pick", "pretrained_info", "projection_norm", "relative_error",
    "remove_lora", "seed_everything", "singular_values", "subspace_similarity",
    "subspace_similarity_grid", "train", "unmerge_adapter", "unmerge_lora",
]

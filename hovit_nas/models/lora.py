"""Thin peft glue: LoRA adapters on the LeViT blocks' linear layers for the pruning phase.

peft is imported on first use, not with the package: it imports transformers, about 2 CPU-seconds
that every process not training through LoRA (a search driver, ``bench``, ``export``, ``eval``, a
command refusing its input) would otherwise pay at start.
"""
from __future__ import annotations

import sys

from torch import nn

# every nn.Linear inside a stage's blocks (qkv, proj, mlp): LinearNorm.linear
BLOCK_LINEARS = r".*stages\.\d+\.blocks\.\d+\..*\.linear"
# trainable besides the adapters: gates, the 1x1 head and both classifier heads
ALWAYS_TRAINABLE = ("gate.", "head_conv.", "head.", "head_dist.")


def add_lora(model: nn.Module, rank: int, alpha: float) -> nn.Module:
    """Freeze the dense weights and train through LoRA (rank 0 = full fine-tuning)."""
    if rank == 0:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=BLOCK_LINEARS), model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name or any(k in name for k in ALWAYS_TRAINABLE))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain layer back in place."""
    if "peft" not in sys.modules:  # never imported: no module can hold an adapter
        return model
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model

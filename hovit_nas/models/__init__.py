"""HoViT model family: architecture, learnable block gates, LoRA glue, export, baselines."""
from .baselines import BASELINES, create_baseline
from .export import export, load_exported, save_exported
from .gating import BlockGate, set_tau, tau_at
from .hovit import PRESETS, HoViT, count_params, create_hovit, hovit_b, hovit_b_attn_down, hovit_s
from .lora import add_lora, merge_lora

__all__ = ["BASELINES", "PRESETS", "BlockGate", "HoViT", "add_lora", "count_params", "create_baseline",
           "create_hovit", "export", "hovit_b", "hovit_b_attn_down", "hovit_s", "load_exported",
           "merge_lora", "save_exported", "set_tau", "tau_at"]

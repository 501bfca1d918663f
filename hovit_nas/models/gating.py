"""Learnable N:M block selection after TinyFusion.

Each gated stage learns logits over all C(M, N) keep-masks (the exact categorical over which N
of the M blocks survive, as in TinyFusion's local N:M groups) rather than a per-block top-N
relaxation: the sample is always a valid mask with exactly N ones, so training sees exactly the
architectures export can produce. C(M, N) is small for the depths searched (C(4,2) = 6,
C(8,4) = 70); configs beyond 4096 masks are rejected at validation.

Training draws a Gumbel-softmax sample with a straight-through hard one-hot (``hard=True``);
evaluation and export use the argmax of the logits, never a random draw.
"""
from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TAU_SCHEDULES


class BlockGate(nn.Module):
    """Categorical gate over the keep-masks of one stage."""

    def __init__(self, blocks: int, keep: int):
        super().__init__()
        combos = list(itertools.combinations(range(blocks), keep))
        masks = torch.zeros(len(combos), blocks)
        for c, idx in enumerate(combos):
            masks[c, list(idx)] = 1.0
        self.register_buffer("masks", masks, persistent=False)
        self.logits = nn.Parameter(torch.zeros(len(combos)))
        self.blocks, self.keep = blocks, keep
        self.tau = 1.0

    def forward(self) -> torch.Tensor:
        """Per-block multipliers (M,): a hard 0/1 mask; straight-through gradients in training."""
        if self.training:
            weights = F.gumbel_softmax(self.logits, tau=self.tau, hard=True)
        else:
            weights = F.one_hot(self.logits.argmax(), self.logits.numel()).to(self.masks.dtype)
        return weights @ self.masks

    def selected(self) -> list[int]:
        """Indices of the kept blocks (deterministic: argmax of the logits)."""
        return self.masks[int(self.logits.argmax())].nonzero().flatten().tolist()

    def extra_repr(self) -> str:
        return f"keep {self.keep} of {self.blocks} ({self.logits.numel()} masks), tau={self.tau:.3g}"


def tau_at(step: int, total_steps: int, start: float, end: float, schedule: str = "linear") -> float:
    """Temperature at ``step`` of ``total_steps``: exactly ``start`` at 0 and ``end`` at the last step."""
    if schedule not in TAU_SCHEDULES:
        raise ValueError(f"unknown tau schedule {schedule!r}")
    t = 1.0 if total_steps <= 1 else min(max(step / (total_steps - 1), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * t
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * t))
    return start * (end / start) ** t  # exponential


def set_tau(model: nn.Module, tau: float) -> None:
    for m in model.modules():
        if isinstance(m, BlockGate):
            m.tau = tau


def gates(model: nn.Module) -> list[BlockGate]:
    return [m for m in model.modules() if isinstance(m, BlockGate)]

"""HoViT: LeViT with a conv stem, conv downsampling, gated (prunable) stages and a 1x1 conv head.

Reuses timm's LeViT blocks (``LevitBlock`` with attention biases, ``LevitDownsample``,
``ConvNorm``, ``Stem16``, ``NormLinear``); only the conv downsampling, the gated stage and the
1x1 head are new. Tokens flow as (B, N, C); the conv parts reshape to (B, C, H, W).
"""
from __future__ import annotations

import copy

import torch
from timm.models.levit import ConvNorm, LevitBlock, LevitDownsample, NormLinear, Stem16
from torch import nn

from ..config import ArchConfig, PruneConfig, RunConfig, StageConfig, TrainConfig
from .gating import BlockGate


def _half(n: int) -> int:
    return (n + 1) // 2  # 3x3 stride-2 padding-1 conv and LeViT subsampling both give ceil(n/2)


def to_tokens(x: torch.Tensor, training: bool) -> torch.Tensor:
    """A feature map (B, C, H, W) as tokens (B, H*W, C): a transposed view in inference (as
    LeViT's), a contiguous copy in training.

    Why: torch's ``matmul`` folds a 3-D input into one matrix product only when it needs a
    gradient or folding copies nothing. The pruning phase freezes everything up to the first LoRA
    adapter, so there a linear layer on the transposed view ran as a batched product over its
    weight copied once per image. Under bf16 autocast on the CPU that made one HoViT-B pruning
    step (64 px, batch 64, 1 thread) 2.3x slower than fp32; contiguous tokens made it 0.57x
    (results/bf16-parity). Values are unchanged, and so is the exported ONNX graph."""
    x = x.flatten(2).transpose(1, 2)
    return x.contiguous() if training else x


class ConvDownsample(nn.Module):
    """The paper's downsampling: 3x3 stride-2 ConvNorm + Hardswish between token stages."""

    def __init__(self, in_dim: int, out_dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.conv = ConvNorm(in_dim, out_dim, 3, stride=2, padding=1)
        self.act = nn.Hardswish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        x = x.transpose(1, 2).reshape(b, c, self.resolution, self.resolution)
        return to_tokens(self.act(self.conv(x)), self.training)


class HoViTStage(nn.Module):
    """Downsampling into the stage, then M LeViT blocks of which a gate keeps N (if N < M)."""

    def __init__(self, cfg: ArchConfig, index: int, in_dim: int, in_res: int):
        super().__init__()
        s: StageConfig = cfg.stages[index]
        res = in_res if s.downsample == "none" else _half(in_res)
        if s.downsample == "conv":
            self.downsample = ConvDownsample(in_dim, s.dim, in_res)
        elif s.downsample == "attention":
            kd = cfg.key_dim_for(index - 1) if index else cfg.key_dim_for(0)
            self.downsample = LevitDownsample(
                in_dim, s.dim, key_dim=kd, num_heads=in_dim // kd, attn_ratio=4.0, mlp_ratio=2.0,
                act_layer=nn.Hardswish, resolution=in_res)
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.ModuleList(
            LevitBlock(s.dim, cfg.key_dim_for(index), num_heads=s.heads, attn_ratio=cfg.attn_ratio,
                       mlp_ratio=cfg.mlp_ratio, resolution=res, act_layer=nn.Hardswish,
                       drop_path=cfg.drop_path)
            for _ in range(s.blocks))
        self.gate = BlockGate(s.blocks, s.kept) if s.kept < s.blocks else None
        self.dense = False  # phase 1 trains all M blocks, ignoring the gate
        self.resolution = res

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.gate is None or self.dense:
            for block in self.blocks:
                x = block(x)
            return x
        if not self.training:  # deterministic selection: run only the kept blocks
            for i in self.gate.selected():
                x = self.blocks[i](x)
            return x
        mask = self.gate()
        for i, block in enumerate(self.blocks):  # skipped block = identity (residual passes)
            x = x + mask[i] * (block(x) - x)
        return x


class HoViT(nn.Module):
    def __init__(self, cfg: ArchConfig):
        super().__init__()
        cfg.validate()
        self.config = copy.deepcopy(cfg)
        stem_dim = cfg.stem_dim or cfg.stages[0].dim
        self.stem = Stem16(cfg.in_chans, stem_dim, act_layer=nn.Hardswish)
        res, dim = cfg.img_size, stem_dim
        for _ in range(4):
            res = _half(res)
        stages = []
        for i, s in enumerate(cfg.stages):
            stage = HoViTStage(cfg, i, dim, res)
            stages.append(stage)
            res, dim = stage.resolution, s.dim
        self.stages = nn.ModuleList(stages)
        self.final_resolution = res
        if cfg.head_width:
            self.head_conv = ConvNorm(dim, cfg.head_width, 1)
            self.head_act = nn.ReLU()
            dim = cfg.head_width
        else:
            self.head_conv, self.head_act = nn.Identity(), nn.Identity()
        self.num_features = dim
        self.head = NormLinear(dim, cfg.num_classes)
        self.head_dist = NormLinear(dim, cfg.num_classes)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW leaves undecayed besides 1-D ones: LeViT's attention biases, as timm's
        ``Levit.no_weight_decay`` (train.make_optimizer)."""
        return {n for n, _ in self.named_parameters() if n.endswith("attention_biases")}

    def set_dense(self, dense: bool) -> None:
        for stage in self.stages:
            stage.dense = dense

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = to_tokens(self.stem(x), self.training)
        for stage in self.stages:
            x = stage(x)
        b, n, c = x.shape
        r = self.final_resolution
        x = x.transpose(1, 2).reshape(b, c, r, r)
        return self.head_act(self.head_conv(x)).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        return (self.head(x) + self.head_dist(x)) / 2  # class + distillation heads, averaged


def create_hovit(cfg: ArchConfig | RunConfig) -> HoViT:
    return HoViT(cfg.model if isinstance(cfg, RunConfig) else cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ presets

def hovit_b(img_size: int = 224, num_classes: int = 9, downsample: str = "conv") -> RunConfig:
    """HoViT-B: 2 stages x 4 blocks, keep 2 each, conv downsampling, 512-wide head."""
    return RunConfig(
        name="hovit_b" if downsample == "conv" else f"hovit_b_{downsample[:4]}_down",
        model=ArchConfig(
            stages=[StageConfig(256, 4, 4, 2, "none"), StageConfig(384, 6, 4, 2, downsample)],
            img_size=img_size, num_classes=num_classes, head_width=512),
        prune=PruneConfig(tau_start=1.0, tau_end=0.1, lora_rank=16, lora_alpha=32.0, gate_lr_mult=10.0),
        train=TrainConfig(),
    ).validate()


def hovit_s(img_size: int = 224, num_classes: int = 9) -> RunConfig:
    """HoViT-S: 2 blocks per stage, no pruning."""
    cfg = hovit_b(img_size, num_classes)
    cfg.name = "hovit_s"
    cfg.model.stages = [StageConfig(256, 4, 2, None, "none"), StageConfig(384, 6, 2, None, "conv")]
    return cfg.validate()


def hovit_b_attn_down(img_size: int = 224, num_classes: int = 9) -> RunConfig:
    """The paper's ablation: HoViT-B with LeViT attention downsampling."""
    return hovit_b(img_size, num_classes, downsample="attention")


def hovit_b_dense(img_size: int = 224, num_classes: int = 9) -> RunConfig:
    """The ablation's 4-blocks-per-stage model without pruning."""
    cfg = hovit_b(img_size, num_classes)
    cfg.name = "hovit_b_dense"
    for s in cfg.model.stages:
        s.keep = None
    return cfg.validate()


PRESETS = {"hovit_b": hovit_b, "hovit_s": hovit_s, "hovit_b_attn_down": hovit_b_attn_down,
           "hovit_b_dense": hovit_b_dense}

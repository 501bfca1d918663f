"""A weight-sharing HoViT supernet: one set of weights whose slices are every subnet of a space.

Once-for-All (Cai et al., ICLR 2020) and BigNAS (Yu et al., ECCV 2020) train one network whose
sub-networks share its weights; a subnet is then scored with inherited weights in seconds. Here
the supernet holds the largest HoViT of a space -- the most kept blocks, the widest stages and
heads, the largest key_dim, MLP ratio and 1x1 head -- plus, for a stage where the space offers
both downsamplings, a LeViT attention downsampling with its own weights beside the conv one (a
categorical choice: each option its own weights).

A subnet (a RunConfig of the space) takes, along timm's LeViT layout:

- the first ``d`` blocks of each stage (its kept depth);
- the first ``dim`` channels of the residual stream, and of the stem's and downsampling's convs
  (which scale with it), and the first ``dim x mlp_ratio`` hidden units of each MLP;
- per attention, the first ``heads`` heads, and within each head the first ``key_dim`` query and
  key rows and the first ``val_dim`` value rows of ``qkv`` (``qkv`` is laid out head by head,
  ``[q | k | v]`` within a head: timm's ``Attention.forward`` views it as ``(B, N, heads, -1)``),
  the matching columns of ``proj``, and ``attention_biases[:heads]``;
- the same slices of every BatchNorm's weight, bias and running statistics.

``extract`` copies those slices into a stand-alone ``HoViT`` built from the subnet's config, so
an extracted subnet is an ordinary model (export, ONNX, evaluation). ``forward`` runs a subnet
on the shared weights themselves (``torch.func.functional_call`` with sliced parameters), so a
loss on a subnet trains the shared weights -- the sandwich rule's step.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
from timm.models.levit import LevitDownsample
from torch import nn

from ..config import ArchConfig, RunConfig, StageConfig
from .hovit import HoViT, _half

Layout = Optional[tuple[int, tuple[int, ...], tuple[int, ...]]]  # (heads, chunk sizes, max chunk sizes)


@dataclass(frozen=True)
class Bounds:
    """The largest value of each dimension over a space's subnets.

    Attributes:
        stages: per stage, the largest (dim, heads, kept blocks, key_dim).
        mlp_ratio: the largest MLP ratio.
        head_width: the largest 1x1 head width (0: the space never has a head conv).
        attn_down: stages where the space offers attention downsampling: stage -> (heads, key_dim)
            of the largest attention downsampling (heads = in_dim // key_dim at its largest).
    """
    stages: tuple[tuple[int, int, int, int], ...]
    mlp_ratio: float
    head_width: int
    attn_down: tuple[tuple[int, int, int], ...]  # (stage, heads, key_dim)


def bounds_of(archs: list[ArchConfig]) -> Bounds:
    """The bounds over ``archs`` (every subnet a space can express, or a sample covering each
    choice). Raises ValueError for architectures with different stage counts or resolutions."""
    archs = [deployed(a) for a in archs]
    if len({len(a.stages) for a in archs}) != 1 or len({a.img_size for a in archs}) != 1:
        raise ValueError("a supernet's subnets share their stage count and resolution")
    n = len(archs[0].stages)
    stages = tuple((max(a.stages[i].dim for a in archs), max(a.stages[i].heads for a in archs),
                    max(a.stages[i].kept for a in archs), max(a.key_dim_for(i) for a in archs)) for i in range(n))
    down = []
    for i in range(1, n):
        att = [a for a in archs if a.stages[i].downsample == "attention"]
        if att:
            down.append((i, max(a.stages[i - 1].dim // a.key_dim_for(i - 1) for a in att),
                         max(a.key_dim_for(i - 1) for a in att)))
    return Bounds(stages, max(a.mlp_ratio for a in archs), max(a.head_width for a in archs), tuple(down))


class Supernet(nn.Module):
    """The shared weights of every subnet within ``bounds`` (module docstring).

    Args:
        base: any subnet's ArchConfig (its resolution, classes, channels, attn_ratio and the
            downsampling a stage uses when it offers no choice are taken from it).
        bounds: the largest value of each dimension (``bounds_of``).
    """

    def __init__(self, base: ArchConfig, bounds: Bounds):
        super().__init__()
        self.bounds = bounds
        self.base_config = copy.deepcopy(base)
        self.largest_config = largest(base, bounds)
        self.net = HoViT(self.largest_config)
        res = base.img_size
        for _ in range(4):
            res = _half(res)
        self.attn_down = nn.ModuleDict()
        for i, s in enumerate(base.stages):
            in_res = res
            res = res if self.largest_config.stages[i].downsample == "none" else _half(res)
            for stage, heads, kd in bounds.attn_down:
                if stage == i:
                    in_dim, out_dim = bounds.stages[i - 1][0], bounds.stages[i][0]
                    self.attn_down[str(i)] = LevitDownsample(
                        in_dim, out_dim, key_dim=kd, num_heads=heads, attn_ratio=4.0, mlp_ratio=2.0,
                        act_layer=nn.Hardswish, resolution=in_res)

    # ------------------------------------------------------------------------------- slicing
    def _source(self, name: str, arch: ArchConfig) -> str:
        """The supernet tensor a subnet's parameter or buffer ``name`` is sliced from."""
        parts = name.split(".")
        if parts[0] == "stages" and parts[2] == "downsample" and arch.stages[int(parts[1])].downsample == "attention":
            return ".".join(["attn_down", parts[1], *parts[3:]])
        return "net." + name

    def _layouts(self, name: str, arch: ArchConfig) -> tuple[Layout, ...]:
        """Per dimension of subnet tensor ``name``: None (its first entries) or a per-head layout."""
        parts = name.split(".")
        if parts[0] != "stages":
            return ()
        i = int(parts[1])
        r = self.base_config.attn_ratio
        if parts[2] == "blocks" and parts[4] == "attn":
            kd, kd_max = arch.key_dim_for(i), self.largest_config.key_dim_for(i)
            vd, vd_max = int(r * kd), int(r * kd_max)
            h_max = self.largest_config.stages[i].heads
            if parts[5] == "qkv":
                return ((h_max, (kd, kd, vd), (kd_max, kd_max, vd_max)),)
            if parts[5] == "proj" and parts[-1] == "weight" and parts[-2] == "linear":
                return (None, (h_max, (vd,), (vd_max,)))
            return ()
        if parts[2] == "downsample" and arch.stages[i].downsample == "attention" and parts[3] == "attn_downsample":
            kd = arch.key_dim_for(i - 1)
            _, h_max, kd_max = next(b for b in self.bounds.attn_down if b[0] == i)
            if parts[4] == "kv":
                return ((h_max, (kd, 4 * kd), (kd_max, 4 * kd_max)),)
            if parts[4] == "q":
                return ((h_max, (kd,), (kd_max,)),)
            if parts[4] == "proj" and parts[-1] == "weight" and parts[-2] == "linear":
                return (None, (h_max, (4 * kd,), (4 * kd_max,)))
        return ()

    @staticmethod
    def _index(size: int, layout: Layout, device: torch.device) -> Optional[torch.Tensor]:
        """Indices into a supernet dimension for a subnet dimension of ``size``: None for the
        first ``size`` entries, else per head the first entries of each chunk."""
        if layout is None:
            return None
        _, chunks, chunks_max = layout
        per_head = sum(chunks)
        heads = size // per_head
        stride = sum(chunks_max)
        offsets, start = [], 0
        for c, cm in zip(chunks, chunks_max):
            offsets.append(torch.arange(start, start + c))
            start += cm
        within = torch.cat(offsets)
        return (torch.arange(heads)[:, None] * stride + within[None, :]).flatten().to(device)

    def slice(self, name: str, arch: ArchConfig, shape: torch.Size) -> torch.Tensor:
        """Subnet tensor ``name`` of ``shape``, as a slice of the shared one (differentiable;
        a view where every dimension takes its first entries)."""
        src = self.get_parameter_or_buffer(self._source(name, arch))
        if src.dim() == 0:
            return src
        layouts = self._layouts(name, arch)
        out = src
        for d, size in enumerate(shape):
            layout = layouts[d] if d < len(layouts) else None
            idx = self._index(size, layout, src.device)
            out = out.narrow(d, 0, size) if idx is None else out.index_select(d, idx)
        return out

    def get_parameter_or_buffer(self, name: str) -> torch.Tensor:
        mod, _, leaf = name.rpartition(".")
        return getattr(self.get_submodule(mod), leaf)

    # --------------------------------------------------------------------------- subnets
    def skeleton(self, arch: ArchConfig) -> HoViT:
        """A stand-alone HoViT of subnet ``arch`` (``deployed``; its own, fresh weights)."""
        return HoViT(deployed(arch))

    def tensors(self, arch: ArchConfig, like: Optional[HoViT] = None) -> dict[str, torch.Tensor]:
        """Every parameter and buffer of subnet ``arch`` (names as in its HoViT), sliced from the
        shared weights. Non-persistent buffers (LeViT's attention-bias indices) are the subnet's own."""
        arch = deployed(arch)
        like = like or self.skeleton(arch)
        persistent = set(like.state_dict().keys())
        out = {}
        for name, t in list(like.named_parameters()) + list(like.named_buffers()):
            out[name] = self.slice(name, arch, t.shape) if name in persistent else t
        return out

    def extract(self, cfg: RunConfig | ArchConfig) -> HoViT:
        """Subnet ``cfg`` as a stand-alone HoViT holding copies of its slices of the shared
        weights (and BatchNorm statistics)."""
        arch = deployed(cfg.model if isinstance(cfg, RunConfig) else cfg)
        model = self.skeleton(arch).to(next(self.parameters()).device)
        keys = set(model.state_dict())  # the persistent ones (once: state_dict() walks the whole model)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.tensors(arch, model).items() if k in keys}
        model.load_state_dict(state)
        return model.train(self.training)

    def forward_subnet(self, arch: ArchConfig, x: torch.Tensor, skeleton: Optional[HoViT] = None) -> torch.Tensor:
        """Logits of subnet ``arch`` on ``x`` (B, C, H, W) computed with the shared weights, so
        gradients reach them. Train mode only: BatchNorm uses the batch's statistics (running
        statistics are recalibrated per subnet before it is scored)."""
        arch = deployed(arch)
        skeleton = skeleton or self.skeleton(arch).to(x.device)
        skeleton.train(self.training)
        return torch.func.functional_call(skeleton, self.tensors(arch, skeleton), (x,), strict=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The largest subnet (the supernet's own network)."""
        return self.net(x)


def deployed(arch: ArchConfig) -> ArchConfig:
    """``arch`` as a subnet: each stage's kept blocks built and all kept (a space's ``M:N``
    blocks choice deploys N blocks; which N the pruning would keep is a training choice)."""
    if all(s.keep is None for s in arch.stages):
        return arch
    out = copy.deepcopy(arch)
    out.stages = [StageConfig(s.dim, s.heads, s.kept, None, s.downsample) for s in arch.stages]
    return out


def largest(base: ArchConfig, bounds: Bounds) -> ArchConfig:
    """The largest subnet: every dimension at its bound; each stage's downsampling as in ``base``
    where it is conv or none (the attention option lives beside it)."""
    arch = copy.deepcopy(base)
    arch.stages = [StageConfig(d, h, k, None, "conv" if (i and base.stages[i].downsample == "attention")
                               else base.stages[i].downsample)
                   for i, (d, h, k, _) in enumerate(bounds.stages)]
    kds = {kd for *_, kd in bounds.stages}
    arch.key_dim = None if all(kd == d // h for d, h, _, kd in bounds.stages) else max(kds)
    arch.mlp_ratio, arch.head_width = bounds.mlp_ratio, bounds.head_width
    return arch.validate()

"""Export: the deployable model (kept blocks only, LoRA merged, BatchNorm fused).

The result is a plain :class:`HoViT` whose config has ``blocks == keep`` and no gates, in
eval mode; timm's attention caches its bias table in eval mode, so inference gathers the
attention biases once per device. Saved with safetensors plus the config as metadata.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from timm.models.levit import ConvNorm, LinearNorm, NormLinear
from torch import nn

from ..config import ArchConfig, from_dict, to_dict
from ..errors import HovitError
from .hovit import HoViT
from .lora import merge_lora

FORMAT = "hovit-nas-exported-v1"


def fuse_bn(model: nn.Module) -> nn.Module:
    """Replace every ConvNorm / LinearNorm / NormLinear by its fused conv or linear."""
    for name, module in list(model.named_modules()):
        if isinstance(module, (ConvNorm, LinearNorm, NormLinear)):
            ref = module.linear.weight
            fused = module.fuse().to(device=ref.device, dtype=ref.dtype)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, fused)
    return model


def exported_config(model: HoViT) -> ArchConfig:
    cfg = copy.deepcopy(model.config)
    for s in cfg.stages:
        s.blocks, s.keep = s.kept, None
    return cfg


@torch.no_grad()
def export(model: HoViT) -> HoViT:
    """Kept blocks only, LoRA merged, BN fused; logits equal the eval-mode model's."""
    m = copy.deepcopy(model).eval()
    merge_lora(m)
    m.set_dense(False)
    for stage in m.stages:
        if stage.gate is not None:
            stage.blocks = nn.ModuleList(stage.blocks[i] for i in stage.gate.selected())
            stage.gate = None
    m.config = exported_config(model)
    fuse_bn(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _skeleton(cfg: ArchConfig) -> HoViT:
    return fuse_bn(HoViT(cfg).eval())


PROVENANCE_KEY, CLASSES_KEY = "provenance", "classes"  # metadata keys, in .safetensors and .onnx alike


def save_exported(model: HoViT, path: str | Path, extra: dict | None = None, provenance=None,
                  classes: list | None = None) -> Path:
    """The exported model as ``.safetensors``, with its architecture in the metadata (``config``,
    YAML) and, where known, its class names in output order (``classes``, a JSON list) and
    what it was made from (``provenance``, provenance.Provenance as JSON)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "config": yaml.safe_dump(to_dict(model.config), sort_keys=False)}
    if extra:
        meta["extra"] = yaml.safe_dump(extra, sort_keys=False)
    meta.update(provenance_metadata(provenance, classes))
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(p), metadata=meta)
    return p


def provenance_metadata(provenance=None, classes: list | None = None) -> dict:
    """The metadata entries an exported file carries about its origin (both formats)."""
    import json

    meta = {}
    if provenance is not None:
        meta[PROVENANCE_KEY] = provenance.to_json()
        if not classes and provenance.data is not None:
            classes = list(provenance.data.classes)
    if classes:
        meta[CLASSES_KEY] = json.dumps(list(classes))
    return meta


def read_safetensors_metadata(path: str | Path) -> dict:
    """A hovit-nas ``.safetensors`` export's metadata (no weights read).

    Raises:
        HovitError: no such file, not safetensors, or not a hovit-nas export."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise HovitError(f"{p}: no such exported model")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # any parse failure is bad input
        raise HovitError(f"{p}: not a safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise HovitError(f"{p}: not a hovit-nas exported model (format {meta.get('format')!r})")
    return meta


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> HoViT:
    """Rebuild the fused skeleton from the stored config and load weights (no unpickling)."""
    p = Path(path)
    meta = read_safetensors_metadata(p)
    cfg = from_dict(ArchConfig, yaml.safe_load(meta["config"]), "model")
    model = _skeleton(cfg)
    model.load_state_dict(load_file(str(p)), strict=True)
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model.to(device)

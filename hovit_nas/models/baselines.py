"""The paper's comparison models, built by timm with random init (never a hub download)."""
from __future__ import annotations

import timm
from torch import nn

from ..errors import HovitError

BASELINES = ("vit_tiny_patch16_224", "levit_128s", "vit_base_patch16_224",
             "efficientnet_b0", "efficientnet_b1", "resnet50")
_TAKES_IMG_SIZE = ("vit_", "levit_")


def create_baseline(name: str, num_classes: int = 9, img_size: int = 224) -> nn.Module:
    if name not in BASELINES:
        raise HovitError(f"unknown baseline {name!r}; one of {', '.join(BASELINES)}")
    kwargs = {"img_size": img_size} if name.startswith(_TAKES_IMG_SIZE) else {}
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)

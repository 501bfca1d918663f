"""A latency predictor per deployment target (issue 23, item 3; work in progress).

Fitted on (architecture, measured latency) pairs from one target: a study's trials, plus an
optional sweep of architectures drawn from a space and measured there. Used for screening only
(a ``--max-latency`` pre-check; ranking supernet subnets before measuring the promising ones): a
front point's latency is always measured.

The model: scikit-learn's ``RidgeCV`` (standardised features) on log latency, over architecture
features that set the cost -- the exported model's FLOPs (``torch.utils.flop_counter``) and
parameters, the resolution, and per stage the width, heads, kept blocks, key_dim, MLP ratio and
downsampling -- rather than a per-block lookup table: the runtimes fuse operators across blocks
(OpenVINO, ONNX Runtime), so a sum of per-block times misses what a whole-graph measurement sees.
Chosen here for that reason; the held-out figures decide whether it stands. First figures (5-fold
over the 30 trials of results/int8-pcam, timed on three targets; 24 training points per fold):
ridge within ±10 % 0.73 / 0.70 / 0.63 and Kendall τ 0.92 / 0.92 / 0.88 on ONNX Runtime fp32 /
OpenVINO fp32 / OpenVINO int8, ahead of gradient boosting (0.50 / 0.50 / 0.77, τ 0.84 / 0.82 /
0.86) and a random forest at that size. A sweep of hundreds of architectures is still to be
measured (``profile-target``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import RunConfig
from .models import count_params, create_hovit, export

MAX_STAGES = 4  # feature slots per stage; HoViT spaces use 2


def features(cfg: RunConfig) -> list[float]:
    """The architecture's features, a fixed-length vector: log FLOPs and log params of the
    exported model (batch 1, at its resolution), the resolution, the head width, and per stage
    (``MAX_STAGES`` slots, zeros when absent) width, heads, kept blocks, key_dim, MLP ratio and
    attention downsampling (0/1)."""
    model = export(create_hovit(cfg)).eval()
    m = cfg.model
    x = torch.zeros(1, m.in_chans, m.img_size, m.img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    out = [math.log(max(fc.get_total_flops(), 1)), math.log(count_params(model)), float(m.img_size),
           float(m.head_width or 0)]
    for i in range(MAX_STAGES):
        if i < len(m.stages):
            s = m.stages[i]
            key_dim = m.key_dim or s.dim // s.heads
            out += [float(s.dim), float(s.heads), float(s.kept), float(key_dim), float(m.mlp_ratio),
                    float(s.downsample == "attention")]
        else:
            out += [0.0] * 6
    return out


@dataclass
class Fit:
    """Held-out figures of a predictor: the share of predictions within ±10 % of the measured
    latency, Kendall's τ between predicted and measured, and the mean absolute relative error."""

    within_10pct: float
    kendall_tau: float
    mean_abs_rel_err: float
    n: int


def score(measured: Sequence[float], predicted: Sequence[float]) -> Fit:
    from scipy.stats import kendalltau

    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    rel = np.abs(p - y) / y
    return Fit(float((rel <= 0.10).mean()), float(kendalltau(y, p).statistic), float(rel.mean()), len(y))


class LatencyPredictor:
    """Predicts one target's latency (ms) from an architecture."""

    def __init__(self):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))

    def fit(self, configs: Sequence[RunConfig], latency_ms: Sequence[float]) -> "LatencyPredictor":
        self.model.fit(np.asarray([features(c) for c in configs]), np.log(np.asarray(latency_ms, float)))
        return self

    def predict(self, configs: Sequence[RunConfig]) -> np.ndarray:
        return np.exp(self.model.predict(np.asarray([features(c) for c in configs])))

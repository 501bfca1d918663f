"""The study record, typed: what a hovit-nas study keeps about itself and about each trial.

Optuna keeps a study's settings and a trial's measurements as *user attrs*, JSON values under
string keys, which is also what ``optuna-dashboard`` shows. Those keys are the system's real
schema, so they are read here, once, into dataclasses (:class:`StudyRecord`, :class:`TrialRecord`)
that the report (pareto.py), the pick (pin) and the noise figures (stats.py) read instead of
picking dicts apart by key. Reading imports neither torch nor the executors.

Versions: a study written by this release records ``record_version`` 2; a study without it is
version 1 (everything before), read with the defaults its attrs imply (``LEGACY``): it timed on
PyTorch eager at fp32 without an anchor if it predates those settings, recorded no provenance,
no class names and no replicated fixed point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .config import EarlyStop, NoiseConfig, from_dict
from .provenance import Provenance, of_study

RECORD_VERSION = 2
VERSION_ATTR = "record_version"
FIXED_POINT_ATTR, REPLICATE_ATTR, CONFIRMS_ATTR, DUPLICATE_ATTR = "fixed_point", "replicate", "confirms", "duplicate_of"
SCORES_ATTR = "scores"
# a study made before a latency setting existed was timed with these (it records latency_batch)
LEGACY = {"latency_anchored": False, "latency_runtime": "torch", "latency_precision": "fp32"}


@dataclass(frozen=True)
class StudyRecord:
    """A study's settings, as it recorded them when it was created (and since: its target and
    latency anchor, recorded by the first driver)."""

    name: str
    version: int
    space: str
    space_def: dict
    data: Optional[str]
    data_sizes: dict
    metric: str
    img_size: Optional[int]
    num_classes: Optional[int]
    classes: Optional[list]
    latency_batch: Optional[int]
    latency_runtime: str
    latency_precision: str
    latency_anchored: bool
    target: Optional[dict]  # target.DeploymentTarget.to_dict(); None for a study from before targets
    anchor: Optional[dict]  # latency.Calibration.to_dict(); None when unanchored (or not calibrated yet)
    evaluator: str  # train | supernet
    supernet: Optional[dict]  # {"id", "dir"} when a supernet scored the trials
    early_stop: EarlyStop
    noise: NoiseConfig  # the space's: how many fixed-point replicates, the non-inferiority margin
    provenance: Optional[Provenance]
    latency_at: Optional[dict]
    uid: Optional[str]
    confirms: Optional[str] = None  # a confirmation study: the search it confirms
    attrs: dict = field(default_factory=dict, repr=False, compare=False)  # everything, as stored

    @classmethod
    def of(cls, name: str, attrs: dict) -> "StudyRecord":
        """The record of study ``name`` from its user attrs (one storage read by the caller)."""
        a = dict(attrs)
        if "latency_batch" in a:  # studies from before anchoring timed raw, on PyTorch eager, at fp32
            for k, v in LEGACY.items():
                a.setdefault(k, v)
        space_def = a.get("space_def") or {}
        noise = from_dict(NoiseConfig, {**(space_def.get("noise") or {}), **({"seeds": 1} if "noise" not in space_def
                                                                            else {})}, "study noise")
        made = of_study(a)
        classes = a.get("classes") or (list(made.data.classes) if made is not None and made.data is not None else None)
        return cls(name=name, version=int(a.get(VERSION_ATTR, 1)), space=a.get("space", "?"), space_def=space_def,
                   data=a.get("data"), data_sizes=a.get("data_sizes") or {}, metric=a.get("metric", "top1"),
                   img_size=a.get("img_size"), num_classes=a.get("num_classes"), classes=classes,
                   latency_batch=a.get("latency_batch"), latency_runtime=a.get("latency_runtime", "torch"),
                   latency_precision=a.get("latency_precision", "fp32"),
                   latency_anchored=bool(a.get("latency_anchored", False)), target=a.get("deployment_target"),
                   anchor=a.get("latency_anchor"), evaluator=a.get("evaluator", "train"), supernet=a.get("supernet"),
                   early_stop=from_dict(EarlyStop, a.get("early_stop") or {}, "study early_stop"), noise=noise,
                   provenance=made, latency_at=a.get("latency_at"), uid=a.get("study_uid"),
                   confirms=a.get("confirms_study"), attrs=a)

    @classmethod
    def read(cls, study) -> "StudyRecord":
        return cls.of(study.study_name, study.user_attrs)

    @property
    def target_label(self) -> str:
        """The deployment target's name, or for an older study what its attrs say."""
        if self.target:
            return self.target.get("name") or "?"
        return f"{self.latency_runtime}, batch {self.latency_batch or 1}, {self.img_size or '?'} px"

    @property
    def maximised(self) -> str:
        """How the accuracy axis reads: ``-nll`` for the NLL objective, else the metric's name."""
        return "-nll" if self.metric == "nll" else self.metric


@dataclass(frozen=True)
class TrialRecord:
    """One trial as a study keeps it. ``accuracy`` and ``latency_ms`` are the objectives (None
    unless COMPLETE); the rest are its user attrs."""

    number: int
    state: str  # optuna TrialState name
    accuracy: Optional[float]
    latency_ms: Optional[float]
    params: dict
    config: Optional[dict]
    latency: dict  # the latency record (latency.Latency.to_dict())
    val: dict
    test: dict
    n_params: Optional[int]
    fixed_point: Optional[str]  # the fixed point's preset name, on its trials (replicates included)
    replicate: int  # 0 for the fixed point's first run and for every other trial
    seed: Optional[int]
    val_fp32: Optional[dict]
    test_fp32: Optional[dict]
    quantization: Optional[dict]
    estimate: Optional[dict]
    history: list
    scores: Optional[dict]  # per-image probabilities (trial.per_image_scores), encoded
    duplicate_of: Optional[int]
    confirms: Optional[int]  # a confirmation run: the search trial it retrains
    attrs: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, t) -> "TrialRecord":
        """From an Optuna FrozenTrial."""
        a = t.user_attrs
        values = t.values if t.values is not None else [None, None]
        return cls(number=t.number, state=t.state.name, accuracy=values[0], latency_ms=values[1],
                   params=dict(t.params), config=a.get("config"), latency=a.get("latency") or {},
                   val=a.get("val") or {}, test=a.get("test") or {}, n_params=a.get("params"),
                   fixed_point=a.get(FIXED_POINT_ATTR), replicate=int(a.get(REPLICATE_ATTR, 0)), seed=a.get("seed"),
                   val_fp32=a.get("val_fp32"), test_fp32=a.get("test_fp32"), quantization=a.get("quantization"),
                   estimate=a.get("estimate"), history=a.get("history") or [], scores=a.get(SCORES_ATTR),
                   duplicate_of=a.get(DUPLICATE_ATTR), confirms=a.get(CONFIRMS_ATTR), attrs=dict(a))

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE"

    def probs(self, split: str = "val") -> Optional[np.ndarray]:
        """Its per-image class probabilities on ``split`` (N, K), or None where not stored."""
        from .stats import decode_probs

        s = (self.scores or {}).get(split)
        return None if not s else decode_probs(s["probs"], s["shape"])

    def digest(self, split: str = "val") -> Optional[str]:
        s = (self.scores or {}).get(split)
        return None if not s else s.get("digest")

    def metric(self, split: str, metric: str) -> Optional[float]:
        """``metric`` (stats.objective) of this trial on ``split``, or None."""
        from .stats import objective

        m = self.val if split == "val" else self.test
        try:
            v = objective(m, metric)
        except (KeyError, TypeError):
            return None
        return v if math.isfinite(v) else None


def trials(study, states: Optional[tuple] = None) -> list[TrialRecord]:
    """Every trial of ``study`` (or those in ``states``, Optuna TrialStates) as records, by number."""
    ts = study.get_trials(deepcopy=False, states=states) if states else study.get_trials(deepcopy=False)
    return [TrialRecord.of(t) for t in sorted(ts, key=lambda t: t.number)]


def new_study_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """A new study's attrs with the record version this release writes."""
    return {VERSION_ATTR: RECORD_VERSION, **attrs}

"""A study's noise, measured by the study itself, and each architecture's figures with their
uncertainty (issue 32): what ``pareto`` prints and ``pin`` decides on (stats.py has the rules).

- **seed SD**: the spread of the fixed point's replicates (``noise.seeds`` runs of HoViT-B with
  different training seeds, on the same images, at the study's own budget and data); for a study
  without replicates, the pooled spread of its confirmation runs; else not measured (intervals
  then hold the images' part only, which the report says).
- **latency spread between measurements** (``cv``, the SD of log latency): from the same
  replicates' latencies; a trial's own window spread (stats.latency_cv_within) is the floor.
- **rows**: one per architecture: every completed trial, except that the fixed point's
  replicates form one row (mean score, median latency) whose seed noise is averaged over them.
- **paired differences**: on the per-image scores the trials stored (trial.per_image_scores),
  when both rows were scored on the same images (the same split digest, whose labels the study
  keeps: ``LABELS_ATTR``); else unpaired, from each row's own SE (the report says which).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import stats
from .record import StudyRecord, TrialRecord

LABELS_ATTR = "labels"  # the study attr: per scored split, its digest and labels (stats.encode_labels)


@dataclass
class Noise:
    """What the study measured of its own noise."""

    metric: str
    seed_sd: Optional[float]
    seed_df: int
    seed_source: str
    latency_cv: Optional[float]
    latency_df: int
    latency_source: str
    z: float = stats.Z95
    labels: Optional[np.ndarray] = field(default=None, repr=False)  # val labels, for the per-image scores

    def to_dict(self) -> dict:
        return {"metric": self.metric, "seed_sd": self.seed_sd, "seed_df": self.seed_df,
                "seed_source": self.seed_source, "latency_cv": self.latency_cv, "latency_df": self.latency_df,
                "latency_source": self.latency_source, "z": self.z, "per_image_scores": self.labels is not None}

    def line(self) -> str:
        sd = ("not measured (no replicated fixed point or confirmation): accuracy intervals hold the images' part "
              "only, a lower bound" if self.seed_sd is None
              else f"{points(self.seed_sd, self.metric)} ({self.seed_source}, {self.seed_df} df)")
        cv = ("each measurement's own spread only (no replicated fixed point)" if self.latency_cv is None
              else f"{100 * self.latency_cv:.1f} % ({self.latency_source}, {self.latency_df} df)")
        return f"noise: seed SD {sd}; latency spread between measurements {cv}; intervals are 95 %"


def points(v: float, metric: str) -> str:
    """A score difference in the metric's words: points for the scores in [0, 1], else as is."""
    return f"{100 * v:.2f} points" if metric != "nll" else f"{v:.4f}"


@dataclass
class Row:
    """One architecture: its trials (the fixed point's replicates, or one trial) and figures."""

    trial: int  # the first member's number: how the report names it
    members: list[TrialRecord]
    accuracy: float
    latency_ms: float
    se: float  # the SE over validation images (of the members' mean)
    cv: float  # latency spread (SD of log latency) of this row's latency
    acc_interval: Optional[stats.Interval] = None
    lat_interval: Optional[stats.Interval] = None
    _probs: Optional[list] = field(default=None, repr=False)

    @property
    def runs(self) -> int:
        return len(self.members)

    @property
    def digest(self) -> Optional[str]:
        d = {m.digest("val") for m in self.members}
        return d.pop() if len(d) == 1 else None

    def probs(self) -> Optional[list[np.ndarray]]:
        """Each member's val probabilities (None where any member stored none)."""
        if self._probs is None:
            ps = [m.probs("val") for m in self.members]
            if all(p is not None for p in ps):
                self._probs = ps
        return self._probs

    def terms(self, metric: str, y: np.ndarray) -> Optional[np.ndarray]:
        """The per-image terms of ``metric`` (stats.per_image), averaged over the members."""
        ps = self.probs()
        if ps is None:
            return None
        ts = [stats.per_image(metric, y, p) for p in ps]
        return None if ts[0] is None else np.mean(ts, axis=0)


def seed_noise(trials: list[TrialRecord], confirm_groups: Optional[list[list[float]]] = None
               ) -> tuple[Optional[float], int, str]:
    """(seed SD of the validation objective, its degrees of freedom, where it comes from)."""
    reps = [t.accuracy for t in trials if t.complete and t.fixed_point and t.duplicate_of is None]
    sd, df = stats.pooled_sd([reps])
    if sd is not None:
        return sd, df, f"the fixed point over {len(reps)} seeds"
    if confirm_groups:
        sd, df = stats.pooled_sd(confirm_groups)
        if sd is not None:
            return sd, df, f"confirmation runs of {len(confirm_groups)} candidates"
    return None, 0, "not measured"


def latency_noise(trials: list[TrialRecord], confirm_groups: Optional[list[list[float]]] = None
                  ) -> tuple[Optional[float], int, str]:
    """(SD of log latency between measurements of one model, its df, its source)."""
    reps = [t.latency_ms for t in trials if t.complete and t.fixed_point and t.latency_ms and t.duplicate_of is None]
    sd, df = stats.pooled_sd([[math.log(x) for x in reps]])
    if sd is not None:
        return sd, df, f"the fixed point measured {len(reps)} times"
    if confirm_groups:
        sd, df = stats.pooled_sd([[math.log(x) for x in g if x] for g in confirm_groups])
        if sd is not None:
            return sd, df, f"confirmation runs of {len(confirm_groups)} candidates"
    return None, 0, "not measured"


def labels_attr(splits) -> dict:
    """What a study keeps of its val and test labels, for the per-image scores of its trials."""
    from .provenance import split_digest

    return {name: {"digest": split_digest(getattr(splits, name)),
                   "labels": stats.encode_labels(getattr(splits, name).labels)} for name in ("val", "test")}


def val_labels(rec: StudyRecord) -> Optional[np.ndarray]:
    """The study's validation labels, in the order its trials' per-image scores are stored
    (None for a study from before they were recorded)."""
    lab = (rec.attrs.get(LABELS_ATTR) or {}).get("val")
    return None if not lab else stats.decode_labels(lab["labels"])


def measure(rec: StudyRecord, trials: list[TrialRecord], confirm_groups: Optional[dict] = None) -> Noise:
    """The study's noise (``confirm_groups``: per confirmed candidate, its val scores and its
    latencies over seeds, ``{"val": [[...]], "latency_ms": [[...]]}``, used when the study has no
    replicated fixed point)."""
    cg = confirm_groups or {}
    sd, df, src = seed_noise(trials, cg.get("val"))
    cv, cdf, csrc = latency_noise(trials, cg.get("latency_ms"))
    return Noise(rec.metric, sd, df, src, cv, cdf, csrc, labels=val_labels(rec))


def _se_images(t: TrialRecord, metric: str, y: Optional[np.ndarray]) -> float:
    """The SE of ``t``'s val score over images: from its per-image scores where stored, else the
    binomial SE of its score over its ``n`` val images (exact for top-1, a stand-in otherwise)."""
    p = t.probs("val")
    if p is not None and y is not None and len(y) == len(p):
        return stats.images_se(metric, y, p)
    n = int(t.val.get("n") or 0)
    if metric == "nll" or n < 2 or t.accuracy is None:
        return 0.0
    acc = min(max(t.accuracy, 0.0), 1.0)
    return math.sqrt(acc * (1 - acc) / n)


def rows_of(trials: list[TrialRecord], noise: Noise) -> list[Row]:
    """One row per architecture among the completed trials (fixed-point replicates merged), with
    its 95 % accuracy interval (images and seed noise) and latency interval."""
    done = [t for t in trials if t.complete and t.accuracy is not None and t.duplicate_of is None]
    fp = [t for t in done if t.fixed_point]
    groups = ([fp] if fp else []) + [[t] for t in done if not t.fixed_point]
    rows = []
    for g in sorted(groups, key=lambda g: g[0].number):
        acc = float(np.mean([t.accuracy for t in g]))
        lat = float(np.median([t.latency_ms for t in g]))
        se = float(np.sqrt(np.mean([_se_images(t, noise.metric, noise.labels) ** 2 for t in g]) / len(g)))
        within = max(stats.latency_cv_within(t.latency) for t in g)
        cv = max(within, (noise.latency_cv or 0.0) / math.sqrt(len(g)))
        r = Row(g[0].number, g, acc, lat, se, cv)
        half = noise.z * math.sqrt(se ** 2 + (noise.seed_sd or 0.0) ** 2 / len(g))
        r.acc_interval = stats.Interval(acc, acc - half, acc + half)
        r.lat_interval = stats.latency_interval(lat, cv, noise.z)
        rows.append(r)
    return rows


def difference(a: Row, b: Row, metric: str, y: Optional[np.ndarray]) -> tuple[float, float, bool]:
    """(a − b on val, its SE over images, paired?): paired on the same images where both rows
    stored per-image scores of one split (``y``: its labels), else unpaired from each row's SE."""
    if y is not None and a.digest and a.digest == b.digest and a.probs() is not None and b.probs() is not None:
        ta, tb = a.terms(metric, y), b.terms(metric, y)
        if ta is not None:
            dd = ta - tb
            return a.accuracy - b.accuracy, float(dd.std(ddof=1) / math.sqrt(len(dd))), True
        _, se = stats.paired(metric, y, np.mean(a.probs(), axis=0), np.mean(b.probs(), axis=0))
        return a.accuracy - b.accuracy, se, True
    return a.accuracy - b.accuracy, math.sqrt(a.se ** 2 + b.se ** 2), False


def beyond(a: Row, b: Row, noise: Noise) -> bool:
    """Whether ``a`` and ``b`` differ in accuracy beyond noise (images and seeds)."""
    d, se, _ = difference(a, b, noise.metric, noise.labels)
    return stats.accuracy_beyond_noise(d, se, noise.seed_sd, noise.z, (a.runs, b.runs))


def _point(r: Row) -> dict:
    return {"accuracy": r.accuracy, "latency_ms": r.latency_ms, "cv": r.cv, "row": r}


def _dominates(noise: Noise):
    acc = lambda a, b: beyond(a["row"], b["row"], noise)
    return lambda a, b: stats.dominates_beyond_noise(a, b, acc, noise.z)


def noise_front(rows: list[Row], noise: Noise) -> list[Row]:
    """The rows no other row dominates beyond noise (stats.noise_aware_front)."""
    return [p["row"] for p in stats.noise_aware_front([_point(r) for r in rows], _dominates(noise))]


def dominators(target: Row, rows: list[Row], noise: Noise) -> list[int]:
    """The trials whose rows dominate ``target`` beyond noise."""
    dom, t = _dominates(noise), _point(target)
    return [r.trial for r in rows if r is not target and dom(_point(r), t)]


def indistinguishable_from_best(rows: list[Row], noise: Noise) -> list[int]:
    """The trials whose accuracy is within noise of the most accurate row's (it included)."""
    if not rows:
        return []
    best = max(rows, key=lambda r: r.accuracy)
    return [r.trial for r in rows if r is best or not beyond(best, r, noise)]

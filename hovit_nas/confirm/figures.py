"""A confirmation's figures, read back: each candidate's per-seed validation and test scores and
latency from the linked ``<study>-confirm`` study, its paired difference to HoViT-B on the same seeds
(mean and 95 % t interval), and the table ``pareto`` prints.

Only a confirmation of the same study (by identity) on the same splits is read. Reading imports
neither torch nor the executors: ``pareto`` and ``pin`` import this module alone.
"""
from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from typing import Optional

import optuna
from optuna.trial import TrialState

from .. import evaluators
from .. import provenance as pv
from .. import study as st
from ..record import TrialRecord
from ..stats import objective

SUFFIX = "-confirm"
_log = logging.getLogger(__name__)


def confirm_name(study_name: str) -> str:
    return study_name + SUFFIX


@dataclass
class Paired:
    """Candidate minus fixed point over the same seeds: mean and a 95 % t interval."""

    mean: float
    low: float
    high: float
    n: int


def paired(candidate: dict[int, float], reference: dict[int, float]) -> Optional[Paired]:
    seeds = sorted(set(candidate) & set(reference))
    if len(seeds) < 2:
        return None
    d = [candidate[s] - reference[s] for s in seeds]
    from scipy.stats import t as student_t

    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = student_t.ppf(0.975, len(d) - 1) * sd / math.sqrt(len(d))
    return Paired(mean, float(mean - half), float(mean + half), len(d))


@dataclass
class Confirmed:
    """One candidate's confirmation runs, per seed, and their summary."""

    trial: int
    fixed_point: bool
    val: dict[int, float]
    test: dict[int, float]
    latency_ms: dict[int, float]
    vs_fixed_val: Optional[Paired] = None
    vs_fixed_test: Optional[Paired] = None
    estimate: Optional[float] = None  # a supernet-scored search's val figure for this candidate (inherited weights)
    runs: dict = field(default_factory=dict, repr=False, compare=False)  # seed -> record.TrialRecord of its run

    @property
    def n(self) -> int:
        return len(self.val)

    def mean(self, what: str) -> float:
        return statistics.fmean(getattr(self, what).values())

    def sd(self, what: str) -> float:
        xs = list(getattr(self, what).values())
        return statistics.stdev(xs) if len(xs) > 1 else 0.0

    def to_dict(self) -> dict:
        out = {"trial": self.trial, "fixed_point": self.fixed_point, "seeds": sorted(self.val), "n": self.n}
        if self.estimate is not None:
            out["supernet_estimate"] = self.estimate
        for what in ("val", "test", "latency_ms"):
            out[what] = {"mean": self.mean(what), "sd": self.sd(what),
                         "per_seed": {str(k): v for k, v in sorted(getattr(self, what).items())}}
        for what in ("val", "test"):
            p = getattr(self, f"vs_fixed_{what}")
            out[f"{what}_minus_fixed_point"] = None if p is None else {
                "mean": p.mean, "ci95": [p.low, p.high], "n": p.n}
        return out


def belongs_to(runs: optuna.Study, parent: optuna.Study) -> bool:
    """Whether ``runs`` (a study named ``<parent>-confirm``) confirms ``parent`` by identity: it
    records the parent's ``study_uid`` (or, made before ids existed, at least the parent's name).
    A linked study of another study that once had this name is ignored, with a warning."""
    a = runs.user_attrs
    if a.get("confirms_study") != parent.study_name:
        _log.warning("study %r is not a confirmation of %r (it records none); its runs are ignored",
                     runs.study_name, parent.study_name)
        return False
    uid = a.get(st.CONFIRMS_UID_ATTR)
    if uid is not None and uid != st.identity(parent):
        _log.warning("study %r confirms another study once named %r (a different study by identity); its runs "
                     "are ignored", runs.study_name, parent.study_name)
        return False
    return True


def check_same_splits(runs: optuna.Study, parent: optuna.Study) -> None:
    """A confirmation's runs are compared with its search's trials and with each other, paired:
    it must have scored the same splits (by membership) as the search.

    Raises:
        ProvenanceError: the confirmation records other data than the search (both named)."""
    mine, theirs = pv.Provenance.from_dict(runs.user_attrs.get(pv.STUDY_ATTR)), \
        pv.Provenance.from_dict(parent.user_attrs.get(pv.STUDY_ATTR))
    if mine is None or theirs is None or mine.data is None or theirs.data is None:
        return
    if mine.data.fingerprint != theirs.data.fingerprint:
        raise pv.ProvenanceError(f"confirmation {runs.study_name!r} scored {mine.data.short()}, but its search "
                                 f"{parent.study_name!r} {theirs.data.short()}; confirm it again on the search's data "
                                 "(or delete the confirmation study)")


def confirmed(study: optuna.Study) -> dict[int, Confirmed]:
    """Per candidate trial of ``study``, its confirmation figures ({} when none exist)."""
    try:
        runs = optuna.load_study(study_name=confirm_name(study.study_name), storage=st.storage_of(study))
    except KeyError:
        return {}
    if not belongs_to(runs, study):
        return {}
    try:
        check_same_splits(runs, study)
    except pv.ProvenanceError as exc:
        _log.warning(f"{exc}; its runs are ignored")
        return {}
    metric = study.user_attrs.get("metric", "top1")
    out: dict[int, Confirmed] = {}
    for t in runs.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if st.DUPLICATE_ATTR in t.user_attrs:
            continue
        n, seed = t.user_attrs[st.CONFIRMS_ATTR], t.user_attrs["seed"]
        c = out.setdefault(n, Confirmed(n, st.FIXED_POINT_ATTR in t.user_attrs, {}, {}, {}))
        c.val[seed] = t.values[0]
        test = t.user_attrs.get("test") or {}
        c.test[seed] = objective(test, metric) if test else None
        c.latency_ms[seed] = t.values[1]
        c.runs[seed] = TrialRecord.of(t)
    ref = next((c for c in out.values() if c.fixed_point), None)
    by = study.user_attrs.get("evaluator", "train")  # a plugin's evaluator, absent here: not an estimate
    if by in evaluators.known() and evaluators.CAPS[by].estimates:  # the search's figure: shown beside
        parent = {t.number: t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        for c in out.values():
            c.estimate = parent[c.trial].values[0] if c.trial in parent else None
    for c in out.values():
        if ref is not None and c is not ref:
            c.vs_fixed_val, c.vs_fixed_test = paired(c.val, ref.val), paired(c.test, ref.test)
    return {n: c for n, c in out.items() if c.n >= 2}


def format_table(figures: dict[int, Confirmed], metric: str = "top1") -> str:
    if not figures:
        return "confirmation: none yet (confirm retrains the front's leading candidates and HoViT-B over more seeds)"
    n = max(c.n for c in figures.values())
    est = any(c.estimate is not None for c in figures.values())
    lines = [f"confirmed over {n} further seeds (mean ± sd; candidate − HoViT-B on the same seeds, 95 % interval)"
             + (";\n  trained stand-alone, beside the search's supernet estimate (inherited weights)" if est else "")
             + ":",
             f"  {'trial':>5}  " + (f"{'estimate':>8}  " if est else "") + f"{'val ' + metric:>16}  "
             f"{'test ' + metric:>16}  {'latency':>9}  {'val − HoViT-B':>26}  {'test − HoViT-B':>26}"]
    for c in sorted(figures.values(), key=lambda c: -c.mean("val")):
        diffs = []
        for p in (c.vs_fixed_val, c.vs_fixed_test):
            diffs.append("-" if p is None else f"{p.mean:+.4f} [{p.low:+.4f}, {p.high:+.4f}]")
        shown = ("" if not est else "       -  " if c.estimate is None else f"{c.estimate:>8.4f}  ")
        lines.append(f"  {c.trial:>5}  {shown}{c.mean('val'):.4f} ± {c.sd('val'):.4f}  {c.mean('test'):.4f} ± "
                     f"{c.sd('test'):.4f}  {c.mean('latency_ms'):7.2f}ms  {diffs[0]:>26}  {diffs[1]:>26}"
                     + ("  <- HoViT-B" if c.fixed_point else ""))
    return "\n".join(lines)

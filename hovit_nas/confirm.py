"""Confirmation: retrain the front's leading candidates and HoViT-B over further seeds.

A search picks among many noisy trials on one seed's validation score, so its winner is partly the
luckiest (selection bias, the classic trap of NAS). ``hovit-nas confirm`` retrains the top-k front
trials (by validation score) and the fixed point with n new seeds, and ``pin`` then chooses by the
mean over those seeds, with a paired comparison against the fixed point on the same seeds.

The runs live in a linked study, ``<study>-confirm``, in the same storage: the dashboard shows
them, and the search's front is never mixed with them. Each run is a trial whose parameters are
(candidate trial, seed), all enqueued up front by the process that creates the linked study, and
they go through the same executors, heartbeat, budget and duplicate rules as a search, so a
confirmation is kill-and-resume safe like the search itself.

A study scored by a supernet (``search --evaluator supernet``) is confirmed the same way: its
candidates are trained stand-alone with the full dense + pruning pipeline (their training-only
parameters at the space's base values, as the supernet scored them), and the table and the
``pareto`` plot show each one's supernet estimate beside its stand-alone figures.
"""
from __future__ import annotations

import copy
import logging
import math
import shlex
import statistics
from dataclasses import dataclass, field
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from typing import TYPE_CHECKING

from . import evaluators
from . import provenance as pv
from .noise import LABELS_ATTR, labels_attr
from .record import TrialRecord
from .stats import objective
from . import study as st
from .config import DataOptions, DataSpec, LatencyConfig, RayConfig, RunConfig, SearchConfig, from_dict, \
    run_config_from_dict, with_num_classes
from .errors import HovitError

if TYPE_CHECKING:
    from .executors.common import Prepared

SUFFIX = "-confirm"
_log = logging.getLogger(__name__)


def confirm_name(study_name: str) -> str:
    return study_name + SUFFIX


@dataclass
class ConfirmConfig:
    """What ``hovit-nas confirm`` was asked for."""

    study: str
    storage: str
    data: Optional[str] = None  # the search's --data (None: the built-in digits)
    data_options: DataOptions = field(default_factory=DataOptions)
    top_k: int = 4
    seeds: int = 3
    first_seed: int = 1  # seeds first_seed .. first_seed + seeds - 1; the search trained with seed 0
    device: str = "auto"
    threads: Optional[int] = None
    executor: str = "local"
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> "ConfirmConfig":
        if self.top_k < 1 or self.seeds < 2:
            raise HovitError(f"`top_k` must be >= 1 and `seeds` >= 2 (a spread needs two), got {self.top_k}, "
                             f"{self.seeds}")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


def candidates(study: optuna.Study, top_k: int) -> list[FrozenTrial]:
    """The top-k front trials by validation score, and the fixed point (once)."""
    front = sorted(study.best_trials, key=lambda t: (-t.values[0], t.values[1]))[:top_k]
    fixed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if st.FIXED_POINT_ATTR in t.user_attrs]
    out = front + [t for t in fixed[:1] if t.number not in {f.number for f in front}]
    if not out:
        raise HovitError(f"study {study.study_name!r} has no completed trials to confirm")
    return out


class ConfirmSpace:
    """The space of confirmation runs (a ``space.TrialSpace``): a trial's parameters are the
    candidate trial's number and the seed; its config is the candidate's with that seed. Its
    latency anchor is the search's, inherited, never calibrated again (``anchor_model`` None)."""

    def __init__(self, configs: dict[int, RunConfig], seeds: list[int]):
        self.configs, self.seeds = configs, seeds
        self.base = next(iter(configs.values()))
        self.name = "confirm"

    def suggest(self, trial: optuna.trial.BaseTrial) -> RunConfig:
        n = trial.suggest_categorical("candidate", sorted(self.configs))
        seed = trial.suggest_categorical("seed", self.seeds)
        cfg = copy.deepcopy(self.configs[n])
        cfg.train.seed, cfg.name = seed, f"t{n}-seed{seed}"
        return cfg


def prepare(cfg: ConfirmConfig) -> "Prepared":
    """The linked confirmation study, created or resumed, ready for an executor.

    Raises:
        StorageError: the storage is read-only or its disk full (``study.check_writable``), before
            the data is loaded: the runs are recorded in the search's own storage.
        HovitError: no such study, not a hovit-nas study, or other data than the search's.
    """
    from .executors.common import Prepared  # the heavy part (torch); pareto/pin only read figures
    from .trial import TrialSpec, get_data

    cfg.validate()
    parent = st.load(cfg.study, cfg.storage)
    st.check_writable(cfg.storage)  # before any work: the runs are recorded with the search, in its storage
    a = parent.user_attrs
    space_def = a.get("space_def") or {}
    cands = candidates(parent, cfg.top_k)
    configs = {t.number: run_config_from_dict(t.user_attrs["config"], f"trial {t.number}") for t in cands}
    seed = ((space_def.get("base") or {}).get("train") or {}).get("seed", 0)
    data = DataSpec.of(cfg.data, a["img_size"], seed, cfg.data_options)
    splits = get_data(data)
    if splits.description != a.get("data"):
        raise HovitError(f"study {cfg.study!r} was searched on {a.get('data')}, not {splits.description}; "
                         "pass the search's `data` (and split options)")
    searched = st.recorded_data_args(a)
    if searched is not None and searched != st.data_args(data):
        raise HovitError(f"study {cfg.study!r} was searched with {shlex.join(searched)}, not "
                         f"{shlex.join(st.data_args(data))}; pass the same data and split options")
    made = pv.Provenance.from_dict(a.get(pv.STUDY_ATTR))
    now = pv.data_record(splits, data.img_size, pv.data_rule(data), keep_train_ids=False)
    pv.check_same_data(made.data if made else None, now, f"study {cfg.study!r}",
                       "a confirmation (its runs are compared with the search's, on the same images)")
    configs = {n: with_num_classes(c, splits.num_classes) for n, c in configs.items()}
    latency = from_dict(LatencyConfig, space_def.get("latency") or {}, "latency")
    latency.batch = a.get("latency_batch", latency.batch)
    latency.runtime = a.get("latency_runtime", "torch")
    latency.precision = a.get("latency_precision", "fp32")
    latency.anchor = st.ANCHOR_ATTR in a  # timed like its search: anchored to the same calibration, or raw
    if a.get("latency_at"):  # timed like its search: by the same latency service, which anchors itself
        m = a["latency_at"]["machine"]
        latency.threads, latency.batch = m["threads"], m["batch"]
    name = confirm_name(cfg.study)
    pairs = [({"candidate": t.number, "seed": s},
              {st.CONFIRMS_ATTR: t.number, "seed": s,
               **({st.FIXED_POINT_ATTR: t.user_attrs[st.FIXED_POINT_ATTR]} if st.FIXED_POINT_ATTR in t.user_attrs
                  else {})}) for t in cands for s in cfg.seed_list]
    attrs = {"confirms_study": cfg.study, st.CONFIRMS_UID_ATTR: st.identity(parent),
             "metric": a.get("metric", "top1"), "data": a.get("data"),
             **({st.DATA_ARGS_ATTR: searched} if searched is not None else {}),
             "img_size": a.get("img_size"), "latency_batch": latency.batch, "latency_anchored": latency.anchor,
             "latency_runtime": latency.runtime, "latency_precision": latency.precision,
             **({"latency_at": a["latency_at"]} if a.get("latency_at") else {}),
             "space": f"{a.get('space')}{SUFFIX}", "num_classes": splits.num_classes,
             "classes": list(splits.classes), LABELS_ATTR: labels_attr(splits),
             pv.STUDY_ATTR: (made or pv.Provenance("study", now)).with_(kind="confirmation", data=now).to_dict()}
    if st.ANCHOR_ATTR in a:
        attrs[st.ANCHOR_ATTR] = a[st.ANCHOR_ATTR]  # the search's calibration: figures stay comparable
    study, created = st.create_or_load(name, cfg.storage, optuna.samplers.RandomSampler(), attrs, pairs,
                                       add_missing=True)
    trials = len(pairs)
    _log.info(f"confirmation study {name!r} in {st.shown(cfg.storage)} ({'created' if created else 'resumed'}): "
              f"{len(cands)} candidates (trials {', '.join(str(t.number) for t in cands)}) x seeds {cfg.seed_list}; "
              f"{st.finished_count(study)}/{trials} runs done")
    st.fail_stale_trials(study)
    space = ConfirmSpace(configs, cfg.seed_list)
    search = SearchConfig(study=name, storage=cfg.storage, device=cfg.device, threads=cfg.threads,
                          metric=attrs["metric"], executor=cfg.executor, ray=cfg.ray)
    template = TrialSpec(config=space.base, data=data, device=cfg.device, threads=cfg.threads,
                         metric=attrs["metric"], latency=latency, latency_at=_service_of(a))
    return Prepared(search, space, study, name, cfg.storage, trials, template, created,
                    st.study_dir(cfg.study, cfg.storage))


def _service_of(attrs: dict):
    """A search timed by a latency service is confirmed on the same machine (remote.py); the
    token comes from ``HOVIT_NAS_LATENCY_TOKEN`` here too."""
    at = attrs.get("latency_at")
    if not at:
        return None
    import os

    from .remote import LatencyService
    from .service import TOKEN_ENV

    return LatencyService(at["url"], machine=at["machine"]["id"], token=os.environ.get(TOKEN_ENV))


def run_confirm(cfg: ConfirmConfig) -> "Prepared":
    """Create or resume the linked study and run its executor; storage failures are one line
    (StorageError), as in ``search.run_search``."""
    from .executors import dispatch

    prep = prepare(cfg)
    with st.storage_errors(prep.storage):
        dispatch(prep)
    return prep


# ----------------------------------------------------------------------------- the statistics

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
    if evaluators.CAPS[study.user_attrs.get("evaluator", "train")].estimates:  # the search's figure: shown beside
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

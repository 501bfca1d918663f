"""Running a search: resolve the space, data and study, then hand trials to an executor."""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Optional

import optuna
from optuna.trial import TrialState

from . import study as st
from .data import DataSpec
from .errors import HovitError
from .space import Space, load_space
from .trial import TrialSpec, calibrate_anchor, get_data, latency_threads


@dataclass
class SearchSpec:
    space: str = "hovit"
    data: Optional[str] = None
    data_options: dict = field(default_factory=dict)  # split_index, external_test, max_per_split, ...
    study: Optional[str] = None
    storage: Optional[str] = None
    trials: Optional[int] = None  # total finished trials wanted in the study (resume-safe)
    timeout: Optional[float] = None
    sampler: str = "nsga2"
    seed: Optional[int] = 0
    device: str = "auto"
    threads: Optional[int] = None
    metric: str = "top1"
    max_latency_ms: Optional[float] = None
    max_params_m: Optional[float] = None
    latency_batch: Optional[int] = None
    latency_anchor: Optional[bool] = None  # None: the space's latency.anchor (default on)
    executor: str = "local"
    ray: dict = field(default_factory=dict)  # address, cpus_per_trial, gpus_per_trial, max_concurrent, asha


@dataclass
class Prepared:
    space: Space
    study: optuna.Study
    study_name: str
    storage: str
    trials: int
    trial_template: TrialSpec
    created: bool


def prepare(spec: SearchSpec, log: Callable[[str], None]) -> Prepared:
    if spec.metric not in ("top1", "f1_macro"):
        raise HovitError(f"unknown metric {spec.metric!r}; one of top1, f1_macro")
    space = load_space(spec.space)
    builtin = spec.data is None
    if builtin:
        space = space.with_builtin_budget()
        log(f"data: built-in digits (scikit-learn load_digits, 8x8 upsampled to {space.base.model.img_size} px) "
            f"with the space's builtin_data budget; pass --data for your dataset")
    opts = dict(spec.data_options)
    for key in ("split_index", "external_test"):  # absolute: Ray trials run in their own directories
        if opts.get(key):
            opts[key] = str(Path(opts[key]).expanduser().resolve())
    data = DataSpec(path=str(Path(spec.data).expanduser().resolve()) if spec.data else None,
                    img_size=space.base.model.img_size, seed=space.base.train.seed, **opts)
    splits = get_data(data)
    if splits.num_classes != space.base.model.num_classes:
        space = copy.deepcopy(space)
        space.base.model.num_classes = splits.num_classes
    latency = dict(space.latency)
    if spec.latency_batch:
        latency["batch"] = spec.latency_batch
    if spec.latency_anchor is not None:
        latency["anchor"] = spec.latency_anchor
    name = spec.study or (f"{space.name}-builtin" if builtin else space.name)
    storage = st.absolute_url(spec.storage or st.default_storage(name))
    trials = spec.trials or space.trials
    constraints = spec.max_latency_ms is not None or spec.max_params_m is not None
    attrs = {"space": space.name, "space_def": space.to_dict(), "data": splits.description,
             "data_sizes": splits.sizes, "metric": spec.metric, "latency_batch": latency["batch"],
             "latency_anchored": bool(latency.get("anchor")),
             "img_size": space.base.model.img_size, "num_classes": splits.num_classes,
             "population": st.population_for(trials)}
    sampler = st.make_sampler(spec.sampler, spec.seed, attrs["population"], constraints)
    study, created = st.create_or_load(name, storage, space, sampler, attrs)
    if not created:
        pop = study.user_attrs.get("population", attrs["population"])
        study.sampler = st.make_sampler(spec.sampler, spec.seed, pop, constraints)
    stale = st.fail_stale_trials(study)
    log(f"study {name!r} in {storage} ({'created' if created else 'resumed'}; "
        f"{st.finished_count(study)}/{trials} trials done"
        + (f"; marked stale trials {stale} failed" if stale else "") + ")")
    log(f"data: {splits.description} {splits.sizes}; objectives: val {spec.metric} (max), "
        f"latency ms at batch {latency['batch']} (min)")
    template = TrialSpec(config=space.base, data=data, device=spec.device, threads=spec.threads,
                         metric=spec.metric, latency=latency, max_latency_ms=spec.max_latency_ms,
                         max_params_m=spec.max_params_m)
    return Prepared(space, study, name, storage, trials, template, created)


def ensure_anchor(prep: Prepared, device: str, threads: Optional[int], log: Callable[[str], None],
                  run: Callable[[Callable[[], dict]], dict] = lambda calibrate: calibrate()) -> None:
    """One calibrated reference per study, so every trial's latency scales by the same figure.
    ``device``/``threads`` are the trials'; ``run`` runs the calibration where trials run (a Ray
    task for Ray). The process that created the study calibrates; one that joins a fresh study
    waits for it; a resumed study reuses what it stored, and refuses a device or latency thread
    count other than the one it was calibrated with."""
    if not prep.trial_template.latency.get("anchor"):
        return
    t = copy.copy(prep.trial_template)
    t.device, t.threads = device, threads
    anchor = prep.study.user_attrs.get(st.ANCHOR_ATTR)
    deadline = time.time() + 60
    while anchor is None and not prep.created and st.finished_count(prep.study) == 0 and time.time() < deadline:
        time.sleep(1)
        anchor = prep.study.user_attrs.get(st.ANCHOR_ATTR)
    if anchor is None:
        space = prep.space
        anchor = run(lambda: calibrate_anchor(space.fixed_point, space.fixed_point_config(), t))
        prep.study.set_user_attr(st.ANCHOR_ATTR, anchor)
        log(f"latency anchor: {anchor['name']} calibrated at {anchor['ms']:.3f} ms on {anchor['device']} "
            f"({anchor['threads']} threads); each trial is timed alternately with it, reported as ratio x this")
    elif anchor["device"].split(":")[0] != device.split(":")[0] or int(anchor["threads"]) != latency_threads(t):
        raise HovitError(f"study {prep.study_name!r}: its latency anchor was calibrated on {anchor['device']} "
                         f"with {anchor['threads']} threads, this run uses {device} with {latency_threads(t)}; run "
                         f"it the same way (--device/--threads/--cpus-per-trial) or use --study NEW_NAME")
    prep.trial_template.anchor = anchor


def trial_spec_for(prep: Prepared, config) -> TrialSpec:
    t = copy.copy(prep.trial_template)
    t.config = config
    return t


class ProgressReporter:
    """One line per finished trial: done/total, the trial's figures, the front so far."""

    def __init__(self, total: int, log: Callable[[str], None]):
        self.total, self.log, self.t0 = total, log, time.time()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = st.finished_count(study)
        a = trial.user_attrs
        if trial.state == TrialState.COMPLETE:
            what = (f"{a.get('metric', 'acc')} {trial.values[0]:.4f}  latency {trial.values[1]:.2f} ms  "
                    f"params {a.get('params', 0) / 1e6:.2f} M  ({a.get('wall_s', 0):.0f}s)")
        elif trial.state == TrialState.PRUNED:
            what = f"pruned: {a.get('reason', 'stopped early')}"
        else:
            what = f"FAILED: {a.get('fail_reason', 'unknown')}"
        fp = " [HoViT-B fixed point]" if st.FIXED_POINT_ATTR in a else ""
        front = study.best_trials if done else []
        best = max(front, key=lambda t: t.values[0]) if front else None
        fastest = min(front, key=lambda t: t.values[1]) if front else None
        summary = (f" | front {len(front)}: best {best.values[0]:.4f} @ {best.values[1]:.2f} ms, "
                   f"fastest {fastest.values[1]:.2f} ms @ {fastest.values[0]:.4f}") if best else ""
        self.log(f"[{done}/{self.total}] trial #{trial.number}{fp}: {what}{summary}  "
                 f"[{time.time() - self.t0:.0f}s]")


def run_search(spec: SearchSpec, log: Callable[[str], None] | None = None) -> Prepared:
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    prep = prepare(spec, log)
    if spec.executor == "ray":
        from .executors.ray import run_ray
        run_ray(prep, spec, log)
    else:
        from .executors.local import run_local
        run_local(prep, spec, log)
    log(f"done: {st.finished_count(prep.study)} finished trials in study {prep.study_name!r}; "
        f"see `hovit-nas pareto --study {prep.study_name} --storage {prep.storage}`")
    return prep

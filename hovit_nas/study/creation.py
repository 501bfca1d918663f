"""A study's life: created once (its settings and fixed work enqueued by exactly one process) or
loaded, checked to be a hovit-nas study with the same settings, and known by its identity.

The fixed point (HoViT-B) and a confirmation's runs are enqueued by the process whose insert
created the study, so concurrent starts and resumes never add a second one.
"""
from __future__ import annotations

import json
import time
import uuid
import warnings
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import FrozenTrial

from ..errors import HovitError
from .keys import CONFIRMS_UID_ATTR, DIRECTIONS, FIXED_POINT_ATTR, OBJECTIVES, UID_ATTR
from .storage import open_storage, parse_url, shown


def identity(study: optuna.Study) -> str:
    """The study's identity: its ``study_uid``, or for a study made before ids existed, a
    fingerprint of its name and its first trial's start time."""
    uid = study.user_attrs.get(UID_ATTR)
    if uid:
        return uid
    first = min(study.get_trials(deepcopy=False), key=lambda t: t.number, default=None)
    started = first.datetime_start.isoformat() if first is not None and first.datetime_start else "-"
    return f"legacy:{study.study_name}:{started}"


def require_hovit_study(study: optuna.Study, storage: str) -> None:
    """Every command that opens a study checks first that hovit-nas made it: two objectives
    (maximise accuracy, minimise latency_ms) and a recorded space. A study with neither a space nor
    a trial may be mid-creation by a concurrent start: it is given ``CREATION_WAIT_S`` to finish.

    Raises:
        HovitError: naming the study, the storage (password masked) and what it is instead.
    """
    dirs = [d.name.lower() for d in study.directions]
    where = f"study {study.study_name!r} in {shown(storage)}"
    if dirs != DIRECTIONS:
        raise HovitError(f"{where} is not a hovit-nas study: {len(dirs)} objective(s) ({', '.join(dirs)}), not "
                         "accuracy (maximize) and latency_ms (minimize); open it with optuna-dashboard")
    if "space" not in study.user_attrs and "space" not in _await_creation(study):
        if not study.get_trials(deepcopy=False):
            raise HovitError(f"{where} records neither a search space nor a trial: a start that was creating it "
                             "was interrupted, or another tool made it; delete it (optuna delete-study) or use "
                             "`study` NEW_NAME")
        raise HovitError(f"{where} is not a hovit-nas study: it maximizes and minimizes two objectives but records "
                         "no search space (made by another tool)")


CREATION_WAIT_S = 30.0  # how long a start waits for a concurrent start to finish creating the study


def _await_creation(study: optuna.Study) -> dict:
    """Wait until the study records its space (its last attribute, written by ``create_or_load``
    before any trial), while it has no trial: a concurrent start that won the insert is still
    writing its attributes. Returns the user attrs last read."""
    deadline = time.monotonic() + CREATION_WAIT_S
    while True:
        attrs = study.user_attrs
        if "space" in attrs or study.get_trials(deepcopy=False) or time.monotonic() >= deadline:
            return attrs
        time.sleep(0.2)


def create_or_load(name: str, storage: str, sampler: optuna.samplers.BaseSampler, study_attrs: dict,
                   enqueue: list[tuple[dict, dict]], add_missing: bool = False) -> tuple[optuna.Study, bool]:
    """Create the study and enqueue its fixed work, ``(params, user_attrs)`` pairs (the search's
    fixed point, a confirmation's runs) -- or load it. Exactly one process wins the study's unique
    insert; only that one enqueues, so concurrent starts and resumes never add a second fixed
    point. The creator writes the ``space`` attribute after the others and before any trial; a loader
    that finds no space and no trial waits up to ``CREATION_WAIT_S`` for it. ``add_missing``: a loaded study also
    gets the pairs it lacks (a wider confirmation).

    Raises:
        HovitError: the study is not a hovit-nas study, or was left half-created, or was created
            with other settings (``check_compatible``).
    """
    st = open_storage(storage)
    try:
        study = optuna.create_study(storage=st, study_name=name, directions=DIRECTIONS, sampler=sampler,
                                    load_if_exists=False)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=st, study_name=name, sampler=sampler)
        created = False
    if created:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(OBJECTIVES)
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
        for k, v in study_attrs.items():
            if k != "space":
                study.set_user_attr(k, v)
        # the last attribute: a study that records its space has all of them, so a concurrent start
        # waits for it (``require_hovit_study``); trials come after, so none appears before it
        study.set_user_attr("space", study_attrs["space"])
        for params, attrs in enqueue:
            study.enqueue_trial(params, user_attrs=attrs)
    else:
        require_hovit_study(study, storage)
        check_compatible(study, study_attrs)
        if add_missing:  # skip_if_exists: a trial with these parameters exists, in any state
            for params, attrs in enqueue:
                study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=True)
    return study, created


def recorded_attrs(name: str, storage: str) -> dict:
    """The settings an existing study recorded (its user attrs); {} for a new study.

    Raises:
        HovitError: the study exists but hovit-nas did not make it (``require_hovit_study``).
    """
    u = parse_url(storage)
    if u.get_backend_name() == "sqlite" and not Path(u.database or "").expanduser().is_file():
        return {}
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        return {}
    require_hovit_study(study, storage)
    return dict(study.user_attrs)


# what a study made before a latency setting existed was timed with (it records latency_batch)
LATENCY_BEFORE = {"latency_anchored": False, "latency_runtime": "torch", "latency_precision": "fp32"}


def recorded_latency(name: str, storage: str, key: str) -> Optional[str]:
    """A latency setting (``latency_runtime``, ``latency_precision``) an existing study was timed
    with (``LATENCY_BEFORE``'s for studies from before the setting existed); None for a new study."""
    attrs = recorded_attrs(name, storage)
    return attrs.get(key, LATENCY_BEFORE[key] if "latency_batch" in attrs else None)


COMPATIBLE = ("space", "data", "metric", "latency_batch", "latency_anchored", "latency_runtime",
              "latency_precision", "img_size", "early_stop", CONFIRMS_UID_ATTR)


def check_compatible(study: optuna.Study, attrs: dict) -> None:
    """Resuming with a different space/data/metric would mix incomparable trials: refuse."""
    have = dict(study.user_attrs)
    if CONFIRMS_UID_ATTR in attrs and CONFIRMS_UID_ATTR in have and have[CONFIRMS_UID_ATTR] != attrs[CONFIRMS_UID_ATTR]:
        raise HovitError(f"study {study.study_name!r} confirms another study that was named "
                         f"{have.get('confirms_study')!r} (a different study, by identity); delete it or rename the "
                         "search")
    if "latency_batch" in have:  # studies from before anchoring timed raw, on PyTorch eager, at fp32
        for key, value in LATENCY_BEFORE.items():
            have.setdefault(key, value)
    for key in COMPATIBLE:
        if key in attrs and key in have and have[key] != attrs[key]:
            hint = {"latency_anchored": " (or set `latency_anchor` to match)",
                    "latency_runtime": f" (or `runtime` {have[key]} to match)",
                    "latency_precision": f" (or `precision` {have[key]} to match)",
                    "early_stop": " (or `early_stop`/`rung_min_epochs`/`rung_eta` to match)"}.get(key, "")
            raise HovitError(f"study {study.study_name!r} was created with {key}={_short(have[key])}, not "
                             f"{_short(attrs[key])}; use `study` NEW_NAME for a new study{hint}")


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) < 60 else s[:57] + "..."


def fixed_point_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if FIXED_POINT_ATTR in t.user_attrs]

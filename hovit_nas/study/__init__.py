"""The multi-objective Optuna study: storage, heartbeat, samplers, the HoViT-B fixed point, the
trial budget, and what a trial records.

A thin layer over Optuna: ``create_study`` on any SQLAlchemy URL, NSGA-II/TPE/random samplers,
``enqueue_trial`` for the fixed point, user attrs for everything a trial measured, so that
``hovit-nas pareto``, ``pin`` and ``optuna-dashboard`` read the same records whichever executor
wrote them.

One module a concept, each importing only the ones above it:

- ``keys``: the two objectives and the user-attr keys a study and its trials record;
- ``storage``: storage URLs, a study's default file and folder, the heartbeat storage;
- ``failures``: storage failures in one line, and the check before a trial trains;
- ``samplers``: NSGA-II, TPE, random, and each driver's seed;
- ``creation``: creating or loading a study, its identity, its fixed point, compatible settings;
- ``liveness``: the heartbeat thread, stale trials failed, the fixed work re-queued;
- ``budget``: the shared trial budget and the one admission check (``admit``);
- ``find``: finding, resolving and loading a study;
- ``commands``: the pasteable command lines a study prints (its data options, its storage).

Every name is importable from here (``from hovit_nas import study as st; st.admit``). A test that
patches a module-level setting patches the module that reads it (``study.creation.CREATION_WAIT_S``).
"""
from __future__ import annotations

from .budget import Admission, admit, counts, duplicate_of, finished_count, record, within_budget
from .commands import DATA_PLACEHOLDER, STORAGE_ENV, command, data_args, data_of, recorded_data_args
from .failures import MIN_FREE_BYTES, check_writable, storage_cause, storage_errors, storage_failure_line
from .find import find_studies, load, resolve_study
from .keys import (ANCHOR_ATTR, CONFIRMS_ATTR, CONFIRMS_UID_ATTR, DATA_ARGS_ATTR, DIRECTIONS, DUPLICATE_ATTR,
                   FIXED_POINT_ATTR, OBJECTIVES, UID_ATTR)
from .creation import (COMPATIBLE, CREATION_WAIT_S, LATENCY_BEFORE, check_compatible, create_or_load,
                        fixed_point_trials, identity, recorded_attrs, recorded_latency, require_hovit_study)
from .liveness import REQUEUED_ATTRS, Heartbeats, fail_stale_trials, fail_trial, requeue
from .samplers import constraints_func, driver_seed, make_sampler, population_for
from .storage import (ASK_WARNING, STUDY_NAME_MAX, Heartbeat, Storage, absolute_url, ask, check_study_name,
                      default_storage, open_storage, parse_url, shown, storage_of, study_dir, study_id, trial_id)

__all__ = [
    # keys
    "DIRECTIONS", "OBJECTIVES", "FIXED_POINT_ATTR", "ANCHOR_ATTR", "DUPLICATE_ATTR", "CONFIRMS_ATTR", "UID_ATTR",
    "CONFIRMS_UID_ATTR", "DATA_ARGS_ATTR",
    # storage
    "ASK_WARNING", "Heartbeat", "Storage", "storage_of", "study_id", "trial_id", "ask", "shown", "STUDY_NAME_MAX",
    "check_study_name", "default_storage", "parse_url", "absolute_url", "study_dir", "open_storage",
    # failures
    "MIN_FREE_BYTES", "storage_cause", "storage_failure_line", "storage_errors", "check_writable",
    # samplers
    "make_sampler", "driver_seed", "constraints_func", "population_for",
    # creation
    "identity", "require_hovit_study", "CREATION_WAIT_S", "create_or_load", "recorded_attrs", "LATENCY_BEFORE",
    "recorded_latency", "COMPATIBLE", "check_compatible", "fixed_point_trials",
    # liveness
    "REQUEUED_ATTRS", "requeue", "fail_trial", "fail_stale_trials", "Heartbeats",
    # budget
    "counts", "finished_count", "within_budget", "duplicate_of", "Admission", "admit", "record",
    # find
    "find_studies", "resolve_study", "load",
    # commands
    "STORAGE_ENV", "DATA_PLACEHOLDER", "data_args", "data_of", "recorded_data_args", "command",
]

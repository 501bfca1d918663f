"""The multi-objective Optuna study: storage, samplers, the HoViT-B fixed point, trial records.

A thin layer over Optuna: ``create_study`` on any SQLAlchemy URL, NSGA-II/TPE/random samplers,
``enqueue_trial`` for the fixed point, user attrs for everything a trial measured, so that
``hovit-nas pareto``, ``pin`` and ``optuna-dashboard`` read the same records whichever executor
wrote them.
"""
from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .errors import HovitError, StorageError
from .space import Space

DIRECTIONS = ["maximize", "minimize"]
OBJECTIVES = ["accuracy", "latency_ms"]
SAMPLERS = ("nsga2", "tpe", "random")
FIXED_POINT_ATTR = "fixed_point"
ANCHOR_ATTR = "latency_anchor"  # {name, ms, config, device, threads}: see search.ensure_anchor


def default_storage(study_name: str, root: str | Path = "studies") -> str:
    return f"sqlite:///{Path(root) / study_name / 'study.db'}"


def absolute_url(url: str) -> str:
    """SQLite paths made absolute: Ray runs each trial in its own working directory."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return url  # open_storage reports it
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        return u.set(database=str(Path(u.database).expanduser().resolve())).render_as_string(hide_password=False)
    return url


def open_storage(url: str, create: bool = True) -> optuna.storages.RDBStorage:
    """An RDB storage for ``url``; any problem with the URL is one line naming it.
    ``create=False`` (reading commands) refuses to make a new SQLite file."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"invalid storage URL {url!r}: {exc}") from None
    shown = parsed.render_as_string(hide_password=True)
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(f"invalid storage URL {shown!r}: an in-memory SQLite study would be lost; give a file")
        db = Path(parsed.database).expanduser()
        if not create and not db.is_file():
            raise StorageError(f"{db}: no such study database (storage {shown!r})")
        db.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_compatibility_check=False)
        except Exception as exc:  # noqa: BLE001
            racing = any(k in str(exc) for k in ("UNIQUE constraint", "already exists", "database is locked",
                                                  "duplicate key"))
            if not racing or attempt == 4:
                _raise_storage_error(exc, shown)
            time.sleep(0.5 * (attempt + 1))  # another process is creating the schema right now
    raise AssertionError("unreachable")


def _raise_storage_error(exc: Exception, shown: str) -> None:
    if isinstance(exc, ImportError):
        raise StorageError(f"storage URL {shown!r}: database driver missing ({exc.name or exc}); "
                           "for PostgreSQL install hovit-nas[postgres]") from None
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise StorageError(f"cannot open storage {shown!r}: {type(exc).__name__}: {msg}") from None


def make_sampler(name: str = "nsga2", seed: Optional[int] = None, population: int = 8,
                 constraints: bool = False) -> optuna.samplers.BaseSampler:
    cfunc = constraints_func if constraints else None
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=cfunc)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=population, multivariate=True,
                                          constraints_func=cfunc)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise HovitError(f"unknown sampler {name!r}; one of {', '.join(SAMPLERS)}")


def constraints_func(trial: FrozenTrial) -> list[float]:
    """Optuna constraint values (<= 0 is feasible), recorded by the trial as a user attr."""
    return list(trial.user_attrs.get("constraints", [0.0]))


def population_for(trials: int) -> int:
    return max(4, min(50, trials // 3))


def create_or_load(name: str, storage: str, space: Space, sampler: optuna.samplers.BaseSampler,
                   study_attrs: dict) -> tuple[optuna.Study, bool]:
    """Create the study and enqueue the fixed point -- or load it. Exactly one process wins
    the study's unique insert; only that one enqueues, so concurrent starts and resumes never
    add a second fixed point."""
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
        for k, v in study_attrs.items():
            study.set_user_attr(k, v)
        study.enqueue_trial(space.fixed_point_params(), user_attrs={FIXED_POINT_ATTR: space.fixed_point})
        study.set_user_attr("fixed_point_enqueued", space.fixed_point)
    else:
        check_compatible(study, study_attrs)
    return study, created


def check_compatible(study: optuna.Study, attrs: dict) -> None:
    """Resuming with a different space/data/metric would mix incomparable trials: refuse."""
    if [d.name.lower() for d in study.directions] != DIRECTIONS:
        raise HovitError(f"study {study.study_name!r} is not a hovit-nas accuracy/latency study")
    have = dict(study.user_attrs)
    if "latency_batch" in have:  # studies from before anchoring timed raw
        have.setdefault("latency_anchored", False)
    for key in ("space", "data", "metric", "latency_batch", "latency_anchored", "img_size"):
        if key in attrs and key in have and have[key] != attrs[key]:
            hint = " (or --latency-anchor/--no-latency-anchor to match)" if key == "latency_anchored" else ""
            raise HovitError(f"study {study.study_name!r} was created with {key}={_short(have[key])}, not "
                             f"{_short(attrs[key])}; use --study NEW_NAME for a new study{hint}")


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) < 60 else s[:57] + "..."


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose owning driver process (on this host) is gone as FAIL.

    A stale HoViT-B trial is enqueued again, by whichever process wins its FAIL transition,
    so the fixed point is still evaluated exactly once to completion.
    """
    failed = []
    host = socket.gethostname()
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner", "")
        h, _, pid = owner.rpartition(":")
        if h == host and pid.isdigit() and not _pid_alive(int(pid)):
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", f"stale: driver {owner} is gone")
                if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process got there first
            failed.append(t.number)
            requeue_fixed_point(study, t)
    return failed


def requeue_fixed_point(study: optuna.Study, trial) -> None:
    """An interrupted (never a genuinely failed) HoViT-B trial goes back in the queue. Only the
    process that moved it to FAIL calls this, so the fixed point still completes exactly once."""
    if FIXED_POINT_ATTR in trial.user_attrs:
        params = trial.params or trial.system_attrs.get("fixed_params", {})
        study.enqueue_trial(params, user_attrs={FIXED_POINT_ATTR: trial.user_attrs[FIXED_POINT_ATTR]})


def fail_interrupted_trials(study: optuna.Study) -> list[int]:
    """After Ctrl-C in this process: trials it owned that Optuna failed get their reason."""
    me, out = owner_id(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("owner") == me and "fail_reason" not in t.user_attrs:
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "interrupted (Ctrl-C)")
            requeue_fixed_point(study, t)
            out.append(t.number)
    return out


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def record_result(set_attr, result: dict, spec_max_latency: Optional[float] = None,
                  spec_max_params: Optional[float] = None) -> None:
    """Write a trial's measurements as user attrs (``set_attr(key, value)``), JSON-safe."""
    keep = ("status", "accuracy", "latency_ms", "latency", "params", "params_dense", "val", "test",
            "selected_blocks", "history", "device", "metric", "wall_s", "data", "reason", "config")
    for k in keep:
        if k in result:
            set_attr(k, _json_safe(result[k]))
    cons = []
    if spec_max_latency is not None:
        cons.append(result["latency_ms"] - spec_max_latency)
    if spec_max_params is not None:
        cons.append(result["params"] / 1e6 - spec_max_params)
    set_attr("constraints", cons or [0.0])


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def fixed_point_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if FIXED_POINT_ATTR in t.user_attrs]


def find_studies(root: str | Path = "studies") -> list[tuple[str, str]]:
    """(study name, storage URL) for every default SQLite study under ``root``."""
    out = []
    for db in sorted(Path(root).glob("*/study.db")):
        url = f"sqlite:///{db}"
        try:
            for s in optuna.get_all_study_summaries(storage=url):
                out.append((s.study_name, url))
        except Exception:  # noqa: BLE001 - a broken file is reported when opened explicitly
            continue
    return out


def resolve_study(study: Optional[str], storage: Optional[str]) -> tuple[str, str]:
    """Default: the only study under ./studies, or the named one's default SQLite file."""
    if storage and study:
        return study, storage
    if storage:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=open_storage(storage, create=False))]
        if len(names) != 1:
            raise HovitError(f"storage holds {len(names)} studies ({', '.join(names) or 'none'}); pass --study")
        return names[0], storage
    if study:
        url = default_storage(study)
        if not Path(url.removeprefix("sqlite:///")).is_file():
            raise HovitError(f"no study {study!r} at {url}; pass --storage URL")
        return study, url
    found = find_studies()
    if len(found) != 1:
        raise HovitError(f"found {len(found)} studies under ./studies "
                         f"({', '.join(n for n, _ in found) or 'none'}); pass --study NAME and/or --storage URL")
    return found[0]


def load(study: str, storage: str) -> optuna.Study:
    st = open_storage(storage, create=False)
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=st)]
        raise HovitError(f"no study {study!r} in {storage} (has: {', '.join(names) or 'none'})") from None

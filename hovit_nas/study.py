"""The multi-objective Optuna study: storage, heartbeat, samplers, the HoViT-B fixed point, the
trial budget, and what a trial records.

A thin layer over Optuna: ``create_study`` on any SQLAlchemy URL, NSGA-II/TPE/random samplers,
``enqueue_trial`` for the fixed point, user attrs for everything a trial measured, so that
``hovit-nas pareto``, ``pin`` and ``optuna-dashboard`` read the same records whichever executor
wrote them.

Liveness is Optuna's RDB heartbeat: the process that owns a running trial records a heartbeat
every ``interval`` seconds; a trial whose heartbeat is older than ``grace`` seconds, on any host,
is failed by the next driver that looks. Optuna skips a RUNNING trial that has no heartbeat at
all, which is what a driver killed between ``ask`` and its first beat leaves behind; our storage
also counts those as stale once they are older than the grace period (_compat.py, the one
place that reaches into Optuna's internals).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import _compat
from .config import SAMPLERS, DataSpec
from .errors import HovitError, StorageError, first_line
from .names import NAME_MAX, check_name, sqlite_url
from .outputs import unwritable

DIRECTIONS = ["maximize", "minimize"]
OBJECTIVES = ["accuracy", "latency_ms"]
FIXED_POINT_ATTR = "fixed_point"
ANCHOR_ATTR = "latency_anchor"  # latency.Calibration as a dict: see executors/common.ensure_anchor
DUPLICATE_ATTR = "duplicate_of"
CONFIRMS_ATTR = "confirms"  # a confirmation run (confirm.py): the search trial it retrains
REQUEUED_ATTRS = (FIXED_POINT_ATTR, CONFIRMS_ATTR, "seed", "replicate")  # enqueued work that must complete once
_log = logging.getLogger(__name__)
# We drive ask/tell ourselves and run our own heartbeat thread (Heartbeats below), which is what
# Optuna warns about when a heartbeat storage is used outside Study.optimize: see ask().
ASK_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


# ----------------------------------------------------------------------------------- storage

@dataclass(frozen=True)
class Heartbeat:
    """How often a live trial says so, and how long silence means its owner is dead.

    A beat comes from a thread, so a long epoch or latency measurement does not delay it; the
    grace period covers six missed beats, e.g. a SQLite write lock held by other drivers."""

    interval: int = 10
    grace: int = 60

    @classmethod
    def from_env(cls) -> "Heartbeat":
        """``HOVIT_NAS_HEARTBEAT=INTERVAL[,GRACE]`` (seconds) overrides the defaults."""
        raw = os.environ.get("HOVIT_NAS_HEARTBEAT")
        if not raw:
            return cls()
        try:
            parts = [int(v) for v in raw.split(",")]
            hb = cls(parts[0], parts[1] if len(parts) > 1 else 6 * parts[0])
        except (ValueError, IndexError):
            raise HovitError(f"HOVIT_NAS_HEARTBEAT={raw!r}: expected INTERVAL[,GRACE] in whole seconds") from None
        if hb.interval < 1 or hb.grace <= hb.interval:
            raise HovitError(f"HOVIT_NAS_HEARTBEAT={raw!r}: needs INTERVAL >= 1 and GRACE > INTERVAL")
        return hb


class Storage(_compat.HeartbeatRDBStorage):
    """Optuna's RDB storage with the heartbeat on, where a RUNNING trial that never beat (its
    driver died right after creating it) is stale once it is older than the grace period."""


def storage_of(study: optuna.Study) -> Storage:
    """The study's RDB storage, below Optuna's per-process cache (``_compat.rdb_storage``)."""
    return _compat.rdb_storage(study)


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study`` (public storage API: one query)."""
    return storage_of(study).get_study_id_from_name(study.study_name)


def trial_id(study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``, which heartbeats, rung records and
    another process's writes address (public storage API; raises KeyError for no such trial)."""
    storage = storage_of(study)
    return storage.get_trial_id_from_study_id_trial_number(study_id(study), number)


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()`` without Optuna's warning that a heartbeat storage belongs to
    ``Study.optimize``: our executors drive ask/tell and beat from their own thread."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ASK_WARNING, category=UserWarning)
        return study.ask()


def shown(url: str) -> str:
    """A storage URL fit to print or write: the password masked."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparseable: mask anything between "user:" and "@"
        return re.sub(r"(//[^/@:]*:)[^/]*@", r"\1***@", url)


STUDY_NAME_MAX = NAME_MAX


def check_study_name(name: str) -> str:
    """A study name is also a folder name (``./studies/<study>/``): one path component, so no
    name can put a study or its artefacts outside ``./studies`` (names.check_name, the rule of
    every name that becomes a path).

    Raises:
        HovitError: the name is empty, longer than 200 characters, ``.`` or ``..``, starts with
            ``.``, or holds ``/``, ``\\`` or a control character.
    """
    return check_name(name, "study name", "studies")


def default_storage(study_name: str, root: str | Path = "studies") -> str:
    """``sqlite:///<root>/<study>/study.db``, written by SQLAlchemy (names.sqlite_url), so a ``?``,
    ``#`` or ``%`` in the name stays in the folder's name; HovitError for a name that is not one
    folder name."""
    return sqlite_url(Path(root) / check_study_name(study_name) / "study.db")


def parse_url(url: str):
    """``url`` parsed by SQLAlchemy (``make_url``), with one more check for SQLite: a ``?`` starts
    the URL's query, so ``sqlite:///studies/crc?v1/study.db`` names the file ``studies/crc``;
    a query that is not ``key=value`` pairs was meant as part of the path.

    Raises:
        StorageError: the URL cannot be parsed, or a SQLite URL's ``?`` is followed by a path
            rather than ``key=value`` options (one line: write it as ``%3F``).
    """
    from urllib.parse import parse_qsl

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"invalid storage URL {shown(url)!r}: {shown(str(exc))}") from None
    query = url.partition("?")[2]
    if u.get_backend_name() == "sqlite" and query:
        try:
            parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            typed = url if u.password is None else shown(url)
            raise StorageError(f"invalid storage URL {typed!r}: '?' starts the URL's query, so the database "
                               f"file would be {u.database!r}; write a '?' in a file or folder name as %3F "
                               f"(and '%' as %25)") from None
    return u


def absolute_url(url: str) -> str:
    """SQLite paths made absolute: Ray runs each trial in its own working directory.

    Raises:
        StorageError: the URL cannot be parsed, or a SQLite URL's ``?`` is followed by a path
            (``parse_url``)."""
    u = parse_url(url)
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        return u.set(database=str(Path(u.database).expanduser().resolve())).render_as_string(hide_password=False)
    return url


def study_dir(study_name: str, storage: str, out: Optional[str | Path] = None) -> Path:
    """Where a study's artefacts go (plots, pinned configs, Ray's experiment state): ``out`` when
    given, else the folder of its SQLite file, else ``./studies/<study>`` for a server storage."""
    if out is not None:
        return Path(out).expanduser().resolve()
    u = parse_url(storage)
    if u.get_backend_name() == "sqlite" and u.database:
        return Path(u.database).expanduser().resolve().parent
    return (Path("studies") / check_study_name(study_name)).resolve()


def open_storage(url: str, create: bool = True) -> Storage:
    """A heartbeat-enabled RDB storage for ``url``; any problem with the URL is one line naming it
    (password masked). ``create=False`` (reading commands) refuses to make a new SQLite file."""
    parsed = parse_url(url)
    masked = shown(url)
    kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(f"invalid storage URL {masked!r}: an in-memory SQLite study would be lost; give a file")
        db = Path(parsed.database).expanduser()
        if not create and not db.is_file():
            raise StorageError(f"{db}: no such study database (storage {masked!r})")
        db.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    hb = Heartbeat.from_env()
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return Storage(url, engine_kwargs=kwargs, heartbeat_interval=hb.interval, grace_period=hb.grace)
        except Exception as exc:  # the driver's own exception types vary: matched by what they say
            racing = any(k in str(exc) for k in ("UNIQUE constraint", "already exists", "database is locked",
                                                  "duplicate key"))
            if not racing or attempt == 4:
                _raise_storage_error(exc, masked)
            time.sleep(0.5 * (attempt + 1))  # another process is creating the schema right now
    raise AssertionError("unreachable")


def _raise_storage_error(exc: Exception, masked: str) -> None:
    if isinstance(exc, ImportError):
        raise StorageError(f"storage URL {masked!r}: database driver missing ({exc.name or exc}); "
                           "for PostgreSQL install hovit-nas[postgres]") from None
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    raise StorageError(f"cannot open storage {masked!r}: {type(exc).__name__}: {msg}") from None


# ------------------------------------------------------------------------- storage failures

MIN_FREE_BYTES = 16 * 2**20  # free disk a SQLite study needs before a trial trains (results + journal)
_CAUSES = (  # (substring of the database's message, lower case) -> what happened, in the user's words
    (("database or disk is full", "no space left on device", "disk quota exceeded", "could not extend file"),
     "disk full"),
    (("readonly database", "read-only file system", "read-only transaction", "permission denied"), "read-only"),
    (("database is locked", "database table is locked", "lock timeout"), "locked by another process"),
    (("server closed the connection", "connection refused", "could not connect", "terminating connection",
      "connection is closed", "connection reset", "the database system is shutting down", "server has gone away",
      "name or service not known", "connection timed out"), "server gone"),
    (("disk i/o error", "input/output error"), "disk I/O error"),
    (("unable to open database file",), "cannot open the database file"),
)
_ADVICE = {"disk full": "free space on its disk, then re-run the same command: the study is intact and resumes",
           "read-only": "make it writable, then re-run the same command",
           "locked by another process": "another process held the database too long; re-run the same command",
           "server gone": "is the database server running and reachable? Re-run the same command once it is",
           "disk I/O error": "check the disk, then re-run the same command"}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        orig = getattr(exc, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's exception
        if isinstance(orig, BaseException) and id(orig) not in seen:
            yield orig
        exc = exc.__cause__ or exc.__context__


def storage_cause(exc: BaseException) -> Optional[str]:
    """What went wrong with a storage, in a user's words ('disk full', 'read-only', 'locked by
    another process', 'server gone', ...), with the database's own message in brackets; None
    when ``exc`` is not a storage failure. Reads the whole exception chain: Optuna wraps a failed
    commit in ``StorageInternalError`` ("...invalid data in the commit..."), whose cause is the
    SQLAlchemy error, whose ``orig`` is the driver's."""
    import sqlalchemy.exc

    chain = list(_chain(exc))
    is_db = any(isinstance(e, (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError))
                or type(e).__module__.split(".")[0] in ("sqlite3", "psycopg", "psycopg2") for e in chain)
    for e in chain:
        text = str(e).lower()
        oserr = isinstance(e, OSError) and e.errno in (28, 30, 122)  # ENOSPC, EROFS, EDQUOT
        for needles, what in _CAUSES:
            if any(n in text for n in needles) and (is_db or oserr):
                detail = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:160]
                return f"{what} ({detail})"
    if is_db:
        last = chain[-1]
        return f"{type(last).__name__}: {first_line(last)[:160]}"
    return None


def storage_failure_line(url: str, exc: BaseException) -> Optional[str]:
    """One line naming the storage (password masked), the cause and what to do; None when
    ``exc`` is not a storage failure."""
    cause = storage_cause(exc)
    if cause is None:
        return None
    advice = next((a for k, a in _ADVICE.items() if cause.startswith(k)), "re-run the same command to resume")
    return f"storage {shown(url)}: {cause}; {advice}"


@contextmanager
def storage_errors(url: str):
    """Turn a storage failure inside the block into a StorageError (one line naming the storage
    and the cause: ``storage_failure_line``); anything else passes through unchanged."""
    try:
        yield
    except HovitError:
        raise
    except Exception as exc:  # only storage failures are converted
        line = storage_failure_line(url, exc)
        if line is None:
            raise
        raise StorageError(line) from exc


def check_writable(url: str) -> None:
    """Before a trial spends its training: a SQLite study's folder and file must be writable, and
    its disk must have ``MIN_FREE_BYTES`` free, or the trial's result could not be saved. (For a
    server, the heartbeat a trial records when it starts is the write that proves it.)

    Raises:
        StorageError: read-only or disk full, naming the storage and the free space.
    """
    u = parse_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return
    db = Path(u.database).expanduser()
    why = unwritable(db)
    if why:
        raise StorageError(f"storage {shown(url)}: read-only ({why}); {_ADVICE['read-only']}")
    folder = next(p for p in (db.parent, *db.parent.parents) if p.exists())  # a new study's folder: made later
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise StorageError(f"storage {shown(url)}: disk full ({free / 2**20:.1f} MiB free on the disk of {db}, a "
                           f"trial needs {MIN_FREE_BYTES / 2**20:.0f} MiB to save its results); "
                           f"{_ADVICE['disk full']}")


# ---------------------------------------------------------------------------------- samplers

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


def driver_seed(seed: Optional[int], created: bool) -> Optional[int]:
    """The driver that creates a study samples with ``seed`` (reproducible); any other driver
    (a resume, or a second one at once) mixes in its own start, so it does not replay the
    first driver's proposals."""
    if seed is None or created:
        return seed
    return (seed * 1_000_003 + time.time_ns() + os.getpid()) % 2**32


def constraints_func(trial: FrozenTrial) -> list[float]:
    """Optuna constraint values (<= 0 is feasible), recorded by the trial as a user attr."""
    return list(trial.user_attrs.get("constraints", [0.0]))


def population_for(trials: int) -> int:
    return max(4, min(50, trials // 3))


# ------------------------------------------------------------------------ study + fixed point

UID_ATTR = "study_uid"  # a random id written when a study is created: its identity, whatever its name
CONFIRMS_UID_ATTR = "confirms_uid"  # a confirmation study: the identity of the search it confirms


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


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """An interrupted (never a genuinely failed) fixed point or confirmation run goes back in the
    queue. Only the process that moved it to FAIL calls this, so it still completes exactly once."""
    attrs = {k: trial.user_attrs[k] for k in REQUEUED_ATTRS if k in trial.user_attrs}
    if FIXED_POINT_ATTR not in attrs and CONFIRMS_ATTR not in attrs:
        return False
    study.enqueue_trial(trial.params or trial.system_attrs.get("fixed_params", {}), user_attrs=attrs)
    return True


def fail_trial(study: optuna.Study, number: int, reason: str, tid: Optional[int] = None) -> bool:
    """Record ``reason`` and move RUNNING trial ``number`` to FAIL (``study.tell``); re-queue it
    if it was the fixed point or a confirmation run. True for the one process whose transition
    won; False when the trial had already finished (another driver may be failing it at the same
    time, or it just completed). ``tid``: its storage id, where the caller has it."""
    tid = trial_id(study, number) if tid is None else tid
    try:
        storage_of(study).set_trial_user_attr(tid, "fail_reason", reason)
        frozen = study.tell(number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # ValueError: "Cannot tell a FAIL trial"
        return False
    requeue(study, frozen)
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the trials whose owner stopped beating (a dead driver or worker, on any host) and
    return their numbers, each logged on one line."""
    storage = storage_of(study)
    grace = storage.grace_period
    failed = []
    for tid in _compat.stale_trial_ids(storage, study_id(study)):
        t = storage.get_trial(tid)
        if t.state == TrialState.RUNNING and fail_trial(study, t.number, f"stale: no heartbeat for over {grace} s "
                                                                         "(its driver or worker died)", tid):
            failed.append(t.number)
            _log.info(f"trial #{t.number} was left RUNNING by a dead driver (no heartbeat for over {grace} s): "
                      "marked FAIL" + ("; HoViT-B queued again" if FIXED_POINT_ATTR in t.user_attrs else
                      "; queued again" if CONFIRMS_ATTR in t.user_attrs else ""))
    return failed


class Heartbeats:
    """A background thread that records a heartbeat for every trial this process runs."""

    def __init__(self, storage: Storage):
        self.storage, self.ids, self._stop = storage, set(), threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hovit-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        with self._lock:
            self.ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.storage.heartbeat_interval):
            with self._lock:
                ids = list(self.ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as exc:  # any storage hiccup: it must not kill the trial
                    _log.warning(f"heartbeat for trial id {trial_id} failed: "
                                 f"{storage_cause(exc) or type(exc).__name__}")

    def close(self) -> None:
        self._stop.set()


# -------------------------------------------------------------------------------- the budget

def counts(study: optuna.Study) -> tuple[int, int, int]:
    """(finished, running, waiting fixed points): what the trial budget counts. A duplicate
    config (never trained) and a failed trial do not use up the budget."""
    done = running = waiting = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and DUPLICATE_ATTR not in t.user_attrs:
            done += 1
        elif t.state == TrialState.RUNNING and DUPLICATE_ATTR not in t.user_attrs:
            running += 1
        elif t.state == TrialState.WAITING and FIXED_POINT_ATTR in t.user_attrs:
            waiting += 1
    return done, running, waiting


def finished_count(study: optuna.Study) -> int:
    return counts(study)[0]


def within_budget(study: optuna.Study, trial: FrozenTrial | optuna.Trial, budget: int) -> bool:
    """After ``ask``: may this trial run? Trials are numbered in creation order, so of several
    drivers racing for the last slot, the lower numbers win. A fixed point always runs."""
    if FIXED_POINT_ATTR in trial.user_attrs:
        return True
    ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number
                and DUPLICATE_ATTR not in t.user_attrs
                and (t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                     or (t.state == TrialState.WAITING and FIXED_POINT_ATTR in t.user_attrs)))
    return ahead < budget


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> Optional[int]:
    """The number of an earlier trial with the same parameters that finished or is running."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if t.number != trial.number and DUPLICATE_ATTR not in t.user_attrs and t.params == trial.params:
            return t.number
    return None


@dataclass(frozen=True)
class Admission:
    """The verdict on a trial that has its parameters: train it (``state`` None), or close it
    at once as ``state`` -- FAIL when the budget is taken, PRUNED for a duplicate -- with
    ``reason`` recorded on the trial."""

    state: Optional[TrialState] = None
    reason: str = ""
    duplicate_of: Optional[int] = None  # the earlier trial with the same parameters

    @property
    def admitted(self) -> bool:
        return self.state is None


def admit(study: optuna.Study, trial: optuna.Trial, budget: int) -> Admission:
    """The one check both executors make before a trial trains, after its parameters are
    suggested: first the budget (``within_budget``: the lowest trial numbers win the last
    slots, a fixed point always runs), then a duplicate (``duplicate_of``: the same parameters
    finished or running). The verdict's reason is written to the trial's user attrs
    (``fail_reason``; or ``duplicate_of`` and ``reason``) and a duplicate is logged; the caller
    then tells the study ``state``, since only it holds the trial's handle."""
    if not within_budget(study, trial, budget):
        reason = "not run: other drivers took the last trials of the budget"
        trial.set_user_attr("fail_reason", reason)
        return Admission(TrialState.FAIL, reason)
    earlier = None if FIXED_POINT_ATTR in trial.user_attrs else duplicate_of(study, trial)  # replicates: enqueued
    if earlier is None:
        return Admission()
    reason = f"duplicate of trial #{earlier}: the same config is not trained again"
    trial.set_user_attr(DUPLICATE_ATTR, earlier)
    trial.set_user_attr("reason", reason)
    _log.info(f"trial #{trial.number}: same config as trial #{earlier}; recorded as its duplicate, not trained")
    return Admission(TrialState.PRUNED, reason, earlier)


def record(set_attr: Callable[[str, object], None], attrs: dict) -> None:
    """Write a trial's measurements as user attrs."""
    for k, v in attrs.items():
        set_attr(k, v)


def fixed_point_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if FIXED_POINT_ATTR in t.user_attrs]


# ------------------------------------------------------------------------- finding a study

def _searches(names: list[str]) -> list[str]:
    """Study names without the confirmation studies linked to a search in the same storage."""
    return [n for n in names if not (n.endswith("-confirm") and n.removesuffix("-confirm") in names)]


def find_studies(root: str | Path = "studies") -> list[tuple[str, str]]:
    """(study name, storage URL) for every default SQLite study under ``root``."""
    out = []
    for db in sorted(Path(root).glob("*/study.db")):
        url = sqlite_url(db)
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage=url)]
        except Exception:  # a broken file is reported when opened explicitly
            continue
        out += [(n, url) for n in _searches(names)]
    return out


def resolve_study(study: Optional[str], storage: Optional[str]) -> tuple[str, str]:
    """Default: the only study under ./studies, or the named one's default SQLite file."""
    if storage and study:
        return study, storage
    if storage:
        names = _searches([s.study_name for s in
                           optuna.get_all_study_summaries(storage=open_storage(storage, create=False))])
        if len(names) != 1:
            raise HovitError(f"storage holds {len(names)} studies ({', '.join(names) or 'none'}); pass `study`")
        return names[0], storage
    if study:
        url = default_storage(study)  # checks the name: it must stay under ./studies
        if not Path(parse_url(url).database).is_file():
            raise HovitError(f"no study {study!r} at {url}; pass `storage` URL{_legacy_hint(study)}")
        return study, url
    found = find_studies()
    if len(found) != 1:
        raise HovitError(f"found {len(found)} studies under ./studies "
                         f"({', '.join(n for n, _ in found) or 'none'}); pass `study` NAME and/or `storage` URL")
    return found[0]


def _legacy_hint(study: str) -> str:
    """Where an older hovit-nas put a study whose name SQLAlchemy read as URL syntax (``?``
    ended the path, ``%41`` became ``A``), when a file is there."""
    from sqlalchemy.engine import make_url

    db = make_url(f"sqlite:///{Path('studies') / study / 'study.db'}").database
    if db and db != str(Path("studies") / study / "study.db") and Path(db).is_file():
        return (f" (an older hovit-nas read URL syntax in the name and stored it in {db}: pass `storage` "
                f"{sqlite_url(db)})")
    return ""


def load(study: str, storage: str) -> optuna.Study:
    """An existing hovit-nas study (``require_hovit_study``); HovitError names what is wrong."""
    st = open_storage(storage, create=False)
    try:
        loaded = optuna.load_study(study_name=study, storage=st)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=st)]
        raise HovitError(f"no study {study!r} in {shown(storage)} (has: {', '.join(names) or 'none'})") from None
    require_hovit_study(loaded, storage)
    return loaded


STORAGE_ENV = "HOVIT_NAS_STORAGE"  # the CLI's default for --storage: a URL with a password stays off the screen
DATA_ARGS_ATTR = "data_args"  # a study's data as command-line options (``data_args``), for the commands it prints
DATA_PLACEHOLDER = "DATA"


def data_args(spec: DataSpec) -> list[str]:
    """The data options of a command line that loads ``spec``'s splits again: ``--data`` (an
    absolute path) and the split options that change the splits (``--split-index``,
    ``--external-test``, ``--max-per-split``, ``--no-augment``); [] for the built-in data. The
    cache folder is left out: it belongs to a machine, not to the data."""
    if spec.path is None:
        return []
    args = ["--data", str(spec.path)]
    for flag, value in (("--split-index", spec.split_index), ("--external-test", spec.external_test),
                        ("--max-per-split", spec.max_per_split)):
        if value is not None:
            args += [flag, str(value)]
    return args + ([] if spec.augment else ["--no-augment"])


def data_of(args: list[str]) -> tuple[Optional[str], "DataOptions"]:
    """The inverse of ``data_args``: (``--data``, DataOptions) from recorded data options."""
    from .config import DataOptions

    opts, data, it = DataOptions(), None, iter(args)
    for flag in it:
        if flag == "--no-augment":
            opts.augment = False
            continue
        value = next(it)
        if flag == "--data":
            data = value
        elif flag == "--split-index":
            opts.split_index = value
        elif flag == "--external-test":
            opts.external_test = value
        elif flag == "--max-per-split":
            opts.max_per_split = int(value)
    return data, opts


def recorded_data_args(attrs: dict) -> Optional[list[str]]:
    """The data options a study recorded (``DATA_ARGS_ATTR``, written by search.prepare); [] for
    a study on the built-in data; None for a study on other data from before they were recorded."""
    if DATA_ARGS_ATTR in attrs:
        return list(attrs[DATA_ARGS_ATTR])
    return [] if attrs.get("data") in (None, DataSpec().label) else None


def command(*args: object, storage: Optional[str] = None, data: Optional[dict] = None) -> str:
    """A command line a user can paste: every argument shell-quoted, then the data options of the
    study whose user attrs are ``data`` (``recorded_data_args``), then ``--storage URL``.

    A storage URL with a password is never printed, masked or not (``***`` pasted back would be
    tried as the password): the command reads it from ``$HOVIT_NAS_STORAGE`` instead, and when
    that variable does not hold it yet, the line says how to set it (password left out). A study
    that does not record its data options gets ``--data DATA`` and a note saying what goes there."""
    note = ""
    if data is not None:
        recorded = recorded_data_args(data)
        if recorded is None:
            recorded, note = ["--data", DATA_PLACEHOLDER], (f"   ({DATA_PLACEHOLDER}: the --data and split options "
                                                            "the search used; this study does not record them)")
        args = (*args, *recorded)
    line = shlex.join(str(a) for a in args)
    if storage is None:
        return line + note
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        secret = make_url(storage).password is not None
    except (ArgumentError, ValueError):
        secret = shown(storage) != storage
    if not secret:
        return f"{line} --storage {shlex.quote(storage)}{note}"
    line += f' --storage "${STORAGE_ENV}"'
    if os.environ.get(STORAGE_ENV) != storage:
        placeholder = shown(storage).replace("***", "PASSWORD")
        quoted = f"'{placeholder}'" if "'" not in placeholder else shlex.quote(placeholder)
        line += f"   (first: export {STORAGE_ENV}={quoted}, with the password in place of PASSWORD)"
    return line + note

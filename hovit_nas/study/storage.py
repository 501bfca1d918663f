"""Where a study is stored: storage URLs (parsed, masked, made absolute), the default SQLite file
and artefact folder of a study, and opening an RDB storage with Optuna's heartbeat on.

Liveness is Optuna's RDB heartbeat: the process that owns a running trial records a heartbeat
every ``interval`` seconds (``Heartbeat``); a trial whose heartbeat is older than ``grace``
seconds, on any host, is failed by the next driver that looks (``liveness.py``). Optuna skips a
RUNNING trial that has no heartbeat at all, which is what a driver killed between ``ask`` and its
first beat leaves behind; our storage (``Storage``) also counts those as stale once they are older
than the grace period (_compat.py, the one place that reaches into Optuna's internals).
"""
from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import optuna

from .. import _compat
from ..errors import HovitError, StorageError
from ..names import NAME_MAX, check_name, sqlite_url

# We drive ask/tell ourselves and run our own heartbeat thread (liveness.Heartbeats), which is what
# Optuna warns about when a heartbeat storage is used outside Study.optimize: see ask().
ASK_WARNING = "Heartbeat of storage is supposed to be used with Study.optimize"


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

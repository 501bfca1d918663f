"""Storage failures, in one line: what went wrong with a storage in a user's words (disk full,
read-only, locked, server gone), the line that names the storage and what to do, and the check a
trial makes before it spends its training (``check_writable``).
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import optuna

from ..errors import HovitError, StorageError, first_line
from ..outputs import unwritable
from .storage import parse_url, shown

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

"""Where commands write: checked before the work, and never over a file that git tracks.

- **Checked first** (``check_output``, ``unwritable``): a read-only share or a mistyped ``--out`` is
  one line at the start, never a ``PermissionError`` after minutes of training or timing. The
  check is the operating system's own (``os.access`` on the file, or on the nearest folder that
  exists, where the file and its missing folders would be made), so it honours the user's
  permissions as a write would: another owner's folder with mode 555 is refused, as is a read-only
  mount (``EROFS``). A write can still fail later (the disk fills); that is the writer's to report.
- **Committed results are left alone** (``default_output``): a command's default output is a new
  per-run folder under ``runs/`` (which .gitignore ignores), as ``train``'s run directory is, or a
  file next to its input (a study's ``best.yaml`` and ``pareto.html``, a run's exported model).
  Where that file is tracked by git, the default becomes the same file name in a new per-run
  folder, and the command's own output line names it. An explicit ``--out`` is honoured (the
  evidence scripts under ``results/`` rewrite their files on purpose).
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import subprocess
from pathlib import Path
from typing import Optional

from .errors import HovitError

_log = logging.getLogger(__name__)
RUNS = Path("runs")


def unwritable(path: str | Path) -> Optional[str]:
    """Why ``path`` (a file or a folder, existing or to be made) cannot be written, in a few
    words naming the culprit; None when it can."""
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        return None if os.access(p, os.W_OK | os.X_OK) else f"folder {p} is not writable"
    if p.exists() and not os.access(p, os.W_OK):
        return f"file {p} is not writable"
    folder = next(q for q in p.parents if q.exists())  # where the file (and any missing folders) is made
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):  # also for a writable file: writers replace it there
        return f"folder {folder} is not writable"
    return None


def check_output(path: str | Path, what: str, flag: str = "out", metavar: str = "FILE") -> Path:
    """``path`` if ``what`` (e.g. "the HTML plot") can be written there.

    Raises:
        HovitError: one line naming the file or folder that is not writable, and the ``flag``
            option (with its ``metavar``) that writes elsewhere.
    """
    why = unwritable(path)
    if why:
        raise HovitError(f"cannot write {what} {path}: {why}; pass `{flag}` {metavar} to write it elsewhere")
    return Path(path)


def tracked(path: str | Path) -> bool:
    """Whether git tracks ``path`` in the repository around it; False outside a repository, for a
    folder that does not exist yet, or where git is not installed."""
    p = Path(path).expanduser().absolute()
    if not p.parent.is_dir():
        return False
    try:
        r = subprocess.run(["git", "ls-files", "--error-unmatch", "--", p.name], cwd=p.parent,
                           capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def tracked_sqlite(url: str) -> Optional[Path]:
    """The SQLite file of storage ``url`` when git tracks it (a committed study), else None."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    db = Path(u.database).expanduser()
    return db if tracked(db) else None


def run_folder(kind: str, root: str | Path = RUNS) -> Path:
    """A new folder ``root/<kind>-<UTC date>-<time>`` (``-2``, ``-3`` ... when that is taken),
    made here so that two runs started in the same second never share it."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{kind}-{stamp}"
    for n in range(1, 1000):
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{base}: no free per-run folder name")


def default_output(path: str | Path, kind: str) -> Path:
    """``path``, or where git tracks it, a file of the same name in a new ``run_folder(kind)``."""
    if not tracked(path):
        return Path(path)
    dest = run_folder(kind) / Path(path).name
    _log.info(f"{path} is committed (git tracks it), so it is left as it is: writing {dest} instead")
    return dest

"""Where a command writes: checked before the work, so a read-only share or a mistyped ``--out``
is one line at the start, never a ``PermissionError`` after minutes of training or timing.

The check is the operating system's own (``os.access`` on the file, or on the nearest folder that
exists, where the file and its missing folders would be made), so it honours the user's
permissions as a write would: another owner's folder with mode 555 is refused, as is a read-only
mount (``EROFS``). A write can still fail later (the disk fills); that is the writer's to report.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .errors import HovitError


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

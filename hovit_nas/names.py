"""Names that become paths or URLs: one rule for all of them.

A name a user chooses becomes one folder or file name under a fixed root: a study name
(``studies/<study>/study.db``), a run name (a run config's ``name``: ``runs/<name>``), a space's
name (``supernets/<space>``, ``profiles/<space>-...``). Such a name is one path component, so no
name can put its artefacts outside its root or on top of another's (``check_name``).

Where that path becomes a URL (a SQLite storage URL), SQLAlchemy writes it (``sqlite_url``:
``URL.create`` then ``render_as_string``, which percent-encodes), so ``?``, ``#``, ``%`` and a
``%41`` in a name stay characters of the name: ``crc?v1`` and ``crc?v2`` are two folders, and
every command that parses the URL back (``make_url``) reaches the same file. A name keeps every
other character; the shell-quoted command lines the tool prints carry them.
"""
from __future__ import annotations

from pathlib import Path

from .errors import HovitError

NAME_MAX = 200


def check_name(name: str, what: str = "study name", root: str = "studies") -> str:
    """``name`` if it is one folder name under ``root``.

    Raises:
        HovitError: the name is empty, longer than 200 characters, ``.`` or ``..``, starts with
            ``.``, or holds ``/``, ``\\`` or a control character; the message names ``what``.
    """
    bad = (not name or len(name) > NAME_MAX or name.startswith(".") or "/" in name or "\\" in name
           or any(ord(ch) < 32 or ord(ch) == 127 for ch in name))
    if bad:
        raise HovitError(f"{what} {name!r} is not a single folder name under ./{root} (no '/', '\\', "
                         f"leading '.', or control characters; at most {NAME_MAX} characters)")
    return name


def under(root: str, name: str, what: str, suffix: str = "") -> Path:
    """``root/<name><suffix>``, the default place of an artefact named ``name`` (``check_name``)."""
    return Path(root) / f"{check_name(name, what, root)}{suffix}"


def sqlite_url(path: str | Path) -> str:
    """The SQLite URL of the file ``path``, as SQLAlchemy writes it (special characters encoded),
    so that ``make_url(sqlite_url(p)).database == str(p)`` for every path."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)

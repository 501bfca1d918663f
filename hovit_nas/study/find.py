"""Finding a study: the default SQLite studies under ``./studies``, resolving the ``study`` and
``storage`` a command was given, and loading an existing hovit-nas study.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import optuna

from ..errors import HovitError
from ..names import sqlite_url
from .creation import require_hovit_study
from .storage import default_storage, open_storage, parse_url, shown


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

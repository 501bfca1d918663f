"""The command lines a study prints for a user to paste: its data options (``data_args``, recorded
by the study and read back by ``data_of``), then its storage, which stays off the screen when it
holds a password.
"""
from __future__ import annotations

import os
import shlex
from typing import Optional

from ..config import DataSpec
from .keys import DATA_ARGS_ATTR
from .storage import shown

STORAGE_ENV = "HOVIT_NAS_STORAGE"  # the CLI's default for --storage: a URL with a password stays off the screen
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
    from ..config import DataOptions

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

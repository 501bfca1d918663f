"""Logging: every module logs to its own stdlib logger (``logging.getLogger(__name__)``), as timm
and Optuna do; the ``hovit-nas`` command installs the one handler (``setup``).

As a library, hovit-nas prints nothing: its package logger has only a ``NullHandler`` until an
application configures logging. The CLI's handler writes to stderr: plain lines off a terminal
(what CI and tests read), a rich console on one (so that log lines and progress bars share the
screen). INFO lines are the message alone; a WARNING line starts with ``warning: ``. ``-v``
shows DEBUG, ``-q`` only warnings and errors.

A trial's training lines carry a tag: ``[hovit_s]`` by default, ``    #12`` when the local
executor runs trial 12 (``tagged``), so interleaved output stays attributable.
"""
from __future__ import annotations

import contextvars
import logging
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

PACKAGE = "hovit_nas"
_TAG: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("hovit_nas_log_tag", default=None)

logging.getLogger(PACKAGE).addHandler(logging.NullHandler())


def tag(default: str) -> str:
    """The tag for a training line: the one set by ``tagged``, else ``default``."""
    return _TAG.get() or default


@contextmanager
def tagged(value: str) -> Iterator[None]:
    """Within the block, training lines are tagged ``value`` instead of ``[model name]``."""
    token = _TAG.set(value)
    try:
        yield
    finally:
        _TAG.reset(token)


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"warning: {msg}"
        return msg


class _RichLines(logging.Handler):
    """One log line per message through a rich console: never wrapped (a printed command stays
    pasteable), warnings in yellow, and drawn above a live progress bar instead of through it."""

    def __init__(self, stderr: bool = True):
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=stderr, soft_wrap=True, highlight=False)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            style = "yellow" if record.levelno >= logging.WARNING else None
            self.console.print(self.format(record), markup=False, style=style, soft_wrap=True)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def level_for(verbose: int = 0, quiet: int = 0) -> int:
    """INFO by default; each ``-v`` one level more detail, each ``-q`` one less."""
    return min(logging.ERROR, max(logging.DEBUG, logging.INFO - 10 * verbose + 10 * quiet))


def setup(verbose: int = 0, quiet: int = 0, stream=None) -> logging.Handler:
    """Install the CLI's handler on the package logger (replacing an earlier one) and return it.

    ``stream`` defaults to stderr; on a terminal the lines go through a rich console, elsewhere
    through a plain stream handler; either way a line is exactly the formatted message."""
    stream = stream or sys.stderr
    logger = logging.getLogger(PACKAGE)
    for h in list(logger.handlers):
        if getattr(h, "_hovit_nas", False):
            logger.removeHandler(h)
    if stream.isatty():
        handler: logging.Handler = _RichLines(stream is sys.stderr)
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(_Plain())
    handler._hovit_nas = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level_for(verbose, quiet))
    logger.propagate = False  # our lines once, whatever the root logger does
    return handler

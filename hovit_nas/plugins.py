"""Plugins: modules that add deployment runtimes or evaluators to every hovit-nas process.

``HOVIT_NAS_PLUGINS=mod_a,mod_b`` names importable modules (as pytest's ``PYTEST_PLUGINS`` does
for pytest). Each is imported once per process, before the first runtime or evaluator is looked
up (``runtimes.known``/``get``, ``evaluators.known``/``get``) and before the command line is
built, and registers what it brings at import through the public seams (``runtimes.register``,
``evaluators.register``). Because it is an environment variable, it reaches every process a
search starts: the CLI, and the workers of a local Ray instance, which inherit the driver's
environment (a cluster's nodes need it, and the module on their path, in their own).
"""
from __future__ import annotations

import importlib
import os

from .errors import HovitError

ENV = "HOVIT_NAS_PLUGINS"
_loaded: set[str] = set()


def named() -> list[str]:
    """The plugin modules ``HOVIT_NAS_PLUGINS`` names now (comma-separated; blanks ignored)."""
    return [n.strip() for n in os.environ.get(ENV, "").split(",") if n.strip()]


def load() -> None:
    """Import each named plugin not yet imported in this process.

    Raises:
        HovitError: a named module cannot be imported (one line: its name and the error)."""
    for name in named():
        if name in _loaded:
            continue
        _loaded.add(name)  # once, even if it fails: the error is raised once, not at every lookup
        try:
            importlib.import_module(name)
        except Exception as exc:  # a plugin's own import error, named with the plugin
            raise HovitError(f"{ENV}: cannot import plugin {name!r}: {type(exc).__name__}: {exc}") from None

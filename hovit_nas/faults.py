"""Fault injection for the chaos benchmark (benchmarks/chaos.py); inert unless asked for.

``HOVIT_NAS_FAULT=POINT[:N[:DELAY]]`` SIGKILLs this process DELAY seconds (default 0) after it
reaches POINT for the N-th time (default the first). Points: ``created`` (a trial was just
created, nothing recorded yet), ``latency`` (its latency measurement starts), ``training`` (its
training starts), ``rung`` (it recorded its accuracy at a rung of successive halving, rungs.py,
and has not decided yet), ``write`` (its results are recorded, its final state not yet).
``HOVIT_NAS_FAULT_ONCE=PATH`` fires it in one process only, of all that reach it (e.g. one of a
Ray cluster's workers, as the out-of-memory killer does): the first to create PATH.
"""
from __future__ import annotations

import os
import signal
import threading

POINTS = ("created", "latency", "training", "rung", "write")
_seen: dict[str, int] = {}


def reached(point: str) -> None:
    spec = os.environ.get("HOVIT_NAS_FAULT")
    if not spec:
        return
    name, _, rest = spec.partition(":")
    if name != point:
        return
    nth, _, delay = rest.partition(":")
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] != int(nth or 1):
        return
    once = os.environ.get("HOVIT_NAS_FAULT_ONCE")
    if once:  # only the first process of all to get here is killed (a file made exclusively)
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    kill = lambda: os.kill(os.getpid(), signal.SIGKILL)
    if float(delay or 0) > 0:
        threading.Timer(float(delay), kill).start()
    else:
        kill()

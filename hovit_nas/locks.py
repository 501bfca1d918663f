"""A per-device reader/writer lock shared by every process on a node.

Training steps hold it *shared*; a latency measurement holds it *exclusive*, so concurrent
trials (Ray or several local workers) never time a model while another trial computes on the
same device. A turnstile file stops a stream of training steps from starving the measurement.
Plain ``fcntl`` locks: released by the kernel when a process dies, so a killed trial never
leaves the device locked.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path


def _lock_dir() -> Path:
    d = Path(os.environ.get("HOVIT_NAS_LOCK_DIR", Path(tempfile.gettempdir()) / "hovit-nas-locks"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _paths(device: str) -> tuple[Path, Path]:
    if device.startswith("cuda"):  # Ray maps each trial's GPU to cuda:0: key by the physical device
        device = f"{device}@{os.environ.get('CUDA_VISIBLE_DEVICES', 'all')}"
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", str(device))
    d = _lock_dir()
    return d / f"{key}.gate", d / f"{key}.rw"


@contextlib.contextmanager
def _flock(path: Path, mode: int):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def compute_slot(device: str):
    """Shared: many training steps may run together, but not during a measurement."""
    gate, rw = _paths(device)
    with _flock(gate, fcntl.LOCK_EX):
        pass  # wait while a measurement holds the turnstile
    with _flock(rw, fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def exclusive_device(device: str):
    """Exclusive: block new training steps, wait for in-flight ones, then measure alone."""
    gate, rw = _paths(device)
    with _flock(gate, fcntl.LOCK_EX), _flock(rw, fcntl.LOCK_EX):
        yield

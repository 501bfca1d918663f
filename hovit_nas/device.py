"""The device a trial computes on: its resolution, and a guard for sharing it honestly.

Concurrent trials (Ray, or several drivers) share a node's devices. Training steps, data loading,
model building and export hold the device *shared*; a latency measurement holds it *exclusive*,
so no trial computes on a device while another trial is being timed there. A turnstile file
stops a stream of training steps from starving the measurement. The locks are plain ``fcntl``
locks, one pair per device and node, released by the kernel when a process dies, so a killed
trial never leaves a device locked.

Training never imports the lock: it receives a :class:`DeviceGuard` and enters ``shared()``.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch

from .errors import HovitError


def resolve_device(device: Optional[str | torch.device] = None) -> torch.device:
    """``auto`` picks CUDA when present; an explicit CUDA request without CUDA is bad input."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise HovitError(f"device {str(device)!r} requested but CUDA is not available")
    return d


CPU_FEATURES = {"avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported",
                "vnni": "_is_vnni_supported"}


def cpu_has(feature: str) -> bool:
    """Whether this CPU has ``feature`` (a key of ``CPU_FEATURES``), as torch detects it.

    torch has no public API for it: this is the one place that reaches into ``torch.cpu``'s
    private ``_is_*_supported`` functions (tests/test_train.py pins them); an absent function
    reads as False."""
    probe = getattr(torch.cpu, CPU_FEATURES[feature], None)
    return bool(probe()) if callable(probe) else False


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively, so that bf16 autocast speeds training up: every
    CUDA device this project targets (Ampere and newer), and a CPU with AVX512-BF16 or AMX. One
    training step at 64 px, batch 64, 1 thread, under bf16 autocast took 0.54x (HoViT-B; 0.61x
    in its pruning phase) and 0.59x (HoViT-S) of its fp32 time on an AMD EPYC with AVX512-BF16
    (results/ground-truth/bf16.json). On a CPU without either, torch emulates bf16: 21x as long
    as fp32 on an AVX2-only AMD EPYC (results/ground-truth/bf16-avx2.json)."""
    d = torch.device(device)
    if d.type == "cuda":
        return True
    return d.type == "cpu" and (cpu_has("avx512_bf16") or cpu_has("amx"))


def autocast_bf16(device: str | torch.device, amp: bool) -> bool:
    """Whether training on ``device`` runs under bf16 autocast: ``amp`` (TrainConfig.amp, on by
    default) where the device computes bf16 natively (``native_bf16``), else fp32."""
    return bool(amp) and native_bf16(device)


def _lock_dir() -> Path:
    d = Path(os.environ.get("HOVIT_NAS_LOCK_DIR", Path(tempfile.gettempdir()) / "hovit-nas-locks"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass(frozen=True)
class DeviceGuard:
    """The shared/exclusive slot of one device on this node (``enabled=False``: no locking)."""

    device: str
    enabled: bool = True

    @classmethod
    def of(cls, device: str | torch.device) -> "DeviceGuard":
        return cls(str(device))

    def _paths(self) -> tuple[Path, Path]:
        device = self.device
        if device.startswith("cuda"):  # Ray maps each trial's GPU to cuda:0: key by the physical device
            device = f"{device}@{os.environ.get('CUDA_VISIBLE_DEVICES', 'all')}"
        key = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
        d = _lock_dir()
        return d / f"{key}.gate", d / f"{key}.rw"

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Compute: many holders at once, but never during a measurement."""
        if not self.enabled:
            yield
            return
        gate, rw = self._paths()
        with _flock(gate, fcntl.LOCK_EX):
            pass  # wait while a measurement holds the turnstile
        with _flock(rw, fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """A measurement: block new compute, wait for in-flight compute, then run alone."""
        if not self.enabled:
            yield
            return
        gate, rw = self._paths()
        with _flock(gate, fcntl.LOCK_EX), _flock(rw, fcntl.LOCK_EX):
            yield


NO_GUARD = DeviceGuard("none", enabled=False)

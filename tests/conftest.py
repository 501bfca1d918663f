"""Shared fixtures: real image files written to disk, and the shared real datasets (skip if absent)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HOVIT_NAS_SHARED", ROOT.parent / "shared")) / "data"
os.environ.setdefault("HOVIT_NAS_LOCK_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "hovit-nas-test-locks"))
# a short heartbeat grace, so tests that kill a driver see its trials failed within seconds
os.environ.setdefault("HOVIT_NAS_HEARTBEAT", "2,10")
# the dataset cache of this test session: never the user's ~/.cache
os.environ.setdefault("HOVIT_NAS_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"hovit-nas-test-cache-{os.getpid()}"))


def write_image(path: Path, rng: np.random.Generator, size: int = 32, fmt: str | None = None, tint: int = 0) -> Path:
    from PIL import Image

    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    arr[..., tint % 3] = np.clip(arr[..., tint % 3].astype(int) + 80, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_class_folder(root: Path, classes=("ADI", "LYM", "TUM"), per_class=6, size=32, seed=0) -> Path:
    """A tiny NCT-CRC-HE-style folder with real PNG and TIFF files."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        for i in range(per_class):
            ext = ".tif" if i % 2 else ".png"
            write_image(root / name / f"{name}-{i:03d}{ext}", rng, size, tint=c)
    return root


@pytest.fixture
def class_folder(tmp_path) -> Path:
    return make_class_folder(tmp_path / "crc")


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or a clean skip where it is absent."""
    p = SHARED / name
    if not p.is_dir():
        pytest.skip(f"shared data absent: {p}")
    return p


@pytest.fixture
def crc_tiles() -> Path:
    return shared_data("crc-tiles")


@pytest.fixture
def pcam_subset() -> Path:
    return shared_data("pcam-subset")


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run the real console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "hovit_nas", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=e)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dashboard_study(storage_url: str, study_name: str) -> dict:
    """Start a real optuna-dashboard on a free localhost port; return the study's detail JSON."""
    import json
    import time
    import urllib.request

    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), storage_url, "--host", "127.0.0.1", "--port", str(port), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=2))
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("optuna-dashboard did not answer")
        match = [s for s in studies["study_summaries"] if s["study_name"] == study_name]
        assert match, f"{study_name} not among {[s['study_name'] for s in studies['study_summaries']]}"
        assert match[0]["directions"] == ["maximize", "minimize"]
        return json.load(urllib.request.urlopen(f"{base}/api/studies/{match[0]['study_id']}", timeout=10))
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def log_lines():
    """The messages hovit-nas logs during a test (its module loggers; the CLI prints the same)."""
    import logging

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger, handler = logging.getLogger("hovit_nas"), Collect(logging.DEBUG)
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(old)

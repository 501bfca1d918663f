"""The wheel is self-contained: installed (not editable) into a fresh venv, run from an empty directory,
``hovit-nas search --space hovit`` finds the built-in spaces shipped inside the package."""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]  # one worker builds the wheel, once

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS_MIN = 77  # pyproject's build-system.requires (SPDX string license)


def _setuptools_here() -> bool:
    try:
        return int(importlib.metadata.version("setuptools").split(".")[0]) >= SETUPTOOLS_MIN
    except importlib.metadata.PackageNotFoundError:
        return False


def _run(cmd, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel, fresh venv, env, empty dir): the wheel pip-installed, non-editable, into a fresh venv that sees the
    running interpreter's site-packages (torch & co.) through a .pth file, without reinstalling them."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", HOVIT_NAS_LOCK_DIR=str(tmp / "locks"))

    # Build from a clean copy: an in-tree build reuses ./build/lib, whose stale files would end up in the wheel.
    src = tmp / "src"
    shutil.copytree(ROOT / "hovit_nas", src / "hovit_nas", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, src / f)
    isolation = ["--no-build-isolation"] if _setuptools_here() else []  # else pip fetches setuptools (network)
    dist = tmp / "dist"
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", dist, src], tmp, env)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = dist.glob("hovit_nas-*.whl")

    fresh = tmp / "fresh"
    r = _run([sys.executable, "-m", "venv", "--without-pip", fresh], tmp, env)
    assert r.returncode == 0, r.stderr
    py = fresh / "bin" / "python"
    # Install before the .pth exists, so pip cannot see (and skip for, or touch) the editable hovit-nas here.
    r = _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel], tmp, env)
    assert r.returncode == 0, r.stdout + r.stderr
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip())
    here = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    # Paths added by a .pth are appended after the fresh site-packages, and .pth files inside them (the editable
    # finder of the running venv) are not processed.
    (site / "_hovit_nas_test_deps.pth").write_text("".join(f"{p}\n" for p in here))

    empty = tmp / "empty"
    empty.mkdir()
    return wheel, fresh, env, empty


def test_wheel_ships_spaces_and_py_typed(installed):
    wheel = installed[0]
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("hovit_nas/spaces/hovit.yaml", "hovit_nas/spaces/hovit-cpu.yaml", "hovit_nas/py.typed"):
        assert f in names, f


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    _, fresh, env, empty = installed
    r = _run([fresh / "bin" / "python", "-c",
              "import hovit_nas; from hovit_nas.space import resolve_space_path as r; "
              "print(hovit_nas.__file__); print(r('hovit'))"], empty, env)
    assert r.returncode == 0, r.stderr
    pkg, space = (Path(line).resolve() for line in r.stdout.split())
    assert pkg.is_relative_to(fresh.resolve()), pkg
    assert space.is_relative_to(fresh.resolve()) and space.name == "hovit.yaml", space


def test_unknown_space_lists_builtin_ones(installed):
    _, fresh, env, empty = installed
    r = _run([fresh / "bin" / "hovit-nas", "search", "--space", "nonexistent"], empty, env)
    assert r.returncode == 2, r.stderr
    assert "nonexistent" in r.stderr and "hovit, hovit-cpu" in r.stderr, r.stderr


def test_search_on_builtin_space_from_empty_dir(installed):
    _, fresh, env, empty = installed
    assert not (empty / "search_spaces").exists()
    # the built-in space with the built-in data, capped at 64 images a split (one step an epoch): the
    # point is that the installed package finds its space and searches, not the demo's full budget
    r = _run([fresh / "bin" / "hovit-nas", "search", "--space", "hovit", "--trials", "1", "--max-per-split", "64"],
             empty, env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    db = empty / "studies" / "hovit-builtin" / "study.db"  # '<space>-builtin' on the built-in data
    assert db.is_file(), sorted(str(p.relative_to(empty)) for p in empty.rglob("*"))

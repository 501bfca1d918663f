"""Shared fixtures: real image files written to disk, and the shared real datasets (skip if absent)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HOVIT_NAS_SHARED", ROOT.parent / "shared")) / "data"
# The device locks (hovit_nas/device.py): one folder for the whole machine on purpose, shared by the
# pytest-xdist workers, so a latency measurement in one worker waits for the other worker's training
# steps and runs alone, as it would beside concurrent trials.
os.environ.setdefault("HOVIT_NAS_LOCK_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / "hovit-nas-test-locks"))
# One intra-op thread pool per core, not per process: under pytest-xdist each of N workers (and what
# it starts: the CLI, forked servers, Ray workers) gets cores // N threads. With torch's default (all
# cores in every process) two workers on two cores run four spinning OpenMP threads, and the CPU-bound
# tests took 85-92 s instead of 53-59 s (docs/development/testing.md). A test that passes --threads
# (or a space's latency.threads) still gets what it asks for: hovit-nas sets torch's threads itself.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _per_worker = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _per_worker)
# a short heartbeat grace, so tests that kill a driver see its trials failed within seconds
os.environ.setdefault("HOVIT_NAS_HEARTBEAT", "2,10")
# the dataset cache of this test session: never the user's ~/.cache; one per process, so one per
# xdist worker (a worker builds the built-in data once for its tests)
os.environ.setdefault("HOVIT_NAS_CACHE_DIR", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"hovit-nas-test-cache-{os.getpid()}"))

# Cost in seconds of the slowest tests (measured under `-n 2` on the project's 2-core CPU machine,
# 2026-12-02, regenerated from a --junitxml run: docs/development/testing.md), so that
# under `-n 2` the longest start first and the workers finish together. Only the order matters:
# an unlisted test counts as 0 and keeps its place in file order. A test with an xdist_group mark
# (pyproject: --dist loadgroup) goes with its group, which costs the sum of its tests.
COSTS = {
    "test_gpu_check.py::test_gpu_check_dry_run_on_cpu": 160,
    "test_chaos.py::test_short_kill_battery": 151,
    "test_ray.py::test_kill_driver_and_rerun_resumes": 170,
    "test_ray.py::test_ray_runs_four_trials_two_at_a_time_into_sqlite_and_failing_trials_do_not_stop_it": 126,
    "test_ray.py::test_asha_stopped_trials_are_pruned_never_on_the_front": 57,
    "test_handoffs.py::test_every_printed_command_runs_as_printed": 99,
    "test_ray.py::test_pareto_early_stop_on_ray_uses_the_storage_rung_table": 54,
    "test_ray.py::test_two_node_cluster_each_node_builds_its_own_cache_once": 82,
    "test_trust_ray.py::test_a_killed_ray_worker_fails_its_trial_with_a_reason": 34,
    "test_reliability.py::test_no_password_in_any_output_or_file": 69,
    "test_confirm.py::test_an_interrupted_confirmation_resumes_to_each_run_exactly_once": 52,
    "test_quantize.py::test_int8_search_records_both_accuracies_and_the_target_then_export_and_eval": 49,
    "test_predictor.py::test_profile_target_then_a_search_screens_with_it": 41,
    "test_supernet.py::test_search_with_the_supernet_evaluator_records_estimates_and_refuses_another_supernet": 39,
    "test_reliability.py::test_dead_driver_is_seen_from_another_host": 30,
    "test_service.py::test_a_search_through_the_service_survives_its_death_and_records_the_machine": 37,
    "test_search_e2e.py::test_pareto_and_pin_then_train_the_pinned_config": 36,
    "test_trust.py::test_the_printed_hint_works_when_pasted_against_postgresql": 30,
    "test_wheel.py::test_search_on_builtin_space_from_empty_dir": 29,
    "test_rungs.py::test_driver_killed_mid_rung_then_resumed": 29,
    "test_rungs.py::test_two_drivers_share_one_rung_table": 26,
    "test_fakes.py::test_a_search_with_successive_halving_runs_on_the_fake_runtime_and_evaluator": 18,
    "test_onnx.py::test_search_on_onnxruntime_records_it_and_refuses_another_runtime": 25,
    "test_reliability.py::test_two_drivers_share_one_budget_and_never_train_a_config_twice": 10,
    "test_noise.py::test_a_real_study_measures_its_noise_and_pins_by_non_inferiority": 21,
    "test_onnx.py::test_export_onnx_then_eval_it_like_the_safetensors": 20,
    "test_study.py::test_fixed_point_enqueued_exactly_once_across_concurrent_starts_and_resume": 19,
    "test_onnx.py::test_bench_has_a_runtime_column": 18,
    "test_reliability.py::test_kill_right_after_the_fixed_point_is_created": 17,
    "test_cases_round2.py::test_a_read_only_study_is_read_and_reported_and_never_written": 17,
    "test_noise.py::test_check_budget_reports_noise_and_a_verdict": 17,
    "test_reliability.py::test_printed_commands_are_shell_quoted_and_artefacts_sit_next_to_the_study": 17,
    "test_search_e2e.py::test_search_records_a_multi_objective_study": 16,
    "test_trust.py::test_full_disk_is_one_line_before_training_and_the_resume_completes": 15,
    "test_service.py::test_the_service_times_an_upload_anchored_and_caches_it_by_hash": 13,
    "test_latency_bench.py::test_bench_cli_writes_table_csv_json": 12,
    "test_handoffs.py::test_default_outputs_never_touch_committed_files": 9,
    "test_provenance.py::test_numeric_class_folders_in_another_sort_order_are_refused_by_name": 9,
    "test_quantize.py::test_int8_latency_times_quantized_candidate_and_anchor": 9,
    "test_search_e2e.py::test_plot_renders_in_headless_chromium": 9,
    "test_trust.py::test_a_read_only_storage_is_named_before_training": 8,
    "test_cli.py::test_quiet_keeps_warnings_and_results_drops_progress": 8,
    "test_openvino.py::test_search_on_openvino_records_the_runtime_and_its_version": 8,
    "test_reliability.py::test_plain_postgresql_url_works": 8,
    "test_train.py::test_end_to_end_on_real_crc_tiles": 7,
    "test_cases_round2.py::test_a_search_whose_trials_all_fail_exits_1_and_stops_adding_failed_trials": 7,
    "test_cache.py::test_concurrent_processes_build_once": 7,
    "test_provenance.py::test_a_model_is_scored_on_its_own_split_and_never_on_its_training_images": 7,
}


def _cost(item) -> float:
    return COSTS.get(f"{item.path.name}::{item.originalname}", 0)


def pytest_collection_modifyitems(config, items):
    """Under xdist (in each worker; all sort alike), the costliest tests and groups first."""
    if not hasattr(config, "workerinput"):
        return  # a serial run keeps file order
    first, total, keys = {}, {}, []
    for i, item in enumerate(items):
        mark = item.get_closest_marker("xdist_group")
        unit = f"group:{mark.args[0] if mark.args else mark.kwargs['name']}" if mark else f"test:{i}"
        first.setdefault(unit, i)
        total[unit] = total.get(unit, 0) + _cost(item)
        keys.append(unit)
    order = sorted(range(len(items)), key=lambda i: (-total[keys[i]], first[keys[i]], i))
    items[:] = [items[i] for i in order]


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


CASES = SHARED.parent / "cases"  # small failing inputs users reported (its README.md)


def case(name: str) -> Path:
    """A folder of ../shared/cases, or a clean skip where it is absent."""
    p = CASES / name
    if not p.exists():
        pytest.skip(f"shared case absent: {p}")
    return p


@pytest.fixture
def crc_tiles() -> Path:
    return shared_data("crc-tiles")


@pytest.fixture
def pcam_subset() -> Path:
    return shared_data("pcam-subset")


_FORKSERVER: dict = {}


def cli_command(as_: str = "module") -> list[str]:
    """The argv prefix that runs ``python -m hovit_nas`` (``as_`` "module") or the installed
    ``hovit-nas`` script ("script") in its own process. By default, through this
    worker's warm interpreter (tests/forkserver.py: the same entry point, its own process, working
    directory, environment and exit status, without re-importing torch, timm and scikit-learn).
    ``HOVIT_NAS_TEST_FRESH=1`` runs a fresh interpreter every time instead."""
    if os.environ.get("HOVIT_NAS_TEST_FRESH") == "1":
        if as_ == "module":
            return [sys.executable, "-m", "hovit_nas"]
        start = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from hovit_nas.cli import main; main(prog_name='hovit-nas')"
        return [sys.executable, "-c", start]
    if not _FORKSERVER:
        import atexit
        import tempfile
        import time

        sock = Path(tempfile.mkdtemp(prefix="hovit-nas-fork-")) / "s"
        with open(f"{sock}.log", "w") as log:  # the server keeps its own copy of the descriptor
            proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("forkserver.py")), "serve",
                                     str(sock)], env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)

        def stop(p=proc, folder=sock.parent):
            p.kill()
            p.wait(30)
            shutil.rmtree(folder, ignore_errors=True)

        atexit.register(stop)
        deadline = time.monotonic() + 300
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test fork server did not start: {Path(f'{sock}.log').read_text()[-2000:]}")
            time.sleep(0.1)
        _FORKSERVER.update(sock=str(sock), proc=proc)
    return [sys.executable, str(Path(__file__).with_name("forkserver.py")), as_, _FORKSERVER["sock"]]


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600, env: dict | None = None):
    """Run the real console entry point in its own process (exit codes and stderr as a user sees them)."""
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([*cli_command(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


def run_printed(line: str, cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run a command line the tool printed, pasted into bash as is, in ``cwd``: ``hovit-nas`` on the
    PATH is this checkout's command (even where ``cwd`` holds another copy of the package)."""
    import shlex
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hovit-nas-bin-") as bin_dir:
        shim = Path(bin_dir) / "hovit-nas"
        shim.write_text(f'#!/bin/sh\nexec {" ".join(map(shlex.quote, cli_command("script")))} "$@"\n')
        shim.chmod(0o755)
        e = dict(os.environ, PYTHONUNBUFFERED="1", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", **(env or {}))
        cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=e)


PRINTED = re.compile(r"`(hovit-nas [^`]+)`|^[A-Za-z0-9 ,]+: (hovit-nas .+)$", re.M)


def printed_commands(text: str) -> list[str]:
    """The command lines in a command's output, in order: ```hovit-nas ...``` in backquotes, or a
    whole line ``label: hovit-nas ...`` (next:, then:, reproduce:). A mention of ``hovit-nas
    SUBCOMMAND`` in any other form fails: a user could not paste it."""
    from hovit_nas.cli import main

    found = [a or b for a, b in PRINTED.findall(text)]
    mentions = re.findall(rf"hovit-nas (?:{'|'.join(map(re.escape, main.commands))})\b", text)
    assert len(mentions) == len(found), f"a command that is not a whole line or in backquotes: {text}"
    return found


def builtin_study(tmp_path: Path, name: str = "tiny-builtin"):
    """The study a search in ``tmp_path`` wrote to its default SQLite storage."""
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'studies' / name / 'study.db'}")


LATENCY_TOKEN = "t0ken-for-tests"


def start_service(*args, env=None):
    """`hovit-nas latency-serve` in its own process on a free loopback port; (process, url)."""
    import time

    import requests

    port = free_port()
    e = dict(os.environ, HOVIT_NAS_LATENCY_TOKEN=LATENCY_TOKEN, PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "hovit_nas", "latency-serve", "--port", str(port), *args],
                            cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/v1/identity", headers={"Authorization": f"Bearer {LATENCY_TOKEN}"}, timeout=1)
            return proc, url
        except requests.ConnectionError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("the latency service did not start")


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

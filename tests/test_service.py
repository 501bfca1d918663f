"""The latency service (issue 23): a real `hovit-nas latency-serve` process on loopback, real
HTTP, real onnxruntime sessions; searches that take their latency from it."""
import os
import signal
import subprocess
import sys

import optuna
import pytest
import requests

from conftest import LATENCY_TOKEN as TOKEN, ROOT, run_cli, start_service
from hovit_nas.config import ArchConfig, RunConfig, StageConfig
from hovit_nas.models import create_hovit, export
from hovit_nas.models.onnx import onnx_bytes
from spaces import tiny_space

pytest.importorskip("fastapi", reason="the latency service needs pip install 'hovit-nas[serve]'")


def small_onnx() -> bytes:
    """A ~0.1 MiB HoViT as ONNX (the module's service takes at most 1 MiB)."""
    cfg = RunConfig(name="small", model=ArchConfig(stages=[StageConfig(32, 2, 2, 2), StageConfig(48, 2, 2, 2, "conv")],
                                                   img_size=32, num_classes=2, head_width=32)).validate()
    return onnx_bytes(export(create_hovit(cfg)), 32)


@pytest.fixture(scope="module")
def service():
    proc, url = start_service("--max-upload-mb", "1", "--threads", "1")
    yield url
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def _post(url, body, token=TOKEN, **params):
    return requests.post(f"{url}/v1/latency", params={"img_size": 32, "runs": 5, "warmup": 1, "min_time_s": 0.05,
                                                      **params},
                         data=body, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def test_the_service_times_an_upload_anchored_and_caches_it_by_hash(service):
    model = small_onnx()
    first = _post(service, model)
    assert first.status_code == 200, first.text
    rec = first.json()
    assert rec["runtime"] == "onnxruntime" and rec["threads"] == 1 and rec["anchor"] == "hovit_b"
    assert rec["median_ms"] > 0 and rec["cached"] is False and len(rec["model_sha256"]) == 64
    assert rec["machine"]["cores"] == os.cpu_count() and len(rec["machine"]["id"]) == 16
    again = _post(service, model).json()
    assert again["cached"] is True and again["median_ms"] == rec["median_ms"]


def test_a_wrong_token_an_oversized_upload_and_a_non_model_are_refused(service):
    assert _post(service, small_onnx(), token="wrong").status_code == 401
    assert requests.get(f"{service}/v1/identity", timeout=5).status_code == 401  # no token at all
    big = _post(service, b"\0" * (2 * 2 ** 20))  # the service was started with --max-upload-mb 1
    assert big.status_code == 413 and "limit of 1 MiB" in big.json()["detail"]
    junk = _post(service, b"not an onnx file")
    assert junk.status_code == 422 and "could not be run" in junk.json()["detail"]
    bad = run_cli("search", "--latency-at", "notaurl", env={"HOVIT_NAS_LATENCY_TOKEN": TOKEN})
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: --latency-at 'notaurl' is not a latency service's address: give http://HOST:PORT")


@pytest.mark.slow
def test_a_search_through_the_service_survives_its_death_and_records_the_machine(tmp_path):
    """A search timed by a service in another process. The service is SIGKILLed as it starts
    measuring (faults.py): the trial waits --latency-wait, then fails with the reason, and the
    study is intact. A search resumed against a new service process finishes its budget; every
    completed trial's latency comes from that machine, which the study records as its target's;
    the token is never stored or printed; a resume without the service, or with a wrong token, is
    refused in one line."""
    proc, url = start_service(env={"HOVIT_NAS_FAULT": "latency"})
    space = tiny_space(tmp_path, trials=2)
    env = {"HOVIT_NAS_LATENCY_TOKEN": TOKEN}
    r = run_cli("search", "--space", str(space), "--threads", "1", "--latency-at", url, "--latency-wait", "3",
                cwd=tmp_path, env=env)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="tiny-builtin",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed and all(f"latency service at {url} did not answer within 3 s" in t.user_attrs["fail_reason"]
                          for t in failed), r.stderr[-2000:]
    port = url.rsplit(":", 1)[1]
    proc2 = subprocess.Popen([sys.executable, "-m", "hovit_nas", "latency-serve", "--port", port], cwd=ROOT,
                             env=dict(os.environ, **env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        resumed = run_cli("search", "--space", str(space), "--threads", "1", "--latency-at", url, cwd=tmp_path,
                          env=env)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(done) == 2
        machine = study.user_attrs["latency_at"]["machine"]["id"]
        assert study.user_attrs["deployment_target"]["machine"] == machine
        for t in done:
            assert t.user_attrs["latency"]["machine"]["id"] == machine
            assert t.values[1] == t.user_attrs["latency"]["median_ms"]
        shown = str(study.user_attrs) + str([t.user_attrs for t in study.trials]) + resumed.stderr + resumed.stdout
        assert TOKEN not in shown  # never stored or printed
        local = run_cli("search", "--space", str(space), "--threads", "1", "--trials", "3", cwd=tmp_path, env=env)
        assert local.returncode == 2 and local.stderr.strip().splitlines()[-1] == (
            f"error: study 'tiny-builtin' was timed by the latency service at {url}; pass --latency-at {url} "
            "(its machine must be the same), or use --study NEW_NAME")
        wrong = run_cli("search", "--space", str(space), "--latency-at", url, "--trials", "3", cwd=tmp_path,
                        env={"HOVIT_NAS_LATENCY_TOKEN": "nope"})
        assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1] == (
            f"error: latency service at {url} refused the token (HOVIT_NAS_LATENCY_TOKEN): wrong or missing token")
    finally:
        proc2.send_signal(signal.SIGINT)
        proc2.wait(timeout=30)

"""A real small search end-to-end: CLI -> SQLite study -> pareto/pin -> train; dashboard over HTTP."""
import json
import shutil
import subprocess

import optuna
import pytest
import yaml

from conftest import dashboard_study, run_cli
from spaces import tiny_space

# one worker runs the module: its tests share one search, and the plot test reads the pareto.html that
# test_pareto_and_pin_then_train_the_pinned_config writes
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("search-e2e")]
TARGET = "cpu/onnxruntime/fp32, 1 thread, batch 1, 32 px"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    work = tmp_path_factory.mktemp("search")
    space = tiny_space(work, trials=4)
    r = run_cli("search", "--space", str(space), "--threads", "1", cwd=work)
    assert r.returncode == 0, r.stderr
    return work, r


def test_search_records_a_multi_objective_study(searched):
    work, r = searched
    db = work / "studies" / "tiny-builtin" / "study.db"
    assert db.is_file()
    study = optuna.load_study(study_name="tiny-builtin", storage=f"sqlite:///{db}")
    done = [t for t in study.trials if t.state.is_finished()]
    assert len([t for t in done if t.state == optuna.trial.TrialState.COMPLETE]) == 4
    fp = [t for t in study.trials if "fixed_point" in t.user_attrs]
    assert len(fp) == 1 and fp[0].number == 0 and fp[0].params["blocks_0"] == "4:2"
    t = fp[0]
    assert t.values[0] == t.user_attrs["val"]["top1"] and t.values[1] == t.user_attrs["latency"]["median_ms"]
    for key in ("config", "params", "latency", "val", "test", "history", "device", "selected_blocks"):
        assert key in t.user_attrs, key
    assert t.user_attrs["latency"]["threads"] == 1 and t.user_attrs["latency"]["device"] == "cpu"
    # every trial was timed against the one anchor the study calibrated; HoViT-B against itself ~ 1
    anchor = study.user_attrs["latency_anchor"]
    assert anchor["name"] == "hovit_b" and anchor["threads"] == 1 and "latency anchor: hovit_b calibrated" in r.stderr
    for c in done:
        assert c.user_attrs["latency"]["anchor_ms"] == anchor["ms"] and c.user_attrs["latency"]["ratio"] > 0
    assert 0.75 < t.user_attrs["latency"]["ratio"] < 1.33
    assert "[4/4] trial #3" in r.stderr and "front" in r.stderr and "HoViT-B fixed point" in r.stderr
    # the deployment target, recorded once (issue 22): the CPU, the runtime the latency was timed on, ...
    assert study.user_attrs["deployment_target"] == {
        "device": "cpu", "runtime": "onnxruntime", "precision": "fp32", "threads": 1, "batch": 1, "img_size": 32,
        "name": TARGET}
    assert f"deployment target: {TARGET}" in r.stderr
    # re-running the same command resumes: nothing new, no second fixed point
    again = run_cli("search", "--space", str(work / "tiny.yaml"), "--threads", "1", cwd=work)
    assert again.returncode == 0 and "already has 4 finished trials" in again.stderr
    assert len(optuna.load_study(study_name="tiny-builtin", storage=f"sqlite:///{db}").trials) == len(study.trials)


def test_pareto_and_pin_then_train_the_pinned_config(searched):
    work, _ = searched
    r = run_cli("pareto", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "Pareto front" in r.stdout and "hypervolume" in r.stdout and "HoViT-B (trial 0" in r.stdout
    assert f"latency ms (min) on deployment target {TARGET}" in r.stdout
    # the baselines, timed on the study's target once and kept with it; their accuracy is unknown
    assert f"baselines on {TARGET}: efficientnet_b0 " in r.stdout and "accuracy unknown" in r.stdout
    db = work / "studies" / "tiny-builtin" / "study.db"
    kept = optuna.load_study(study_name="tiny-builtin", storage=f"sqlite:///{db}").user_attrs["baselines_on_target"]
    assert kept["target"] == TARGET and [b["model"] for b in kept["rows"]] == ["efficientnet_b0", "levit_128s"]
    assert all(b["latency_ms"] > 0 and b["val_top1"] is None for b in kept["rows"]) and kept["anchored"]
    assert "levit_128s (accuracy unknown)" in (work / "studies" / "tiny-builtin" / "pareto.html").read_text()
    assert (work / "studies" / "tiny-builtin" / "pareto.html").is_file()
    r = run_cli("pin", "--max-latency", "1000", cwd=work)
    assert r.returncode == 0, r.stderr
    best = work / "studies" / "tiny-builtin" / "best.yaml"
    assert yaml.safe_load(best.read_text())["deployment_target"] == TARGET
    r = run_cli("train", "--config", str(best), "--max-steps", "1", "--epochs-dense", "1", "--epochs-prune", "1",
                "--out", str(work / "runs" / "best"), cwd=work)
    assert r.returncode == 0, r.stderr
    assert json.loads((work / "runs" / "best" / "result.json").read_text())["config"]["model"]["img_size"] == 32


def test_optuna_dashboard_serves_the_study_over_http(searched):
    work, _ = searched
    detail = dashboard_study(f"sqlite:///{work / 'studies' / 'tiny-builtin' / 'study.db'}", "tiny-builtin")
    assert len(detail["trials"]) >= 4
    assert any(a["key"] == "fixed_point" for t in detail["trials"] for a in t["user_attrs"])
    assert TARGET in json.dumps(detail)  # the study's deployment_target attribute, as the dashboard serves it
    assert detail["best_trials"]


def test_plot_renders_in_headless_chromium(searched, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium)")
    work, _ = searched
    html = work / "studies" / "tiny-builtin" / "pareto.html"
    if not html.is_file():  # written by test_pareto_and_pin_... when it ran first on this worker
        assert run_cli("pareto", "--study", "tiny-builtin", cwd=work).returncode == 0
    shot = tmp_path / "shot.png"
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1300,600",
                        "--virtual-time-budget=5000", f"--screenshot={shot}", html.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, r.stderr[-500:]
    from PIL import Image
    img = Image.open(shot).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # a rendered chart, not a blank page
    red = sum(n for n, (r_, g, b) in colours if r_ > 180 and g < 80 and b < 80)
    assert red > 30  # the Pareto front's red markers are drawn

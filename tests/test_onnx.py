"""ONNX export checked by a real onnxruntime session; latency timed on onnxruntime per study."""
import importlib.util
import json

import optuna
import pytest
import torch

from conftest import run_cli
from hovit_nas.device import NO_GUARD
from hovit_nas.errors import HovitError
from hovit_nas.latency import measure_latency, resolve_runtime
from hovit_nas.models import create_hovit, export, hovit_b, hovit_b_attn_down
from hovit_nas.models.onnx import load_onnx, save_onnx
from spaces import tiny_space

HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None  # the test extra installs it


def _trained_like(cfg):
    """Non-trivial weights (random init gives near-zero logits, which would hide errors)."""
    model = create_hovit(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) or isinstance(m, torch.nn.BatchNorm1d):
            m.running_var.fill_(1.3)
            m.running_mean.fill_(0.1)
    return export(model)


@pytest.mark.parametrize("preset", [hovit_b, hovit_b_attn_down], ids=["conv-downsampling", "attention-downsampling"])
def test_onnx_equals_pytorch_at_any_batch(tmp_path, preset):
    model = _trained_like(preset(img_size=64, num_classes=5))
    path, check = save_onnx(model, tmp_path / "m.onnx")
    assert check.max_rel <= 1e-4
    loaded = load_onnx(path)
    assert loaded.config == model.config
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, 3, 64, 64)
        ref = model(x)
        out = loaded(x)
        assert out.shape == (batch, 5)
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
        assert ref.abs().max() > 1e-2  # a real signal, not two near-zero outputs agreeing


def test_onnx_runtime_latency_and_runtime_resolution():
    model = export(create_hovit(hovit_b(img_size=32, num_classes=2)))
    lat = measure_latency(model, 32, threads=1, runs=5, warmup=1, min_time_s=0.05, guard=NO_GUARD,
                          runtime="onnxruntime")
    assert lat.runtime == "onnxruntime" and lat.threads == 1 and lat.median_ms > 0 and lat.to_dict()["runtime"]
    assert resolve_runtime("auto", "cpu") == "onnxruntime" and resolve_runtime("auto", "cuda") == "torch"
    with pytest.raises(HovitError, match="unknown latency runtime"):
        resolve_runtime("tensorrt", "cpu")


def test_not_an_onnx_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(HovitError, match="not an ONNX file"):
        load_onnx(bad)


def search_on(runtime: str, tmp_path, trials: int):
    """A tiny local search timed on ``runtime``: its space file, stderr and study, checked to
    record the runtime."""
    space = tiny_space(tmp_path, trials=trials)
    r = run_cli("search", "--space", str(space), "--threads", "1", "--runtime", runtime, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"on {runtime} (min)" in r.stderr
    study = optuna.load_study(study_name="tiny-builtin",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    assert study.user_attrs["latency_runtime"] == runtime
    return space, r, study


@pytest.mark.slow
def test_search_on_onnxruntime_records_it_and_refuses_another_runtime(tmp_path):
    space, r, study = search_on("onnxruntime", tmp_path, trials=2)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 2 and all(t.user_attrs["latency"]["runtime"] == "onnxruntime" for t in done)
    refused = run_cli("search", "--space", str(space), "--threads", "1", "--runtime", "torch", "--trials", "3",
                      cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: study 'tiny-builtin' was created with latency_runtime=onnxruntime, not torch; use --study NEW_NAME "
        "for a new study (or --runtime onnxruntime to match)")
    resumed = run_cli("search", "--space", str(space), "--threads", "1", "--trials", "3", cwd=tmp_path)
    assert resumed.returncode == 0 and "on onnxruntime (min)" in resumed.stderr, resumed.stderr[-2000:]


@pytest.mark.slow
def test_export_onnx_then_eval_it_like_the_safetensors(tmp_path):
    out = tmp_path / "run"
    r = run_cli("train", "--config", "hovit_b", "--img-size", "32", "--epochs-dense", "1", "--epochs-prune", "1",
                "--max-steps", "3", "--max-per-split", "60", "--threads", "1", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    e = run_cli("export", str(out), "--format", "onnx", cwd=tmp_path)
    assert e.returncode == 0 and "max relative" in e.stdout and (out / "model.onnx").is_file(), e.stderr
    runs = [(out / "model.safetensors", ()), (out / "model.onnx", ())]
    if HAVE_OPENVINO:
        runs.append((out / "model.onnx", ("--runtime", "openvino")))
    evals = [run_cli("eval", str(p), "--max-per-split", "60", *extra, cwd=tmp_path) for p, extra in runs]
    assert all(x.returncode == 0 for x in evals), [x.stderr[-1000:] for x in evals]
    a, *others = (json.loads(x.stdout.strip().splitlines()[-1]) for x in evals)
    assert all(a["test"]["top1"] == b["test"]["top1"] and a["val"]["n"] == b["val"]["n"] for b in others)
    wrong = run_cli("eval", str(out / "model.safetensors"), "--runtime", "onnxruntime", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1].endswith(
        "a .safetensors model runs on torch; export it with --format onnx to run it on onnxruntime")


@pytest.mark.slow
def test_bench_has_a_runtime_column(tmp_path):
    runtimes = ("torch", "onnxruntime") + (("openvino",) if HAVE_OPENVINO else ())
    r = run_cli("bench", "--img-size", "32", "--num-classes", "2", "--models", "hovit_s", "--runs", "3",
                "--rounds", "1", "--warmup", "1", "--min-time", "0.25", "--threads", "1", "--runtime", ",".join(runtimes),
                "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    rows = report["rows"]
    assert {(x["model"], x["runtime"]) for x in rows} == {(m, rt) for m in ("hovit_s", "efficientnet_b0")
                                                          for rt in runtimes}
    assert list(report["runtime_versions"]) == list(runtimes) and all(report["runtime_versions"].values())
    assert all(x["ratio_to_effnet_b0"] == 1.0 for x in rows if x["model"] == "efficientnet_b0")

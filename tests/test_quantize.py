"""int8 post-training quantization as a deployment precision (issue 22, item 2): real
onnxruntime.quantization and NNCF runs, real onnxruntime and OpenVINO sessions."""
import json
import sys

import numpy as np
import optuna
import pytest
import torch

from conftest import printed_commands, run_cli, run_printed
from hovit_nas.data import DataSpec, load_data
from hovit_nas.device import NO_GUARD
from hovit_nas.errors import HovitError, QuantizationError, TrialFailed
from hovit_nas.latency import measure_latency
from hovit_nas.models import hovit_b, hovit_s
from hovit_nas.models import quantize as q
from hovit_nas.models.onnx import load_onnx, read_metadata
from spaces import tiny_space

RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("openvino", "nncf")),
    reason="openvino or nncf not installed (pip install 'hovit-nas[openvino]')"))]


@pytest.fixture(scope="module")
def trained():
    """A small HoViT trained on the built-in digits at 32 px, and its data."""
    from hovit_nas.config import ArchConfig, RunConfig, StageConfig, TrainConfig
    from hovit_nas.train import train_and_evaluate

    torch.set_num_threads(1)
    cfg = RunConfig(name="tiny", model=ArchConfig(stages=[StageConfig(32, 2, 2, 2), StageConfig(48, 2, 2, 2, "conv")],
                                                  img_size=32, num_classes=10, head_width=32),
                    train=TrainConfig(epochs_dense=8, epochs_prune=0, batch_size=32, lr=3e-3)).validate()
    splits = load_data(DataSpec(img_size=32, max_per_split=400))
    return train_and_evaluate(cfg, splits, "cpu"), splits


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_model_scores_like_fp32_and_says_what_it_is(tmp_path, trained, runtime):
    """Calibrated on train images, the int8 model's val and test top-1 stay within 3 points of
    fp32's and its predictions mostly agree; it is not the fp32 graph under another name; the
    file records precision, runtime and calibration size, and loads on the runtime it was made
    for by default."""
    from hovit_nas.deploy import quantize_int8

    r, splits = trained
    assert r.val["top1"] > 0.4  # a model with something to lose (10 classes, chance 0.1)
    q8 = quantize_int8(r.exported, splits, runtime, calibration_images=64, threads=1)
    assert abs(q8.val["top1"] - r.val["top1"]) <= 0.03 and abs(q8.test["top1"] - r.test["top1"]) <= 0.03
    path = tmp_path / "m.onnx"
    path.write_bytes(q8.model)
    meta = read_metadata(path)
    assert (meta["precision"], meta["quantized_for"], meta["calibration_images"]) == ("int8", runtime, "64")
    assert json.loads(meta["config"])["num_classes"] == 10  # still a hovit-nas export
    int8 = load_onnx(path)
    assert type(int8).__name__ == ("OpenVinoModel" if runtime == "openvino" else "OnnxModel")
    x = torch.from_numpy(q.calibration_set(splits.val, 100, seed=3))
    ref, out = r.exported(x), int8(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.9
    assert not torch.allclose(out, ref, atol=1e-4)  # quantized


def test_calibration_set_is_a_fixed_draw_of_normalised_train_images():
    splits = load_data(DataSpec(img_size=32, max_per_split=100))
    a, b = q.calibration_set(splits.train, 16, seed=0), q.calibration_set(splits.train, 16, seed=0)
    assert a.shape == (16, 3, 32, 32) and a.dtype == np.float32 and np.array_equal(a, b)
    assert not np.array_equal(a, q.calibration_set(splits.train, 16, seed=1))
    assert abs(float(a.mean())) < 3 and float(a.std()) > 0.1  # normalised, not raw 0..255
    assert len(q.calibration_set(splits.train, 10_000)) == len(splits.train)  # capped at the split


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_latency_times_quantized_candidate_and_anchor(runtime, monkeypatch):
    from hovit_nas.latency import calibrate
    from hovit_nas.models import create_hovit, export

    calls, real = [], q.quantize
    monkeypatch.setattr(q, "quantize", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    kw = dict(threads=1, runs=5, warmup=1, guard=NO_GUARD, runtime=runtime, precision="int8")
    anchor = calibrate("hovit_b", export(create_hovit(hovit_b(img_size=32, num_classes=2))), 32, seconds=0.05, **kw)
    lat = measure_latency(export(create_hovit(hovit_s(img_size=32, num_classes=2))), 32, anchor=anchor,
                          min_time_s=0.05, **kw).to_dict()
    assert (lat["precision"], lat["runtime"], lat["anchor"]) == ("int8", runtime, "hovit_b")
    assert lat["median_ms"] > 0 and lat["ratio"] > 0
    assert calls == [runtime, runtime]  # the anchor once (calibration), the candidate once: both int8


def test_a_runtime_that_cannot_load_the_int8_graph_fails_like_the_tool(trained, monkeypatch):
    """Found after quantization (the runtime compiles the int8 graph): QuantizationError too, so
    a search fails that trial and goes on instead of stopping."""
    import hovit_nas.models.onnx as onnx_mod
    from hovit_nas.deploy import quantize_int8

    def refuse(*a, **k):
        raise HovitError("OpenVINO could not compile the model: unsupported FakeQuantize layout")

    monkeypatch.setattr(onnx_mod, "module_of", refuse)
    r, splits = trained
    with pytest.raises(QuantizationError, match="^the int8 model for onnxruntime could not be loaded: OpenVINO could"):
        quantize_int8(r.exported, splits, "onnxruntime", calibration_images=8)


def test_a_study_from_before_precisions_resumes_at_fp32_only(tmp_path):
    from hovit_nas import study as st

    old = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path / 'o.db'}",
                              directions=["maximize", "minimize"])
    for k, v in {"space": "s", "latency_batch": 1, "latency_runtime": "onnxruntime"}.items():
        old.set_user_attr(k, v)
    st.check_compatible(old, {"latency_runtime": "onnxruntime", "latency_precision": "fp32"})
    with pytest.raises(HovitError, match="created with latency_precision=fp32, not int8"):
        st.check_compatible(old, {"latency_runtime": "onnxruntime", "latency_precision": "int8"})


def test_precision_is_checked_before_any_work(monkeypatch):
    q.check("fp32", "torch", "cuda")
    q.check("int8", "onnxruntime", "cpu")
    with pytest.raises(HovitError, match="unknown precision 'int4'; one of fp32, int8"):
        q.check("int4", "onnxruntime", "cpu")
    with pytest.raises(HovitError, match="int8 post-training quantization runs on onnxruntime or openvino, not torch"):
        q.check("int8", "torch", "cpu")
    with pytest.raises(HovitError, match="timed on the CPU here, not on cuda"):
        q.check("int8", "onnxruntime", "cuda")
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if not installed
    with pytest.raises(HovitError, match=r"int8 on openvino needs NNCF .* pip install 'hovit-nas\[openvino\]'"):
        q.check("int8", "openvino", "cpu")


def test_a_tool_failing_on_one_architecture_fails_that_trial_with_the_reason(monkeypatch):
    """Whatever the tool raises deep in a graph transform becomes QuantizationError, and in a
    trial a TrialFailed with the reason (the executors record it and go on: test_search_e2e)."""
    from hovit_nas.config import LatencyConfig
    from hovit_nas.space import load_space
    from hovit_nas.trial import TrialSpec, run_trial

    def broken(*a, **k):
        raise RuntimeError("Unsupported operator HardSwish in a QDQ pair\nmore detail")

    from hovit_nas import runtimes

    monkeypatch.setattr(runtimes.get("onnxruntime"), "quantize", broken)  # the runtime's int8 tool (its seam)
    with pytest.raises(QuantizationError, match="failed: RuntimeError: Unsupported operator HardSwish in a QDQ pair$"):
        q.quantize(b"", q.random_calibration((3, 8, 8), 1), "onnxruntime")
    base = load_space("hovit-cpu").with_builtin_budget().base
    spec = TrialSpec(base, DataSpec(img_size=32, max_per_split=50), device="cpu", threads=1,
                     latency=LatencyConfig(runs=2, warmup=0, threads=1, anchor=False, runtime="onnxruntime",
                                           precision="int8", min_time_s=0.01))
    with pytest.raises(TrialFailed, match="^int8 post-training quantization for onnxruntime failed: RuntimeError"):
        run_trial(spec)


@pytest.mark.slow
def test_int8_search_records_both_accuracies_and_the_target_then_export_and_eval(tmp_path):
    """A one-trial search at --precision int8 on onnxruntime: the trial's objective is its int8 val
    accuracy, with the fp32 one beside it; the study's target names int8; a resume at fp32 is
    refused in one line; pareto names the target; export --precision int8 writes a model that eval
    runs, with the same val accuracy the trial recorded."""
    space = tiny_space(tmp_path, trials=1)
    r = run_cli("search", "--space", str(space), "--threads", "1", "--runtime", "onnxruntime", "--precision", "int8",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on onnxruntime (min) at int8" in r.stderr
    study = optuna.load_study(study_name="tiny-builtin",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    target = study.user_attrs["deployment_target"]
    assert target["precision"] == "int8" and target["name"].startswith("cpu/onnxruntime/int8, 1 thread")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(done) == 1
    for t in done:
        a = t.user_attrs
        assert a["latency"]["precision"] == "int8"
        assert t.values[0] == a["val"]["top1"] and "top1" in a["val_fp32"] and "top1" in a["test_fp32"]
        assert a["quantization"]["runtime"] == "onnxruntime" and a["quantization"]["calibration_images"] >= 1
    refused = run_cli("search", "--space", str(space), "--threads", "1", "--precision", "fp32", "--trials", "2",
                      cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        "error: study 'tiny-builtin' was created with latency_precision=int8, not fp32; use --study NEW_NAME for a "
        "new study (or --precision int8 to match)")
    p = run_cli("pareto", "--no-baselines", cwd=tmp_path)
    assert p.returncode == 0 and "cpu/onnxruntime/int8" in p.stdout, p.stderr[-2000:]
    assert "val top1 of the int8 model (max)" in p.stdout and "    fp32  " in p.stdout
    pin = run_cli("pin", cwd=tmp_path)
    assert pin.returncode == 0, pin.stderr[-2000:]
    lines = printed_commands(pin.stdout)  # they run as printed (issue 30)
    reproduce = next(x for x in lines if x.startswith("hovit-nas train "))
    int8 = next(x for x in lines if x.startswith("hovit-nas export ") and "--precision int8" in x)
    run_dir = reproduce.split("--out ")[1].split()[0]
    assert f"then int8, as the study did: {int8}\n" in pin.stdout and int8 == (
        f"hovit-nas export {run_dir} --format onnx --precision int8 --runtime onnxruntime --calibration-images 128")
    for line in (reproduce, int8):
        pasted = run_printed(line, tmp_path)
        assert pasted.returncode == 0, pasted.stderr[-2000:]
    assert f"exported int8 -> {run_dir}/model.int8.onnxruntime.onnx" in pasted.stdout
    best = __import__("yaml").safe_load((tmp_path / "studies" / "tiny-builtin" / "best.yaml").read_text())
    assert best["quantization"]["runtime"] == "onnxruntime" and "top1" in best["val_fp32"]
    assert best["objectives"]["val_top1"] == best["val"]["top1"]  # the int8 model's

    run = tmp_path / "run"
    t = run_cli("train", "--config", "hovit_s", "--img-size", "32", "--epochs", "1", "--batch-size", "32",
                "--max-per-split", "64", "--threads", "1", "--out", str(run), cwd=tmp_path)
    assert t.returncode == 0, t.stderr[-2000:]
    e = run_cli("export", str(run), "--format", "onnx", "--precision", "int8", "--max-per-split", "64",
                "--calibration-images", "16", cwd=tmp_path)
    assert e.returncode == 0, e.stderr[-2000:]
    assert "int8 for onnxruntime (16 calibration images): val top1" in e.stdout and "(fp32 " in e.stdout
    path = run / "model.int8.onnxruntime.onnx"
    assert path.is_file() and read_metadata(path)["quantized_for"] == "onnxruntime"
    ev = run_cli("eval", str(path), "--max-per-split", "64", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-2000:]
    val = json.loads(ev.stdout.strip().splitlines()[-1])["val"]["top1"]
    assert f"val top1 {val:.4f}" in e.stdout  # eval scores the file export wrote, as export did
    bad = run_cli("export", str(run), "--precision", "int8", cwd=tmp_path)
    assert bad.returncode == 2 and "--precision int8 writes ONNX: add --format onnx" in bad.stderr
    rng = np.random.default_rng(0)  # other data: calibration and scores must come from the run's own splits
    np.savez(tmp_path / "other.npz", **{f"{k}_images": rng.integers(0, 256, (20, 8, 8), dtype=np.uint8)
                                        for k in ("train", "val", "test")},
             **{f"{k}_labels": np.arange(20) % 10 for k in ("train", "val", "test")})
    other = run_cli("export", str(run), "--format", "onnx", "--precision", "int8", "--data",
                    str(tmp_path / "other.npz"), cwd=tmp_path)
    assert other.returncode == 2 and "was made from builtin:digits" in other.stderr.strip().splitlines()[-1]
    zero = run_cli("export", str(run), "--format", "onnx", "--precision", "int8", "--calibration-images", "0",
                   cwd=tmp_path)
    assert zero.returncode == 2 and zero.stderr.strip().splitlines()[-1] == (
        "error: --calibration-images must be >= 1, got 0")

"""OpenVINO as a latency and evaluation runtime (issue 22, item 1): real OpenVINO compiled models
on the CPU, the same ONNX that onnxruntime runs."""
import json
import subprocess
import sys

import optuna
import pytest
import torch

from conftest import ROOT
from hovit_nas.device import NO_GUARD
from hovit_nas.errors import HovitError
from hovit_nas.latency import calibrate, measure_latency, resolve_runtime
from hovit_nas.models import create_hovit, export, hovit_b, hovit_b_attn_down, hovit_s
from hovit_nas.models.onnx import load_onnx, save_onnx
from test_onnx import _trained_like, search_on

pytest.importorskip("openvino", reason="openvino not installed (pip install 'hovit-nas[openvino]')")
MISSING = "error: the openvino runtime needs the openvino package, which is not installed: " \
          "pip install 'hovit-nas[openvino]'"


@pytest.mark.parametrize("preset", [hovit_b, hovit_b_attn_down], ids=["conv-downsampling", "attention-downsampling"])
def test_openvino_runs_the_exported_onnx_like_pytorch_and_onnxruntime(tmp_path, preset):
    model = _trained_like(preset(img_size=64, num_classes=5))
    path, _ = save_onnx(model, tmp_path / "m.onnx")
    ov_model, ort_model = load_onnx(path, runtime="openvino"), load_onnx(path)
    assert ov_model.config == model.config
    for batch in (1, 7):  # the batch axis stays dynamic on OpenVINO
        x = torch.randn(batch, 3, 64, 64)
        ref = model(x)
        out = ov_model(x)
        assert out.shape == (batch, 5)
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()  # f32 inference, not bf16
        assert (out - ort_model(x)).abs().max() <= 1e-4 * ref.abs().max()
        assert ref.abs().max() > 1e-2


def test_openvino_latency_is_anchored_and_records_threads_and_version():
    import openvino

    kw = dict(threads=1, runs=5, warmup=1, min_time_s=0.05, guard=NO_GUARD, runtime="openvino")
    anchor = calibrate("hovit_b", export(create_hovit(hovit_b(img_size=32, num_classes=2))), 32, seconds=0.05, **{
        k: v for k, v in kw.items() if k != "min_time_s"})
    lat = measure_latency(export(create_hovit(hovit_s(img_size=32, num_classes=2))), 32, anchor=anchor, **kw)
    d = lat.to_dict()
    assert d["runtime"] == "openvino" and d["runtime_version"] == openvino.__version__.split("-")[0]
    assert d["threads"] == 1 and d["anchor"] == "hovit_b" and d["median_ms"] > 0 and d["ratio"] > 0


def test_openvino_is_checked_before_training(monkeypatch):
    assert resolve_runtime("openvino", "cpu") == "openvino"
    with pytest.raises(HovitError, match="the openvino runtime runs on the CPU here, not on cuda"):
        resolve_runtime("openvino", "cuda")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: import openvino raises
    with pytest.raises(HovitError, match=r"needs the openvino package, which is not installed: pip install"):
        resolve_runtime("openvino", "cpu")
    assert resolve_runtime("onnxruntime", "cpu") == "onnxruntime"  # the others do not need it


def test_without_openvino_the_cli_says_so_in_one_line(tmp_path):
    """The real entry point in a process where ``import openvino`` fails, as on an install without
    the extra."""
    code = ("import sys; sys.modules['openvino'] = None; sys.argv[0] = 'hovit-nas'; "
            "from hovit_nas.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "bench", "--runtime", "openvino", "--models", "hovit_s",
                        "--img-size", "32", "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == MISSING, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "measured" not in r.stderr  # refused before any timing


@pytest.mark.slow
def test_search_on_openvino_records_the_runtime_and_its_version(tmp_path):
    import openvino

    _, _, study = search_on("openvino", tmp_path, trials=1)
    (t,) = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    lat = t.user_attrs["latency"]
    assert lat["runtime"] == "openvino" and lat["threads"] == 1
    assert lat["runtime_version"] == openvino.__version__.split("-")[0]
    assert json.loads(json.dumps(lat))["anchor"] == "hovit_b"

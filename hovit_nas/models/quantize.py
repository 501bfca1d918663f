"""Thin glue over ONNX Runtime's and NNCF's post-training quantization: an exported ONNX model
made int8 for the runtime that will run it.

Static post-training quantization (PTQ): weights are quantized per output channel to int8, and
activations to 8 bits with ranges observed on calibration images (no retraining). The two
runtimes want different int8 graphs, so each gets its own tool's:

- ``onnxruntime``: ``onnxruntime.quantization.quantize_static`` in the QDQ format, uint8
  activations and int8 per-channel weights (ONNX Runtime's recommendation for x86 CPUs), MinMax
  calibration, after its ``quant_pre_process`` (shape inference and graph optimisation).
- ``openvino``: NNCF's ``nncf.quantize`` (default ``PERFORMANCE`` preset) on the ONNX model, which
  writes a QDQ ONNX model that OpenVINO's ONNX front end compiles to its int8 kernels.

Both results are ``.onnx`` files, so ``export``, ``eval`` and the latency protocol read them as any
other export. They are not interchangeable (one unanchored measurement of an untrained HoViT-B
at 96 px, 1 thread, AMD EPYC, 2026-11-30, with other work on the machine: OpenVINO ran ONNX
Runtime's QDQ graph in 3.2 ms against 2.9 ms for fp32, and ONNX Runtime ran NNCF's in 7.2 ms
against 3.1 ms for fp32), so each model records the runtime it was quantized for
(``quantized_for`` in the ONNX metadata).

Latency does not depend on the quantization scales, only on the graph: skeletons (untrained
architectures timed before training) are quantized with a few fixed random images
(``random_calibration``); trained models with images from the train split (``calibration_set``).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import CALIBRATION_IMAGES, PRECISIONS, QUANTIZABLE
from ..errors import HovitError, QuantizationError, first_line

if TYPE_CHECKING:
    from ..data import Images

NNCF_INSTALL = "pip install 'hovit-nas[openvino]'"
TOOLS = {"onnxruntime": "onnxruntime.quantization.quantize_static (QDQ, u8 activations, s8 per-channel weights)",
         "openvino": "nncf.quantize (ONNX backend, PERFORMANCE preset)"}  # what made each runtime's int8 graph


def check(precision: str, runtime: str, device: str | torch.device) -> None:
    """A precision the runtime and device can run.

    Raises:
        HovitError: an unknown precision; int8 on a runtime other than onnxruntime or openvino,
            or on a GPU; int8 on openvino without NNCF installed.
    """
    if precision not in PRECISIONS:
        raise HovitError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return
    _check_runtime(runtime)
    if torch.device(device).type != "cpu":
        raise HovitError(f"int8 post-training quantization is timed on the CPU here, not on {device}")
    if runtime == "openvino":
        _nncf()


def _check_runtime(runtime: str) -> None:
    if runtime not in QUANTIZABLE:
        raise HovitError(f"int8 post-training quantization runs on {' or '.join(QUANTIZABLE)}, not {runtime}")


def _nncf():
    # NNCF sends usage telemetry unless told it runs in CI: nothing leaves the machine at run time
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
    except ImportError:
        raise HovitError(f"int8 on openvino needs NNCF (the nncf package), which is not installed: {NNCF_INSTALL}") \
            from None
    return nncf


def random_calibration(shape: tuple[int, ...], n: int = 8, seed: int = 0) -> np.ndarray:
    """``n`` standard-normal images of ``shape`` (C, H, W), float32 (n, C, H, W): enough to
    quantize a model whose latency, not accuracy, is wanted."""
    return np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)


def calibration_set(images: "Images", n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """``n`` images of a split (the train split), drawn without replacement by ``seed``,
    normalised as the model sees them and not augmented: float32 (n, C, H, W)."""
    from ..data.loader import to_model_input

    k = min(n, len(images))
    if k < 1:
        raise HovitError("int8 calibration needs at least one training image")
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size=k, replace=False))
    x = torch.from_numpy(np.asarray(images.images[idx]))
    return to_model_input(x, images.mean, images.std).numpy().astype(np.float32)


def quantize(model: bytes, calibration: np.ndarray, runtime: str) -> bytes:
    """``model`` (ONNX bytes, input ``images``) quantized to int8 for ``runtime``.

    Args:
        model: fp32 ONNX (models/onnx.py); its metadata is kept.
        calibration: float32 (N, C, H, W) model inputs the activation ranges are observed on.
        runtime: ``onnxruntime`` (quantize_static, QDQ) or ``openvino`` (NNCF).
    Returns:
        The int8 model as ONNX bytes, with ``precision`` = ``int8``, ``quantized_for`` = runtime
        and ``calibration_images`` = N added to its metadata.
    Raises:
        HovitError: an unknown runtime, or NNCF missing.
        QuantizationError: the tool failed on this model (its message's first line).
    """
    import onnx

    _check_runtime(runtime)
    batches = [calibration[i:i + 1] for i in range(len(calibration))]
    try:
        with tempfile.TemporaryDirectory(prefix="hovit-nas-ptq-") as tmp:
            out = _onnxruntime(model, batches, Path(tmp)) if runtime == "onnxruntime" else _openvino(model, batches)
    except HovitError:
        raise
    except Exception as exc:  # either tool raises anything from deep inside a graph transform
        raise QuantizationError(f"int8 post-training quantization for {runtime} failed: {type(exc).__name__}: "
                                f"{first_line(exc)}") from None
    proto = onnx.load_from_string(out)
    meta = {m.key: m.value for m in onnx.load_from_string(model).metadata_props}
    meta.update(precision="int8", quantized_for=runtime, calibration_images=str(len(batches)))
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    return proto.SerializeToString()


@contextlib.contextmanager
def loading(runtime: str):
    """Around loading an int8 graph into ``runtime`` (a session, a compiled model): whatever
    fails there is this architecture's, raised as QuantizationError with its first line."""
    try:
        yield
    except QuantizationError:
        raise
    except Exception as exc:  # OpenVINO/onnxruntime, raw or already wrapped in a HovitError
        raise QuantizationError(f"the int8 model for {runtime} could not be loaded: {first_line(exc)}") from None


def _onnxruntime(model: bytes, batches: list[np.ndarray], tmp: Path) -> bytes:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x}

    (tmp / "fp32.onnx").write_bytes(model)
    quant_pre_process(str(tmp / "fp32.onnx"), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
    quantize_static(str(tmp / "pre.onnx"), str(tmp / "int8.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return (tmp / "int8.onnx").read_bytes()


def overflow_fix(fix):
    """NNCF's overflow fix (``fix``: its ``OverflowFix`` enum) for this CPU: for every layer where
    the CPU has no VNNI (AVX2 only, e.g. this project's AMD EPYC since 2026-12), since there
    OpenVINO multiplies u8 x s8 pairs with 16-bit saturation and weights quantized to the full 8
    bits overflow (NNCF's ``OverflowFix`` documentation): without it, int8 HoViT agreed with fp32
    on 88 % of predictions here, against the 90 % tests/test_quantize.py asks. With VNNI, NNCF's
    default (the first layer only) keeps the full 8 bits elsewhere."""
    from ..device import cpu_has

    return fix.FIRST_LAYER if cpu_has("vnni") else fix.ENABLE


def _openvino(model: bytes, batches: list[np.ndarray]) -> bytes:
    import onnx

    logging.getLogger("nncf").setLevel(logging.WARNING)  # its per-step INFO lines
    quiet = logging.getLogger("torch.utils.cpp_extension")  # "No CUDA runtime is found", from NNCF's torch backend
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        nncf = _nncf()
        with contextlib.redirect_stdout(io.StringIO()):  # its rich progress bars: our log line reports the step
            from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

            q = nncf.quantize(onnx.load_from_string(model), nncf.Dataset(batches, lambda x: {"images": x}),
                              subset_size=len(batches),
                              advanced_parameters=AdvancedQuantizationParameters(overflow_fix=overflow_fix(OverflowFix)))
    finally:
        quiet.setLevel(level)
    return q.SerializeToString()


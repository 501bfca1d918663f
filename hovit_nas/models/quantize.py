"""Post-training int8 quantization: an exported ONNX model made int8 for the runtime that will
run it, by that runtime's own tool (runtimes/onnxruntime.py, runtimes/openvino.py).

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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..config import CALIBRATION_IMAGES
from ..errors import HovitError, QuantizationError, first_line

if TYPE_CHECKING:
    from ..data import Images


class _Tools(dict):
    """What made each quantizable runtime's int8 graph (its Capabilities.int8_tool), by name."""

    def __missing__(self, runtime: str) -> str:
        from .. import runtimes

        return runtimes.get(runtime).caps.int8_tool


TOOLS = _Tools()


def check(precision: str, runtime: str, device: str | torch.device) -> None:
    """A precision the runtime and device can run (runtimes.check_precision).

    Raises:
        HovitError: an unknown precision; int8 on a runtime other than onnxruntime or openvino,
            or on a GPU; int8 on openvino without NNCF installed.
    """
    from .. import runtimes

    runtimes.check_precision(precision, runtime, device)


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

    from .. import runtimes

    rt = runtimes.get(runtime)
    if not rt.caps.int8_tool:
        raise HovitError(f"int8 post-training quantization runs on {' or '.join(runtimes.quantizable())}, not {runtime}")
    rt.require_int8()
    batches = [calibration[i:i + 1] for i in range(len(calibration))]
    try:
        with tempfile.TemporaryDirectory(prefix="hovit-nas-ptq-") as tmp:
            out = rt.quantize(model, batches, Path(tmp))
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



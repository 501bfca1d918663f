"""ONNX Runtime: the model exported to ONNX, every graph optimisation, on the CPU (or CUDA with
onnxruntime-gpu); int8 by ``onnxruntime.quantization.quantize_static``.

Static post-training quantization in the QDQ format, uint8 activations and int8 per-channel
weights (ONNX Runtime's recommendation for x86 CPUs), MinMax calibration, after its
``quant_pre_process`` (shape inference and graph optimisation).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import HovitError
from . import CAPS


def session(model: bytes | str | Path, threads: Optional[int] = None, device: str = "cpu"):
    """An onnxruntime session with every graph optimisation; on CUDA the CUDA execution provider
    when onnxruntime has it (else HovitError); ``threads`` fixes the intra-op thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise HovitError("onnxruntime latency on cuda needs onnxruntime-gpu (the CUDA execution provider); "
                             "install it, or time on the CPU")
        index = torch.device(device).index or 0
        providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    src = str(model) if isinstance(model, (str, Path)) else model
    return ort.InferenceSession(src, sess_options=opts, providers=providers)


class OnnxModel(nn.Module):
    """An ONNX model (a file or bytes) on onnxruntime behind a module's interface (for
    ``evaluate``): tensors in, logits out."""

    def __init__(self, path: Path | bytes, config, device: str = "cpu", threads: Optional[int] = None):
        super().__init__()
        self.path, self.config, self.device_ = path, config, device
        self.sess = session(path, threads, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sess.run(None, {"images": x.detach().float().cpu().numpy()})[0]
        return torch.from_numpy(out).to(x.device)


def quantize_static(model: bytes, batches: list[np.ndarray], tmp: Path) -> bytes:
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



class OnnxRuntime:
    name = "onnxruntime"
    caps = CAPS["onnxruntime"]

    def require(self) -> None:
        return None  # a core dependency

    def version(self) -> Optional[str]:
        import onnxruntime

        return onnxruntime.__version__

    def supports(self, device) -> bool:
        if torch.device(device).type != "cuda":
            return True
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()

    def require_int8(self) -> None:
        return None

    def compile(self, model: bytes, threads: int, device: torch.device):
        """A session to time (cached by latency.py); ``run(compiled, x)`` calls it."""
        return session(model, threads, str(device))

    def run(self, compiled, x: np.ndarray):
        return lambda: compiled.run(None, {"images": x})

    def module(self, onnx, config, device, threads) -> nn.Module:
        return OnnxModel(onnx, config, str(device), threads)

    def quantize(self, onnx: bytes, batches: list, workdir: Path) -> bytes:
        return quantize_static(onnx, batches, workdir)


RUNTIME = OnnxRuntime()  # what the registry (runtimes/__init__.py) loads

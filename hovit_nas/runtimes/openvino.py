"""OpenVINO: the exported ONNX model compiled for the CPU, timed and evaluated; int8 by NNCF.

x86 CPU deployments commonly run OpenVINO, which reads the ``.onnx`` that ``hovit-nas export
--format onnx`` writes, unchanged. It is an optional dependency (``pip install
'hovit-nas[openvino]'``); without it, asking for the runtime is one error line saying so.

Every compile fixes what changes the figure: the CPU device, ``PERFORMANCE_HINT=LATENCY`` (one
stream, as a single-request deployment runs), ``INFERENCE_NUM_THREADS`` (recorded with the
latency), and ``INFERENCE_PRECISION_HINT=f32``: OpenVINO's CPU plugin otherwise runs bf16 on CPUs
that have it, which would change the precision with the machine.

int8: NNCF's ``nncf.quantize`` (default ``PERFORMANCE`` preset) on the ONNX model, which writes a
QDQ ONNX model that OpenVINO's ONNX front end compiles to its int8 kernels.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..errors import HovitError, first_line
from . import CAPS

NNCF_INSTALL = "pip install 'hovit-nas[openvino]'"
INSTALL = "pip install 'hovit-nas[openvino]'"


def require():
    """The ``openvino`` module.

    Raises:
        HovitError: it is not installed (one line, with the install command).
    """
    try:
        import openvino
    except ImportError:
        raise HovitError(f"the openvino runtime needs the openvino package, which is not installed: {INSTALL}") \
            from None
    return openvino


def check_device(device: str | torch.device) -> None:
    """OpenVINO runs on the CPU here (its GPU plugin targets Intel GPUs, not CUDA ones).

    Raises:
        HovitError: ``device`` is not the CPU.
    """
    if torch.device(device).type != "cpu":
        raise HovitError(f"the openvino runtime runs on the CPU here, not on {device}; use `device` cpu, or "
                         "`runtime` torch on a GPU")


def version() -> str:
    """OpenVINO's release, e.g. ``2026.4.1`` (its ``__version__`` without the build suffix)."""
    return require().__version__.split("-")[0]


def compile_onnx(model: bytes | str | Path, threads: Optional[int] = None, device: str = "cpu"):
    """An OpenVINO ``CompiledModel`` of an ONNX model (bytes or a file) on the CPU.

    Args:
        model: ONNX bytes (``onnx.onnx_bytes``) or a path to an ``.onnx`` file.
        threads: ``INFERENCE_NUM_THREADS``; None leaves OpenVINO's default (all cores).
        device: only the CPU (``cpu``) is supported.
    Raises:
        HovitError: openvino is missing, the device is not the CPU, or OpenVINO cannot read or
            compile the model (its message's first line).
    """
    ov = require()
    check_device(device)
    core = ov.Core()
    props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        props["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        if isinstance(model, (str, Path)):
            read = core.read_model(str(model))
        else:
            read = core.read_model(model=bytes(model), weights=b"")
        return core.compile_model(read, "CPU", props)
    except Exception as exc:  # OpenVINO raises RuntimeError with multi-line messages
        raise HovitError(f"OpenVINO could not compile the model: {first_line(exc)}") from None


def runner(compiled, x: np.ndarray):
    """A zero-argument call running ``compiled`` on ``x`` synchronously (one infer request)."""
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


class OpenVinoModel(nn.Module):
    """An ONNX model (a file or bytes) compiled by OpenVINO behind a module's interface (for
    ``evaluate``)."""

    def __init__(self, path: Path | bytes, config, threads: Optional[int] = None):
        super().__init__()
        self.path, self.config = path, config
        self.compiled = compile_onnx(path, threads)
        self.request = self.compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.request.infer({0: x.detach().float().cpu().numpy()})
        return torch.from_numpy(np.array(out[self.compiled.output(0)])).to(x.device)


def _nncf():
    # NNCF sends usage telemetry unless told it runs in CI: nothing leaves the machine at run time
    os.environ.setdefault("NNCF_CI", "1")
    try:
        import nncf
    except ImportError:
        raise HovitError(f"int8 on openvino needs NNCF (the nncf package), which is not installed: {NNCF_INSTALL}") \
            from None
    return nncf


def overflow_fix(fix):
    """NNCF's overflow fix (``fix``: its ``OverflowFix`` enum) for this CPU: for every layer where
    the CPU has no VNNI (AVX2 only, e.g. this project's AMD EPYC since 2026-12), since there
    OpenVINO multiplies u8 x s8 pairs with 16-bit saturation and weights quantized to the full 8
    bits overflow (NNCF's ``OverflowFix`` documentation): without it, int8 HoViT agreed with fp32
    on 88 % of predictions here, against the 90 % tests/test_quantize.py asks. With VNNI, NNCF's
    default (the first layer only) keeps the full 8 bits elsewhere."""
    from ..device import cpu_has

    return fix.FIRST_LAYER if cpu_has("vnni") else fix.ENABLE


def nncf_quantize(model: bytes, batches: list[np.ndarray]) -> bytes:
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



class OpenVinoRuntime:
    name = "openvino"
    caps = CAPS["openvino"]

    def require(self) -> None:
        require()

    def version(self) -> Optional[str]:
        return version()

    def supports(self, device) -> bool:
        return torch.device(device).type == "cpu"

    def require_int8(self) -> None:
        _nncf()

    def compile(self, model: bytes, threads: int, device: torch.device):
        return compile_onnx(model, threads, str(device))

    def run(self, compiled, x: np.ndarray):
        return runner(compiled, x)

    def module(self, onnx, config, device, threads) -> nn.Module:
        check_device(device)
        return OpenVinoModel(onnx, config, threads)

    def quantize(self, onnx: bytes, batches: list, workdir: Path) -> bytes:
        return nncf_quantize(onnx, batches)


RUNTIME = OpenVinoRuntime()  # what the registry (runtimes/__init__.py) loads

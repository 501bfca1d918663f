"""Thin glue over OpenVINO: the exported ONNX model compiled for the CPU, timed and evaluated.

x86 CPU deployments commonly run OpenVINO, which reads the ``.onnx`` that ``hovit-nas export
--format onnx`` writes, unchanged. It is an optional dependency (``pip install
'hovit-nas[openvino]'``); without it, asking for the runtime is one error line saying so.

Every compile fixes what changes the figure: the CPU device, ``PERFORMANCE_HINT=LATENCY`` (one
stream, as a single-request deployment runs), ``INFERENCE_NUM_THREADS`` (recorded with the
latency), and ``INFERENCE_PRECISION_HINT=f32``: OpenVINO's CPU plugin otherwise runs bf16 on CPUs
that have it, which would change the precision with the machine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import ArchConfig
from ..errors import HovitError, first_line

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

    def __init__(self, path: Path | bytes, config: ArchConfig, threads: Optional[int] = None):
        super().__init__()
        self.path, self.config = path, config
        self.compiled = compile_onnx(path, threads)
        self.request = self.compiled.create_infer_request()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.request.infer({0: x.detach().float().cpu().numpy()})
        return torch.from_numpy(np.array(out[self.compiled.output(0)])).to(x.device)

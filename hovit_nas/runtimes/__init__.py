"""Deployment runtimes behind one protocol: where an exported model is timed, run and quantized.

Each runtime is one small object (:class:`Runtime`) in a registry, as timm's optimizer registry
keeps optimizer classes: what a runtime can do is data (:class:`Capabilities`: does it run the
model exported to ONNX, on which devices, at which precisions, with which int8 tool), so the rest
of the package asks the registry instead of branching on runtime names.

- ``torch``: PyTorch eager, the ``nn.Module`` itself (CPU, CUDA; fp32);
- ``onnxruntime``: the model exported to ONNX, every graph optimisation (CPU, CUDA with
  onnxruntime-gpu; fp32 and int8 by ``onnxruntime.quantization``);
- ``openvino``: the same ONNX compiled by OpenVINO for the CPU (fp32 and int8 by NNCF).

``auto`` has one meaning everywhere (:func:`resolve`): onnxruntime on the CPU, what CPU
deployments run; torch on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Protocol, runtime_checkable

from .. import plugins
from ..errors import HovitError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn


@dataclass(frozen=True)
class Capabilities:
    """What a runtime can do, as data."""

    exported: bool  # runs the model exported to ONNX (else the nn.Module itself)
    devices: tuple[str, ...]  # device types it runs on
    precisions: tuple[str, ...]  # config.PRECISIONS it runs
    int8_tool: Optional[str] = None  # what makes its int8 graph (None: no int8)
    suffix: str = ".onnx"  # the file `export` writes for it


@runtime_checkable
class Runtime(Protocol):
    """One deployment runtime (see the module docstring)."""

    name: str
    caps: Capabilities

    def require(self) -> None:
        """Raise HovitError (one line, with the install command) when its package is missing."""

    def version(self) -> Optional[str]:
        """Its package's version (None: torch's, recorded as ``torch_version``)."""

    def supports(self, device: "torch.device") -> bool:
        """Whether it runs on ``device`` on this machine (its device type, and e.g. a CUDA build)."""

    def require_int8(self) -> None:
        """Raise HovitError when its int8 tool is missing (or it has none)."""

    def compile(self, model: "nn.Module | bytes", threads: int, device: "torch.device") -> object:
        """What runs ``model`` (a module; ONNX bytes for an exported runtime): the module itself, a
        session, a compiled model. Compiling is the costly part: the latency protocol caches it."""

    def run(self, compiled: object, x: "np.ndarray | torch.Tensor") -> Callable[[], object]:
        """A zero-argument call of ``compiled`` on the input ``x`` (a tensor for torch, an array
        otherwise): what the latency protocol times."""

    def module(self, onnx: "Path | bytes", config: object, device: "str | torch.device",
               threads: Optional[int]) -> "nn.Module":
        """An ONNX model as a module (tensors in, logits out) for ``evaluate`` (exported runtimes)."""

    def quantize(self, onnx: bytes, batches: "list[np.ndarray]", workdir: Path) -> bytes:
        """``onnx`` post-training quantized to int8 for this runtime (where it has an int8 tool)."""


PRECISIONS = ("fp32", "int8")  # int8: post-training quantization (models/quantize.py)

# Capabilities as data, here, so that reading them imports no runtime package (nor torch)
CAPS: dict[str, Capabilities] = {
    "torch": Capabilities(exported=False, devices=("cpu", "cuda"), precisions=("fp32",), suffix=".safetensors"),
    "onnxruntime": Capabilities(exported=True, devices=("cpu", "cuda"), precisions=PRECISIONS,
                                int8_tool="onnxruntime.quantization.quantize_static (QDQ, u8 activations, s8 "
                                          "per-channel weights)"),
    "openvino": Capabilities(exported=True, devices=("cpu",), precisions=PRECISIONS,
                             int8_tool="nncf.quantize (ONNX backend, PERFORMANCE preset)"),
}


def _load(name: str) -> Runtime:
    """The implementation of runtime ``name``, imported on first use (runtimes/NAME.py)."""
    import importlib

    module = importlib.import_module(f"{__name__}.{name}")
    return module.RUNTIME


REGISTRY: dict[str, Callable[[], Runtime]] = {name: (lambda n=name: _load(n)) for name in CAPS}
NAMES = tuple(CAPS)  # torch, onnxruntime, openvino
AUTO = "auto"
BUILT_IN = (AUTO, *NAMES)  # the CLI's --runtime choices
_MADE: dict[str, Runtime] = {}


def register(name: str, caps: Capabilities, make: Callable[[], Runtime]) -> None:
    """Add a runtime to the registry (a deployment runtime of your own, or a test's fake):
    ``make()`` builds it on first use, ``caps`` says what it can do. Settings that name a runtime
    (a space's ``latency.runtime``, ``SearchConfig.runtime``) accept it from then on
    (:func:`known`); the CLI's ``--runtime`` choices stay the built-in ones. A plugin
    (plugins.py: ``HOVIT_NAS_PLUGINS``) calls this at import, in every process.

    Raises:
        HovitError: ``name`` is taken, or is ``auto``."""
    if name in CAPS or name == AUTO:
        raise HovitError(f"a latency runtime named {name!r} is already registered")
    CAPS[name], REGISTRY[name] = caps, make


def known() -> tuple[str, ...]:
    """Every runtime name a setting may use: ``auto`` and the registry's, read now (after the
    plugins of ``HOVIT_NAS_PLUGINS``, plugins.py, have registered theirs)."""
    plugins.load()
    return (AUTO, *CAPS)


def exported() -> tuple[str, ...]:
    """The runtimes that run the model exported to ONNX."""
    return tuple(n for n, c in CAPS.items() if c.exported)


def quantizable() -> tuple[str, ...]:
    """The runtimes with an int8 tool."""
    return tuple(n for n, c in CAPS.items() if c.int8_tool)


def get(name: str) -> Runtime:
    """The runtime registered as ``name`` (not checked for availability).

    Raises:
        HovitError: no runtime of that name."""
    plugins.load()
    if name not in REGISTRY:
        raise HovitError(f"unknown latency runtime {name!r}; one of {', '.join(known())}")
    if name not in _MADE:
        _MADE[name] = REGISTRY[name]()
    return _MADE[name]


def resolve(name: str, device: "str | torch.device") -> Runtime:
    """``name`` (or ``auto``: onnxruntime on the CPU, torch on a GPU) as a runtime that is
    installed and runs on ``device``'s type; checked before any training (whether this machine
    has that device is ``Runtime.supports``' and device.resolve_device's to say).

    Raises:
        HovitError: an unknown runtime, its package missing, or a device it cannot run on."""
    import torch

    dev = torch.device(device)
    if name == AUTO:
        name = "torch" if dev.type == "cuda" else "onnxruntime"
    rt = get(name)
    rt.require()
    if dev.type not in rt.caps.devices:
        where = "the CPU" if rt.caps.devices == ("cpu",) else " or ".join(rt.caps.devices)
        raise HovitError(f"the {rt.name} runtime runs on {where} here, not on {device}; use `device` "
                         f"{rt.caps.devices[0]}" + (", or `runtime` torch on a GPU" if dev.type == "cuda" else ""))
    return rt


def check_precision(precision: str, runtime: str, device: "str | torch.device") -> None:
    """A precision the runtime and device can run (int8: a quantizable runtime, on the CPU).

    Raises:
        HovitError: an unknown precision, or one the runtime or device cannot run."""
    import torch

    if precision not in PRECISIONS:
        raise HovitError(f"unknown precision {precision!r}; one of {', '.join(PRECISIONS)}")
    rt = get(runtime)
    rt.require()
    if precision not in rt.caps.precisions:
        raise HovitError(f"{precision} post-training quantization runs on {' or '.join(quantizable())}, not {runtime}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise HovitError(f"int8 post-training quantization is timed on the CPU here, not on {device}")
    if precision == "int8":
        rt.require_int8()

"""The one latency protocol behind every number the project reports.

eval mode, ``inference_mode``, a given batch and resolution, warm-up, then N timed runs;
median and IQR in ms. CUDA: events around each run, synchronised; optional CUDA-graph replay.
CPU: a fixed, recorded thread count. The device guard (device.py) keeps concurrent trials
from computing on the device while it is timed.

Anchoring: a shared VM's speed drifts by tens of percent for seconds at a time (see
results/bench/latency_repeatability.log), which no estimator over one window can remove. With an
``Anchor`` the candidate and a fixed reference model are timed in alternating blocks of ~30 ms
(after an untimed run that lets each model settle), and each candidate sample is reported as
``sample / median of the neighbouring reference block x the reference's latency calibrated once``:
drift hits both blocks alike and cancels, so measurements minutes or processes apart agree.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import platform
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch import nn

from . import runtimes
from .device import DeviceGuard

if TYPE_CHECKING:
    from .config import LatencyConfig
    from .target import DeploymentTarget


@dataclass
class Latency:
    median_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    runs: int
    warmup: int
    batch: int
    img_size: int
    device: str
    device_name: str
    threads: int
    cuda_graph: bool
    torch_version: str
    samples_ms: list = field(default_factory=list, repr=False)
    runtime: str = "torch"  # torch (eager) | onnxruntime | openvino
    runtime_version: Optional[str] = None  # onnxruntime's or OpenVINO's version (torch's is torch_version)
    precision: str = "fp32"  # fp32 | int8 (post-training quantized for the runtime: models/quantize.py)
    anchor: Optional[str] = None  # reference model timed alongside; then median_ms = ratio x anchor_ms
    anchor_ms: Optional[float] = None  # the reference's calibrated latency
    raw_median_ms: Optional[float] = None  # the candidate's own median in one window (drifts; not pooled)

    @property
    def ratio(self) -> Optional[float]:
        """Candidate / anchor, as anchored samples scale it."""
        return self.median_ms / self.anchor_ms if self.anchor_ms else None

    def to_dict(self, samples: bool = False) -> dict:
        d = {**asdict(self), "ratio": self.ratio}
        if not samples:
            d.pop("samples_ms")
        return d

    def merged(self, other: "Latency") -> "Latency":
        """Pool the samples of two measurements of the same model (bench rounds)."""
        return summarise(self.samples_ms + other.samples_ms, replace(self, raw_median_ms=None))


def summarise(times: list[float], like: "Latency") -> "Latency":
    t = np.asarray(times)
    q10, q25, q50, q75, q90 = np.percentile(t, [10, 25, 50, 75, 90])
    return replace(like, median_ms=float(q50), iqr_ms=float(q75 - q25), p10_ms=float(q10), p90_ms=float(q90),
                   runs=len(times), samples_ms=list(times))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@contextlib.contextmanager
def _threads(n: Optional[int]):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@dataclass
class Anchor:
    """A reference model timed alongside every measurement, with its latency calibrated once."""
    name: str
    model: nn.Module | bytes  # bytes: ONNX, for the exported runtimes
    ms: float


@dataclass
class Calibration:
    """A study's anchor as stored with it: which model (its config), its calibrated latency, and
    the device and thread count it was calibrated on (a resume must match them)."""
    name: str
    ms: float
    config: dict
    device: str
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(d["name"], float(d["ms"]), d.get("config") or {}, d["device"], int(d["threads"]))


EXPORTED = runtimes.exported()  # runtimes that run the model exported to ONNX


def resolve_runtime(runtime: str, device: str | torch.device) -> str:
    """``auto``: onnxruntime on the CPU (what CPU deployments run, and where eager PyTorch
    mis-ranks model families), PyTorch (CUDA events, optional graphs) on a GPU; any runtime is
    checked here, before any training: installed, and able to run on ``device``
    (runtimes.resolve).

    Raises:
        HovitError: an unknown runtime, its package missing, or a device it cannot run on."""
    return runtimes.resolve(runtime, device).name


_SESSIONS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
_ONNX_SESSIONS: dict[str, dict] = {}  # ONNX bytes by sha256: the last few (a service's anchor and candidate)
_ONNX_KEPT = 4


def _runner(model: nn.Module | bytes, x: torch.Tensor, threads: int, dev: torch.device, rt: "runtimes.Runtime",
            precision: str = "fp32"):
    """A zero-argument call of ``model`` on ``rt``: the module itself on torch; on an exported
    runtime, ``model`` exported to ONNX and compiled (cached per model, so the study's anchor is
    exported once per process). At ``int8`` the ONNX model is first quantized for the runtime
    with a few random images: the latency depends on the graph, not on the scales
    (models/quantize.py)."""
    if not rt.caps.exported:
        return rt.run(rt.compile(model, threads, dev), x)
    from .models.onnx import onnx_bytes

    key = (rt.name, precision, tuple(x.shape[1:]), threads, str(dev))
    if isinstance(model, bytes):  # already ONNX (the latency service's uploads): one entry per file
        cache = _ONNX_SESSIONS.setdefault(hashlib.sha256(model).hexdigest(), {})
        while len(_ONNX_SESSIONS) > _ONNX_KEPT:
            _ONNX_SESSIONS.pop(next(iter(_ONNX_SESSIONS)))
    else:
        cache = _SESSIONS.setdefault(model, {})
    if key not in cache:
        data = model if isinstance(model, bytes) else onnx_bytes(model, x.shape[-1], x.shape[1])
        load = contextlib.nullcontext()
        if precision == "int8":
            from .models import quantize

            data = quantize.quantize(data, quantize.random_calibration(tuple(x.shape[1:])), rt.name)
            load = quantize.loading(rt.name)  # this architecture's int8 graph: that trial fails
        with load:
            cache[key] = rt.compile(data, threads, dev)
    return rt.run(cache[key], x.cpu().numpy())


def runtime_version(runtime: str) -> Optional[str]:
    """The version of a runtime's package (None for torch: see ``torch_version``)."""
    return runtimes.get(runtime).version()


@dataclass(frozen=True)
class Protocol:
    """How one measurement times (the target says where): untimed warm-up runs, at least
    ``runs`` timed runs and at least ``min_time_s`` seconds of them, CUDA-graph replay on a GPU."""

    runs: int = 30
    warmup: int = 10
    min_time_s: float = 1.0
    cuda_graph: bool = False

    @classmethod
    def of(cls, lat: "LatencyConfig", min_time_s: Optional[float] = None) -> "Protocol":
        """A space's or study's latency settings (config.LatencyConfig)."""
        return cls(lat.runs, lat.warmup, lat.min_time_s if min_time_s is None else min_time_s)


def measure(model: nn.Module | bytes, target: "DeploymentTarget", protocol: Protocol = Protocol(), *,
            anchor: Optional[Anchor] = None, guard: Optional[DeviceGuard] = None, in_chans: int = 3,
            device: Optional[str | torch.device] = None) -> Latency:
    """``model`` timed on deployment ``target`` (target.DeploymentTarget: device, runtime,
    precision, threads, batch, resolution) with ``protocol``; ``anchor``: timed alternately
    with this reference (module docstring). ``device``: the exact device (``cuda:1``) where the
    target names only its type.

    Raises:
        HovitError: the runtime is not installed or cannot run on the device, or the precision
            is not available there; QuantizationError: an int8 graph failed for this architecture."""
    return measure_latency(model, target.img_size, batch=target.batch, device=device or target.device,
                           warmup=protocol.warmup, runs=protocol.runs, threads=target.threads,
                           cuda_graph=protocol.cuda_graph, in_chans=in_chans, guard=guard,
                           min_time_s=protocol.min_time_s, anchor=anchor, runtime=target.runtime,
                           precision=target.precision)


@torch.inference_mode()
def measure_latency(model: nn.Module | bytes, img_size: int, batch: int = 1, device: str | torch.device = "cpu",
                    warmup: int = 10, runs: int = 50, threads: Optional[int] = None,
                    cuda_graph: bool = False, in_chans: int = 3, guard: Optional[DeviceGuard] = None,
                    min_time_s: float = 1.0, anchor: Optional[Anchor] = None, runtime: str = "torch",
                    precision: str = "fp32") -> Latency:
    """Median/IQR over ``runs`` timed forwards -- more for fast models, until at least
    ``min_time_s`` is timed: a few ms of timing cannot average out a shared machine's noise.
    With ``anchor``, candidate and reference are timed in alternating short blocks (module docstring).
    ``guard`` (default: this device's) is held exclusively while timing. ``runtime`` is where the
    model runs: ``torch`` (eager), ``onnxruntime`` (the model exported to ONNX, all graph
    optimisations) or ``openvino`` (the same ONNX compiled by OpenVINO for the CPU, latency hint,
    f32: runtimes/openvino.py), each at the same thread count; the anchor runs on the same runtime.
    ``precision`` ``int8``: on onnxruntime or openvino, the model post-training quantized for that
    runtime (models/quantize.py), the anchor too. On those two runtimes ``model`` (and the
    anchor's) may also be ONNX bytes (input ``images``), as the latency service receives it.

    Raises:
        HovitError: the runtime is not installed (openvino is optional) or cannot run on ``device``;
            the precision is not available there, or quantization failed."""
    dev = torch.device(device)
    rt = runtimes.get(runtime)
    models = [m if isinstance(m, bytes) else m.eval().to(dev)  # ONNX bytes stay as they are
              for m in [model] + ([anchor.model] if anchor else [])]
    if any(isinstance(m, bytes) for m in models) and not rt.caps.exported:
        from .errors import HovitError

        raise HovitError(f"an ONNX model is timed on {' or '.join(EXPORTED)}, not {runtime}")
    x = torch.randn(batch, in_chans, img_size, img_size, device=dev)
    guard = guard or DeviceGuard.of(dev)
    runtimes.check_precision(precision, runtime, dev)
    if rt.caps.exported:
        n = threads or torch.get_num_threads()
        with guard.shared():  # exporting is compute; the timing below is exclusive
            fns = [_runner(m, x, n, dev, rt, precision) for m in models]
        with guard.exclusive():
            times = _time_host(fns, warmup, runs, min_time_s)
        n_threads, cuda_graph = n, False
    else:
        with guard.exclusive(), _threads(threads) as n_threads:
            if dev.type == "cuda":
                times = _time_cuda(models, x, warmup, runs, cuda_graph, min_time_s)
            else:
                cuda_graph = False
                times = _time_host([_runner(m, x, n_threads, dev, rt) for m in models], warmup, runs, min_time_s)
    like = Latency(0.0, 0.0, 0.0, 0.0, 0, warmup, batch, img_size, str(dev), device_name(dev), n_threads,
                   cuda_graph, torch.__version__, runtime=runtime, runtime_version=runtime_version(runtime),
                   precision=precision)
    if anchor is None:
        return summarise(times[0][0], like)
    # each candidate sample scaled by its neighbouring anchor block: drift between blocks cancels
    scaled = [c * anchor.ms / float(np.median(ref)) for cand, ref in zip(*times) for c in cand]
    raw = [c for cand in times[0] for c in cand]
    return summarise(scaled, replace(like, anchor=anchor.name, anchor_ms=anchor.ms, raw_median_ms=float(np.median(raw))))


def target_for(img_size: int, device: str | torch.device = "cpu", threads: Optional[int] = None,
               runtime: str = "auto", precision: str = "fp32", batch: int = 1) -> "DeploymentTarget":
    """The deployment target of a measurement made here: ``runtime`` resolved (``auto``:
    runtimes.resolve), ``threads`` or torch's current thread count on the CPU."""
    from .target import DeploymentTarget

    rt = runtimes.resolve(runtime, device)
    runtimes.check_precision(precision, rt.name, device)
    return DeploymentTarget.of(str(device), rt.name, threads or torch.get_num_threads(), batch, img_size, precision)


def calibrate_on(name: str, model: nn.Module, target: "DeploymentTarget", seconds: float = 3.0,
                 protocol: Protocol = Protocol(), device: Optional[str | torch.device] = None,
                 in_chans: int = 3) -> Anchor:
    """``calibrate`` on a deployment target: the reference's own latency over ``seconds``."""
    p = Protocol(protocol.runs, protocol.warmup, seconds, protocol.cuda_graph)
    return Anchor(name, model, measure(model, target, p, device=device, in_chans=in_chans).median_ms)


def calibrate(name: str, model: nn.Module, img_size: int, seconds: float = 3.0, **kwargs) -> Anchor:
    """The reference's own latency over a longer window: the one absolute figure anchored
    measurements scale by (so they are "ms at calibration time")."""
    return Anchor(name, model, measure_latency(model, img_size, min_time_s=seconds, **kwargs).median_ms)


BLOCK_S = 0.03  # anchored blocks last about this long: far shorter than the machine's drift phases
SETTLE = 1  # untimed runs after each switch of model: a model runs slow right after another one


def _blocks(fns: list, timed, runs: int, min_time_s: float) -> list[list[list[float]]]:
    """Samples per model, per block. Alone: one block of >= ``runs`` and >= ``min_time_s``.
    With an anchor: blocks alternate (candidate, anchor, candidate, ...), each model's block
    about ``BLOCK_S`` long (at least 4 runs of it), until the candidate has >= ``runs`` samples
    and >= ``min_time_s`` of them. Each model's block length is its own: a candidate 10x faster
    than the anchor no longer makes every anchor block 10x longer than ``BLOCK_S``."""
    if len(fns) == 1:
        out: list[float] = []
        while len(out) < runs or sum(out) < min_time_s * 1e3:
            out.append(timed(fns[0]))
        return [[out]]
    ks = [max(4, math.ceil(BLOCK_S * 1e3 / max(timed(f), 1e-3))) for f in fns]
    blocks: list[list] = [[] for _ in fns]
    n, total = 0, 0.0
    while n < runs or total < min_time_s * 1e3:
        for f, out, k in zip(fns, blocks, ks):
            for _ in range(SETTLE):
                f()
            out.append([timed(f) for _ in range(k)])
        n, total = n + ks[0], total + sum(blocks[0][-1])
    return blocks


def _time_host(fns: list, warmup: int, runs: int, min_time_s: float) -> list:
    """Wall-clock timing of calls that return when their work is done (CPU, onnxruntime)."""
    for _ in range(warmup):
        for f in fns:
            f()

    def timed(f) -> float:
        t0 = time.perf_counter()
        f()
        return (time.perf_counter() - t0) * 1e3

    return _blocks(fns, timed, runs, min_time_s)


def _time_cuda(models: list[nn.Module], x: torch.Tensor, warmup: int, runs: int, cuda_graph: bool,
               min_time_s: float) -> list:
    stream = torch.cuda.Stream(x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 3)):
            for m in models:
                m(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    fns = [lambda m=m: m(x) for m in models]
    if cuda_graph:
        fns = []
        for m in models:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                m(x)
            fns.append(graph.replay)
        for _ in range(3):
            for f in fns:
                f()
    torch.cuda.synchronize(x.device)

    def timed(f) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        f()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)

    return _blocks(fns, timed, runs, min_time_s)

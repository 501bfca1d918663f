"""The one latency protocol behind every number the project reports.

eval mode, ``inference_mode``, a given batch and resolution, warm-up, then N timed runs;
median and IQR in ms. CUDA: events around each run, synchronised; optional CUDA-graph replay.
CPU: a fixed, recorded thread count. The device lock (locks.py) keeps concurrent trials
from computing on the device while it is timed.
"""
from __future__ import annotations

import contextlib
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Optional

import numpy as np
import torch
from torch import nn

from .locks import exclusive_device


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

    def to_dict(self, samples: bool = False) -> dict:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d

    def merged(self, other: "Latency") -> "Latency":
        """Pool the samples of two measurements of the same model (bench rounds)."""
        return summarise(self.samples_ms + other.samples_ms, self)


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


def resolve_device(device: Optional[str] = None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        from .errors import HovitError
        raise HovitError(f"device {device!r} requested but CUDA is not available")
    return d


@contextlib.contextmanager
def _threads(n: Optional[int]):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


@torch.inference_mode()
def measure_latency(model: nn.Module, img_size: int, batch: int = 1, device: str | torch.device = "cpu",
                    warmup: int = 10, runs: int = 50, threads: Optional[int] = None,
                    cuda_graph: bool = False, in_chans: int = 3, lock: bool = True,
                    min_time_s: float = 1.0) -> Latency:
    """Median/IQR over ``runs`` timed forwards -- more for fast models, so that at least
    ``min_time_s`` is timed: a few ms of timing cannot average out a shared machine's noise."""
    dev = torch.device(device)
    model = model.eval().to(dev)
    x = torch.randn(batch, in_chans, img_size, img_size, device=dev)
    guard = exclusive_device(str(dev)) if lock else contextlib.nullcontext()
    with guard, _threads(threads) as n_threads:
        if dev.type == "cuda":
            times = _time_cuda(model, x, warmup, runs, cuda_graph, min_time_s)
        else:
            cuda_graph = False
            for _ in range(warmup):
                model(x)
            t0 = time.perf_counter()
            model(x)
            runs = max(runs, math.ceil(min_time_s / max(time.perf_counter() - t0, 1e-6)))
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    like = Latency(0.0, 0.0, 0.0, 0.0, len(times), warmup, batch, img_size, str(dev), device_name(dev), n_threads,
                   cuda_graph, torch.__version__)
    return summarise(times, like)


def _time_cuda(model: nn.Module, x: torch.Tensor, warmup: int, runs: int, cuda_graph: bool,
               min_time_s: float) -> list[float]:
    stream = torch.cuda.Stream(x.device)
    stream.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(stream):
        for _ in range(max(warmup, 3)):
            model(x)
    torch.cuda.current_stream(x.device).wait_stream(stream)
    run = lambda: model(x)  # noqa: E731
    if cuda_graph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        run = graph.replay
        for _ in range(3):
            run()
    torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    run()
    torch.cuda.synchronize(x.device)
    runs = max(runs, math.ceil(min_time_s / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times

"""The latency service: time exported models on the machine that will run them.

A search runs where the GPUs are; the deployment is a hospital workstation's CPU or an edge box.
``hovit-nas latency-serve`` runs on that machine with one deployment target (runtime, precision,
threads, batch; the CPU), and a search anywhere sends it each candidate's exported ONNX model
(``--latency-at URL``, remote.py). It measures one model at a time with the project's protocol
(latency.py), anchored to its own HoViT-B at the model's resolution, and returns the latency
record with the machine's identity.

Built on FastAPI and uvicorn (``pip install 'hovit-nas[serve]'``): a small HTTP API reaches a
machine that is not part of the search's Ray cluster, from the local and the Ray executor alike.
(A Ray actor placed by a custom node resource would need the deployment machine to join the
cluster; the client side, remote.LatencyService, is the one seam to swap for it.)

Safety:

- a bearer token (``HOVIT_NAS_LATENCY_TOKEN`` on both sides), compared in constant time, never
  printed, logged or stored in a study;
- an upload limit (``max_upload_mb``; 413 above it, read no further);
- a bounded queue: at most ``queue`` requests wait for the one measurement slot, each at most
  ``queue_timeout_s`` (503 otherwise);
- it listens on 127.0.0.1 unless ``host`` says otherwise;
- results are cached by the SHA-256 of the model file and the protocol, so a retried or
  repeated request costs no measurement.
"""

import hashlib
import hmac
import json
import logging
import os
import platform
import socket
import threading
from dataclasses import dataclass
from typing import Optional

import torch

from . import faults
from .config import PRECISIONS
from .errors import ConfigError, HovitError, QuantizationError, first_line

_log = logging.getLogger(__name__)

TOKEN_ENV = "HOVIT_NAS_LATENCY_TOKEN"
API = "/v1"
INSTALL = "pip install 'hovit-nas[serve]'"


@dataclass(frozen=True)
class ServiceConfig:
    """One latency service: its deployment target and its limits.

    Attributes:
        runtime: ``onnxruntime`` or ``openvino`` (the exported runtimes; the CPU).
        precision: ``fp32`` or ``int8`` (quantized on arrival, as a local search does).
        threads: CPU threads per measurement.
        batch: images per timed forward.
        host, port: where it listens (127.0.0.1 unless told otherwise).
        max_upload_mb: the largest model file accepted, in MiB.
        queue: requests that may wait for the one measurement slot.
        queue_timeout_s: how long one may wait, in seconds.
        anchor_time_s: the anchor's calibration window per resolution, in seconds.
    """
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int = 1
    batch: int = 1
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_mb: float = 256.0
    queue: int = 8
    queue_timeout_s: float = 600.0
    anchor_time_s: float = 3.0

    def validate(self) -> "ServiceConfig":
        from . import runtimes

        if self.runtime not in runtimes.exported():
            raise ConfigError(f"`runtime`: the latency service times ONNX models on {' or '.join(runtimes.exported())}, "
                              f"not {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"`precision`: unknown {self.precision!r}; one of {', '.join(PRECISIONS)}")
        for name in ("threads", "batch", "queue"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be >= 1, got {getattr(self, name)}")
        for name in ("max_upload_mb", "queue_timeout_s", "anchor_time_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be > 0, got {getattr(self, name)}")
        return self


def machine_identity(cfg: ServiceConfig) -> dict:
    """Who measures: host, CPU model, cores, OS, runtime and its version, the target, and ``id``
    (a hash of host, CPU, cores and OS) that a study records and a resume must match."""
    from .latency import device_name, runtime_version

    machine = {"hostname": socket.gethostname(), "cpu": device_name(torch.device("cpu")),
               "cores": os.cpu_count(), "platform": platform.platform()}
    ident = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": ident, **machine, "runtime": cfg.runtime, "runtime_version": runtime_version(cfg.runtime),
            "precision": cfg.precision, "threads": cfg.threads, "batch": cfg.batch}


class _Slot:
    """One measurement at a time, at most ``queue`` waiting, each at most ``timeout`` seconds."""

    def __init__(self, queue: int, timeout: float):
        self.lock, self.count, self.queue, self.timeout = threading.Lock(), threading.Lock(), queue, timeout
        self.waiting = 0

    def __enter__(self):
        with self.count:
            if self.waiting >= self.queue:
                raise _Busy(f"queue full ({self.queue} waiting)")
            self.waiting += 1
        try:
            if not self.lock.acquire(timeout=self.timeout):
                raise _Busy(f"waited {self.timeout:g} s for the measurement slot")
        finally:
            with self.count:
                self.waiting -= 1
        return self

    def __exit__(self, *exc):
        self.lock.release()


class _Busy(Exception):
    pass


class Measurer:
    """The service's work, without HTTP: anchors per resolution, the cache, one slot."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self.identity = machine_identity(cfg)
        self.slot = _Slot(cfg.queue, cfg.queue_timeout_s)
        self.cache: dict[str, dict] = {}
        self.anchors: dict[tuple, object] = {}

    def target(self, img_size: int):
        """This service's deployment target at ``img_size``."""
        from .target import DeploymentTarget

        return DeploymentTarget.of("cpu", self.cfg.runtime, self.cfg.threads, self.cfg.batch, img_size,
                                   self.cfg.precision)

    def _anchor(self, img_size: int, in_chans: int, num_classes: int, protocol):
        from .latency import calibrate_on
        from .models import create_hovit, export, hovit_b

        key = (img_size, in_chans, num_classes)
        if key not in self.anchors:
            cfg = hovit_b(img_size=img_size, num_classes=num_classes)
            cfg.model.in_chans = in_chans
            model = export(create_hovit(cfg))
            self.anchors[key] = calibrate_on("hovit_b", model, self.target(img_size), self.cfg.anchor_time_s, protocol,
                                             in_chans=in_chans)
            _log.info(f"anchor hovit_b at {img_size} px: {self.anchors[key].ms:.3f} ms")
        return self.anchors[key]

    def measure(self, model: bytes, img_size: int, in_chans: int = 3, num_classes: int = 2, runs: int = 30,
                warmup: int = 10, min_time_s: float = 1.0) -> dict:
        """The latency record of ``model`` (ONNX bytes) on this service's target, anchored; with
        ``machine`` (the identity), ``model_sha256`` and ``cached``.

        Raises:
            HovitError: the model cannot be read or run (one line); _Busy: no slot in time."""
        from .latency import Protocol, measure

        sha = hashlib.sha256(model).hexdigest()
        key = json.dumps([sha, img_size, in_chans, num_classes, runs, warmup, min_time_s])
        if key in self.cache:
            return {**self.cache[key], "cached": True}
        protocol = Protocol(runs, warmup, min_time_s)
        with self.slot:
            faults.reached("latency")
            anchor = self._anchor(img_size, in_chans, num_classes, protocol)
            try:
                lat = measure(model, self.target(img_size), protocol, anchor=anchor, in_chans=in_chans)
            except HovitError:  # QuantizationError included
                raise
            except Exception as exc:  # onnxruntime / OpenVINO on a file that is not what it claims
                raise HovitError(f"the uploaded model could not be run: {type(exc).__name__}: "
                                 f"{first_line(exc)}") from None
        rec = {**lat.to_dict(), "machine": self.identity, "model_sha256": sha}
        self.cache[key] = rec
        return {**rec, "cached": False}


def create_app(cfg: ServiceConfig, token: str):
    """The FastAPI application: ``GET /v1/identity`` and ``POST /v1/latency`` (the ONNX file as
    the body; ``img_size``, ``in_chans``, ``num_classes``, ``runs``, ``warmup``, ``min_time_s``
    as query parameters). Every request needs ``Authorization: Bearer TOKEN``.

    Raises:
        HovitError: FastAPI is not installed (one line, with the install command)."""
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.concurrency import run_in_threadpool
    except ImportError:
        raise HovitError(f"the latency service needs FastAPI and uvicorn, which are not installed: {INSTALL}") \
            from None
    if not token:
        raise HovitError(f"the latency service needs a token: set {TOKEN_ENV} (the same on the searching side)")
    cfg.validate()
    work = Measurer(cfg)
    app = FastAPI(title="hovit-nas latency service", docs_url=None, redoc_url=None, openapi_url=None)
    limit = int(cfg.max_upload_mb * 2 ** 20)

    def authorise(request: Request) -> None:
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "wrong or missing token")

    @app.get(f"{API}/identity")
    def identity(request: Request) -> dict:
        authorise(request)
        return work.identity

    @app.post(f"{API}/latency")
    async def latency(request: Request, img_size: int, in_chans: int = 3, num_classes: int = 2, runs: int = 30,
                      warmup: int = 10, min_time_s: float = 1.0) -> dict:
        authorise(request)
        if int(request.headers.get("content-length") or 0) > limit:
            raise HTTPException(413, f"model file over the service's limit of {cfg.max_upload_mb:g} MiB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HTTPException(413, f"model file over the service's limit of {cfg.max_upload_mb:g} MiB")
        if not (8 <= img_size <= 4096 and 1 <= in_chans <= 16 and 1 <= runs <= 10_000 and 0 < min_time_s <= 60):
            raise HTTPException(422, "img_size, in_chans, runs or min_time_s out of range")
        try:
            return await run_in_threadpool(work.measure, bytes(body), img_size, in_chans, num_classes, runs,
                                           warmup, min_time_s)
        except _Busy as exc:
            raise HTTPException(503, f"busy: {exc}") from None
        except QuantizationError as exc:  # this architecture on this target: the trial fails, the search goes on
            raise HTTPException(409, str(exc)) from None
        except HovitError as exc:  # not a model this service can read
            raise HTTPException(422, str(exc)) from None

    return app


def client_address(cfg: ServiceConfig) -> str:
    """The address a search passes as ``--latency-at``: ``http://HOST:PORT``, the API prefix left
    to the client (remote.py adds it); this machine's name when the service listens on every
    address (``0.0.0.0``, ``::``), IPv6 literals in brackets."""
    host = socket.gethostname() if cfg.host in ("0.0.0.0", "::", "") else cfg.host
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.port}"


def serve(cfg: ServiceConfig, token: Optional[str] = None) -> None:
    """Run the service until interrupted (uvicorn, one worker: measurements never overlap).

    Raises:
        HovitError: FastAPI/uvicorn missing, no token, or a bad setting."""
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    app = create_app(cfg, token)
    import uvicorn

    ident = machine_identity(cfg)
    addr = client_address(cfg)
    _log.info(f"latency service on {addr} (search with --latency-at {addr}): {cfg.runtime} {cfg.precision}, "
              f"{cfg.threads} thread(s), batch {cfg.batch}, on {ident['cpu']} ({ident['hostname']}, id {ident['id']})")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", workers=1)

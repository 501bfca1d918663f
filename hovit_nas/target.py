"""The deployment target: the conditions a study's latency objective is measured under.

The CPU or GPU, the runtime (PyTorch eager, ONNX Runtime, OpenVINO), the precision, the thread
count, the batch and the resolution each change which architecture is fastest (issue 22:
HoViT-B / EfficientNet-B0 is 0.72 on torch eager and ~1.0 on ONNX Runtime on the same CPU; a
pick made at 64 px is no faster than HoViT-B at 224 px). So a study records them as one thing,
names it wherever a latency is shown (``pareto``'s axis, ``pin``'s ``best.yaml``, the dashboard's
study attributes), and refuses to resume under another one: latencies measured under two
targets do not belong on one front.

The settings come from where they always did: ``device`` (CLI), the space's ``latency`` block
(``runtime``, ``batch``, ``threads``; ``--runtime`` and ``--latency-batch`` override) and the
space's ``base.model.img_size``; ``precision`` from the space's ``latency.precision`` or
``--precision`` (``int8``: post-training quantized for the runtime, models/quantize.py). The
defaults are unchanged: ``auto`` runtime, batch 1, fp32.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Optional

import optuna

from .errors import HovitError

_log = logging.getLogger(__name__)

TARGET_ATTR = "deployment_target"  # the study user attr: DeploymentTarget.to_dict()


@dataclass(frozen=True)
class DeploymentTarget:
    """Where and how the deployed model is timed.

    Attributes:
        device: ``cpu`` or ``cuda`` (the device type; which GPU is not part of it).
        runtime: ``torch``, ``onnxruntime``, ``openvino`` or a registered one (runtimes.CAPS).
        precision: ``fp32`` or ``int8`` (config.PRECISIONS).
        threads: CPU threads the runtime uses; None on a GPU, where they do not set the latency.
        batch: images per timed forward.
        img_size: input resolution in pixels (square).
        machine: the latency service's machine id when one times the study (remote.py), else None.
    """
    device: str
    runtime: str
    precision: str
    threads: Optional[int]
    batch: int
    img_size: int
    machine: Optional[str] = None  # a latency service's machine id (service.machine_identity); None: local

    @property
    def name(self) -> str:
        """A short label, e.g. ``cpu/onnxruntime/fp32, 1 thread, batch 1, 64 px`` (``, on machine
        ID`` when a latency service times it)."""
        threads = "" if self.threads is None else f", {self.threads} thread{'s' if self.threads != 1 else ''}"
        on = f", on machine {self.machine}" if self.machine else ""
        return f"{self.device}/{self.runtime}/{self.precision}{threads}, batch {self.batch}, {self.img_size} px{on}"

    def to_dict(self) -> dict:
        """Its fields and ``name``; ``machine`` only when a latency service times it (a local
        target's record is what it was before services existed)."""
        d = {**asdict(self), "name": self.name}
        if self.machine is None:
            del d["machine"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DeploymentTarget":
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

    @classmethod
    def of(cls, device: str, runtime: str, threads: int, batch: int, img_size: int,
           precision: str = "fp32", machine: Optional[str] = None) -> "DeploymentTarget":
        """The target of trials timed on ``device`` (``cpu``, ``cuda`` or ``cuda:N``), here or on
        a latency service's ``machine``."""
        kind = str(device).split(":")[0]
        return cls(kind, runtime, precision, int(threads) if kind == "cpu" else None, int(batch), int(img_size),
                   machine)


def recorded(study: optuna.Study, attrs: Optional[dict] = None) -> Optional[DeploymentTarget]:
    """The target a study recorded; None for a study made before targets were recorded.
    ``attrs``: the study's user attrs when the caller has read them already (each read is a
    storage query)."""
    d = (study.user_attrs if attrs is None else attrs).get(TARGET_ATTR)
    return DeploymentTarget.from_dict(d) if d else None


def label(study: optuna.Study) -> str:
    """The study's target name, or for an older study what its attributes say (runtime, batch)."""
    a = study.user_attrs
    t = recorded(study, a)
    if t is not None:
        return t.name
    return f"{a.get('latency_runtime', 'torch')}, batch {a.get('latency_batch', 1)}, {a.get('img_size', '?')} px"


def ensure(study: optuna.Study, target: DeploymentTarget) -> None:
    """Record ``target`` with a study that has none; refuse one that recorded another.

    Raises:
        HovitError: the study was created for another deployment target (one line naming both
            and what differs).
    """
    have = recorded(study)
    if have is None:
        study.set_user_attr(TARGET_ATTR, target.to_dict())
        _log.info(f"deployment target: {target.name}")
        return
    if have != target:
        diff = ", ".join(f"{f.name} {getattr(have, f.name)} -> {getattr(target, f.name)}" for f in fields(target)
                         if getattr(have, f.name) != getattr(target, f.name))
        raise HovitError(f"study {study.study_name!r} was created for deployment target {have.name}, not "
                         f"{target.name} ({diff}); run it the same way or use `study` NEW_NAME")

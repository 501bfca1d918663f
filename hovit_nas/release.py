"""From a pinned config to a deployable file (``hovit-nas deploy``, issue 30): retrain, export for
the study's deployment target, eval that file, time it, and check both against the study.

The steps are ``train`` (trial.train_run), ``export`` (deploy.py: safetensors, ONNX, int8) and
``eval`` (deploy.evaluate_exported), as ``pin`` also prints them one by one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from . import runtimes
from .config import CALIBRATION_IMAGES
from .data import Splits
from .deploy import Evaluation, evaluate_exported, export_int8, exported_run, save_model
from .device import resolve_device
from .errors import HovitError

if TYPE_CHECKING:
    from .config import DataOptions
    from .target import DeploymentTarget


def pinned_target(doc: dict) -> Optional["DeploymentTarget"]:
    """The deployment target a pinned ``best.yaml`` (``doc``) was chosen on: its ``target``
    record, or for an older file the pinned trial's latency record; None when neither says.
    A latency service's target is timed here with the same runtime settings (its machine left out)."""
    from .target import DeploymentTarget

    t = doc.get("target")
    if isinstance(t, dict) and t.get("runtime"):
        return DeploymentTarget.from_dict({**t, "machine": None})
    lat = doc.get("latency") or {}
    if lat.get("runtime") and lat.get("img_size"):
        return DeploymentTarget.of(lat.get("device", "cpu"), lat["runtime"], lat.get("threads") or 1,
                                   lat.get("batch", 1), lat["img_size"], lat.get("precision", "fp32"))
    return None


@dataclass
class Deployment:
    """What ``hovit-nas deploy`` made and measured."""

    run_dir: Path
    model_file: Path  # the deployable file, for the target's runtime and precision
    target: str  # its name
    val: dict  # the deployable file's metrics on the study's splits
    test: dict
    latency: dict  # its latency record on the target
    checks: list[dict]  # each: what, study's figure, deployed figure, difference, noise, verdict
    classes: list

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return {**asdict(self), "run_dir": str(self.run_dir), "model_file": str(self.model_file)}


def deploy(best: str | Path, data: Optional[str], options: "DataOptions", *, study=None, out: Optional[str] = None,
           device: str = "auto", threads: Optional[int] = None) -> Deployment:
    """``hovit-nas deploy``: the pinned config at ``best`` retrained (as ``train`` would, on the
    study's data and split), exported for the study's deployment target (``.safetensors`` for
    torch; ``.onnx`` for an exported runtime; int8 quantized for its runtime), evaluated from
    that file on the same splits, and timed on the target -- anchored to the study's calibration
    when it has one, so the figures compare. Each figure is checked against what the study
    recorded for the pinned trial: accuracy paired on the same images where the trial stored
    per-image scores (else from each figure's binomial SE), with the study's seed SD; latency
    against the study's measured spread between measurements (noise.py). ``study``: the Optuna
    study (for its anchor, noise and the trial's scores); None checks against ``best`` alone.

    Raises:
        HovitError: ``best`` is not a pinned config, the data is bad, or the target cannot run here."""
    import yaml

    from .config import load_run_config
    from .latency import Protocol, measure
    from .trial import anchor_for, train_run

    best = Path(best)
    try:
        doc = yaml.safe_load(best.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise HovitError(f"{best}: not a readable pinned config ({type(exc).__name__})") from None
    if not isinstance(doc, dict) or "config" not in doc:
        raise HovitError(f"{best}: not a pinned config (written by `hovit-nas pin`)")
    cfg = load_run_config(best)
    target = pinned_target(doc)
    dev = resolve_device(device)
    if target is not None and target.device == "cuda" and dev.type != "cuda":
        raise HovitError(f"{best} was chosen on {target.name}; this machine has no GPU: deploy it on one")
    run_target = target if target is not None else None
    dest = Path(out or Path("runs") / cfg.name)
    r, splits, dest = train_run(cfg, data, options, device=str(dev), threads=threads, out_dir=dest,
                                target=_fp32(run_target))
    run = exported_run(dest)
    runtime = run_target.runtime if run_target is not None else "torch"
    if run_target is not None and run_target.precision == "int8":
        q = doc.get("quantization") or {}
        file, q8, _ = export_int8(dest, data, options, runtime, int(q.get("calibration_images", CALIBRATION_IMAGES)))
    else:
        suffix = runtimes.get(runtime).caps.suffix
        file = dest / f"model{suffix}"
        if suffix == ".onnx":
            save_model(run, "onnx", file)
    ev = evaluate_exported(file, data, options, str(dev) if not runtimes.get(runtime).caps.exported else "cpu",
                           runtime if runtimes.get(runtime).caps.exported else None)
    anchor = None
    rec_attrs = study.user_attrs if study is not None else {}
    if rec_attrs.get("latency_anchor") and rec_attrs.get("latency_at") is None:
        from .latency import Calibration

        anchor = anchor_for(Calibration.from_dict(rec_attrs["latency_anchor"]))
    from .target import DeploymentTarget

    timed_on = run_target or DeploymentTarget.of(str(dev), "torch", threads or 1, 1, cfg.model.img_size)
    model = file.read_bytes() if file.suffix == ".onnx" else run.model
    lat = measure(model, timed_on, Protocol(), anchor=anchor, in_chans=cfg.model.in_chans,
                  device=dev if timed_on.device != "cpu" else "cpu")
    checks = _checks(doc, study, ev, lat.to_dict(), splits)
    return Deployment(dest, file, timed_on.name, ev.metrics["val"], ev.metrics["test"],
                      {**lat.to_dict(), "target": timed_on.name}, checks, ev.classes)


def _fp32(target):
    """The target a run is timed on by ``train`` before its deployment file exists: the pinned
    target at fp32 (an int8 model is timed after quantization)."""
    if target is None or target.precision == "fp32":
        return target
    from dataclasses import replace

    return replace(target, precision="fp32")


def _checks(doc: dict, study, ev: "Evaluation", lat: dict, splits: Splits) -> list[dict]:
    """The deployed file's figures against the pinned trial's, each with its noise and a verdict."""
    from . import noise as noise_mod
    from . import stats
    from .record import StudyRecord, TrialRecord, trials

    metric = (list(doc.get("objectives") or {}) or ["val_top1"])[0].removeprefix("val_")
    out = []
    rec = StudyRecord.read(study) if study is not None else None
    nz = noise_mod.measure(rec, trials(study)) if study is not None else None
    pinned = TrialRecord.of(study.trials[doc["trial"]]) if study is not None else None
    want = doc["objectives"].get(f"val_{metric}")
    got = stats.objective(ev.metrics["val"], metric)
    se, how = None, "binomial, unpaired"
    p_pinned = pinned.probs("val") if pinned is not None else None
    if p_pinned is not None and nz is not None and nz.labels is not None and len(nz.labels) == len(splits.val):
        terms = stats.per_image(metric, nz.labels, p_pinned)
        if terms is not None:  # the deployed file's own per-image terms on the same images
            mine = stats.per_image(metric, np.asarray(splits.val.labels), _probs_of(ev))
            if mine is not None:
                d = mine - terms
                se, how = float(d.std(ddof=1) / math.sqrt(len(d))), "paired on the same images"
    if se is None:
        n = int(ev.metrics["val"].get("n") or 1)
        se = math.sqrt(2 * max(want * (1 - want), 1e-9) / n) if 0 <= want <= 1 else 0.0
    sd = nz.seed_sd if nz is not None and nz.seed_sd is not None else 0.0
    tol = stats.Z95 * math.sqrt(se ** 2 + sd ** 2)
    out.append({"what": f"val {metric}", "study": want, "deployed": got, "difference": got - want,
                "noise_95": tol, "how": how + (f", seed SD {sd:.4f}" if sd else ", seed noise not measured"),
                "verdict": "within noise" if abs(got - want) <= tol else "BEYOND NOISE"})
    want_ms = doc["objectives"].get("latency_ms")
    if want_ms:
        cv = max(nz.latency_cv or 0.0, stats.latency_cv_within(lat)) if nz is not None else stats.latency_cv_within(lat)
        cv = cv or 0.1  # no measured spread: 10 %, the CV of one ONNX Runtime profile measurement here (issue 32)
        ratio = lat["median_ms"] / want_ms
        band = stats.Z95 * math.sqrt(2) * cv
        out.append({"what": "latency ms", "study": want_ms, "deployed": lat["median_ms"], "difference": ratio,
                    "noise_95": band, "how": f"ratio; spread between measurements {100 * cv:.1f} %"
                                              + ("" if lat.get("anchor") else ", unanchored"),
                    "verdict": "within noise" if abs(math.log(ratio)) <= band else "BEYOND NOISE"})
    return out


def _probs_of(ev: "Evaluation") -> np.ndarray:
    return ev.probs["val"]

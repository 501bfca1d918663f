"""One trial as a pure function: (config, budget, data spec, device guard) -> TrialResult.

Executors only decide *where* this runs (in-process or on Ray); nothing here knows which.
Latency is a property of the exported model's architecture, so it is measured first, before
training, on the exported skeleton: a config that breaks a latency/params limit is reported
infeasible without spending any training on it, and every per-epoch record a caller receives
carries it (successive halving ranks on it, rungs.py). A callback that returns a
``lifecycle.Stop`` ends training early: the result is ``stopped``, with the epoch and its accuracy.

``train_run`` is the same work for one config outside a study (``hovit-nas train``): data,
training, export, evaluation, then the exported model's latency, written to a run directory.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from .config import DataOptions, DataSpec, LatencyConfig, Limits, RunConfig, run_config_from_dict, to_dict
from .data import Splits, load_data
from .device import DeviceGuard, resolve_device
from . import evaluators, faults, logs
from .errors import QuantizationError, TrialFailed
from .lifecycle import EpochCallback, Stop
from .latency import Anchor, Calibration, Protocol, calibrate_on, measure, target_for
from .models import count_params, create_hovit, export
from .models.onnx import onnx_bytes
from .stats import objective
from .target import DeploymentTarget
from .deploy import quantize_int8
from .train import RunResult, train_and_evaluate

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .evaluators import Evaluator
    from .predictor import Screen
    from .remote import LatencyService

_DATA: dict[str, Splits] = {}  # per-process cache: trials in one worker share the decoded data
_ANCHOR_MODELS: dict[str, torch.nn.Module] = {}  # per-process: the reference skeleton, built once


@dataclass
class TrialSpec:
    config: RunConfig
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "auto"
    threads: Optional[int] = None
    metric: str = "top1"  # config.METRICS (validation); nll enters as -NLL (stats.objective)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    limits: Limits = field(default_factory=Limits)
    anchor: Optional[Calibration] = None  # the study's calibrated reference
    latency_at: Optional["LatencyService"] = None  # time on a latency service instead (remote.py)
    screen: Optional["Screen"] = None  # --predictor: skip trials predicted over max latency (predictor.py)
    evaluator: Optional["Evaluator"] = None  # how the accuracy is had (evaluators/); None: trained stand-alone

    @property
    def latency_threads(self) -> int:
        """CPU threads a latency measurement uses: the space's, else the trial's, else torch's."""
        return self.latency.threads or self.threads or torch.get_num_threads()

    def target(self, device: str | torch.device) -> DeploymentTarget:
        """The deployment target trials are timed on, run on ``device``."""
        lat = self.latency
        return DeploymentTarget.of(str(device), lat.runtime, self.latency_threads, lat.batch,
                                   self.config.model.img_size, lat.precision)


@dataclass
class TrialResult:
    """What one trial measured. ``status`` is ``ok`` (trained), ``infeasible`` (a limit was
    broken: latency and params are known, nothing was trained) or ``stopped`` (its on_epoch
    callback stopped it at epoch ``stopped_at_rung`` with validation top-1 ``rung_accuracy``)."""

    status: str
    latency_ms: float
    latency: dict
    params: int
    config: dict
    device: str
    metric: str
    constraints: list[float]  # Optuna constraint values, <= 0 feasible (Limits.check)
    reason: Optional[str] = None
    accuracy: Optional[float] = None  # validation ``metric``
    val: Optional[dict] = None
    test: Optional[dict] = None
    params_dense: Optional[int] = None
    selected_blocks: Optional[list] = None
    history: Optional[list] = None
    data: Optional[str] = None
    data_cache: Optional[str] = None  # the node-local dataset cache the trial read (data/cache.py)
    stopped_at_rung: Optional[int] = None
    rung_accuracy: Optional[float] = None
    val_fp32: Optional[dict] = None  # int8 targets: the fp32 model's scores (val/test are the int8 model's)
    test_fp32: Optional[dict] = None
    quantization: Optional[dict] = None  # int8 targets: deploy.Int8.record()
    estimate: Optional[dict] = None  # --evaluator supernet: {"by": "supernet", "supernet": its id}
    scores: Optional[dict] = None  # per-image class probabilities of the scored model: ``per_image_scores``
    wall_s: float = 0.0

    @property
    def feasible(self) -> bool:
        return self.status == "ok"

    @property
    def values(self) -> list[float]:
        """The study's objectives: (validation accuracy, latency ms)."""
        return [self.accuracy, self.latency_ms]

    def user_attrs(self) -> dict:
        """The record a study keeps (JSON-safe; absent fields left out)."""
        return {k: _json_safe(v) for k, v in asdict(self).items() if v is not None}


def _json_safe(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


SCORES_ATTR = "scores"  # the trial user attr holding its per-image scores (``per_image_scores``)


def per_image_scores(splits: Splits, probs: dict) -> dict:
    """What a trial keeps of its per-image class probabilities: for each scored split (``val``,
    and ``test`` where scored) the split's membership digest (provenance.py: the same images in
    the same order compare paired), the shape (N, K) and the float16 array, compressed
    (stats.encode_probs: about 10 KB for 3,000 binary images)."""
    from . import provenance as pv
    from .stats import encode_probs

    out: dict = {"dtype": "float16"}
    for name, p in probs.items():
        ds = getattr(splits, name)
        out[name] = {"digest": pv.split_digest(ds), "shape": list(p.shape), "probs": encode_probs(p)}
    return out


def get_data(spec: DataSpec) -> Splits:
    key = repr(spec)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_data(spec)
    return _DATA[key]


def _anchor_model(cfg_dict: dict) -> torch.nn.Module:
    key = repr(sorted(cfg_dict["model"].items()))
    if key not in _ANCHOR_MODELS:
        _ANCHOR_MODELS.clear()
        _ANCHOR_MODELS[key] = export(create_hovit(run_config_from_dict(cfg_dict, "anchor config")))
    return _ANCHOR_MODELS[key]


def anchor_for(calibration: Optional[Calibration]) -> Optional[Anchor]:
    """The study's anchor as a timeable reference: its model (exported from the stored config,
    built once per process) and its calibrated latency; None for an unanchored study."""
    if calibration is None:
        return None
    return Anchor(calibration.name, _anchor_model(calibration.config), calibration.ms)


def calibrate_anchor(name: str, cfg: RunConfig, spec: TrialSpec) -> Calibration:
    """Time the reference (the space's fixed point, exported) alone over a long window, once per
    study, on the trials' device and protocol; every trial then scales by this one figure."""
    dev = resolve_device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    cfg_dict = to_dict(cfg)
    with DeviceGuard.of(dev).shared():
        model = _anchor_model(cfg_dict)
    a = calibrate_on(name, model, spec.target(dev), spec.latency.anchor_time_s, Protocol.of(spec.latency), dev,
                     cfg.model.in_chans)
    return Calibration(name, a.ms, cfg_dict, str(dev), spec.latency_threads)


def skeleton_latency(cfg: RunConfig, spec: TrialSpec, device: torch.device, guard: DeviceGuard) -> tuple[dict, int]:
    with guard.shared():  # building is compute too; the measurement below is exclusive
        deployed = export(create_hovit(cfg))
        anchor = anchor_for(spec.anchor)
    if spec.latency_at is not None:  # timed on the deployment machine, anchored to its own HoViT-B
        m, lat = cfg.model, spec.latency
        with guard.shared():
            data = onnx_bytes(deployed, m.img_size, m.in_chans)
        rec = spec.latency_at.measure(data, m.img_size, m.in_chans, m.num_classes, lat.runs, lat.warmup,
                                      lat.min_time_s)
        return rec, count_params(deployed)
    lat = measure(deployed, spec.target(device), Protocol.of(spec.latency), anchor=anchor, guard=guard,
                  in_chans=cfg.model.in_chans, device=device)
    return lat.to_dict(), count_params(deployed)


def _screened(spec: TrialSpec, cfg: RunConfig, dev: torch.device, t0: float) -> Optional[TrialResult]:
    """The predictor's pre-check (``spec.screen``): an infeasible result, neither measured nor
    trained, for an architecture predicted over ``max_latency`` beyond the predictor's error; None
    to measure it. Its latency record says ``predicted`` (it is never on a front)."""
    with torch.no_grad():
        verdict = spec.screen.skip(cfg)
    if verdict is None:
        return None
    pred, bound = verdict
    params = count_params(export(create_hovit(cfg)))
    lat = {"predicted": True, "median_ms": pred, "lower_bound_ms": bound, "predictor": spec.screen.source}
    constraints, _ = spec.limits.check(pred, params)
    reason = (f"predicted latency {pred:.2f} ms (>= {bound:.2f} ms for 95 % of held-out architectures) > max "
              f"{spec.limits.max_latency_ms} ms (not measured, not trained)")
    return TrialResult("infeasible", pred, lat, params, to_dict(cfg), str(dev), spec.metric, constraints,
                       reason=reason, wall_s=round(time.time() - t0, 2))


def run_trial(spec: TrialSpec, on_epoch: EpochCallback | None = None,
              guard: Optional[DeviceGuard] = None) -> TrialResult:
    """Latency first (cheap, known before training), then train, export and evaluate.
    Out-of-memory becomes TrialFailed with its reason; a NaN loss already is one."""
    t0 = time.time()
    cfg = spec.config
    dev = resolve_device(spec.device)
    guard = guard or DeviceGuard.of(dev)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    if spec.screen is not None:
        skipped = _screened(spec, cfg, dev, t0)
        if skipped is not None:
            return skipped
    try:
        faults.reached("latency")
        lat, params = skeleton_latency(cfg, spec, dev, guard)
        constraints, reasons = spec.limits.check(lat["median_ms"], params)
        result = TrialResult("ok", lat["median_ms"], lat, params, to_dict(cfg), str(dev), spec.metric, constraints)
        if reasons:
            result.status, result.reason = "infeasible", "; ".join(reasons) + " (not trained)"
            result.wall_s = round(time.time() - t0, 2)
            return result
        with guard.shared():
            splits = get_data(spec.data)
        result.data_cache = str(splits.train.cache.parent) if splits.train.cache else None
        evaluator = spec.evaluator or evaluators.get("train")
        if evaluator.caps.trains:
            faults.reached("training")
        history: list[dict] = []

        def epoch_done(rec: dict) -> Optional[Stop]:
            history.append({k: v for k, v in rec.items() if k != "global_epoch"})
            return on_epoch(dict(rec, latency_ms=result.latency_ms)) if on_epoch is not None else None

        r = evaluator.score(cfg, splits, dev, guard, epoch_done)
        if r.stop is not None:  # a rung's decision: stopped, with the epoch and its accuracy
            result.status, result.reason, result.history = "stopped", r.stop.reason, history
            result.stopped_at_rung, result.rung_accuracy = r.stop.epoch, r.stop.accuracy
            result.wall_s = round(time.time() - t0, 2)
            return result
        if spec.latency.precision == "int8" and evaluator.caps.trains:  # the deployed model is the int8 one
            q8 = quantize_int8(r.exported, splits, spec.latency.runtime, spec.latency.calibration_images,
                               threads=spec.latency_threads, guard=guard)
            result.val_fp32, result.test_fp32, result.quantization = r.val, r.test, q8.record()
            _log.info(f"{logs.tag(f'[{cfg.name}]')} int8 for {q8.runtime}: val top1 {q8.val['top1']:.4f} (fp32 "
                      f"{r.val['top1']:.4f}), test top1 {q8.test['top1']:.4f} ({q8.seconds:.1f}s)")
            r.val, r.test, r.probs = q8.val, q8.test, q8.scores
    except QuantizationError as exc:  # this architecture, not the study: the trial fails with the reason
        raise TrialFailed(str(exc)) from None
    except torch.cuda.OutOfMemoryError as exc:
        raise TrialFailed(f"out of memory on {dev}: {str(exc).splitlines()[0]}") from None
    except MemoryError:
        raise TrialFailed(f"out of memory on {dev} (host RAM)") from None
    except RuntimeError as exc:
        if any(k in str(exc).lower() for k in ("out of memory", "can't allocate memory")):
            raise TrialFailed(f"out of memory on {dev}: {str(exc).splitlines()[0]}") from None
        raise
    finally:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    result.accuracy, result.val, result.test = objective(r.val, spec.metric), r.val, r.test
    result.scores = per_image_scores(splits, r.probs)
    result.params_dense, result.selected_blocks, result.history, result.data = (
        r.params_dense, r.selected_blocks, r.history or None, r.data)
    result.estimate = r.estimate
    result.wall_s = round(time.time() - t0, 2)
    return result


def remeasure(records: dict[int, dict], anchor: Optional[Calibration | dict] = None, rounds: int = 2,
              min_time_s: float = 0.5) -> dict[int, list]:
    """Re-time trials' exported skeletons alone, with the protocol each recorded (batch, threads,
    the study's anchor). ``records``: trial number -> its user attrs. Rounds interleave the
    trials, so drift hits all alike; returns each trial's ``rounds`` separate Latency records."""
    models = {}
    for n, attrs in records.items():
        cfg = run_config_from_dict(attrs["config"], f"trial {n}")
        models[n] = (export(create_hovit(cfg)), cfg)
    ref = anchor_for(Calibration.from_dict(anchor) if isinstance(anchor, dict) else anchor)
    out: dict[int, list] = {n: [] for n in models}
    for _ in range(rounds):
        for n, (model, cfg) in models.items():
            rec = records[n]["latency"]
            target = DeploymentTarget.of(rec["device"], rec.get("runtime", "torch"), rec["threads"], rec["batch"],
                                         cfg.model.img_size, rec.get("precision", "fp32"))
            out[n].append(measure(model, target, Protocol(10, rec["warmup"], min_time_s), anchor=ref,
                                  in_chans=cfg.model.in_chans, device=rec["device"]))
    return out


def train_run(cfg: RunConfig, data: Optional[str], options: DataOptions, *, adapt_classes: bool = False,
              device: str = "auto", threads: Optional[int] = None, out_dir: str | Path | None = None,
              resume: bool = False, target: Optional[DeploymentTarget] = None) -> tuple[RunResult, Splits, Path]:
    """One run as ``hovit-nas train`` makes it: load ``data`` at the config's resolution (split
    with its seed), adapt the class count when ``adapt_classes`` (a preset; a config file must
    match its data), train both phases, export, evaluate val/test, time the exported model on
    deployment ``target`` (default: ``auto`` -- ONNX Runtime on the CPU, as a search times --
    with ``threads`` CPU threads, batch 1, fp32; ``result.latency["target"]`` names it), and
    write the run directory (default ``runs/<name>``: checkpoint, model, result.json).

    Returns the result (``latency`` filled), the splits and the run directory.
    Raises:
        DataError, ConfigError: bad data or a class count that does not match (exit 2).
        HovitError: the run directory cannot be written, or the config's ``name`` is not one
            folder name (names.check_name), before the data is loaded.
        TrialFailed: a NaN loss or out of memory.
    """
    from .config import with_num_classes
    from .names import under
    from .outputs import check_output

    out = check_output(out_dir or under("runs", cfg.name, "the config's name"), "the run directory", metavar="DIR")
    spec = DataSpec.of(data, cfg.model.img_size, cfg.train.seed, options)
    splits = load_data(spec)
    if adapt_classes:
        adapted = with_num_classes(cfg, splits.num_classes)
        if adapted is not cfg:
            _log.info(f"preset {cfg.name}: num_classes {cfg.model.num_classes} -> {splits.num_classes} (from the data)")
        cfg = adapted
    _log.info(f"data: {splits.description} {splits.sizes}")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    from . import provenance as pv

    prov = pv.Provenance("run", pv.data_record(splits, cfg.model.img_size, pv.data_rule(spec)),
                         img_size=cfg.model.img_size)
    r = train_and_evaluate(cfg, splits, dev, out_dir=out, resume=resume, provenance=prov)
    target = target or target_for(cfg.model.img_size, dev, threads)
    r.latency = {**measure(r.exported, target, in_chans=cfg.model.in_chans, device=dev).to_dict(),
                 "target": target.name}
    r.save(out / "result.json")
    return r, splits, out


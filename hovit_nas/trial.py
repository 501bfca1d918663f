"""One trial as a pure function: (config, budget, data spec, device) -> metrics.

Executors only decide *where* this runs (in-process or on Ray); nothing here knows which.
Latency is a property of the exported model's architecture, so it is measured first, before
training, on the exported skeleton: a config that breaks a latency/params limit is reported
infeasible without spending any training on it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from .config import RunConfig, run_config_from_dict, to_dict
from .data import DataSpec, Splits, load_data
from .errors import TrialFailed
from .latency import Anchor, calibrate, measure_latency, resolve_device
from .locks import compute_slot
from .models import count_params, create_hovit, export
from .space import LATENCY_DEFAULTS

_DATA: dict[str, Splits] = {}  # per-process cache: trials in one worker share the decoded data
_ANCHOR_MODELS: dict[str, torch.nn.Module] = {}  # per-process: the reference skeleton, built once


@dataclass
class TrialSpec:
    config: RunConfig
    data: DataSpec = field(default_factory=DataSpec)
    device: str = "auto"
    threads: Optional[int] = None
    metric: str = "top1"  # top1 | f1_macro (validation)
    latency: dict = field(default_factory=lambda: dict(LATENCY_DEFAULTS))
    max_latency_ms: Optional[float] = None
    max_params_m: Optional[float] = None
    anchor: Optional[dict] = None  # {name, ms, config}: the study's calibrated reference (latency.py)


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


def latency_threads(spec: TrialSpec) -> int:
    """CPU threads a latency measurement uses: the space's, else the trial's, else torch's."""
    return spec.latency.get("threads") or spec.threads or torch.get_num_threads()


def _protocol(cfg: RunConfig, spec: TrialSpec, device: torch.device) -> dict:
    lat = spec.latency
    return dict(batch=lat.get("batch", 1), device=device, runs=lat.get("runs", 30), warmup=lat.get("warmup", 10),
                threads=latency_threads(spec), in_chans=cfg.model.in_chans)


def calibrate_anchor(name: str, cfg: RunConfig, spec: TrialSpec) -> dict:
    """Time the reference (the space's fixed point, exported) alone over a long window, once per
    study, on the trials' device and protocol; every trial then scales by this one figure."""
    dev = resolve_device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    cfg_dict = to_dict(cfg)
    with compute_slot(str(dev)):
        model = _anchor_model(cfg_dict)
    a = calibrate(name, model, cfg.model.img_size, **_protocol(cfg, spec, dev))
    return {"name": name, "ms": a.ms, "config": cfg_dict, "device": str(dev), "threads": latency_threads(spec)}


def skeleton_latency(cfg: RunConfig, spec: TrialSpec, device: torch.device) -> tuple[dict, int]:
    with compute_slot(str(device)):  # building is compute too; the measurement below is exclusive
        deployed = export(create_hovit(cfg))
        anchor = (Anchor(spec.anchor["name"], _anchor_model(spec.anchor["config"]), spec.anchor["ms"])
                  if spec.anchor else None)
    lat = measure_latency(deployed, cfg.model.img_size, anchor=anchor, **_protocol(cfg, spec, device))
    return lat.to_dict(), count_params(deployed)


def run_trial(spec: TrialSpec, on_epoch: Callable[[dict], None] | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Train, prune, export and evaluate one config; raises TrialFailed on NaN / out of memory."""
    from .train import train_and_evaluate

    t0 = time.time()
    cfg = spec.config
    dev = resolve_device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    try:
        lat, params = skeleton_latency(cfg, spec, dev)
        out = {"status": "ok", "latency_ms": lat["median_ms"], "latency": lat, "params": params,
               "config": to_dict(cfg), "device": str(dev), "metric": spec.metric}
        reasons = []
        if spec.max_latency_ms is not None and lat["median_ms"] > spec.max_latency_ms:
            reasons.append(f"latency {lat['median_ms']:.2f} ms > max {spec.max_latency_ms} ms")
        if spec.max_params_m is not None and params / 1e6 > spec.max_params_m:
            reasons.append(f"params {params / 1e6:.2f} M > max {spec.max_params_m} M")
        if reasons:
            out.update(status="infeasible", reason="; ".join(reasons) + " (not trained)", wall_s=time.time() - t0)
            return out
        with compute_slot(str(dev)):
            splits = get_data(spec.data)
        r = train_and_evaluate(cfg, splits, dev, latency=False, threads=spec.threads, log=log, on_epoch=on_epoch)
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
    out.update(accuracy=r.val[spec.metric], val=r.val, test=r.test, params_dense=r.params_dense,
               selected_blocks=r.selected_blocks, history=r.history, data=r.data, wall_s=round(time.time() - t0, 2))
    return out


def remeasure(records: dict[int, dict], anchor: Optional[dict] = None, rounds: int = 2,
              min_time_s: float = 0.5) -> dict[int, list]:
    """Re-time trials' exported skeletons alone, with the protocol each recorded (batch, threads,
    the study's anchor). ``records``: trial number -> its user attrs. Rounds interleave the
    trials, so drift hits all alike; returns each trial's ``rounds`` separate Latency records."""
    models = {}
    for n, attrs in records.items():
        cfg = run_config_from_dict(attrs["config"], f"trial {n}")
        models[n] = (export(create_hovit(cfg)), cfg)
    ref = Anchor(anchor["name"], _anchor_model(anchor["config"]), anchor["ms"]) if anchor else None
    out: dict[int, list] = {n: [] for n in models}
    for _ in range(rounds):
        for n, (model, cfg) in models.items():
            rec = records[n]["latency"]
            out[n].append(measure_latency(model, cfg.model.img_size, batch=rec["batch"], threads=rec["threads"],
                                          runs=10, warmup=rec["warmup"], in_chans=cfg.model.in_chans,
                                          device=rec["device"], min_time_s=min_time_s, anchor=ref))
    return out

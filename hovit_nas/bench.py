"""The paper's Table 1 structure: HoViT variants vs timm baselines, measured side by side.

Every model is built, (optionally trained,) exported where it is a HoViT, and timed with the
one latency protocol in the same process, so the ratios to efficientnet_b0 are like for like.
By default every model is timed alternately with an anchor (an exported HoViT-B of its own,
latency.py), so a shared machine's drift between models' windows cancels out of the ratios.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch
import yaml

from .device import resolve_device
from .config import load_run_config, with_num_classes
from .errors import HovitError
from .latency import Protocol, calibrate_on, measure, resolve_runtime, runtime_version
from .target import DeploymentTarget
from .models.quantize import check as check_precision
from .models import BASELINES, PRESETS, count_params, create_baseline, create_hovit, export, hovit_b

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import optuna

    from .config import DataOptions

HOVIT_ROWS = ("hovit_b", "hovit_s", "hovit_b_attn_down", "hovit_b_dense")
REFERENCE = "efficientnet_b0"


@dataclass
class BenchConfig:
    """What ``hovit-nas bench`` times: resolution, batch, device, runtimes, and the timing protocol."""

    img_size: int = 224
    batch: int = 1
    device: str = "auto"
    num_classes: int = 9
    runs: int = 30  # timed runs per model per round
    rounds: int = 3  # interleaved passes over all models
    warmup: int = 10
    threads: Optional[int] = None
    cuda_graph: bool = False
    anchor: bool = True
    models: list[str] = field(default_factory=list)  # empty: every Table 1 row; a .yaml is a HoViT config
    runtimes: list[str] = field(default_factory=lambda: [BOTH])  # torch + onnxruntime (where it runs)
    min_time_s: float = 1.0  # seconds timed per model per round, at least; the anchor calibrates over 3x


@dataclass
class BenchRow:
    model: str
    kind: str  # hovit (exported) | hovit-unexported | baseline
    runtime: str
    params_m: float
    latency_ms: float
    latency_iqr_ms: float
    samples: int = 0
    ratio_to_effnet_b0: Optional[float] = None  # on the same runtime
    val_top1: Optional[float] = None
    top1: Optional[float] = None  # test
    f1_macro: Optional[float] = None
    recall_macro: Optional[float] = None
    precision_macro: Optional[float] = None


def _hovit_config(name: str, img_size: int, num_classes: int):
    """A preset, or a run config file (e.g. a pinned best.yaml) for a model the search found."""
    if name.split(":")[0] in PRESETS:
        return PRESETS[name.split(":")[0]](img_size=img_size, num_classes=num_classes)
    if name.endswith((".yaml", ".yml")):
        cfg = load_run_config(name)
        if cfg.model.img_size != img_size:
            cfg = replace(cfg, model=replace(cfg.model, img_size=img_size))
        return with_num_classes(cfg, num_classes)
    return None


def trainer_for(cfg: BenchConfig, data: str, options: "DataOptions", epochs: int,
                max_steps: Optional[int]) -> tuple[Callable, int]:
    """``bench --data``: a ``train(name, model_or_cfg) -> (model, metrics)`` for ``run_bench``,
    and the data's class count. Every row gets the same budget: ``epochs`` dense epochs (and,
    for HoViT, half as many pruning epochs, at least one), ``max_steps`` steps per epoch. A HoViT
    row is trained through both phases and exported; a baseline is trained dense
    (train.train_plain). Metrics: the test split's, plus ``val_top1``."""
    from .config import DataSpec, TrainConfig
    from .data import load_data
    from .train import train_and_evaluate, train_plain

    splits = load_data(DataSpec.of(data, cfg.img_size, 0, options))
    _log.info(f"data: {splits.description} {splits.sizes}")
    t = TrainConfig(epochs_dense=epochs, epochs_prune=max(1, epochs // 2), max_steps_per_epoch=max_steps)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    def trainer(name: str, model_or_cfg):
        if name in PRESETS or name.endswith((".yaml", ".yml")):  # HoViT, built for the data: both phases + export
            r = train_and_evaluate(replace(model_or_cfg, train=t), splits, cfg.device)
            return r.exported, {**r.test, "val_top1": r.val["top1"]}
        return model_or_cfg, train_plain(model_or_cfg, splits, t, cfg.device, name=name)

    return trainer, splits.num_classes


def row_labels(names: list[str]) -> dict[str, str]:
    """Each model's row name, unique within the table: a preset or baseline by its name; a config
    file by the study and trial it was pinned from (``pcam-cpu#20``), else by its path; a name
    that two rows would share gets the path added."""
    out = {}
    for n in names:
        out[n] = n
        if n.endswith((".yaml", ".yml")):
            doc = yaml.safe_load(Path(n).read_text())
            if isinstance(doc, dict) and "study" in doc and "trial" in doc:
                out[n] = f"{doc['study']}#{doc['trial']}"
    counts = Counter(out.values())
    return {n: (f"{label} ({n})" if counts[label] > 1 and label != n else label) for n, label in out.items()}


def _build(name: str, img_size: int, num_classes: int, train: Optional[Callable]) -> tuple:
    metrics: dict = {}
    cfg = _hovit_config(name, img_size, num_classes)
    if cfg is not None:
        kind = "hovit-unexported" if name.endswith(":unexported") else "hovit"
        if train is not None and kind == "hovit":
            model, metrics = train(name, cfg)  # trained and exported
        else:
            model = create_hovit(cfg).eval()
            model = model if kind == "hovit-unexported" else export(model)
    else:
        model = create_baseline(name, num_classes=num_classes, img_size=img_size)
        kind = "baseline"
        if train is not None:
            model, metrics = train(name, model)
    return model.eval(), kind, metrics


def bench_runtimes(cfg: BenchConfig, dev: torch.device) -> list[str]:
    """By default (``BOTH``): torch, and onnxruntime where it runs (on CUDA only with the CUDA
    provider); otherwise the runtimes named (``auto``: runtimes.resolve's one meaning).

    Raises:
        HovitError: an unknown runtime, or openvino not installed or asked for on a GPU."""
    out: list[str] = []
    for r in cfg.runtimes:
        if r == BOTH:
            out += ["torch"] + ([DEFAULT_EXPORTED] if _can(DEFAULT_EXPORTED, dev) else [])
        else:
            out.append(resolve_runtime(r, dev))
    return list(dict.fromkeys(out))


BOTH = "torch+exported"  # bench's default: eager and the default exported runtime, where it runs
DEFAULT_EXPORTED = "onnxruntime"


def _can(runtime: str, dev: torch.device) -> bool:
    """Whether ``runtime`` runs on ``dev`` here (runtimes: installed, and the device supported)."""
    from . import runtimes

    try:
        return runtimes.resolve(runtime, dev).supports(dev)
    except HovitError:
        return False


def run_bench(cfg: BenchConfig, train: Optional[Callable] = None) -> dict:
    """Build (optionally train) every model, then time them interleaved: ``rounds`` passes over
    all runtimes and models, ``runs`` samples each per pass, pooled per (model, runtime). Drift on
    a shared machine then hits every model alike, so the ratios to efficientnet_b0 on the same
    runtime are like for like.

    ``train(name, model_or_cfg) -> (model, metrics)`` fills the accuracy columns when given.
    """
    if cfg.min_time_s <= 0:
        raise HovitError(f"`min_time` must be > 0 seconds, got {cfg.min_time_s}")
    dev = resolve_device(cfg.device)
    img_size, num_classes, rounds = cfg.img_size, cfg.num_classes, cfg.rounds
    names = list(cfg.models or [*HOVIT_ROWS, "hovit_b:unexported", *BASELINES])
    if REFERENCE not in names:
        names.append(REFERENCE)
    runtimes = bench_runtimes(cfg, dev)
    built = {name: _build(name, img_size, num_classes, train) for name in names}
    labels = row_labels(names)
    protocol = Protocol(cfg.runs, cfg.warmup, cfg.min_time_s, cfg.cuda_graph)
    targets = {rt: DeploymentTarget.of(str(dev), rt, cfg.threads or torch.get_num_threads(), cfg.batch, img_size)
               for rt in runtimes}
    anchors: dict = {rt: None for rt in runtimes}
    if cfg.anchor:
        ref = export(create_hovit(hovit_b(img_size, num_classes)))
        for rt in runtimes:
            anchors[rt] = calibrate_on("hovit_b", ref, targets[rt], 3 * cfg.min_time_s, protocol, dev)
            _log.info(f"  anchor on {rt}: exported HoViT-B calibrated at {anchors[rt].ms:.3f} ms; every model is "
                      "timed alternately with it")
    lat: dict = {}
    for r in range(rounds):
        t0 = time.time()
        for rt in runtimes:
            for name, (model, _, _) in built.items():
                m = measure(model, targets[rt], protocol, anchor=anchors[rt], device=dev)
                lat[name, rt] = lat[name, rt].merged(m) if (name, rt) in lat else m
        _log.info(f"  round {r + 1}/{rounds}: " + "; ".join(
                  f"{rt}: " + ", ".join(f"{n} {lat[n, rt].median_ms:.1f}" for n in names) for rt in runtimes)
                  + f" ms ({time.time() - t0:.0f}s)")
    rows = []
    for rt in runtimes:
        ref_ms = lat[REFERENCE, rt].median_ms
        for name, (model, kind, metrics) in built.items():
            rows.append(BenchRow(labels[name], kind, rt,
                                 round(count_params(model) / 1e6, 3), round(lat[name, rt].median_ms, 3),
                                 round(lat[name, rt].iqr_ms, 3), lat[name, rt].runs,
                                 round(lat[name, rt].median_ms / ref_ms, 3),
                                 **{k: metrics.get(k) for k in ("val_top1", "top1", "f1_macro", "recall_macro",
                                                                "precision_macro")}))
    any_lat = lat[REFERENCE, runtimes[0]]
    return {"img_size": img_size, "batch": cfg.batch, "device": str(dev), "device_name": any_lat.device_name,
            "threads": any_lat.threads, "runs": cfg.runs * rounds, "rounds": rounds, "warmup": cfg.warmup,
            "min_time_s": cfg.min_time_s,
            "cuda_graph": any_lat.cuda_graph, "torch": torch.__version__, "runtimes": runtimes,
            "runtime_versions": {rt: runtime_version(rt) or torch.__version__ for rt in runtimes},
            "anchor": {"name": "hovit_b", "ms": {rt: a.ms for rt, a in anchors.items()}} if cfg.anchor else None,
            "rows": [asdict(r) for r in rows]}


def format_table(report: dict) -> str:
    cols = ["model", "runtime", "params_m", "latency_ms", "latency_iqr_ms", "samples", "ratio_to_effnet_b0",
            "val_top1", "top1", "f1_macro", "recall_macro", "precision_macro"]
    rows = report["rows"]
    have = [c for c in cols if any(r.get(c) is not None for r in rows)]
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    table = [have] + [[fmt(r.get(c)) for c in have] for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(have))]
    lines = [f"device: {report['device_name']} ({report['device']}), threads {report['threads']}, "
             f"batch {report['batch']}, {report['img_size']} px, median of >= {report['runs']} runs per model "
             f"(>= {report.get('min_time_s', 1.0):g} s timed per round, {report.get('rounds', 1)} interleaved rounds)"
             + (", CUDA graph" if report.get("cuda_graph") else "")
             + ("; " + ", ".join(f"{k} {v}" for k, v in report["runtime_versions"].items())
                if report.get("runtime_versions") else "")
             + (", anchored to HoViT-B on each runtime (" + ", ".join(f"{k} {v:.3f} ms" for k, v in
                                                                     report["anchor"]["ms"].items()) + ")"
                if report.get("anchor") else "")]
    for i, row in enumerate(table):
        lines.append("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_report(report: dict, out_dir: str | Path, stem: str = "bench") -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, cs = out / f"{stem}.json", out / f"{stem}.csv"
    js.write_text(json.dumps(report, indent=2))
    with cs.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(report["rows"][0]))
        w.writeheader()
        w.writerows(report["rows"])
    return js, cs


TARGET_BASELINES = ("efficientnet_b0", "levit_128s")  # what users would pick instead (issue 22); HoViT-B is the
BASELINES_ATTR = "baselines_on_target"                 # study's own fixed point


def baselines_on_target(study: "optuna.Study") -> dict:
    """EfficientNet-B0 and LeViT-128S timed on the study's deployment target, for ``pareto``.

    Same runtime, precision, threads, batch and resolution as the trials, and the study's
    protocol (runs, warm-up, timing window); anchored to the study's calibrated HoViT-B when it
    has one, so the figures are comparable with the trials' even when they were timed on another
    machine of the same kind. Randomly initialised (latency does not depend on the weights), so
    their accuracy is unknown: never guessed. Measured once per study and target, then kept with
    the study (``baselines_on_target`` user attr); a storage that refuses the write only loses
    the cache.

    Returns:
        ``{"target", "device_name", "anchored", "rows": [{"model", "kind", "latency_ms",
        "latency_iqr_ms", "val_top1": None, "top1": None}], "note"}``, or ``{"rows": [],
        "note": why not}`` when this machine cannot run the target (no GPU, no openvino).
    """
    from .config import LatencyConfig, from_dict
    from .latency import Calibration
    from .outputs import tracked_sqlite
    from .study import ANCHOR_ATTR, storage_of
    from .target import recorded
    from .trial import anchor_for

    attrs = study.user_attrs
    target = recorded(study, attrs)
    if target is None:
        return {"rows": [], "note": "not timed: the study records no deployment target (run it once with this "
                                    "hovit-nas to record it)"}
    kept = attrs.get(BASELINES_ATTR)
    if kept and kept.get("target") == target.name:
        return kept
    if target.device == "cuda" and not torch.cuda.is_available():
        return {"rows": [], "note": f"not timed: the study's target is {target.name} and this machine has no GPU"}
    try:
        resolve_runtime(target.runtime, target.device)
        check_precision(target.precision, target.runtime, target.device)
    except HovitError as exc:
        return {"rows": [], "note": f"not timed: {exc}"}
    protocol = from_dict(LatencyConfig, (attrs.get("space_def") or {}).get("latency") or {}, "latency")
    cal = attrs.get(ANCHOR_ATTR)
    anchor = anchor_for(Calibration.from_dict(cal)) if cal else None
    num_classes = int(attrs.get("num_classes") or 2)
    rows, lat, untimed = [], None, []
    for name in TARGET_BASELINES:
        model = create_baseline(name, num_classes=num_classes, img_size=target.img_size).eval()
        try:
            lat = measure(model, target, Protocol.of(protocol), anchor=anchor)
        except HovitError as exc:  # e.g. a quantization tool failing on one architecture
            untimed.append(f"{name} not timed: {exc}")
            continue
        rows.append({"model": name, "kind": "baseline", "latency_ms": round(lat.median_ms, 4),
                     "latency_iqr_ms": round(lat.iqr_ms, 4), "val_top1": None, "top1": None})
    out = {"target": target.name, "device_name": lat.device_name if lat else None, "anchored": anchor is not None,
           "rows": rows, "note": "; ".join(["accuracy unknown: not trained on the study's data"]
                                           + (["anchored to the study's HoViT-B calibration"] if anchor else [])
                                           + untimed)}
    committed = tracked_sqlite(getattr(storage_of(study), "url", ""))
    if committed is not None:  # a committed study's file is never rewritten: the cache is lost instead
        _log.info(f"baselines: not kept with the study ({committed} is committed: git tracks it)")
        return out
    import optuna
    import sqlalchemy.exc

    from .study import storage_cause

    try:
        study.set_user_attr(BASELINES_ATTR, out)
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as exc:
        # a read-only storage (a share the user may only read): the figures stand, only the cache is lost
        _log.warning(f"baselines: not kept with the study, whose storage is {storage_cause(exc)}; they are timed "
                     "again next time")
    return out

"""Subnets at search speed: a trained supernet swept over many subnets, timing only those that can
be on the accuracy/latency front (issue 33, item 7).

A supernet estimates a subnet in about a second on a CPU (BatchNorm recalibration, then val), but
timing it on a deployment target takes several (the latency protocol's runs; on an exported
runtime an ONNX export and a compilation too). So ``sweep``:

1. draws ``n`` distinct subnets of the supernet's space (``supernet.Subnets.sample``, seeded);
2. estimates each one's val top-1 from the supernet (``supernet.subnet_probs``: inherited weights,
   BatchNorm recalibrated on fixed training images), with its binomial standard error;
3. predicts each one's latency on the profile's deployment target (``predictor.LatencyPredictor``
   fitted on a ``profile-target`` profile, put on this sweep's anchor scale by
   ``predictor.on_scale``), with the predictor's held-out bounds: [predicted × ``ratio_p05``,
   predicted × ``ratio_p95``] (``predictor.cross_validate``, 5-fold);
4. times, anchored to the space's fixed point as a study's trials are, every subnet that no other
   subnet dominates beyond the predictor's error: no other is at least as accurate and faster even
   at its upper bound than this one at its lower bound;
5. then, until none is left, times each untimed subnet that the timed subnets' front does not
   dominate at the subnet's lower-bound latency.

The front is taken over timed subnets only, so every front member is measured, and every untimed
subnet is dominated by a timed one even at the fastest latency its prediction allows (the
predictor's held-out 5th percentile of measured / predicted). Dominance is Pareto dominance on
(estimate, latency) (dominance.py); the estimates' own noise is reported (``val_se``), not used
to screen: two subnets closer than noise are not told apart by a supernet estimate either.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch

from .errors import ConfigError, HovitError

if TYPE_CHECKING:
    from .data import Images

_log = logging.getLogger(__name__)

WORD = {"estimate": "estimated", "measure": "timed"}  # progress phases, as shown
OUTSIDE_WARN = 0.25  # warn when more timed subnets than this fall outside the predictor's 5-95 % bounds
DRAWS_PER_SUBNET = 20  # draws allowed per distinct subnet asked for before the space counts as exhausted


@dataclass
class SweptSubnet:
    """One subnet of a sweep.

    Attributes:
        name: ``subnet-NNNN``, in draw order.
        params: its architecture parameters (the space's trial parameter names).
        val_top1: the supernet's estimate of its val top-1 (fraction).
        val_se: the binomial standard error of that estimate, sqrt(p (1 - p) / n_val).
        predicted_ms: the predictor's latency on the target (ms, on the sweep's anchor scale).
        lower_ms, upper_ms: predicted × the predictor's held-out 5th and 95th percentile of
            measured / predicted.
        measured_ms: the anchored median latency on the target (ms), None when not timed.
        measured_iqr_ms: its interquartile range (ms).
        front: on the front of the timed subnets.
        config: its run config (config.to_dict), for ``supernet extract --config``.
    """
    name: str
    params: dict
    val_top1: float
    val_se: float
    predicted_ms: float
    lower_ms: float
    upper_ms: float
    measured_ms: Optional[float] = None
    measured_iqr_ms: Optional[float] = None
    front: bool = False
    config: dict = field(default_factory=dict, repr=False)


@dataclass
class Sweep:
    """A supernet sweep's record (``sweep.json``).

    Attributes:
        supernet: the supernet's id; space: its space's name; data: the data description;
        val_images: the val images each estimate is over; bn_images: the training images
            BatchNorm is recalibrated on, per subnet; workers: the processes that estimated.
        target: the deployment target's dict (target.py); cpu: the CPU that timed.
        profile: the latency profile's path; anchor: {name, ms} of this sweep's calibration.
        predictor: the held-out figures of the predictor used (predictor.Fit as a dict).
        subnets: every subnet swept, in draw order.
        rounds: subnets timed in each round (step 4, then each round of step 5).
        scale: ``scale_check`` of the timed subnets against their predictions.
        seconds: wall time by phase (``load``, ``estimate``, ``predict``, ``measure``, ``total``).
        command: the command line that made it.
    """
    supernet: str
    space: str
    data: str
    val_images: int
    bn_images: int
    workers: int
    target: dict
    cpu: str
    profile: str
    anchor: dict
    predictor: dict
    subnets: list[SweptSubnet]
    rounds: list[int] = field(default_factory=list)
    scale: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    command: str = ""

    @property
    def front(self) -> list[SweptSubnet]:
        """The front members, fastest first."""
        return sorted((s for s in self.subnets if s.front), key=lambda s: s.measured_ms)

    @property
    def measured(self) -> int:
        return sum(s.measured_ms is not None for s in self.subnets)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Sweep":
        """A ``sweep.json`` as written by ``run_sweep``."""
        return cls(**{**d, "subnets": [SweptSubnet(**s) for s in d["subnets"]]})


def _draw(subnets, n: int) -> list:
    """``n`` distinct subnets (by architecture parameters), in draw order; fewer, with a warning,
    when the space has fewer within ``DRAWS_PER_SUBNET * n`` draws."""
    seen: dict[str, object] = {}
    for _ in range(DRAWS_PER_SUBNET * n):
        cfg = subnets.sample()
        seen.setdefault(json.dumps(subnets.params_of(cfg), sort_keys=True, default=str), cfg)
        if len(seen) == n:
            break
    if len(seen) < n:
        _log.warning(f"space {subnets.space.name}: {len(seen)} distinct subnets in {DRAWS_PER_SUBNET * n} draws, "
                     f"not {n}: sweeping {len(seen)}")
    return list(seen.values())


def candidates(acc: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Step 4: a boolean mask of the subnets that no other dominates beyond the predictor's error.
    Subnet i is out when some j has ``acc[j] >= acc[i]`` and ``upper[j] <= lower[i]``, one of them
    strictly. ``acc``, ``lower``, ``upper``: (N,) arrays (accuracy, latency bounds in ms)."""
    acc, lower, upper = (np.asarray(a, float) for a in (acc, lower, upper))
    ge, gt = acc[:, None] >= acc[None, :], acc[:, None] > acc[None, :]  # [j, i]: j at least as / more accurate
    le, lt = upper[:, None] <= lower[None, :], upper[:, None] < lower[None, :]
    return ~((ge & le & (gt | lt)).any(axis=0))


def uncovered(acc: np.ndarray, lower: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Step 5: a boolean mask of the untimed subnets (``measured`` NaN) that no timed subnet
    dominates at their lower-bound latency: (accuracy, measured ms) of a timed one against
    (accuracy, ``lower``) of the untimed one (dominance.dominates)."""
    acc, lower, measured = (np.asarray(a, float) for a in (acc, lower, measured))
    timed = ~np.isnan(measured)
    a, m = acc[timed][:, None], measured[timed][:, None]
    dom = (a >= acc[None, :]) & (m <= lower[None, :]) & ((a > acc[None, :]) | (m < lower[None, :]))
    return ~timed & ~dom.any(axis=0)


def scale_check(predicted: np.ndarray, measured: np.ndarray, lo_ratio: float, hi_ratio: float) -> dict:
    """How the timed subnets sit against their predictions: ``median_ratio`` (median measured /
    predicted), ``outside`` (the share whose ratio falls outside [``lo_ratio``, ``hi_ratio``], about
    10 % when the profile is on this machine's scale) and ``n`` timed. NaN in ``measured``: untimed."""
    timed = ~np.isnan(measured)
    if not timed.any():
        return {"median_ratio": None, "outside": 0.0, "n": 0}
    r = measured[timed] / predicted[timed]
    return {"median_ratio": float(np.median(r)), "outside": float(((r < lo_ratio) | (r > hi_ratio)).mean()),
            "n": int(timed.sum())}


def val_subset(val: "Images", n: Optional[int], seed: int) -> "Images":
    """``n`` images of ``val`` drawn without replacement (seeded), in their order; all of it when
    ``n`` is None or not smaller. (n, C, H, W) uint8 in memory, labels alike."""
    if n is None or n >= len(val):
        return val
    return val.subset(np.sort(np.random.default_rng(seed).choice(len(val), n, replace=False)))


_SHARED: dict = {}  # what estimating a subnet reads: the supernet, BatchNorm images, val (a forked worker inherits it)


def _estimate(item: tuple) -> tuple[int, float, dict]:
    """(index, val top-1, latency features) of one subnet, from ``_SHARED``."""
    from .predictor import features
    from .supernet import subnet_probs

    i, cfg = item
    w = _SHARED
    exported, probs = subnet_probs(w["net"], cfg, w["calib"], w["val"], w["device"])
    return i, float((probs.argmax(1) == w["labels"]).mean()), features(cfg, exported.cpu())


def _estimates(drawn: list, workers: int):
    """Every subnet's ``_estimate``, in order of completion: here, or in ``workers`` forked
    processes of one torch thread each (a small subnet's forward barely uses a second thread;
    a process per core does). Raises HovitError when a worker dies (out of memory?)."""
    if workers <= 1:
        yield from map(_estimate, enumerate(drawn))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        futures = [pool.submit(_estimate, item) for item in enumerate(drawn)]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BrokenProcessPool:
            raise HovitError(f"a sweep worker process died (out of memory?); rerun with fewer `workers` than {workers}"
                             ) from None


def default_workers() -> int:
    """Estimating processes on the CPU by default: one per core this process may use (all
    cores where the OS cannot say)."""
    import os

    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


def sweep(supernet_dir: str | Path, profile: str | Path, data: Optional[str], options, *, n: int = 1000,
          seed: int = 0, device: str = "auto", bn_images: Optional[int] = None, val_images: Optional[int] = None,
          workers: Optional[int] = None, on_progress: Optional[Callable[[str, int, int], None]] = None) -> Sweep:
    """Sweep ``n`` subnets of the supernet in ``supernet_dir`` on the deployment target of the
    latency profile ``profile`` (module docstring). ``data``/``options``: the data it was
    trained on (checked by membership, ``supernet.check_data``). ``bn_images``: training images
    BatchNorm is recalibrated on per subnet (default ``supernet.BN_IMAGES``, as the supernet
    evaluator and ``supernet extract``). ``val_images``: estimate on that many val images (a fixed
    draw, ``val_subset``; default all): faster, at a larger standard error. ``workers``: on the
    CPU, estimate in that many forked processes of one thread each (default ``default_workers``:
    one per core); on a GPU, here. ``on_progress(phase, done, total)`` is called as subnets are
    estimated (``estimate``) and timed (``measure``).

    Raises:
        ConfigError: ``n``, ``bn_images``, ``val_images`` or ``workers`` < 1; HovitError: no
            supernet there, the profile is of another target, CPU or resolution, or a worker died
            (one line); ProvenanceError: the data or the profile's space is not the supernet's;
            DataError: the profile or the data cannot be read."""
    from .config import DataSpec, to_dict
    from .data import load_data
    from .device import resolve_device
    from .latency import Protocol, calibrate_on, device_name, measure
    from .models import create_hovit, export
    from .predictor import LatencyPredictor, cross_validate, load_profile, on_scale
    from .supernet import BN_IMAGES, Subnets, bn_images as calib_images, check_data, load, provenance_of
    from .target import DeploymentTarget

    if n < 1:
        raise ConfigError(f"`subnets` must be >= 1, got {n}")
    bn = BN_IMAGES if bn_images is None else bn_images
    if bn < 1:
        raise ConfigError(f"`bn_images` must be >= 1, got {bn}")
    if val_images is not None and val_images < 1:
        raise ConfigError(f"`val_images` must be >= 1, got {val_images}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"`workers` must be >= 1, got {workers}")
    t0 = time.time()
    progress = on_progress or (lambda phase, done, total: None)
    dev = resolve_device(device)
    workers = workers if dev.type == "cpu" else 1  # a GPU estimates here
    sn = load(supernet_dir, dev)
    space = sn.space
    made = provenance_of(sn)
    loaded = load_profile(profile)
    target = DeploymentTarget.from_dict(loaded.target)
    if target.machine is not None:
        raise HovitError(f"latency profile {profile} was measured on a latency service ({target.name}); a sweep times "
                         "here: run `hovit-nas profile-target` on this machine")
    if target.img_size != space.base.model.img_size:
        raise HovitError(f"latency profile {profile} is at {target.img_size} px, not the supernet's "
                         f"{space.base.model.img_size} px")
    lat, chans = space.latency, space.base.model.in_chans
    protocol = Protocol.of(lat)
    calibrated = []

    def calibrate():  # once the profile passes its checks
        ref = export(create_hovit(space.fixed_point_config()))
        calibrated.append(calibrate_on(space.fixed_point, ref, target, lat.anchor_time_s, protocol, in_chans=chans))
        return calibrated[0]

    prof, feats, ms = on_scale(profile, target, space.name, None if made is None else made.space, calibrate,
                               whose="this sweep's", use="a sweep of its subnets", loaded=loaded)
    anchor = calibrated[0]
    held = cross_validate(feats, ms)
    predictor = LatencyPredictor().fit(feats, ms)
    lo_ratio, hi_ratio = held.ratio_p05, held.ratio_p95
    _log.info(f"latency predictor: {len(ms)} profiled architectures of {prof.space}; held out: {held.line()}; "
              f"bounds x{lo_ratio:.3f} .. x{hi_ratio:.3f} of the prediction")
    base = space.base
    spec = DataSpec.of(data, base.model.img_size, base.train.seed, options)
    splits = load_data(spec)
    check_data(sn, supernet_dir, splits, spec, "a sweep (estimates on val, BatchNorm recalibrated on train)")
    t_load = time.time() - t0

    subnets = Subnets(space, seed)
    drawn = _draw(subnets, n)
    calib = calib_images(splits.train, bn, base.train.seed, dev)
    val = val_subset(splits.val, val_images, base.train.seed)
    labels = np.asarray(val.labels)
    acc, feat_rows = np.empty(len(drawn)), [None] * len(drawn)
    t1 = time.time()
    _SHARED.update(net=sn.net, calib=calib, val=val, labels=labels, device=dev)
    try:
        for done, (i, a, f) in enumerate(_estimates(drawn, workers), 1):
            acc[i], feat_rows[i] = a, f
            progress("estimate", done, len(drawn))
    finally:
        _SHARED.clear()
    t_est = time.time() - t1
    t2 = time.time()
    pred = predictor.predict(feat_rows)
    t_pred = time.time() - t2
    lower, upper = pred * lo_ratio, pred * hi_ratio

    measured, iqr = np.full(len(drawn), np.nan), np.full(len(drawn), np.nan)
    rounds: list[int] = []
    todo = candidates(acc, lower, upper)
    t3 = time.time()
    while todo.any():
        idx = np.flatnonzero(todo)
        rounds.append(len(idx))
        for i in idx:
            model = export(create_hovit(drawn[i]))  # latency is the architecture's: no weights needed
            r = measure(model, target, protocol, anchor=anchor, in_chans=chans)
            measured[i], iqr[i] = r.median_ms, r.iqr_ms
            progress("measure", int((~np.isnan(measured)).sum()), len(drawn))
        todo = uncovered(acc, lower, measured)
        if todo.any():
            _log.info(f"round {len(rounds)}: timed {len(idx)}; {int(todo.sum())} untimed subnet(s) are not dominated "
                      "by the timed front at their lower-bound latency: timing them")
    t_meas = time.time() - t3
    check = scale_check(pred, measured, lo_ratio, hi_ratio)
    if check["outside"] > OUTSIDE_WARN and check["n"] >= 10:
        _log.warning(f"latency profile {profile}: {check['outside']:.0%} of the {check['n']} timed subnets fall "
                     f"outside the predictor's bounds (5 %-95 %: about 10 % should), median measured / predicted "
                     f"{check['median_ratio']:.2f}: the profile is on another scale than this machine's timings now "
                     "(another CPU, or no anchor recorded), so the screening is not to be trusted; run `hovit-nas "
                     "profile-target` here and sweep again")

    from .dominance import non_dominated

    timed = [i for i in range(len(drawn)) if not math.isnan(measured[i])]
    on_front = set(non_dominated(timed, key=lambda i: (acc[i], measured[i])))
    n_val = len(labels)
    out = []
    for i, cfg in enumerate(drawn):
        name = f"subnet-{i:04d}"
        cfg.name = name
        out.append(SweptSubnet(name, subnets.params_of(cfg),
                               float(acc[i]), float(math.sqrt(acc[i] * (1 - acc[i]) / max(n_val, 1))),
                               float(pred[i]), float(lower[i]), float(upper[i]),
                               None if math.isnan(measured[i]) else float(measured[i]),
                               None if math.isnan(iqr[i]) else float(iqr[i]), i in on_front, to_dict(cfg)))
    return Sweep(sn.record["id"], space.name, splits.description, n_val, len(calib),
                 workers, target.to_dict(), device_name(torch.device("cpu")),
                 str(profile), {"name": anchor.name, "ms": anchor.ms}, asdict(held), out, rounds, check,
                 {"load": round(t_load, 1), "estimate": round(t_est, 1), "predict": round(t_pred, 2),
                  "measure": round(t_meas, 1), "total": round(time.time() - t0, 1)})


def plot(sw: Sweep, path: str | Path) -> Path:
    """A self-contained plotly HTML of a sweep: every subnet's estimate against its predicted
    latency (with the predictor's bounds), the timed ones at their measured latency, the front
    joined; vertical error bars are ±1.96 binomial SE of the estimate."""
    import plotly.graph_objects as go

    fig = go.Figure()
    untimed = [s for s in sw.subnets if s.measured_ms is None]
    timed = [s for s in sw.subnets if s.measured_ms is not None and not s.front]
    front = sw.front
    if untimed:
        fig.add_scatter(x=[s.predicted_ms for s in untimed], y=[s.val_top1 for s in untimed], mode="markers",
                        name=f"untimed ({len(untimed)}): predicted latency", marker=dict(color="lightgray", size=5),
                        error_x=dict(type="data", symmetric=False, array=[s.upper_ms - s.predicted_ms for s in untimed],
                                     arrayminus=[s.predicted_ms - s.lower_ms for s in untimed], color="#ddd",
                                     thickness=1),
                        text=[s.name for s in untimed])
    for group, label, color in ((timed, f"timed ({len(timed)})", "#1f77b4"),
                                (front, f"front ({len(front)})", "#d62728")):
        if group:
            fig.add_scatter(x=[s.measured_ms for s in group], y=[s.val_top1 for s in group],
                            mode="lines+markers" if group is front else "markers", name=label,
                            marker=dict(color=color, size=7), line=dict(shape="hv"),
                            error_y=dict(type="data", array=[1.96 * s.val_se for s in group], thickness=1),
                            text=[s.name for s in group])
    fig.update_layout(title=f"supernet {sw.supernet} over {sw.space}: {len(sw.subnets)} subnets, {sw.measured} timed, "
                            f"{len(front)} on the front ({sw.target.get('name', '')}, {sw.cpu})",
                      xaxis_title="latency (ms, anchored, log scale; untimed: predicted, bars: the predictor's 5-95 % "
                                  "bounds)", xaxis_type="log",
                      yaxis_title="val top-1 (supernet estimate, ±1.96 SE)", template="plotly_white")
    p = Path(path)
    fig.write_html(p, include_plotlyjs=True)
    return p


def run_sweep(supernet_dir: str | Path, profile: str | Path, data: Optional[str], options, *, n: int = 1000,
              seed: int = 0, device: str = "auto", bn_images: Optional[int] = None,
              val_images: Optional[int] = None, workers: Optional[int] = None, out: Optional[str | Path] = None,
              command: str = "") -> tuple[Path, Sweep]:
    """``hovit-nas supernet sweep``: ``sweep`` with progress, then its files in ``out`` (default
    ``sweeps/<supernet id>``, checked writable before any work): ``sweep.json`` (``Sweep``),
    ``sweep.html`` (``plot``) and ``front/<name>.yaml``, one run config per front member (for
    ``supernet extract --config``).

    Raises:
        as ``sweep``; HovitError: ``out`` is not writable."""
    from .config import dump_run_config, run_config_from_dict
    from .names import under
    from .outputs import check_output
    from .progress import Bar
    from .supernet import load

    rec = load(supernet_dir).record
    dest = check_output(out or under("sweeps", rec["id"], "supernet id"), "the sweep directory", metavar="DIR")
    bars: dict[str, Bar] = {}
    last = [0.0]

    def on_progress(phase: str, done: int, total: int) -> None:
        if phase not in bars:
            for b in bars.values():
                b.close()
            bars[phase] = Bar(WORD[phase], total)
        bars[phase].update(done)
        if time.monotonic() - last[0] > 15 or (phase == "estimate" and done == total):
            last[0] = time.monotonic()
            _log.info(f"{WORD[phase]} {done}/{total} subnets")

    try:
        sw = sweep(supernet_dir, profile, data, options, n=n, seed=seed, device=device, bn_images=bn_images,
                   val_images=val_images, workers=workers, on_progress=on_progress)
    finally:
        for b in bars.values():
            b.close()
    sw.command = command
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "sweep.json").write_text(json.dumps(sw.to_dict(), indent=1))
    plot(sw, dest / "sweep.html")
    front_dir = dest / "front"
    front_dir.mkdir(exist_ok=True)
    for s in sw.front:
        (front_dir / f"{s.name}.yaml").write_text(dump_run_config(run_config_from_dict(s.config, s.name)))
    return dest, sw

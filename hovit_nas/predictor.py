"""A latency predictor per deployment target, and the sweep that fits it (issue 23, item 3).

A predictor is fitted on (architecture, measured latency) pairs from one deployment target: a
*profile* -- architectures drawn from a space, stratified by FLOPs, and measured on the target
(``hovit-nas profile-target``, here or on a latency service) -- plus, in a search, the study's own
measured trials. It is used for screening only: the ``--max-latency`` pre-check skips measuring
(and training) an architecture whose predicted latency is over the limit by more than the
predictor's own held-out error. A front point's recorded latency is always measured.

The model (``LatencyPredictor``): scikit-learn's ``RidgeCV`` on log latency over architecture
features that set the cost on a CPU runtime at batch 1 -- FLOPs per part of the exported model
(torch's ``FlopCounterMode``), parameters, the attention maps' size, the count of kept blocks
(each adds a fixed per-operator overhead), and the per-stage shape. Not a per-block lookup table
(Once-for-All's): ONNX Runtime and OpenVINO fuse operators across blocks, so a sum of per-block
times misses what a whole-graph measurement sees; a regression on whole-graph measurements
includes it. The held-out figures (``cross_validate``) are what the choice stands on; they are
printed by ``profile-target`` and kept in the profile.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np
import torch

from .config import RunConfig, run_config_from_dict, to_dict
from .errors import DataError, HovitError
from .names import check_name, under
from .outputs import check_output

if TYPE_CHECKING:
    from . import provenance as pv
    from .remote import LatencyService
    from .space import Space

_log = logging.getLogger(__name__)

FEATURES_VERSION = 1  # bump when ``features`` changes: stored features are then recomputed
MAX_STAGES = 4  # feature slots per stage; the HoViT spaces have 2
POOL = 4  # profile-target draws POOL x n architectures and keeps one per FLOPs stratum
WITHIN = 0.10  # "within ±10 %", the and nn-Meter's accuracy measure


def _flops_by_part(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """FLOPs of one forward: ``total``, and by part of the model (``stem``, ``stages.0``,
    ``stages.1``, ``head_conv``, ...: the exported HoViT's children, a stage each)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    counts = fc.get_flop_counts()
    out: dict[str, float] = {"total": float(fc.get_total_flops())}
    for name, ops in counts.items():
        parts = name.split(".")  # "Global" is the total; "HoViT.stem", "HoViT.stages.0", ... the parts
        if len(parts) == 2 or (len(parts) == 3 and parts[1] == "stages"):
            out[".".join(parts[1:])] = float(sum(ops.values()))
    return out


def features(cfg: RunConfig, model: Optional[torch.nn.Module] = None) -> dict[str, float]:
    """The features of ``cfg``'s exported model (batch 1, at its resolution), by name; ``model``:
    that exported model when the caller has it (a supernet's extracted subnet), else it is built.

    ``log_flops``, ``log_params``: log of FLOPs and parameters. ``gflops_*``: GFLOPs of the stem,
    of each stage and of the rest (head). ``attn_k``: attention-map elements per image, in thousands (heads x
    tokens², summed over kept blocks). ``blocks``: kept blocks. Per stage ``i`` (``MAX_STAGES``
    slots, zero when absent): ``dim_i``, ``heads_i``, ``kept_i``, ``key_dim_i``, ``tokens_i``,
    ``attn_down_i`` (1: attention downsampling into stage i). ``mlp_ratio``, ``head_width``,
    ``img_size``."""
    from .models import count_params, create_hovit, export

    model = (model if model is not None else export(create_hovit(cfg))).eval()
    m = cfg.model
    flops = _flops_by_part(model, torch.zeros(1, m.in_chans, m.img_size, m.img_size))
    stem = flops.get("stem", 0.0)
    stages = [flops.get(f"stages.{i}", 0.0) for i in range(MAX_STAGES)]
    f = {"log_flops": math.log(max(flops["total"], 1.0)), "log_params": math.log(count_params(model)),
         "gflops_stem": stem / 1e9, "gflops_rest": max(flops["total"] - stem - sum(stages), 0.0) / 1e9,
         **{f"gflops_stage_{i}": v / 1e9 for i, v in enumerate(stages)},
         "mlp_ratio": float(m.mlp_ratio), "head_width": float(m.head_width or 0), "img_size": float(m.img_size)}
    side, attn, blocks = m.img_size // 16, 0.0, 0  # the conv stem downsamples by 16 (LeViT's)
    for i in range(MAX_STAGES):
        s = m.stages[i] if i < len(m.stages) else None
        if s is not None and i > 0 and s.downsample != "none":
            side = (side + 1) // 2
        kept = s.kept if s is not None else 0
        tokens = side * side if s is not None else 0
        attn += kept * (s.heads if s else 0) * tokens ** 2 / 1e3
        blocks += kept
        f.update({f"dim_{i}": float(s.dim if s else 0), f"heads_{i}": float(s.heads if s else 0),
                  f"kept_{i}": float(kept), f"key_dim_{i}": float((m.key_dim or s.dim // s.heads) if s else 0),
                  f"tokens_{i}": float(tokens), f"attn_down_{i}": float(bool(s) and s.downsample == "attention")})
    f["attn_k"], f["blocks"] = attn, float(blocks)
    return f


# ---------------------------------------------------------------------------------------- scores
@dataclass
class Fit:
    """Held-out figures of a predictor.

    Attributes:
        within_10pct: share of held-out predictions within ±10 % of the measured latency.
        kendall_tau: Kendall's τ between predicted and measured latencies.
        mean_abs_rel_err: mean |predicted - measured| / measured.
        ratio_p05: 5th percentile of measured / predicted: a prediction times this is a lower
            bound on the latency 95 % of the time (the screening margin).
        n: held-out predictions scored.
        ratio_p95: 95th percentile of measured / predicted: a prediction times this is an upper
            bound 95 % of the time (None in profiles written before it was recorded).
    """
    within_10pct: float
    kendall_tau: float
    mean_abs_rel_err: float
    ratio_p05: float
    n: int
    ratio_p95: Optional[float] = None

    def line(self) -> str:
        return (f"{self.within_10pct:.1%} within ±10 %, Kendall τ {self.kendall_tau:.3f}, mean error "
                f"{self.mean_abs_rel_err:.1%} (n={self.n})")


def score(measured: Sequence[float], predicted: Sequence[float]) -> Fit:
    """Fit figures of ``predicted`` against ``measured`` latencies (same units, > 0)."""
    from scipy.stats import kendalltau

    y, p = np.asarray(measured, float), np.asarray(predicted, float)
    rel = np.abs(p - y) / y
    return Fit(float((rel <= WITHIN + 1e-9).mean()), float(kendalltau(y, p).statistic), float(rel.mean()),
               float(np.percentile(y / p, 5)), len(y), float(np.percentile(y / p, 95)))


# ------------------------------------------------------------------------------------- the model
class LatencyPredictor:
    """One target's latency (ms) from an architecture: scikit-learn ``RidgeCV`` (standardised
    features, alpha by leave-one-out) on log latency (module docstring)."""

    def __init__(self, names: Optional[Sequence[str]] = None):
        from sklearn.linear_model import RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.names = list(names) if names else None
        self.model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-4, 3, 15)))

    def _matrix(self, feats: Sequence[dict]) -> np.ndarray:
        if self.names is None:
            self.names = sorted(feats[0])
        return np.asarray([[f[k] for k in self.names] for f in feats], float)

    def fit(self, feats: Sequence[dict], latency_ms: Sequence[float]) -> "LatencyPredictor":
        """Fit on feature dicts (``features``) and their measured latencies (ms, > 0)."""
        self.model.fit(self._matrix(feats), np.log(np.asarray(latency_ms, float)))
        return self

    def predict(self, feats: Sequence[dict]) -> np.ndarray:
        """Predicted latencies (ms), one per feature dict."""
        return np.exp(self.model.predict(self._matrix(feats)))


def cross_validate(feats: Sequence[dict], latency_ms: Sequence[float], folds: int = 5, seed: int = 0) -> Fit:
    """Held-out figures: each architecture predicted by a predictor fitted on the other folds
    (scikit-learn ``KFold``, shuffled with ``seed``).

    Raises:
        HovitError: fewer than ``2 * folds`` architectures."""
    from sklearn.model_selection import KFold

    y = np.asarray(latency_ms, float)
    if len(y) < 2 * folds:
        raise HovitError(f"a predictor's held-out figures need at least {2 * folds} measured architectures, "
                         f"got {len(y)}")
    pred = np.empty_like(y)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(y):
        p = LatencyPredictor().fit([feats[i] for i in train], y[train])
        pred[test] = p.predict([feats[i] for i in test])
    return score(y, pred)


# ------------------------------------------------------------------------------------ the profile
@dataclass
class Point:
    """One profiled architecture: its config, its latency (ms; the median over rounds) and each
    round's median (ms), and its features."""
    config: dict
    latency_ms: float
    rounds_ms: list
    features: dict = field(default_factory=dict)


@dataclass
class Profile:
    """Measured architectures of one deployment target (a ``profile-target`` sweep).

    Attributes:
        target: the DeploymentTarget's dict (target.py).
        cpu: the CPU model that measured (a local profile must be used on the same one).
        space: the space the architectures were drawn from.
        points: the measured architectures.
        fit: held-out figures of a predictor fitted on them (``cross_validate``), as a dict.
        repeat: the same figures for one round's measurement against the other's: the noise
            floor any predictor is judged against.
    """
    target: dict
    cpu: str
    space: str
    points: list[Point]
    fit: Optional[dict] = None
    repeat: Optional[dict] = None
    created: str = ""
    features_version: int = FEATURES_VERSION
    provenance: Optional[dict] = None  # provenance.Provenance.to_dict(): space (name, hash), target, anchor

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(asdict(self), indent=1))
        return p

    def feature_rows(self) -> list[dict]:
        """Each point's features, recomputed when they were stored by another features version."""
        if self.features_version != FEATURES_VERSION or any(not pt.features for pt in self.points):
            for pt in self.points:
                pt.features = features(run_config_from_dict(pt.config, "profile point"))
            self.features_version = FEATURES_VERSION
        return [pt.features for pt in self.points]


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by ``profile-target``.

    Raises:
        DataError: the file is missing, not JSON, or not a profile (one line naming it)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
        points = [Point(**pt) for pt in d.pop("points")]
        prof = Profile(points=points, **d)
        if not isinstance(prof.target, dict) or not points:
            raise ValueError("no target or no points")
        return prof
    except FileNotFoundError:
        raise DataError(f"latency profile {p}: no such file (make one with `hovit-nas profile-target`)") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DataError(f"latency profile {p}: not a profile written by `hovit-nas profile-target` "
                        f"({type(exc).__name__}: {str(exc)[:120]})") from None


def draw(space: "Space", n: int, seed: int = 0) -> list[tuple[RunConfig, dict]]:
    """``n`` architectures from ``space``, stratified by FLOPs: ``POOL`` x ``n`` drawn at random
    (Optuna's RandomSampler over the space's parameters), sorted by FLOPs, cut into ``n`` equal
    strata, one kept at random from each; duplicates are dropped. Returns (config, features)."""
    import optuna

    from .errors import ConfigError

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    rng = np.random.default_rng(seed)
    pool, seen = [], set()
    for _ in range(POOL * n):
        try:
            cfg = space.suggest(study.ask())
        except ConfigError:  # a combination no model has
            continue
        key = json.dumps(to_dict(cfg.model), sort_keys=True)
        if key not in seen:
            seen.add(key)
            pool.append((cfg, features(cfg)))
    pool.sort(key=lambda cf: cf[1]["log_flops"])
    strata = np.array_split(np.arange(len(pool)), min(n, len(pool)))
    return [pool[int(rng.choice(s))] for s in strata if len(s)]


def profile_target(space: "Space", n: int, *, runtime: str, precision: str = "fp32", threads: int = 1,
                   batch: int = 1, rounds: int = 2, seed: int = 0, service: Optional["LatencyService"] = None,
                   on_point: Optional[Callable[[int, int], None]] = None) -> Profile:
    """Measure ``n`` architectures drawn from ``space`` (``draw``) on one deployment target: here
    (anchored to the space's fixed point, as a study's trials are) or on a latency ``service``
    (anchored to its own HoViT-B), ``rounds`` interleaved rounds with the space's latency
    protocol. Returns the profile with its held-out figures (``fit``, ``repeat``).

    Raises:
        HovitError: the runtime or precision is not available here, or the service refuses."""
    from .latency import Protocol, calibrate_on, device_name, measure
    from .models import create_hovit, export
    from .models.onnx import onnx_bytes
    from .target import DeploymentTarget

    lat = space.latency
    drawn = draw(space, n, seed)
    img, chans = space.base.model.img_size, space.base.model.in_chans
    if service is not None:
        ident = service.identity()
        runtime, precision, threads, batch = ident["runtime"], ident["precision"], ident["threads"], ident["batch"]
        service = replace(service, machine=ident["id"])  # a record from another machine is refused
        cpu, machine = ident["cpu"], ident["id"]
    else:
        cpu, machine = device_name(torch.device("cpu")), None
        here = DeploymentTarget.of("cpu", runtime, threads, batch, img, precision)
        ref = export(create_hovit(space.fixed_point_config()))
        anchor = calibrate_on(space.fixed_point, ref, here, lat.anchor_time_s, Protocol.of(lat), in_chans=chans)
    models = [export(create_hovit(cfg)) for cfg, _ in drawn]
    times: list[list[float]] = [[] for _ in drawn]
    done, total = 0, rounds * len(drawn)
    for _ in range(rounds):  # interleaved: drift over the sweep hits every architecture alike
        for i, model in enumerate(models):
            if service is not None:
                rec = service.measure(onnx_bytes(model, img, chans), img, chans, drawn[i][0].model.num_classes,
                                      lat.runs, lat.warmup, lat.min_time_s)
                times[i].append(float(rec["median_ms"]))
            else:
                times[i].append(measure(model, here, Protocol.of(lat), anchor=anchor, in_chans=chans).median_ms)
            done += 1
            if on_point:
                on_point(done, total)
    from . import provenance as pv

    target = DeploymentTarget.of("cpu", runtime, threads, batch, img, precision, machine)
    points = [Point(to_dict(cfg), float(np.median(t)), t, f) for (cfg, f), t in zip(drawn, times)]
    anchor = ({"name": space.fixed_point, "ms": anchor.ms, "device": "cpu", "threads": threads} if service is None
              else {"name": "the latency service's own HoViT-B", "machine": machine})
    made = pv.Provenance("profile", space=pv.space_record(space), img_size=img, target=target.to_dict(), anchor=anchor)
    prof = Profile(target.to_dict(), cpu, space.name, points,
                   created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), provenance=made.to_dict())
    prof.fit, prof.repeat = evaluate(prof)
    return prof


def evaluate(prof: Profile) -> tuple[Optional[dict], Optional[dict]]:
    """(held-out figures of a predictor on ``prof``, the repeat figures of its first two rounds)."""
    feats, y = prof.feature_rows(), [pt.latency_ms for pt in prof.points]
    fit = asdict(cross_validate(feats, y)) if len(y) >= 10 else None
    two = [pt.rounds_ms[:2] for pt in prof.points if len(pt.rounds_ms) >= 2]
    repeat = asdict(score([r[1] for r in two], [r[0] for r in two])) if len(two) >= 2 else None
    return fit, repeat


def sweep(space_name: str, n: int, *, runtime: str = "onnxruntime", precision: str = "fp32",
          threads: Optional[int] = None, batch: Optional[int] = None, latency_at: Optional[str] = None,
          rounds: int = 2, seed: int = 0, out: Optional[str | Path] = None) -> tuple[Path, Profile]:
    """``hovit-nas profile-target``: check the options, profile the target (``profile_target``,
    with progress) and save the profile (default ``profiles/SPACE-RUNTIME-PRECISION.json``).

    Raises:
        ConfigError: ``n`` < 10 or ``rounds`` < 1; HovitError: ``out`` (or ``profiles/``) is not
            writable (checked before the profiling), the runtime or precision is not available
            here, or the latency service refuses."""
    import os

    from .errors import ConfigError
    from .latency import resolve_runtime
    from .models.quantize import check as check_precision
    from .progress import Bar
    from .space import load_space

    if n < 10:
        raise ConfigError(f"`n` must be >= 10 (a predictor's held-out figures need them), got {n}")
    if rounds < 1:
        raise ConfigError(f"`rounds` must be >= 1, got {rounds}")
    space = load_space(space_name)
    check_output(out or Path("profiles"), "the profile")  # before the profiling, not after it
    check_name(space.name, "space name", "profiles")
    service = None
    if latency_at:
        from .remote import LatencyService
        from .service import TOKEN_ENV

        service = LatencyService(latency_at, token=os.environ.get(TOKEN_ENV))
    else:
        runtime = resolve_runtime(runtime, "cpu")
        check_precision(precision, runtime, torch.device("cpu"))
    threads = threads or space.latency.threads or 1
    batch = batch or space.latency.batch
    where = f"the latency service at {latency_at}" if latency_at else f"{runtime}/{precision}, {threads} thread(s)"
    _log.info(f"profiling {n} architectures of {space.name} ({space.base.model.img_size} px) on {where}, "
              f"{rounds} round(s)")
    with Bar("profiling", rounds * n) as bar:
        last = [0.0]

        def on_point(done: int, total: int) -> None:
            bar.update(done)
            import time

            if time.monotonic() - last[0] > 10 or done == total:
                last[0] = time.monotonic()
                _log.info(f"measured {done}/{total}")

        prof = profile_target(space, n, runtime=runtime, precision=precision, threads=threads, batch=batch,
                              rounds=rounds, seed=seed, service=service, on_point=on_point)
    path = prof.save(out or under("profiles", space.name, "space name",
                                  f"-{prof.target['runtime']}-{prof.target['precision']}.json"))
    return path, prof


# ------------------------------------------------------------------------------------ screening
SCREEN_ATTR = "latency_predictor"  # the study user attr: where a search's screening predictor came from


@dataclass
class Screen:
    """The ``--max-latency`` pre-check with a predictor: a trial is skipped (neither measured nor
    trained) only when even a prediction scaled by the held-out ``ratio_p05`` (the 5th
    percentile of measured / predicted) is over ``max_latency_ms``; every other trial is
    measured as before. Travels with the trial template (pickled to Ray workers)."""
    predictor: LatencyPredictor
    max_latency_ms: float
    ratio_p05: float
    source: str

    def skip(self, cfg: RunConfig) -> Optional[tuple[float, float]]:
        """(predicted ms, lower bound ms) when ``cfg`` is over the limit beyond the predictor's
        error, else None (measure it)."""
        pred = float(self.predictor.predict([features(cfg)])[0])
        bound = pred * self.ratio_p05
        return (pred, bound) if bound > self.max_latency_ms else None


def measured_trials(study) -> tuple[list[dict], list[float]]:
    """The configs and measured latencies (ms) of a study's trials (never a predicted one); the
    study's deployment target is the profile's (``make_screen`` checks it)."""
    configs, ms = [], []
    for t in study.get_trials(deepcopy=False):
        lat, cfg = t.user_attrs.get("latency") or {}, t.user_attrs.get("config")
        if cfg and lat.get("median_ms") and not lat.get("predicted"):
            configs.append(cfg)
            ms.append(float(lat["median_ms"]))
    return configs, ms


def on_scale(path: str | Path, target, space_name: Optional[str], space: Optional["pv.SpaceRecord"], anchor, *,
             whose: str, use: str, loaded: Optional[Profile] = None) -> tuple[Profile, list[dict], list[float]]:
    """The profile at ``path`` checked for use on ``target`` (a DeploymentTarget) over space
    ``space_name`` (its definition ``space``, when known), and its points on ``anchor``'s scale:
    (the profile, each point's features, each point's latency in ms).

    A profile's latencies are anchored medians, in ms at its own anchor calibration. ``anchor``
    puts them on the caller's scale: a latency.Calibration or latency.Anchor of the same model, a
    zero-argument function that makes one (called only once the checks pass), or None. Each
    latency is multiplied by (caller's anchor ms / profile anchor ms) when both anchor to the
    same model here (calibrations of one model differ by up to 25 % between runs, issue 32).
    ``whose`` names the user in messages ("this study's"), ``use`` what it is used for.
    ``loaded``: the profile at ``path``, where the caller has read it already.

    Raises:
        DataError: the profile cannot be read.
        ProvenanceError: the profile is of another space (by name).
        HovitError: the profile was measured on another deployment target or CPU (one line)."""
    from . import provenance as pv
    from .latency import device_name
    from .target import DeploymentTarget

    prof = load_profile(path) if loaded is None else loaded
    have = DeploymentTarget.from_dict(prof.target)
    if have != target:
        raise HovitError(f"latency profile {path} was measured on {have.name}, not {whose} target {target.name}; "
                         "run `hovit-nas profile-target` for this target")
    here = device_name(torch.device("cpu"))
    if target.machine is None and prof.cpu != here:
        raise HovitError(f"latency profile {path} was measured on {prof.cpu}, not this machine's {here}; run "
                         "`hovit-nas profile-target` here")
    made = pv.Provenance.from_dict(prof.provenance)
    if made is None:
        pv.legacy(f"latency profile {path}")
    if space_name and prof.space != space_name:
        raise pv.ProvenanceError(f"latency profile {path} was measured over space {prof.space}, not {whose} "
                                 f"space {space_name}; its predictor would screen architectures it never saw: run "
                                 f"`hovit-nas profile-target --space {space_name}`")
    if made is not None and made.space is not None and space is not None:
        pv.check_space(made.space, space, f"latency profile {path}", use)
    scale = 1.0
    pa = (made.anchor or {}) if made is not None else {}
    anchor = anchor() if callable(anchor) else anchor
    if anchor is not None and pa.get("ms") and pa.get("name") == anchor.name:
        scale = anchor.ms / float(pa["ms"])
        _log.info(f"latency profile {path}: anchored to {pa['name']} at {float(pa['ms']):.3f} ms, {whose} at "
                  f"{anchor.ms:.3f} ms; its latencies are scaled by {scale:.3f} onto {whose} scale")
    elif anchor is not None:
        _log.warning(f"latency profile {path} records no anchor calibration of {anchor.name}: its latencies are "
                     "taken as they are, on their own scale")
    return prof, prof.feature_rows(), [pt.latency_ms * scale for pt in prof.points]


def make_screen(path: str | Path, study, target, max_latency_ms: float, anchor=None) -> Screen:
    """Fit the screening predictor for a study on ``target`` (a DeploymentTarget): the profile at
    ``path`` (checked and put on the study's scale by ``on_scale``; ``anchor`` is the study's
    latency.Calibration) plus the study's own measured trials; record where it came from
    (``SCREEN_ATTR``).

    Raises:
        DataError: the profile cannot be read.
        ProvenanceError: the profile is of another space.
        HovitError: the profile was measured on another deployment target or CPU (one line)."""
    from . import provenance as pv

    ours = pv.Provenance.from_dict(study.user_attrs.get(pv.STUDY_ATTR))
    prof, feats, ms = on_scale(path, target, study.user_attrs.get("space"), None if ours is None else ours.space,
                               anchor, whose="this study's", use="screening this study's trials")
    configs, own = measured_trials(study)
    feats += [features(run_config_from_dict(c, "trial config")) for c in configs]
    ms += own
    held = cross_validate(feats, ms)
    _log.info(f"latency predictor: {len(prof.points)} profiled architectures + {len(own)} of the study's trials; "
              f"held out: {held.line()}; a trial predicted over {max_latency_ms:g} ms / {held.ratio_p05:.2f} is "
              "neither measured nor trained")
    study.set_user_attr(SCREEN_ATTR, {"profile": str(path), "points": len(prof.points), "study_trials": len(own),
                                      "held_out": asdict(held)})
    return Screen(LatencyPredictor().fit(feats, ms), max_latency_ms, held.ratio_p05, str(path))

"""Search spaces: a declarative YAML file -> Optuna suggestions -> a RunConfig.

A space file has a ``base`` RunConfig (the fixed parts: stage dims and heads, resolution,
training budget) and ``params``, each one of::

    {type: categorical, choices: [...]}
    {type: int, low: L, high: H, step: S | log: true}
    {type: float, low: L, high: H, log: true}

plus ``per_stage: true`` (one parameter per stage, named ``<name>_<i>``; ``stages: [...]``
restricts which), and ``when: pruning`` (suggested only if some stage keeps N < M).
``blocks`` takes ``"M:N"`` strings (build M, keep N): one static categorical per stage, which
Optuna's samplers handle far better than a keep-range that depends on M.
The HoViT-B fixed point is derived from the preset, so it is evaluated exactly as the paper's
model within the space's fixed parts.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import optuna

from .config import (EarlyStop, LatencyConfig, NoiseConfig, RunConfig, TrainConfig, dump_run_config, from_dict, read_yaml,
                     run_config_from_dict, to_dict)
from .errors import ConfigError


@runtime_checkable
class TrialSpace(Protocol):
    """What an executor needs of a space: a name, the base config and a config per trial.

    Implemented by :class:`Space` (a search-space file) and ``confirm.ConfirmSpace`` (a
    candidate retrained over seeds). ``suggest`` asks the Optuna trial for its parameters
    (``trial.suggest_*``, so a sampler or an enqueued trial decides them) and returns a
    validated RunConfig; it raises ConfigError for a combination no model has. ``base`` is
    what every trial starts from: executors read its training budget (epochs) from it."""

    name: str
    base: RunConfig

    def suggest(self, trial: optuna.trial.BaseTrial) -> RunConfig: ...


FIXED_POINT_ATTR = "fixed_point"  # the trial user attr of the fixed point (study.FIXED_POINT_ATTR)
REPLICATE_ATTR = "replicate"  # a replicate of the fixed point: k >= 1, trained with user attr ``seed``


def replicate_seed(trial) -> Optional[int]:
    """The training seed of a fixed-point replicate (``Space.fixed_point_trials``), else None."""
    attrs = getattr(trial, "user_attrs", None) or {}
    return int(attrs["seed"]) if REPLICATE_ATTR in attrs and "seed" in attrs else None


def _space_dirs() -> list[Path]:
    """Where a space name is looked up, at call time: ./search_spaces (the user's own), then the package's."""
    from importlib.resources import files

    return [Path.cwd() / "search_spaces", Path(str(files("hovit_nas") / "spaces"))]




# ------------------------------------------------------------- what each parameter name sets

def _parse_blocks(v: Any) -> tuple[int, Optional[int]]:
    if isinstance(v, int) and not isinstance(v, bool):
        return v, None
    m, _, n = str(v).partition(":")
    return int(m), (int(n) if n else None)


def _set_blocks(cfg: RunConfig, i: int, v: Any) -> None:
    m, n = _parse_blocks(v)
    s = cfg.model.stages[i]
    s.blocks, s.keep = m, (None if n is None or n == m else n)


def _get_blocks(cfg: RunConfig, i: int) -> str:
    s = cfg.model.stages[i]
    return f"{s.blocks}:{s.kept}"


def _attr(section: str, attr: str) -> tuple[Callable, Callable]:
    return (lambda cfg, i: getattr(getattr(cfg, section), attr),
            lambda cfg, i, v: setattr(getattr(cfg, section), attr, v))


def _set_width(cfg: RunConfig, i: int, v: Any) -> None:
    dim, _, heads = str(v).partition(":")
    s = cfg.model.stages[i]
    s.dim, s.heads = int(dim), int(heads or s.heads)


def _get_width(cfg: RunConfig, i: int) -> str:
    s = cfg.model.stages[i]
    return f"{s.dim}:{s.heads}"


TARGETS: dict[str, tuple[bool, Callable, Callable]] = {  # name -> (per stage, get, set)
    "blocks": (True, _get_blocks, _set_blocks),
    "width": (True, _get_width, _set_width),  # "DIM:HEADS"; stage 0's width is the stem's output width
    "downsample": (True, lambda c, i: c.model.stages[i].downsample,
                   lambda c, i, v: setattr(c.model.stages[i], "downsample", v)),
    **{k: (False, *_attr("model", k)) for k in ("head_width", "key_dim", "attn_ratio", "mlp_ratio", "drop_path",
                                                 "stem_dim")},
    **{k: (False, *_attr("prune", k)) for k in ("tau_start", "tau_end", "tau_schedule", "lora_rank", "lora_alpha",
                                                 "gate_lr_mult")},
    **{k: (False, *_attr("train", k)) for k in ("lr", "weight_decay", "batch_size", "label_smoothing")},
}


@dataclass
class Param:
    name: str  # as in the file
    type: str
    choices: Optional[list] = None
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    stages: Optional[list[int]] = None  # per-stage: which stages
    when: Optional[str] = None

    def distribution(self) -> optuna.distributions.BaseDistribution:
        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log,
                                                        step=int(self.step or 1))
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def trial_names(self) -> list[tuple[str, Optional[int]]]:
        return [(f"{self.name}_{i}", i) for i in self.stages] if self.stages is not None else [(self.name, None)]


@dataclass
class Space:
    name: str
    base: RunConfig
    params: list[Param]
    description: str = ""
    fixed_point: str = "hovit_b"
    trials: int = 20
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    builtin_data: dict = field(default_factory=dict)  # budget overrides for the built-in demo data
    reference_point: dict = field(default_factory=dict)  # for hypervolume: {accuracy, latency_ms}
    early_stop: EarlyStop = field(default_factory=EarlyStop)  # rungs (rungs.py); --early-stop overrides
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # replicated fixed point, margin (stats.py)
    source: str = ""

    # ---------------------------------------------------------------- trial -> config
    def suggest(self, trial: optuna.trial.BaseTrial) -> RunConfig:
        cfg = copy.deepcopy(self.base)
        deferred = []
        for p in self.params:
            if p.when == "pruning":
                deferred.append(p)
                continue
            self._apply(cfg, p, trial)
        if cfg.model.pruned:
            for p in deferred:
                self._apply(cfg, p, trial)
        cfg.name = f"{self.name}-t{trial.number}" if hasattr(trial, "number") else self.name
        seed = replicate_seed(trial)
        if seed is not None:  # a replicate of the fixed point: the same architecture, another training seed
            cfg.train.seed = seed
        return cfg.validate()

    def fixed_point_trials(self) -> list[tuple[dict, dict]]:
        """The fixed point as enqueued work, ``(params, user attrs)``: ``noise.seeds`` replicates,
        replicate k trained with seed ``base seed + k`` (k = 0 is the fixed point as before)."""
        params, seed = self.fixed_point_params(), self.base.train.seed
        return [(params, {FIXED_POINT_ATTR: self.fixed_point, **({} if k == 0 else {REPLICATE_ATTR: k,
                                                                                   "seed": seed + k})})
                for k in range(self.noise.seeds)]

    def _apply(self, cfg: RunConfig, p: Param, trial) -> None:
        setter = TARGETS[p.name][2]
        for tname, i in p.trial_names():
            if p.type == "categorical":
                v = trial.suggest_categorical(tname, p.choices)
            elif p.type == "int":
                v = trial.suggest_int(tname, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                v = trial.suggest_float(tname, p.low, p.high, step=p.step, log=p.log)
            setter(cfg, i, v)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return {tname: p.distribution() for p in self.params for tname, _ in p.trial_names()}

    # ---------------------------------------------------------------- config -> params
    def params_for(self, cfg: RunConfig) -> dict:
        """The trial parameters that reproduce ``cfg`` (inverse of :meth:`suggest`)."""
        out = {}
        for p in self.params:
            if p.when == "pruning" and not cfg.model.pruned:
                continue
            getter = TARGETS[p.name][1]
            for tname, i in p.trial_names():
                out[tname] = getter(cfg, i)
        return out

    def fixed_point_config(self) -> RunConfig:
        from .models import PRESETS

        preset = PRESETS[self.fixed_point](img_size=self.base.model.img_size, num_classes=self.base.model.num_classes)
        preset.train = copy.deepcopy(self.base.train)
        return preset

    def fixed_point_params(self) -> dict:
        """HoViT-B expressed in this space; error if the space cannot express it exactly."""
        target = self.fixed_point_config()
        params = self.params_for(target)
        where = f"{self.source or self.name}: fixed_point {self.fixed_point}"
        dists = self.distributions()
        for k, v in params.items():
            d = dists[k]
            if isinstance(d, optuna.distributions.CategoricalDistribution):
                match = [c for c in d.choices if str(c) == str(v)]
                if not match:
                    raise ConfigError(f"{where}: {k}={v!r} is not among the choices {d.choices}")
                params[k] = match[0]
            elif not d.low <= v <= d.high:
                raise ConfigError(f"{where}: {k}={v!r} is outside [{d.low}, {d.high}]")
        built = self.suggest(optuna.trial.FixedTrial(params))
        want, got = to_dict(target.model), to_dict(built.model)
        for key in want:
            if want[key] != got[key]:
                raise ConfigError(f"{where}: model.{key} is {got[key]!r} in this space but {want[key]!r} in the preset "
                                  "(search it or fix it to the preset's value)")
        for key, val in to_dict(target.prune).items():
            if built.model.pruned and to_dict(built.prune)[key] != val:
                raise ConfigError(f"{where}: prune.{key} is {to_dict(built.prune)[key]!r} here, {val!r} in the preset")
        return params

    def with_builtin_budget(self) -> "Space":
        """The space as run on the built-in demo data: the file's ``builtin_data`` overrides."""
        if not self.builtin_data:
            return self
        sp = copy.deepcopy(self)
        o = dict(sp.builtin_data)
        if "img_size" in o:
            sp.base.model.img_size = o.pop("img_size")
        sp.trials = o.pop("trials", sp.trials)
        sp.base.train = from_dict(TrainConfig, {**to_dict(sp.base.train), **o}, f"{self.source}: builtin_data")
        sp.base.validate()
        return sp

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "base": to_dict(self.base),
                "params": {p.name: _param_dict(p) for p in self.params}, "fixed_point": self.fixed_point,
                "trials": self.trials, "latency": to_dict(self.latency), "reference_point": self.reference_point,
                "early_stop": to_dict(self.early_stop), "noise": to_dict(self.noise)}


def _param_dict(p: Param) -> dict:
    d = {"type": p.type}
    for k in ("choices", "low", "high", "step", "when"):
        if getattr(p, k) is not None:
            d[k] = getattr(p, k)
    if p.log:
        d["log"] = True
    if p.stages is not None:
        d["per_stage"], d["stages"] = True, p.stages
    return d


# ------------------------------------------------------------------------------ load/validate

def resolve_space_path(name_or_file: str) -> Path:
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: no such search-space file")
        return p
    dirs = _space_dirs()
    for d in dirs:
        cand = d / f"{name_or_file}.yaml"
        if cand.is_file():
            return cand
    known = sorted({q.stem for d in dirs if d.is_dir() for q in d.glob("*.yaml")})
    raise ConfigError(f"unknown search space {name_or_file!r} (known: {', '.join(known) or 'none'}; or give a file)")


def load_space(name_or_file: str) -> Space:
    path = resolve_space_path(name_or_file)
    data = read_yaml(path)
    return space_from_dict(data, str(path))


@dataclass
class ParamFile:
    """One entry of a space file's ``params`` (see the module docstring)."""

    type: str = "categorical"
    choices: Optional[list] = None
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    per_stage: Optional[bool] = None
    stages: Optional[list[int]] = None
    when: Optional[str] = None


@dataclass
class ReferencePoint:
    """Hypervolume reference; latency defaults to 2x HoViT-B's measured latency."""

    accuracy: float = 0.0
    latency_ms: Optional[float] = None


@dataclass
class SpaceFile:
    """A search-space file as written: validated on load by ``config.from_dict``."""

    name: str
    base: dict  # a RunConfig, checked with its own messages
    params: dict
    description: str = ""
    fixed_point: str = "hovit_b"
    trials: int = 20
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    builtin_data: dict = field(default_factory=dict)
    reference_point: ReferencePoint = field(default_factory=ReferencePoint)
    early_stop: EarlyStop = field(default_factory=EarlyStop)
    noise: NoiseConfig = field(default_factory=NoiseConfig)


def _schema(cls: type, data: Any, where: str) -> Any:
    """``from_dict`` with errors prefixed by the file (and field) they come from."""
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('top level: ')}") from None


def space_from_dict(data: Any, where: str) -> Space:
    f: SpaceFile = _schema(SpaceFile, data, where)
    base = run_config_from_dict(f.base, f"{where}: base")
    if not isinstance(f.params, dict) or not f.params:
        raise ConfigError(f"{where}: params must be a non-empty mapping")
    params = [_parse_param(name, spec, base, f"{where}: params.{name}") for name, spec in f.params.items()]
    from .models import PRESETS
    if f.fixed_point not in PRESETS:
        raise ConfigError(f"{where}: fixed_point {f.fixed_point!r} is not a preset ({', '.join(PRESETS)})")
    if f.trials < 1:
        raise ConfigError(f"{where}: trials must be a positive integer")
    f.latency.validate(f"{where}: latency")
    f.early_stop.validate(f"{where}: early_stop")
    f.noise.validate(f"{where}: noise")
    ref = {k: v for k, v in to_dict(f.reference_point).items() if v is not None}
    if not isinstance(f.builtin_data, dict):
        raise ConfigError(f"{where}: builtin_data must be a mapping")
    space = Space(name=str(f.name), base=base, params=params, description=f.description, fixed_point=f.fixed_point,
                  trials=f.trials, latency=f.latency, builtin_data=f.builtin_data, reference_point=ref, early_stop=f.early_stop,
                  noise=f.noise, source=where)
    bad_builtin = set(space.builtin_data) - set(to_dict(TrainConfig())) - {"img_size", "trials"}
    if bad_builtin:
        raise ConfigError(f"{where}: builtin_data: unknown key {sorted(bad_builtin)[0]!r}")
    _check_buildable(space, where)
    space.fixed_point_params()
    space.with_builtin_budget()
    return space


def _parse_param(name: str, spec: Any, base: RunConfig, where: str) -> Param:
    if name not in TARGETS:
        raise ConfigError(f"{where}: unknown parameter {name!r} (known: {', '.join(sorted(TARGETS))})")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping like {{type: int, low: 1, high: 4}}")
    f: ParamFile = _schema(ParamFile, spec, where)
    per_stage = TARGETS[name][0]
    if f.per_stage is not None and f.per_stage != per_stage:
        raise ConfigError(f"{where}: per_stage must be {str(per_stage).lower()} for {name!r}")
    if f.type not in ("categorical", "int", "float"):
        raise ConfigError(f"{where}: type must be categorical, int or float, got {f.type!r}")
    if f.when not in (None, "pruning"):
        raise ConfigError(f"{where}: when must be 'pruning', got {f.when!r}")
    p = Param(name, f.type, log=f.log, when=f.when)
    if f.type == "categorical":
        if not isinstance(f.choices, list) or not f.choices:
            raise ConfigError(f"{where}: choices must be a non-empty list")
        if len(set(map(str, f.choices))) != len(f.choices):
            raise ConfigError(f"{where}: choices has duplicates")
        p.choices = f.choices
    else:
        for k in ("low", "high"):
            if getattr(f, k) is None:
                raise ConfigError(f"{where}: {k} must be a number")
        num = int if f.type == "int" else float
        if f.type == "int" and not all(float(v).is_integer() for v in (f.low, f.high, f.step or 1)):
            raise ConfigError(f"{where}: int parameters need integer low/high/step")
        p.low, p.high = num(f.low), num(f.high)
        p.step = None if f.step is None else num(f.step)
        if p.low > p.high:
            raise ConfigError(f"{where}: impossible range low={spec['low']} > high={spec['high']}")
        if p.log and p.low <= 0:
            raise ConfigError(f"{where}: log scale needs low > 0, got {spec['low']}")
        if p.log and p.step not in (None, 1):
            raise ConfigError(f"{where}: step and log cannot be combined")
        if p.step is not None and p.step <= 0:
            raise ConfigError(f"{where}: step must be > 0")
    if per_stage:
        n = len(base.model.stages)
        stages = list(range(n)) if f.stages is None else f.stages
        if not stages or any(not 0 <= i < n for i in stages):
            raise ConfigError(f"{where}: stages must list stage indices in 0..{n - 1}")
        p.stages = stages
    return p


def _check_buildable(space: Space, where: str) -> None:
    """Every categorical choice must build (with the others at their first/lowest value)."""
    for p in space.params:
        values = p.choices if p.type == "categorical" else [p.low, p.high]
        for v in values:
            cfg = copy.deepcopy(space.base)
            for tname, i in p.trial_names():
                try:
                    if p.name == "blocks":
                        m, n = _parse_blocks(v)
                        if n is not None and not 1 <= n <= m:
                            raise ConfigError(f"keep {n} not in 1..{m}")
                    TARGETS[p.name][2](cfg, i, int(v) if p.type == "int" else v)
                    if p.name == "width" and i == 0 and cfg.model.stages[0].downsample == "none":
                        cfg.model.stem_dim = None  # the stem follows stage 0's width
                    cfg.validate()
                except (ConfigError, ValueError, TypeError) as exc:
                    raise ConfigError(f"{where}: params.{p.name}: value {v!r} cannot build a model ({exc})") from None


def config_yaml_for_trial(space: Space, params: dict) -> str:
    """The YAML that ``hovit-nas train --config`` reproduces a trial from."""
    return dump_run_config(space.suggest(optuna.trial.FixedTrial(params)))



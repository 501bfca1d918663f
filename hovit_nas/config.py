"""Typed configuration: dataclasses loaded from YAML and validated on load.

Every run is described by a :class:`RunConfig` (model + pruning + training budget); any result
can be written back to YAML with :func:`save_run_config` and reproduced with ``hovit-nas train``.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Sequence

import yaml

from . import evaluators, runtimes
from .errors import ConfigError

DOWNSAMPLE = ("none", "conv", "attention")
TAU_SCHEDULES = ("linear", "cosine", "exponential")


@dataclass
class StageConfig:
    """One token stage: ``blocks`` built (M), ``keep`` kept after pruning (N <= M)."""

    dim: int
    heads: int
    blocks: int
    keep: Optional[int] = None  # None: keep all (no pruning)
    downsample: str = "none"  # the downsampling that *enters* this stage

    @property
    def kept(self) -> int:
        return self.blocks if self.keep is None else self.keep


@dataclass
class ArchConfig:
    """The HoViT architecture. Defaults reproduce the paper's parameter counts."""

    stages: list[StageConfig]
    img_size: int = 224
    num_classes: int = 9
    in_chans: int = 3
    stem_dim: Optional[int] = None  # default: first stage's dim
    head_width: int = 512  # 1x1 conv head; 0 = no head conv
    key_dim: Optional[int] = None  # per-head q/k dim; default dim // heads
    attn_ratio: float = 1.0
    mlp_ratio: float = 2.0
    drop_path: float = 0.0

    def validate(self, where: str = "model") -> "ArchConfig":
        def bad(fieldname: str, msg: str):
            raise ConfigError(f"{where}.{fieldname}: {msg}")

        if self.img_size < 16:
            bad("img_size", f"must be >= 16, got {self.img_size}")
        if self.num_classes < 2:
            bad("num_classes", f"must be >= 2, got {self.num_classes}")
        if self.in_chans < 1:
            bad("in_chans", f"must be >= 1, got {self.in_chans}")
        if not self.stages:
            bad("stages", "needs at least one stage")
        if self.head_width < 0:
            bad("head_width", f"must be >= 0 (0 = no 1x1 head), got {self.head_width}")
        if self.stem_dim is not None and (self.stem_dim < 8 or self.stem_dim % 8):
            bad("stem_dim", f"must be a positive multiple of 8, got {self.stem_dim}")
        if self.key_dim is not None and self.key_dim < 1:
            bad("key_dim", f"must be >= 1, got {self.key_dim}")
        if self.attn_ratio <= 0 or self.mlp_ratio <= 0:
            bad("attn_ratio" if self.attn_ratio <= 0 else "mlp_ratio", "must be > 0")
        if not 0.0 <= self.drop_path < 1.0:
            bad("drop_path", f"must be in [0, 1), got {self.drop_path}")
        prev = self.stem_dim or self.stages[0].dim
        for i, s in enumerate(self.stages):
            f = f"stages[{i}]"
            if s.dim < 1:
                bad(f"{f}.dim", f"must be >= 1, got {s.dim}")
            if s.heads < 1:
                bad(f"{f}.heads", f"must be >= 1, got {s.heads}")
            if s.dim % s.heads:
                bad(f"{f}.heads", f"{s.heads} heads do not divide dim {s.dim}")
            if s.blocks < 1:
                bad(f"{f}.blocks", f"must be >= 1, got {s.blocks}")
            if s.keep is not None and not 1 <= s.keep <= s.blocks:
                bad(f"{f}.keep", f"must be in 1..blocks ({s.blocks}), got {s.keep}")
            if s.keep is not None and math.comb(s.blocks, s.keep) > 4096:
                bad(f"{f}.keep", f"C({s.blocks},{s.keep}) keep-masks is too many (max 4096)")
            if s.downsample not in DOWNSAMPLE:
                bad(f"{f}.downsample", f"unknown downsampling {s.downsample!r}; one of {', '.join(DOWNSAMPLE)}")
            if s.downsample == "none" and s.dim != prev:
                bad(f"{f}.dim", f"changes {prev} -> {s.dim} without downsampling (set downsample: conv|attention)")
            if s.downsample == "attention" and prev % self.key_dim_for(i - 1 if i else 0):
                bad(f"{f}.downsample", "attention downsampling needs the input dim divisible by key_dim")
            prev = s.dim
        return self

    def key_dim_for(self, i: int) -> int:
        s = self.stages[i]
        return self.key_dim or s.dim // s.heads

    @property
    def pruned(self) -> bool:
        return any(s.kept < s.blocks for s in self.stages)


@dataclass
class PruneConfig:
    """Phase 2: TinyFusion-style learnable block pruning trained through LoRA."""

    tau_start: float = 1.0
    tau_end: float = 0.1
    tau_schedule: str = "linear"
    lora_rank: int = 16  # 0 = full fine-tuning
    lora_alpha: float = 32.0
    gate_lr_mult: float = 10.0

    def validate(self, where: str = "prune") -> "PruneConfig":
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ConfigError(f"{where}.tau_start/tau_end: must be > 0")
        if self.tau_schedule not in TAU_SCHEDULES:
            raise ConfigError(f"{where}.tau_schedule: unknown {self.tau_schedule!r}; one of {', '.join(TAU_SCHEDULES)}")
        if self.lora_rank < 0:
            raise ConfigError(f"{where}.lora_rank: must be >= 0 (0 = full fine-tuning), got {self.lora_rank}")
        if self.lora_alpha <= 0:
            raise ConfigError(f"{where}.lora_alpha: must be > 0, got {self.lora_alpha}")
        if self.gate_lr_mult <= 0:
            raise ConfigError(f"{where}.gate_lr_mult: must be > 0, got {self.gate_lr_mult}")
        return self


@dataclass
class TrainConfig:
    """The training budget and optimiser (one readable loop in train.py)."""

    epochs_dense: int = 10
    epochs_prune: int = 5
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    seed: int = 0
    amp: bool = True  # bf16 autocast where the device computes bf16 natively (CUDA; CPUs with AVX512-BF16/AMX)
    max_steps_per_epoch: Optional[int] = None  # cap for quick CPU runs
    channels_last: bool = False  # NHWC activations: for GPUs where it measurably helps (README)
    compile: bool = False  # torch.compile the model for training (GPU; costs a compile per trial)
    # read from older files and ignored: the dataset cache replaced DataLoader workers (data/)
    RETIRED: ClassVar[tuple] = ("num_workers",)

    def validate(self, where: str = "train") -> "TrainConfig":
        for name in ("epochs_dense", "epochs_prune"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0")
        if self.batch_size < 1:
            raise ConfigError(f"{where}.batch_size: must be >= 1")
        if not self.lr > 0:
            raise ConfigError(f"{where}.lr: must be > 0")
        if self.schedule not in ("cosine", "onecycle", "constant"):
            raise ConfigError(f"{where}.schedule: unknown {self.schedule!r}; one of cosine, onecycle, constant")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch < 1:
            raise ConfigError(f"{where}.max_steps_per_epoch: must be >= 1")
        return self


@dataclass
class RunConfig:
    """Everything that defines one trained model: architecture, pruning recipe, budget."""

    model: ArchConfig
    prune: PruneConfig = field(default_factory=PruneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = "hovit"

    def validate(self) -> "RunConfig":
        self.model.validate()
        self.prune.validate()
        self.train.validate()
        return self


CALIBRATION_IMAGES = 128  # int8: train images per calibration (NNCF's own default subset is 300)


@dataclass
class LatencyConfig:
    """How a study times the exported model (latency.py): batch, runs, warm-up, CPU threads, the
    runtime, whether each measurement is anchored to the fixed point (cancels a shared machine's
    drift), and how long each measurement (``min_time_s``) and the anchor's calibration
    (``anchor_time_s``) time at least, in seconds."""

    batch: int = 1
    runs: int = 30
    warmup: int = 10
    threads: Optional[int] = None  # None: the trial's threads, else torch's default
    anchor: bool = True
    runtime: str = "auto"  # torch | onnxruntime | openvino | auto (onnxruntime on CPU, torch on CUDA): latency.py
    min_time_s: float = 1.0  # each measurement times at least this long (more runs for fast models)
    anchor_time_s: float = 3.0  # the anchor's one calibration window, per study
    precision: str = "fp32"  # fp32 | int8: post-training quantized for the runtime (models/quantize.py)
    calibration_images: int = CALIBRATION_IMAGES  # int8: train images the activation ranges are observed on

    def validate(self, where: str = "latency") -> "LatencyConfig":
        for name in ("batch", "runs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("min_time_s", "anchor_time_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{where}.{name}: must be > 0 seconds, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"{where}.warmup: must be >= 0, got {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"{where}.threads: must be >= 1, got {self.threads}")
        if self.runtime not in runtimes.known():
            raise ConfigError(f"{where}.runtime: unknown {self.runtime!r}; one of {', '.join(runtimes.known())}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{where}.precision: unknown {self.precision!r}; one of {', '.join(PRECISIONS)}")
        if self.calibration_images < 1:
            raise ConfigError(f"{where}.calibration_images: must be >= 1, got {self.calibration_images}")
        return self


PRECISIONS = runtimes.PRECISIONS  # int8: post-training quantization (models/quantize.py)
QUANTIZABLE = runtimes.quantizable()  # runtimes an int8 model is made for
RUNTIMES = runtimes.BUILT_IN  # auto and the built-in runtimes: the CLI's choices (settings read the registry live)


@dataclass
class DataOptions:
    """How ``--data`` is read: the split, an external test set, caps and augmentation."""

    split_index: Optional[str] = None
    external_test: Optional[str] = None
    download: bool = False
    max_per_split: Optional[int] = None  # cap each split (stratified) for quick runs
    augment: bool = True  # flips + 90-degree rotations (histology has no orientation)
    cache_dir: Optional[str] = None  # the dataset cache (data/cache.py); None: $HOVIT_NAS_CACHE_DIR or ~/.cache


@dataclass
class DataSpec:
    """One dataset at one resolution: what ``data.load_data`` resolves (data/sources.py)."""

    path: Optional[str] = None  # None = built-in digits
    img_size: int = 224
    split_index: Optional[str] = None
    external_test: Optional[str] = None
    val_frac: float = 0.15
    test_frac: float = 0.15
    seed: int = 0
    augment: bool = True
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    download: bool = False
    max_per_split: Optional[int] = None
    cache_dir: Optional[str] = None  # None: resolved where the data is loaded (each Ray node its own)

    @classmethod
    def of(cls, path: Optional[str], img_size: int, seed: int = 0,
           options: Optional[DataOptions] = None) -> "DataSpec":
        """The one way a command turns ``--data`` and its options into a spec. Paths are made
        absolute: Ray trials run in their own working directories."""
        o = options or DataOptions()
        absolute = (lambda v: str(Path(v).expanduser().resolve()) if v else v)
        return cls(path=absolute(path), img_size=img_size, seed=seed, split_index=absolute(o.split_index),
                   external_test=absolute(o.external_test), download=o.download, max_per_split=o.max_per_split,
                   augment=o.augment, cache_dir=absolute(o.cache_dir))

    @property
    def label(self) -> str:
        return "builtin:digits (scikit-learn load_digits, 8x8 upsampled)" if self.path is None else str(self.path)


@dataclass
class RayConfig:
    """Where Ray runs trials: cluster address and per-trial resources."""

    address: Optional[str] = None  # None: start a local Ray sized to the machine
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: Optional[int] = None
    asha: bool = False  # Ray's ASHA on validation accuracy alone


EARLY_STOP_RULES = ("none", "pareto", "accuracy")


@dataclass
class EarlyStop:
    """Successive halving inside each trial (rungs.py), for both executors: at epochs
    ``min_epochs * eta**k`` a trial continues only if it ranks in the top 1/eta of the trials
    that reached that epoch. ``pareto`` ranks by (rung accuracy up, latency down), which is known
    before training; ``accuracy`` by accuracy alone (the usual ASHA rule, for comparison)."""

    rule: str = "none"  # none | pareto | accuracy
    min_epochs: int = 1  # r: the first rung
    eta: int = 3  # reduction factor

    def validate(self, where: str = "early_stop") -> "EarlyStop":
        if self.rule not in EARLY_STOP_RULES:
            raise ConfigError(f"{where}.rule: unknown {self.rule!r}; one of {', '.join(EARLY_STOP_RULES)}")
        if self.min_epochs < 1:
            raise ConfigError(f"{where}.min_epochs: must be >= 1, got {self.min_epochs}")
        if self.eta < 2:
            raise ConfigError(f"{where}.eta: must be >= 2, got {self.eta}")
        return self

    @property
    def active(self) -> bool:
        return self.rule != "none"

    def rungs(self, epochs: int) -> list[int]:
        """The rung epochs of a trial that trains ``epochs`` in all; the last epoch is no rung."""
        out, e = [], self.min_epochs
        while e < epochs:
            out.append(e)
            e *= self.eta
        return out


@dataclass
class Limits:
    """Optional constraints on the exported model. The one feasibility rule of the project."""

    max_latency_ms: Optional[float] = None
    max_params_m: Optional[float] = None

    @property
    def active(self) -> bool:
        return self.max_latency_ms is not None or self.max_params_m is not None

    def check(self, latency_ms: float, params: int) -> tuple[list[float], list[str]]:
        """Optuna constraint values (<= 0 feasible) and a reason for each violated limit."""
        values, reasons = [], []
        if self.max_latency_ms is not None:
            values.append(latency_ms - self.max_latency_ms)
            if values[-1] > 0:
                reasons.append(f"latency {latency_ms:.2f} ms > max {self.max_latency_ms} ms")
        if self.max_params_m is not None:
            values.append(params / 1e6 - self.max_params_m)
            if values[-1] > 0:
                reasons.append(f"params {params / 1e6:.2f} M > max {self.max_params_m} M")
        return values or [0.0], reasons


@dataclass
class NoiseConfig:
    """How a study measures its own noise and decides under it (stats.py, issue 32).

    ``seeds``: the fixed point is trained this many times with seeds ``base seed + k`` (k = 0 is
    the usual fixed point), counted in the trial budget; their spread is the study's seed SD at
    its own budget and data, and their latencies its measurement-to-measurement spread.
    ``margin``: the non-inferiority margin on the accuracy axis, in the metric's units (0.01 =
    one point of top-1) that ``pin --non-inferior-to`` uses by default."""

    seeds: int = 3
    margin: float = 0.01

    def validate(self, where: str = "noise") -> "NoiseConfig":
        if self.seeds < 1:
            raise ConfigError(f"{where}.seeds: must be >= 1 (1: no replicate), got {self.seeds}")
        if not self.margin > 0:
            raise ConfigError(f"{where}.margin: must be > 0, got {self.margin}")
        return self


METRICS = ("top1", "f1_macro", "balanced", "auc", "nll")  # nll enters the study as -NLL (stats.objective)
SAMPLERS = ("nsga2", "tpe", "random")
EXECUTORS = ("local", "ray")
EXPORT_FORMATS = ("safetensors", "onnx")
EVAL_RUNTIMES = runtimes.NAMES  # what `eval` runs an exported model on


LATENCY_WAIT_S = 120.0  # seconds a trial waits for an unreachable or busy latency service (remote.py)


@dataclass
class SearchConfig:
    """Everything ``hovit-nas search`` was asked for (search.py resolves it against the space)."""

    space: str = "hovit"
    data: Optional[str] = None
    data_options: DataOptions = field(default_factory=DataOptions)
    study: Optional[str] = None
    storage: Optional[str] = None
    trials: Optional[int] = None  # finished trials wanted in the study, in total; None: the space's
    timeout: Optional[float] = None
    sampler: str = "nsga2"
    seed: Optional[int] = 0
    device: str = "auto"
    threads: Optional[int] = None
    metric: str = "top1"
    limits: Limits = field(default_factory=Limits)
    latency_batch: Optional[int] = None
    latency_anchor: Optional[bool] = None  # None: the space's latency.anchor
    runtime: Optional[str] = None  # None: the space's latency.runtime
    precision: Optional[str] = None  # None: a resumed study's, else the space's latency.precision
    latency_at: Optional[str] = None  # a latency service's URL (service.py): it times every trial
    latency_wait_s: float = LATENCY_WAIT_S  # how long a trial waits for an unreachable or busy latency service
    predictor: Optional[str] = None  # a profile-target profile: screens trials against limits.max_latency_ms
    evaluator: str = "train"  # train: each trial trains stand-alone | supernet: inherited weights (supernet.py)
    supernet: Optional[str] = None  # the supernet directory, with evaluator supernet
    executor: str = "local"
    ray: RayConfig = field(default_factory=RayConfig)
    early_stop: Optional[str] = None  # None: the study's recorded rule, else the space's (EarlyStop.rule)
    rung_min_epochs: Optional[int] = None  # None: likewise (EarlyStop.min_epochs)
    rung_eta: Optional[int] = None  # None: likewise (EarlyStop.eta)

    def validate(self) -> "SearchConfig":
        if self.trials is not None and (isinstance(self.trials, bool) or self.trials < 1):
            raise ConfigError(f"`trials` must be >= 1 (or omitted for the space's default), got {self.trials}")
        for name, value, allowed in (("metric", self.metric, METRICS), ("sampler", self.sampler, SAMPLERS),
                                     ("executor", self.executor, EXECUTORS),
                                     ("runtime", self.runtime or "auto", runtimes.known()),
                                     ("precision", self.precision or "fp32", PRECISIONS),
                                     ("early stopping rule", self.early_stop or "none", EARLY_STOP_RULES)):
            if value not in allowed:
                raise ConfigError(f"unknown {name} {value!r}; one of {', '.join(allowed)}")
        if self.latency_batch is not None and self.latency_batch < 1:
            raise ConfigError(f"`latency_batch` must be >= 1, got {self.latency_batch}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"`threads` must be >= 1, got {self.threads}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"`timeout` must be > 0, got {self.timeout}")
        if self.rung_min_epochs is not None and self.rung_min_epochs < 1:
            raise ConfigError(f"`rung_min_epochs` must be >= 1, got {self.rung_min_epochs}")
        if self.rung_eta is not None and self.rung_eta < 2:
            raise ConfigError(f"`rung_eta` must be >= 2, got {self.rung_eta}")
        if self.ray.asha and self.early_stop not in (None, "none"):
            raise ConfigError("`asha` (Ray's scheduler, accuracy alone) and `early_stop` both stop trials early; "
                              "choose one")
        if self.evaluator not in evaluators.known():  # the registry as it is now (evaluators.register)
            raise ConfigError(f"unknown evaluator {self.evaluator!r}; one of {', '.join(evaluators.CAPS)}")
        caps = evaluators.CAPS[self.evaluator]
        if (caps.needs == "supernet") != (self.supernet is not None):
            raise ConfigError("`evaluator` supernet and `supernet` DIR go together (the supernet to score with)")
        if not caps.trains and (self.precision == "int8" or self.early_stop not in (None, "none") or self.ray.asha):
            raise ConfigError(f"`evaluator` {self.evaluator} scores fp32 subnets without training: `precision` int8, "
                              "`early_stop` and `asha` do not apply")
        if self.predictor is not None and self.limits.max_latency_ms is None:
            raise ConfigError("`predictor` screens trials against `max_latency` (it never sets a recorded latency); "
                              "give `max_latency` too, or leave `predictor` out")
        return self


# --------------------------------------------------------------------------- dict <-> dataclass

def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    data = {k: v for k, v in data.items() if k not in getattr(cls, "RETIRED", ())}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where or 'top level'}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(names))})")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where or 'top level'}: missing required key {f.name!r}")
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], _join(where, f.name))
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        return _coerce(next(a for a in args if a is not type(None)), value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {args}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def to_dict(obj: Any) -> Any:
    return dataclasses.asdict(obj)


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{p}: malformed YAML{pos}: {getattr(exc, 'problem', exc)}") from None


def with_num_classes(cfg: RunConfig, num_classes: int) -> RunConfig:
    """``cfg`` for data with ``num_classes`` classes: the one place a class count is adapted.

    What is built for the data takes its class count: a preset given to ``train``, a search
    space's base (search.py), the candidates a confirmation retrains (confirm/run.py) and the
    models ``bench --data`` trains (bench.py). An explicit run config file given to ``train`` is
    not adapted: it must match its data, and training refuses it otherwise
    (``data.check_num_classes``, exit 2). Returns ``cfg`` itself, validated, when it already
    matches; else a validated copy. Raises ConfigError (naming ``model.num_classes``) below 2."""
    if cfg.model.num_classes == num_classes:
        return cfg.validate()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=num_classes)).validate()


def run_config_from_dict(data: Any, where: str) -> RunConfig:
    try:
        return from_dict(RunConfig, data).validate()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_run_config(path: str | Path) -> RunConfig:
    data = read_yaml(path)
    if isinstance(data, dict) and "config" in data and "model" not in data:
        data = data["config"]  # a pinned best.yaml carries its config under `config`
    return run_config_from_dict(data, str(path))


def dump_run_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_run_config(cfg: RunConfig, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dump_run_config(cfg))
    return p


@dataclass
class TrainOverrides:
    """What ``hovit-nas train`` may change in a run config (None: keep the config's).

    ``epochs`` is a shortcut: that many dense epochs and half as many pruning epochs (at least
    one; none for a config without pruning)."""

    img_size: Optional[int] = None
    epochs: Optional[int] = None
    epochs_dense: Optional[int] = None
    epochs_prune: Optional[int] = None
    batch_size: Optional[int] = None
    max_steps_per_epoch: Optional[int] = None
    seed: Optional[int] = None
    amp: Optional[bool] = None  # bf16 autocast where native (True) or fp32 throughout (False)

    def apply(self, cfg: RunConfig) -> RunConfig:
        """A validated copy of ``cfg`` with these overrides; ConfigError names a bad value."""
        model, train = cfg.model, cfg.train
        if self.img_size:
            model = dataclasses.replace(model, img_size=self.img_size)
        if self.epochs is not None:
            train = dataclasses.replace(train, epochs_dense=self.epochs,
                                        epochs_prune=max(1, self.epochs // 2) if model.pruned else 0)
        train = dataclasses.replace(train, **{k: v for k, v in (
            ("epochs_dense", self.epochs_dense), ("epochs_prune", self.epochs_prune), ("batch_size", self.batch_size),
            ("max_steps_per_epoch", self.max_steps_per_epoch), ("seed", self.seed), ("amp", self.amp))
            if v is not None})
        return dataclasses.replace(cfg, model=model, train=train).validate()

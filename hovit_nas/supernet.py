"""Train once, rank many: the supernet mode (issue 21; in progress).

``train_supernet`` trains one weight-sharing HoViT supernet (models/supernet.py) over a space
with the sandwich rule and in-place distillation (BigNAS, Yu et al. 2020): each step trains the
largest subnet on the labels, then the smallest and ``k`` random subnets on the largest's soft
predictions, summing their gradients into one AdamW update (timm's optimizer and cosine
schedule, as ``train``). The summed gradients are clipped to norm ``clip_grad`` (1.0): a simple
guard against the conflicting gradients NASViT (Gong et al., ICLR 2022) reports between a ViT
supernet's small and large subnets; NASViT's gradient projection is not used.

What a supernet cannot score -- the Gumbel temperatures, the LoRA rank and any training
hyperparameter, which shape training, not the deployed architecture -- is fixed at the space's
base values in this mode; they are searched only when finalists are retrained stand-alone. A
space's ``M:N`` blocks choice deploys N blocks: a depth-N subnet uses the first N blocks of
each stage (Once-for-All's rule).

``score_subnet`` extracts a subnet with inherited weights, recalibrates its BatchNorm running
statistics on a fixed subset of training images (nothing else changes), and scores it on the
validation split.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import random_seed
from torch import nn

from . import logs
from .config import ArchConfig, RunConfig, to_dict
from .data import Images, Splits
from .errors import ConfigError, HovitError
from .models.supernet import Supernet, bounds_of, deployed
from .names import under
from .outputs import check_output
from .progress import Bar

if TYPE_CHECKING:
    from .train import RunResult

_log = logging.getLogger(__name__)

CHECKPOINT = "supernet.pt"
BN_IMAGES = 512  # training images BatchNorm is recalibrated on, per subnet (a fixed subset)
ARCH_PARAMS = ("blocks", "width", "downsample", "head_width", "key_dim", "mlp_ratio")  # what a supernet shares
UNSHAREABLE = ("attn_ratio", "stem_dim", "drop_path")  # architecture choices this supernet cannot slice


@dataclass
class SupernetConfig:
    """How a supernet is trained.

    Attributes:
        epochs: training epochs (None: the space's dense + pruning epochs).
        sandwich_k: random subnets per step besides the largest and the smallest.
        distill: in-place distillation (the largest's soft predictions teach the others).
        clip_grad: gradient-norm clip per step (0: off).
    """
    epochs: Optional[int] = None
    sandwich_k: int = 2
    distill: bool = True
    clip_grad: float = 1.0

    def validate(self) -> "SupernetConfig":
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"`epochs` must be >= 1, got {self.epochs}")
        if self.sandwich_k < 0:
            raise ConfigError(f"`sandwich_k` must be >= 0, got {self.sandwich_k}")
        if self.clip_grad < 0:
            raise ConfigError(f"`clip_grad` must be >= 0, got {self.clip_grad}")
        return self


class Subnets:
    """A space's subnets as RunConfigs: random draws, the smallest and the largest. Parameters
    other than ``ARCH_PARAMS`` stay at the space's base values (module docstring).

    Raises:
        ConfigError: the space searches a choice the supernet cannot share (``UNSHAREABLE``)."""

    def __init__(self, space, seed: int = 0):
        import optuna

        bad = [p.name for p in space.params if p.name in UNSHAREABLE]
        if bad:
            raise ConfigError(f"space {space.name}: the supernet mode cannot share weights across {', '.join(bad)}; "
                              "fix it in the space's base")
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.fixed = dict(space.params_for(space.base))
        self.choices: dict[str, list] = {}
        for p in space.params:
            for tname, _ in p.trial_names():
                d = p.distribution()
                if p.name not in ARCH_PARAMS:
                    continue
                if isinstance(d, optuna.distributions.CategoricalDistribution):
                    self.choices[tname] = list(d.choices)
                elif isinstance(d, optuna.distributions.IntDistribution) and not d.log:
                    self.choices[tname] = list(range(d.low, d.high + 1, d.step))  # every value a trial can take
                else:
                    raise ConfigError(f"space {space.name}: `{tname}` must be categorical or a stepped int in the "
                                      "supernet mode")
        self.smallest, self.largest_choice = self._extreme(min), self._extreme(max)
        pool = [self.sample() for _ in range(200)] + [self.smallest, self.largest_choice] + self._widest_attention()
        self.bounds = bounds_of([c.model for c in pool])

    def _widest_attention(self) -> list[RunConfig]:
        """The largest subnet with attention downsampling at each key_dim: the attention
        downsampling's most heads (in_dim // key_dim) come from a combination random draws may miss."""
        big, out = self.params_of(self.largest_choice), []
        for k in (k for k in self.choices if k.startswith("downsample") and "attention" in self.choices[k]):
            for kd in self.choices.get("key_dim", [None]):
                try:
                    out.append(self.config({**big, k: "attention", **({"key_dim": kd} if "key_dim" in self.choices
                                                                      else {})}))
                except ConfigError:
                    continue
        return out

    def config(self, params: dict) -> RunConfig:
        """The subnet of architecture ``params`` (trial parameter names), the rest at base."""
        import optuna

        full = {**self.fixed, **params}
        cfg = self.space.suggest(optuna.trial.FixedTrial(full))
        return cfg

    def params_of(self, cfg: RunConfig) -> dict:
        """The architecture parameters of ``cfg``."""
        return {k: v for k, v in self.space.params_for(cfg).items() if k in self.choices}

    def sample(self) -> RunConfig:
        """A random subnet, each architecture parameter uniform over its choices."""
        for _ in range(100):
            try:
                return self.config({k: ch[int(self.rng.integers(len(ch)))] for k, ch in self.choices.items()})
            except ConfigError:  # a combination no model has
                continue
        raise HovitError(f"space {self.space.name}: no buildable subnet in 100 draws")

    def _extreme(self, pick) -> RunConfig:
        """Per parameter, the choice giving the fewest (``min``) or most (``max``) deployed
        parameters with the others at base; the largest keeps the base's downsampling."""
        params = {}
        base = self.params_of(self.space.base)
        for k, ch in self.choices.items():
            if k.startswith("downsample"):
                params[k] = base.get(k, ch[0])
                continue
            sizes = {}
            for c in ch:
                try:
                    sizes[repr(c)] = (_size(self.config({**base, k: c})), c)
                except ConfigError:
                    continue
            params[k] = pick(sizes.values(), key=lambda sc: sc[0])[1]
        return self.config(params)


def _size(cfg: RunConfig) -> int:
    from .models import count_params, create_hovit

    return count_params(create_hovit(deployed(cfg.model)))


def build(space, seed: int = 0) -> tuple[Supernet, Subnets]:
    """An untrained supernet over ``space`` and its subnets."""
    subnets = Subnets(space, seed)
    torch.manual_seed(seed)
    return Supernet(deployed(space.base.model), subnets.bounds), subnets


# ------------------------------------------------------------------------------------ training
def sandwich_step(net: Supernet, subnets: Subnets, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                  cfg: SupernetConfig, label_smoothing: float = 0.0) -> dict:
    """One sandwich-rule update: the largest subnet on the labels, the smallest and
    ``cfg.sandwich_k`` random subnets on the largest's soft predictions (or the labels without
    ``distill``); gradients summed, clipped, one optimizer step. Returns the losses (floats)."""
    net.train()
    opt.zero_grad(set_to_none=True)
    logits = net(x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    out = {"largest": float(loss.detach()), "smallest": 0.0, "random": 0.0}
    soft = logits.detach().softmax(-1)
    for i, sub in enumerate([subnets.smallest] + [subnets.sample() for _ in range(cfg.sandwich_k)]):
        s_logits = net.forward_subnet(sub.model, x)
        if cfg.distill:
            s_loss = F.kl_div(s_logits.log_softmax(-1), soft, reduction="batchmean")
        else:
            s_loss = F.cross_entropy(s_logits, y, label_smoothing=label_smoothing)
        s_loss.backward()
        out["smallest" if i == 0 else "random"] += float(s_loss.detach()) / (1 if i == 0 else max(cfg.sandwich_k, 1))
    if cfg.clip_grad:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
    opt.step()
    for k, v in out.items():
        if not np.isfinite(v):
            from .errors import TrialFailed

            raise TrialFailed(f"supernet loss ({k} subnet) became {v} (NaN/inf)")
    return out


@torch.no_grad()
def recalibrate_bn(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them (cumulative average) from
    ``images`` (N, C, H, W, normalised), in train mode, with no gradient; weights are untouched.
    Returns the model in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    model.train()
    for i in range(0, len(images), batch_size):
        model(images[i:i + batch_size])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


def bn_images(train: Images, n: int, seed: int, device: torch.device) -> torch.Tensor:
    """A fixed subset of ``n`` training images (no augmentation), normalised, on ``device``."""
    from .data import Batches

    g = torch.Generator().manual_seed(seed)
    batches = Batches(train, min(n, len(train)), device, shuffle=True, generator=g, augment=False)
    return next(iter(batches))[0]


def score_subnet(net: Supernet, cfg: RunConfig | ArchConfig, calib: torch.Tensor, val: Images, num_classes: int,
                 device: torch.device) -> tuple[nn.Module, dict]:
    """Extract subnet ``cfg`` with inherited weights, recalibrate its BatchNorm on ``calib``, and
    score it on ``val``. Returns the exported (BN-fused) model and the validation metrics."""
    from .models import export
    from .train import evaluate

    model = recalibrate_bn(net.extract(cfg).to(device), calib)
    exported = export(model)
    return exported, evaluate(exported, val, num_classes, device)


def supernet_id(net: Supernet, subnets: Subnets) -> str:
    """The supernet's identity: a SHA-256 over its space definition and its weights (16 hex)."""
    h = hashlib.sha256(json.dumps(subnets.space.to_dict(), sort_keys=True, default=str).encode())
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_supernet(space, splits: Splits, device: torch.device, cfg: SupernetConfig, out: Optional[Path] = None,
                   resume: bool = False) -> tuple[Supernet, Subnets, list[dict]]:
    """Train a supernet over ``space`` on ``splits`` with the sandwich rule (module docstring);
    one checkpoint per epoch under ``out`` (``resume`` continues from it). The optimizer,
    schedule, batch size and steps per epoch are the space's base training config's.
    Returns the supernet, its subnets and the per-epoch history (losses, the largest and
    smallest subnets' val top-1 after BN recalibration)."""
    from .train import make_optimizer, make_schedule, train_loader

    cfg.validate()
    t = space.base.train
    random_seed(t.seed)
    net, subnets = build(space, t.seed)
    net.to(device)
    epochs = cfg.epochs or (t.epochs_dense + t.epochs_prune)
    gen = torch.Generator().manual_seed(t.seed)
    loader = train_loader(splits.train, t, device, gen)
    steps = min(len(loader), t.max_steps_per_epoch) if t.max_steps_per_epoch else len(loader)
    opt = make_optimizer(net, t)
    sched = make_schedule(opt, t, steps * epochs, int(t.warmup_epochs * steps))
    history: list[dict] = []
    first = 0
    if resume:
        state = _load(out, space)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"])
        gen.set_state(state["loader_rng"])
        subnets.rng.bit_generator.state = state["subnet_rng"]
        first, history = state["epoch"], state["history"]
        _log.info(f"resuming the supernet at epoch {first}/{epochs}")
    calib = bn_images(splits.train, BN_IMAGES, t.seed, device)
    for epoch in range(first, epochs):
        t0, sums, n = time.time(), {"largest": 0.0, "smallest": 0.0, "random": 0.0}, 0
        batches = iter(loader)
        with Bar(f"supernet {epoch + 1}/{epochs}", steps, stats=True) as bar:
            for step in range(steps):
                batch = next(batches, None)
                if batch is None:
                    break
                losses = sandwich_step(net, subnets, *batch, opt, cfg, t.label_smoothing)
                sched.step()
                for k in sums:
                    sums[k] += losses[k]
                n += 1
                bar.update(step + 1, stats=f"loss {sums['largest'] / n:.4f}")
        rec = {"epoch": epoch + 1, "epochs": epochs, **{f"loss_{k}": v / max(n, 1) for k, v in sums.items()},
               "lr": opt.param_groups[0]["lr"]}
        for which, sub in (("largest", net.largest_config), ("smallest", subnets.smallest.model)):
            rec[f"val_top1_{which}"] = score_subnet(net, sub, calib, splits.val, splits.num_classes, device)[1]["top1"]
        rec["s"] = round(time.time() - t0, 2)
        history.append(rec)
        _log.info(f"{logs.tag('[supernet]')} epoch {epoch + 1}/{epochs}  loss {rec['loss_largest']:.4f} (largest) "
                  f"{rec['loss_smallest']:.4f} (smallest)  val {rec['val_top1_largest']:.3f} largest, "
                  f"{rec['val_top1_smallest']:.3f} smallest  ({rec['s']:.1f}s)")
        if out is not None:
            _save(out, space, net, opt, sched, gen, subnets, epoch + 1, history)
    return net, subnets, history


def _save(out: Path, space, net, opt, sched, gen, subnets, epoch, history) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save({"space": json.dumps(space.to_dict(), sort_keys=True, default=str), "epoch": epoch,
                "model": net.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                "rng": torch.get_rng_state(), "loader_rng": gen.get_state(),
                "subnet_rng": subnets.rng.bit_generator.state, "history": history}, tmp)
    tmp.replace(out / CHECKPOINT)


def _load(out: Optional[Path], space) -> dict:
    if out is None:
        raise HovitError("`resume` needs `out` DIR (the supernet directory)")
    path = out / CHECKPOINT
    if not path.is_file():
        raise HovitError(f"{path}: no supernet checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise HovitError(f"{path}: unreadable supernet checkpoint ({exc.__class__.__name__})") from None
    if state.get("space") != json.dumps(space.to_dict(), sort_keys=True, default=str):
        raise HovitError(f"{path}: written for another space; use the same `space`")
    return state


def record(net: Supernet, subnets: Subnets, history: list[dict]) -> dict:
    """What a supernet directory says about itself (written beside the checkpoint)."""
    return {"id": supernet_id(net, subnets), "space": subnets.space.name, "bounds": asdict(net.bounds),
            "largest": to_dict(net.largest_config), "smallest": to_dict(subnets.smallest.model),
            "params": sum(p.numel() for p in net.parameters()), "history": history}


def run_supernet_train(space_name: str, data: Optional[str], options, cfg: SupernetConfig, *,
                       device: str = "auto", threads: Optional[int] = None, max_steps: Optional[int] = None,
                       out: Optional[str | Path] = None, resume: bool = False) -> tuple[Path, dict]:
    """``hovit-nas supernet train``: load ``data`` (the built-in digits when None, with the
    space's ``builtin_data`` budget) at the space's resolution, train the supernet, and write
    ``OUT/supernet.pt`` and ``OUT/supernet.json`` (its id, bounds, extremes and history;
    default ``supernets/SPACE``). Returns the directory and the record.

    Raises:
        ConfigError, DataError: a bad space, options or data (one line); HovitError: ``out`` (or
            ``supernets/SPACE``) is not writable, before the data is loaded, or ``resume``
            without a checkpoint of this space; TrialFailed: a NaN loss."""
    from dataclasses import replace

    from .config import DataSpec, with_num_classes
    from .data import load_data
    from .device import resolve_device
    from .space import load_space

    cfg.validate()
    space = load_space(space_name)
    dest = check_output(out or under("supernets", space.name, "space name"), "the supernet", metavar="DIR")
    if data is None:
        space = space.with_builtin_budget()
    if max_steps is not None:
        space.base.train.max_steps_per_epoch = max_steps
    splits = load_data(DataSpec.of(data, space.base.model.img_size, space.base.train.seed, options))
    space = replace(space, base=with_num_classes(space.base, splits.num_classes))
    _log.info(f"data: {splits.description} {splits.sizes}")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    net, subnets, history = train_supernet(space, splits, dev, cfg, dest, resume)
    rec = {**record(net, subnets, history), "data": splits.description, "training": asdict(cfg),
           "space_def": space.to_dict()}
    (dest / "supernet.json").write_text(json.dumps(rec, indent=1, default=str))
    return dest, rec


# ----------------------------------------------------------------------------- the evaluator
@dataclass
class Loaded:
    """A trained supernet as a search scores with it."""
    net: Supernet
    space: object  # the space it was trained over (space.Space), as recorded with it
    record: dict
    path: Path


_LOADED: dict[str, Loaded] = {}  # per process: a worker loads a supernet once
_CALIB: dict[str, torch.Tensor] = {}


def load(path: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """The supernet in directory ``path`` (``supernet train``'s ``--out``), cached per process.

    Raises:
        HovitError: no supernet there, or its files are unreadable (one line)."""
    from .models.supernet import Bounds
    from .space import space_from_dict

    p = Path(path)
    key = f"{p.resolve()}|{device}"
    if key in _LOADED:
        return _LOADED[key]
    rec_path = p / "supernet.json"
    if not rec_path.is_file() or not (p / CHECKPOINT).is_file():
        raise HovitError(f"{p}: no trained supernet (supernet.json and {CHECKPOINT}); make one with "
                         "`hovit-nas supernet train --out DIR`")
    try:
        rec = json.loads(rec_path.read_text())
        space = space_from_dict(rec["space_def"], str(rec_path))
        state = torch.load(p / CHECKPOINT, map_location="cpu", weights_only=False)
        b = rec["bounds"]
        bounds = Bounds(tuple(tuple(s) for s in b["stages"]), b["mlp_ratio"], b["head_width"],
                        tuple(tuple(a) for a in b["attn_down"]))
        net = Supernet(deployed(space.base.model), bounds)
        net.load_state_dict(state["model"])
    except HovitError:
        raise
    except Exception as exc:  # a damaged or foreign file
        raise HovitError(f"{p}: unreadable supernet ({type(exc).__name__}: {str(exc)[:120]})") from None
    net.to(device).eval()
    _LOADED.clear()
    _LOADED[key] = Loaded(net, space, rec, p)
    return _LOADED[key]


def estimate(path: str | Path, cfg: RunConfig, splits: Splits, device: torch.device) -> tuple[nn.Module, dict]:
    """A search trial's accuracy from the supernet at ``path``: subnet ``cfg`` extracted with
    inherited weights, BatchNorm recalibrated on ``BN_IMAGES`` fixed training images, scored on
    val. Returns the exported subnet and its val metrics. The test split is not scored: a
    search ranks on val, and scoring test took most of a trial's time (on pcam-subset at 64 px,
    3000 test images against 1000 val); ``supernet extract`` and ``confirm`` score it."""
    sn = load(path, device)
    key = f"{sn.path}|{splits.description}|{device}"
    if key not in _CALIB:
        _CALIB.clear()
        _CALIB[key] = bn_images(splits.train, BN_IMAGES, sn.space.base.train.seed, device)
    return score_subnet(sn.net, cfg, _CALIB[key], splits.val, splits.num_classes, device)


# ------------------------------------------------------------------------- extract (Once-for-All)
def extract_run(supernet_dir: str | Path, cfg: RunConfig, data: Optional[str], options, *, finetune: int = 0,
                device: str = "auto", out: Optional[str | Path] = None) -> tuple[Path, "RunResult"]:
    """``hovit-nas supernet extract``: subnet ``cfg`` with inherited weights as a run directory
    that ``export``, ``eval`` and ``bench`` accept (checkpoint, ``model.safetensors``,
    ``result.json``, ``config.yaml``): BatchNorm recalibrated, then optionally fine-tuned for
    ``finetune`` epochs with the space's base training config (AdamW, cosine schedule), exported,
    scored on val and test, and timed. The run's config is the deployed architecture (its kept
    blocks, no pruning phase). Default directory ``runs/<supernet id>-<config name>``.

    Raises:
        HovitError: no supernet at ``supernet_dir``; the run directory is not writable (checked
            first); ``data`` is not the data it was trained on;
            ``finetune`` < 0; DataError: bad data."""
    import copy
    from dataclasses import replace

    from .config import DataSpec, dump_run_config
    from .data import load_data
    from .device import resolve_device
    from .latency import measure_latency
    from .models import count_params, export
    from .train import CHECKPOINT as RUN_CHECKPOINT, RunResult, evaluate, save_run, train_plain

    if finetune < 0:
        raise ConfigError(f"`finetune` must be >= 0 epochs, got {finetune}")
    t0 = time.time()
    dev = resolve_device(device)
    sn = load(supernet_dir, dev)
    dest = check_output(out or under("runs", f"{sn.record['id']}-{cfg.name}", "run name"), "the run directory",
                        metavar="DIR")
    base = sn.space.base
    splits = load_data(DataSpec.of(data, base.model.img_size, base.train.seed, options))
    if splits.description != sn.record.get("data"):
        raise HovitError(f"supernet {supernet_dir} was trained on {sn.record.get('data')}, not {splits.description}")
    run_cfg = copy.deepcopy(cfg)
    run_cfg.model = deployed(replace(cfg.model, num_classes=splits.num_classes))
    run_cfg.name = f"{sn.record['id']}-{cfg.name}"
    model = recalibrate_bn(sn.net.extract(run_cfg).to(dev), bn_images(splits.train, BN_IMAGES, base.train.seed, dev))
    history: list = []
    if finetune:
        run_cfg.train = replace(base.train, epochs_dense=finetune, epochs_prune=0)
        train_plain(model, splits, run_cfg.train, dev, name=run_cfg.name)
        history = [{"phase": "finetune", "epochs": finetune}]
    else:
        run_cfg.train = replace(base.train, epochs_dense=0, epochs_prune=0)
    exported = export(model.eval())
    val = evaluate(exported, splits.val, splits.num_classes, dev)
    test = evaluate(exported, splits.test, splits.num_classes, dev)
    dest.mkdir(parents=True, exist_ok=True)
    result = RunResult(run_cfg.name, to_dict(run_cfg), splits.description, str(dev), count_params(model),
                       count_params(exported), [list(range(s.blocks)) for s in run_cfg.model.stages], val, test,
                       None, history, round(time.time() - t0, 2))
    result.latency = measure_latency(exported, run_cfg.model.img_size, device=dev,
                                     in_chans=run_cfg.model.in_chans).to_dict()
    result.exported = exported
    torch.save({"config": dump_run_config(run_cfg), "phase_idx": 0, "epoch": finetune, "model": model.state_dict(),
                "history": history, "supernet": sn.record["id"]}, dest / RUN_CHECKPOINT)
    save_run(dest, result, run_cfg)
    return dest, result

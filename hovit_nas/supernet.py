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
from . import provenance as pv
from .config import ArchConfig, RunConfig, to_dict
from .data import Images, Splits
from .errors import ConfigError, HovitError
from .models.supernet import Supernet, bounds_of, deployed
from .names import under
from .outputs import check_output
from .train import Checkpoint

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
def sandwich(subnets: Subnets, cfg: SupernetConfig):
    """The sandwich rule as one step of the training loop (train.fit_epochs): the largest subnet on
    the labels, the smallest and ``cfg.sandwich_k`` random subnets on the largest's soft
    predictions (or the labels without ``distill``); gradients summed, clipped, one optimizer
    step. The step reports the largest's loss and logits, and the smallest's and the random
    subnets' mean losses, as device tensors (no host synchronisation per step)."""
    from .train import Step

    def step(loop, x: torch.Tensor, y: torch.Tensor, amp: bool) -> Step:
        net, opt, ls = loop.model, loop.opt, loop.train.label_smoothing
        opt.zero_grad(set_to_none=True)
        with torch.autocast(loop.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = net(x).float()
            loss = F.cross_entropy(logits, y, label_smoothing=ls)
        loss.backward()
        soft = logits.detach().softmax(-1)
        losses = {"smallest": torch.zeros((), device=x.device), "random": torch.zeros((), device=x.device)}
        for i, sub in enumerate([subnets.smallest] + [subnets.sample() for _ in range(cfg.sandwich_k)]):
            with torch.autocast(loop.device.type, dtype=torch.bfloat16, enabled=amp):
                s_logits = net.forward_subnet(sub.model, x).float()
                s_loss = (F.kl_div(s_logits.log_softmax(-1), soft, reduction="batchmean") if cfg.distill
                          else F.cross_entropy(s_logits, y, label_smoothing=ls))
            s_loss.backward()
            losses["smallest" if i == 0 else "random"] += s_loss.detach() / (1 if i == 0 else max(cfg.sandwich_k, 1))
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip_grad)
        opt.step()
        return Step(loss.detach(), logits.detach(), losses)

    return step


def sandwich_step(net: Supernet, subnets: Subnets, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                  cfg: SupernetConfig, label_smoothing: float = 0.0) -> dict:
    """One sandwich-rule update outside the loop (``sandwich``'s step), its losses as floats:
    ``largest``, ``smallest``, ``random`` (the mean over the random subnets)."""
    from types import SimpleNamespace

    from .train import TrainConfig

    net.train()
    loop = SimpleNamespace(model=net, opt=opt, device=x.device, train=TrainConfig(label_smoothing=label_smoothing))
    out = sandwich(subnets, cfg)(loop, x, y, False)
    return {"largest": float(out.loss), **{k: float(v) for k, v in out.extra.items()}}


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
    exported, probs = subnet_probs(net, cfg, calib, val, device)
    from .train import metrics_of

    return exported, metrics_of(val, probs, num_classes)


def subnet_probs(net: Supernet, cfg: RunConfig | ArchConfig, calib: torch.Tensor, val: Images,
                 device: torch.device) -> tuple[nn.Module, np.ndarray]:
    """``score_subnet``'s model and its class probabilities on ``val``, (N, K) float32."""
    from .models import export
    from .train import predict

    model = recalibrate_bn(net.extract(cfg).to(device), calib)
    exported = export(model)
    return exported, predict(exported, val, device)


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
    from .train import Loop, fit_epochs, make_optimizer, make_schedule, train_loader

    cfg.validate()
    t = space.base.train
    random_seed(t.seed)
    net, subnets = build(space, t.seed)
    net.to(device)
    epochs = cfg.epochs or (t.epochs_dense + t.epochs_prune)
    gen = torch.Generator().manual_seed(t.seed)
    loop = Loop(net, train_loader(splits.train, t, device, gen), splits.val, splits.num_classes, None, None, t,
                device, step=sandwich(subnets, cfg))
    loop.opt = make_optimizer(net, t)
    loop.sched = make_schedule(loop.opt, t, loop.steps * epochs, int(t.warmup_epochs * loop.steps))
    history: list[dict] = []
    first = 0
    if resume:
        state = _load(out, space)
        net.load_state_dict(state.model)
        loop.opt.load_state_dict(state.optim)
        loop.sched.load_state_dict(state.sched)
        torch.set_rng_state(state.rng)
        gen.set_state(state.loader_rng)
        subnets.rng.bit_generator.state = json.loads(state.extra["subnet_rng"]) if isinstance(
            state.extra["subnet_rng"], str) else state.extra["subnet_rng"]
        first, history = state.epoch, state.history
        _log.info(f"resuming the supernet at epoch {first}/{epochs}")
    calib = bn_images(splits.train, BN_IMAGES, t.seed, device)
    loop.score = lambda: {f"val_top1_{which}": score_subnet(net, sub, calib, splits.val, splits.num_classes,
                                                            device)[1]["top1"]
                          for which, sub in (("largest", net.largest_config), ("smallest", subnets.smallest.model))}

    def end_epoch(rec: dict) -> None:
        rec = {"epoch": rec["epoch"], "epochs": epochs, "loss_largest": rec["loss"],
               **{k: rec[k] for k in ("loss_smallest", "loss_random", "lr", "val_top1_largest", "val_top1_smallest",
                                      "precision")}, "s": rec["s"]}
        history.append(rec)
        _log.info(f"{logs.tag('[supernet]')} epoch {rec['epoch']}/{epochs}  loss {rec['loss_largest']:.4f} (largest) "
                  f"{rec['loss_smallest']:.4f} (smallest)  val {rec['val_top1_largest']:.3f} largest, "
                  f"{rec['val_top1_smallest']:.3f} smallest  ({rec['s']:.1f}s)")
        if out is not None:
            _save(out, space, net, loop.opt, loop.sched, gen, subnets, rec["epoch"], history)

    fit_epochs(loop, "supernet", epochs, first, end_epoch=end_epoch)
    return net, subnets, history


def _save(out: Path, space, net, opt, sched, gen, subnets, epoch, history) -> None:
    Checkpoint(json.dumps(space.to_dict(), sort_keys=True, default=str), net.state_dict(), epoch, 0, history,
               opt.state_dict(), sched.state_dict(), torch.get_rng_state(), gen.get_state(),
               {"subnet_rng": json.dumps(subnets.rng.bit_generator.state)}).save(out / CHECKPOINT)


def _load(out: Optional[Path], space) -> "Checkpoint":
    if out is None:
        raise HovitError("`resume` needs `out` DIR (the supernet directory)")
    path = out / CHECKPOINT
    if not path.is_file():
        raise HovitError(f"{path}: no supernet checkpoint to resume from")
    state = Checkpoint.load(path)
    if state.config != json.dumps(space.to_dict(), sort_keys=True, default=str):
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
    space_rec = pv.space_record(space)
    dest = check_output(out or under("supernets", space.name, "space name"), "the supernet", metavar="DIR")
    if data is None:
        space = space.with_builtin_budget()
    if max_steps is not None:
        space.base.train.max_steps_per_epoch = max_steps
    spec = DataSpec.of(data, space.base.model.img_size, space.base.train.seed, options)
    splits = load_data(spec)
    space = replace(space, base=with_num_classes(space.base, splits.num_classes))
    _log.info(f"data: {splits.description} {splits.sizes}")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    net, subnets, history = train_supernet(space, splits, dev, cfg, dest, resume)
    prov = pv.Provenance("supernet", pv.data_record(splits, spec.img_size, pv.data_rule(spec)), space_rec,
                         spec.img_size)
    rec = {**record(net, subnets, history), "data": splits.description, "training": asdict(cfg),
           "space_def": space.to_dict(), "classes": list(splits.classes), "provenance": prov.to_dict()}
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
        state = Checkpoint.load(p / CHECKPOINT)
        b = rec["bounds"]
        bounds = Bounds(tuple(tuple(s) for s in b["stages"]), b["mlp_ratio"], b["head_width"],
                        tuple(tuple(a) for a in b["attn_down"]))
        net = Supernet(deployed(space.base.model), bounds)
        net.load_state_dict(state.model)
    except HovitError:
        raise
    except Exception as exc:  # a damaged or foreign file
        raise HovitError(f"{p}: unreadable supernet ({type(exc).__name__}: {str(exc)[:120]})") from None
    net.to(device).eval()
    _LOADED.clear()
    _LOADED[key] = Loaded(net, space, rec, p)
    return _LOADED[key]


def estimate(path: str | Path, cfg: RunConfig, splits: Splits, device: torch.device
             ) -> tuple[nn.Module, dict, np.ndarray]:
    """A search trial's accuracy from the supernet at ``path``: subnet ``cfg`` extracted with
    inherited weights, BatchNorm recalibrated on ``BN_IMAGES`` fixed training images, scored on
    val. Returns the exported subnet, its val metrics and its val class probabilities (N, K). The
    test split is not scored: a
    search ranks on val, and scoring test took most of a trial's time (on pcam-subset at 64 px,
    3000 test images against 1000 val); ``supernet extract`` and ``confirm`` score it."""
    sn = load(path, device)
    key = f"{sn.path}|{splits.description}|{device}"
    if key not in _CALIB:
        _CALIB.clear()
        _CALIB[key] = bn_images(splits.train, BN_IMAGES, sn.space.base.train.seed, device)
    from .train import metrics_of

    exported, probs = subnet_probs(sn.net, cfg, _CALIB[key], splits.val, device)
    return exported, metrics_of(splits.val, probs, splits.num_classes), probs


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
    from .latency import measure, target_for
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
    spec = DataSpec.of(data, base.model.img_size, base.train.seed, options)
    splits = load_data(spec)
    made = check_data(sn, supernet_dir, splits, spec, "extraction (BatchNorm recalibration and its scores)")
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
                       None, history, round(time.time() - t0, 2), list(splits.classes))
    prov = None if made is None else pv.Provenance("run", made, img_size=spec.img_size)
    result.provenance = None if prov is None else prov.to_dict(sketch=False)
    target = target_for(run_cfg.model.img_size, dev)
    result.latency = {**measure(exported, target, in_chans=run_cfg.model.in_chans, device=dev).to_dict(),
                      "target": target.name}
    result.exported = exported
    Checkpoint(dump_run_config(run_cfg), model.state_dict(), finetune, 0, history,
               extra={"supernet": sn.record["id"]}).save(dest / RUN_CHECKPOINT)
    save_run(dest, result, run_cfg, prov)
    return dest, result


def provenance_of(sn: Loaded) -> Optional["pv.Provenance"]:
    """What a loaded supernet was made from (None: trained before provenance was recorded)."""
    return pv.Provenance.from_dict(sn.record.get("provenance"))


def check_data(sn: Loaded, where: str | Path, splits: Splits, spec, use: str) -> Optional["pv.DataRecord"]:
    """A supernet is used with ``splits`` (selected by ``spec``) for ``use``: they must be the very
    splits it was trained on, by membership (its estimates on images it trained on, or BatchNorm
    statistics from other images, would be wrong without a word). Returns the supernet's data
    record (None for a supernet from before provenance, checked by its data description only).

    Raises:
        ProvenanceError: other classes or splits (both sides named); HovitError: a supernet from
            before provenance whose data description differs."""
    prov = provenance_of(sn)
    if prov is None or prov.data is None:
        pv.legacy(f"supernet {where}")
        if splits.description != sn.record.get("data"):
            raise HovitError(f"supernet {where} was trained on {sn.record.get('data')}, not {splits.description}")
        return None
    now = pv.data_record(splits, spec.img_size, pv.data_rule(spec), keep_train_ids=False)
    pv.check_same_data(prov.data, now, f"supernet {where}", use)
    return prov.data

"""Two-phase training: dense, then learnable pruning through LoRA; export; evaluate.

Phase 1 trains all M blocks of every stage. Phase 2 (only when some stage keeps N < M)
freezes the dense weights, trains LoRA adapters + gates + heads, anneals the Gumbel
temperature per step, and gives the gates 10x the learning rate (the paper's recipe).
A model without pruning spends the phase-2 epochs densely, so every config in a search gets
the same number of epochs. One checkpoint per epoch; ``resume=True`` continues from it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2, param_groups_weight_decay
from timm.scheduler import CosineLRScheduler
from timm.utils import random_seed
from torch import nn

from . import logs
from .config import RunConfig, TrainConfig, dump_run_config, to_dict
from .data import Batches, Images, Splits, check_num_classes
from .device import NO_GUARD, DeviceGuard, autocast_bf16, resolve_device
from .errors import HovitError, TrialFailed
from .lifecycle import EpochCallback, Stop
from .metrics import classification_metrics
from .models import add_lora, count_params, create_hovit, export, save_exported, set_tau, tau_at
from .models.gating import gates
from .progress import Bar

CHECKPOINT = "checkpoint.pt"
_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from .provenance import Provenance


@dataclass
class RunResult:
    name: str
    config: dict
    data: str
    device: str
    params_dense: int
    params_exported: int
    selected_blocks: list
    val: dict
    test: dict
    latency: Optional[dict] = None  # filled by callers that time the exported model
    history: list = field(default_factory=list)
    wall_s: float = 0.0
    classes: Optional[list] = None  # class names in output order (the data's, index k = output k)
    provenance: Optional[dict] = None  # provenance.Provenance.to_dict(sketch=False): what it was made from

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p


def _phases(cfg: RunConfig) -> list[tuple[str, int]]:
    t = cfg.train
    if cfg.model.pruned:
        return [("dense", t.epochs_dense), ("prune", t.epochs_prune)]
    return [("dense", t.epochs_dense + t.epochs_prune)]


WARMUP_LR_INIT = 1e-5  # timm's train.py default (--warmup-lr)


class PerStep:
    """A timm scheduler stepped per optimizer update, with torch's ``step()`` / ``state_dict()``.

    timm's schedulers hold no step count: ``step_update(num_updates)`` sets the learning rates
    for that update (``t_in_epochs=False``). This counts the updates, so the training loop and
    the checkpoint treat it as any torch scheduler. ``load_state_dict`` also reads a torch
    scheduler's ``last_epoch``: checkpoints written before timm's schedule resume at their step."""

    def __init__(self, sched):
        self.sched, self.updates = sched, 0

    def step(self) -> None:
        self.updates += 1
        self.sched.step_update(self.updates)

    def state_dict(self) -> dict:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["updates"] if "updates" in state else state["last_epoch"])
        self.sched.step_update(self.updates)


def make_schedule(opt: torch.optim.Optimizer, t: TrainConfig, total_steps: int, warmup_steps: int = 0):
    """The one per-step LR schedule for HoViT phases and baselines alike.

    ``cosine``: timm's ``CosineLRScheduler`` per update (``t_in_epochs=False``), from each
    group's ``lr`` to 0 over ``total_steps`` updates, after a linear warm-up of
    ``warmup_steps`` updates from ``WARMUP_LR_INIT`` (timm's rule: the warm-up steps count
    inside the cosine, ``warmup_prefix=False``). ``onecycle``: torch's ``OneCycleLR``.
    ``constant``: the groups' ``lr`` throughout. Every result has ``step()`` (once per update),
    ``state_dict()`` and ``load_state_dict()``."""
    total_steps = max(total_steps, 1)
    if t.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=total_steps)
    if t.schedule == "cosine" and total_steps > 1:  # one step: the lr it starts at (timm warns, to no effect)
        return PerStep(CosineLRScheduler(opt, t_initial=total_steps, lr_min=0.0, warmup_t=warmup_steps,
                                         warmup_lr_init=WARMUP_LR_INIT, t_in_epochs=False))
    return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)


def make_optimizer(model: nn.Module, t: TrainConfig, gate_lr_mult: Optional[float] = None) -> torch.optim.AdamW:
    """AdamW from timm's ``create_optimizer_v2`` over the model's trainable parameters, with
    timm's weight-decay rule (``timm.optim.param_groups_weight_decay``, what that factory applies
    to a model): decay
    ``t.weight_decay`` on weight matrices and convolution kernels only -- none on 1-D
    parameters (BatchNorm weights and biases, the gates' logits), on biases, nor on what
    ``model.no_weight_decay()`` names (LeViT's attention biases, as timm's ``Levit`` lists
    them). Frozen parameters are left out (phase 2 trains LoRA, gates and heads only).
    ``gate_lr_mult``: the gates' logits get their own group at ``t.lr * gate_lr_mult``."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_weight_decay(model, t.weight_decay, no_weight_decay_list=skip)
    if gate_lr_mult is not None and gates(model):
        logits = [g.logits for g in gates(model) if g.logits.requires_grad]
        ids = {id(p) for p in logits}
        groups = [dict(g, params=[p for p in g["params"] if id(p) not in ids]) for g in groups]
        groups = [g for g in groups if g["params"]] + [{"params": logits, "lr": t.lr * gate_lr_mult,
                                                         "weight_decay": 0.0}]
    # timm's factory on explicit groups: the same torch AdamW, so older checkpoints' state loads
    return create_optimizer_v2(groups, opt="adamw", lr=t.lr, weight_decay=t.weight_decay)


def _optimizer(model: nn.Module, cfg: RunConfig, phase: str, total_steps: int):
    t = cfg.train
    opt = make_optimizer(model, t, cfg.prune.gate_lr_mult if phase == "prune" else None)
    warm = int(t.warmup_epochs * total_steps / max(1, sum(n for _, n in _phases(cfg))))
    return opt, make_schedule(opt, t, total_steps, warm)


def _prepare_phase(model, cfg: RunConfig, phase: str) -> None:
    model.set_dense(phase == "dense")
    if phase == "prune":
        add_lora(model, cfg.prune.lora_rank, cfg.prune.lora_alpha)


EVAL_BATCH = 512
NAN_CHECK_EVERY = 50  # steps between the loop's only host synchronisations (NaN check, progress)


@torch.inference_mode()
def predict(model: nn.Module, dataset: Images, device: torch.device, guard: DeviceGuard = NO_GUARD,
            batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Softmax class probabilities of ``model`` on every image of ``dataset``, in order, read from
    the cache in large batches without augmentation: (N, K) float32 on the host."""
    model.eval()
    dev = torch.device(device)
    probs = []
    batches = iter(Batches(dataset, batch_size, dev, shuffle=False, augment=False))
    while True:
        with guard.shared():  # loading and compute both count as using the device
            batch = next(batches, None)
            if batch is None:
                break
            probs.append(torch.softmax(model(batch[0]).float(), 1).cpu())
    return torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float32)


def metrics_of(dataset: Images, probs: np.ndarray, num_classes: int) -> dict:
    """metrics.classification_metrics of probabilities ``probs`` (N, K) against the split's labels:
    top-1 and the macro scores of the arg-max, plus AUC and NLL."""
    if not len(probs):
        return classification_metrics(dataset.labels, [], num_classes)
    return classification_metrics(dataset.labels, probs.argmax(1), num_classes, probs)


def evaluate(model: nn.Module, dataset: Images, num_classes: int, device: torch.device,
             guard: DeviceGuard = NO_GUARD, batch_size: int = EVAL_BATCH) -> dict:
    """Top-1 and friends over a split (``metrics_of(predict(...))``)."""
    return metrics_of(dataset, predict(model, dataset, device, guard, batch_size), num_classes)


def train_loader(dataset: Images, t: TrainConfig, dev: torch.device, generator: torch.Generator) -> Batches:
    return Batches(dataset, t.batch_size, dev, shuffle=True, generator=generator,
                   drop_last=len(dataset) > t.batch_size, channels_last=t.channels_last)


@dataclass
class Step:
    """What one optimizer step gives the loop: the loss it reports, a 0-d tensor on the device;
    the logits whose arg-max counts towards training accuracy (None: none counted); and further
    named losses to average (the sandwich rule's subnets). All detached, none read on the host."""

    loss: torch.Tensor
    logits: Optional[torch.Tensor] = None
    extra: dict = field(default_factory=dict)


def supervised_step(loop: "Loop", x: torch.Tensor, y: torch.Tensor, amp: bool) -> Step:
    """The usual step: cross-entropy (label smoothing) on the model's logits, under bf16 autocast
    where ``amp``, one AdamW update."""
    with torch.autocast(loop.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = loop.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=loop.train.label_smoothing)
    loop.opt.zero_grad(set_to_none=True)
    loss.backward()
    loop.opt.step()
    return Step(loss.detach(), logits.detach())


@dataclass
class Loop:
    """What one phase's epochs run over: fixed for the phase. ``step`` makes one optimizer update
    (``supervised_step``; the supernet's sandwich rule is another); ``score`` gives the epoch's
    validation figures (default: the model's val top-1)."""

    model: nn.Module
    loader: Batches
    val_set: Images
    num_classes: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler | PerStep
    train: TrainConfig
    device: torch.device
    guard: DeviceGuard = NO_GUARD
    step: Callable[["Loop", torch.Tensor, torch.Tensor, bool], Step] = supervised_step
    score: Optional[Callable[[], dict]] = None
    forward: Optional[Callable] = None  # the model, compiled where TrainConfig.compile asks

    def __post_init__(self):
        if self.forward is None:
            self.forward = torch.compile(self.model) if self.train.compile else self.model

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch: the whole loader, or the quick-run cap."""
        cap = self.train.max_steps_per_epoch
        return min(len(self.loader), cap) if cap else len(self.loader)

    def validation(self) -> dict:
        if self.score is not None:
            return self.score()
        return {"val_top1": evaluate(self.model, self.val_set, self.num_classes, self.device, self.guard)["top1"]}


def fit_epochs(loop: Loop, phase: str, epochs: int, first_epoch: int = 0,
               step_hook: Callable[[int, int], None] | None = None,
               end_epoch: Callable[[dict], Optional[Stop]] | None = None) -> Optional[Stop]:
    """The one training loop, for every phase (dense, pruning) and the supernet: ``loop.step``
    under the device's shared slot, then the schedule; validation per epoch. ``end_epoch``
    receives each epoch's record; a ``lifecycle.Stop`` it returns ends training there and is
    returned (None: every epoch ran).

    Losses and accuracy accumulate on the device, and the first non-finite step is recorded there
    too: the host synchronises only every NAN_CHECK_EVERY steps (and at the epoch's end), so a
    GPU is never left waiting for Python between steps."""
    model, dev, steps = loop.model, loop.device, loop.steps
    amp = autocast_bf16(dev, loop.train.amp)
    for epoch in range(first_epoch, epochs):
        model.train()
        t0 = time.time()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=dev, dtype=torch.long)
        first_bad = torch.full((), -1, device=dev, dtype=torch.long)  # the first non-finite step, and its loss
        bad_loss = torch.zeros((), device=dev)
        seen = 0
        batches = iter(loop.loader)
        bar = Bar(f"{phase} {epoch + 1}/{epochs}", steps, stats=True)  # terminal only: the epoch line follows
        for step in range(steps):
            if step_hook is not None:
                step_hook(epoch * steps + step, epochs * steps)
            with loop.guard.shared():  # loading + augmentation + step: no latency timing meanwhile
                batch = next(batches, None)
                if batch is None:
                    break
                x, y = batch
                out = loop.step(loop, x, y, amp)
            loop.sched.step()
            for name, value in {"": out.loss, **out.extra}.items():
                newly = (first_bad < 0) & ~torch.isfinite(value)
                first_bad, bad_loss = torch.where(newly, step, first_bad), torch.where(newly, value, bad_loss)
                sums[name] = sums.get(name, torch.zeros((), device=dev)) + value * len(y)
            if out.logits is not None:
                correct += (out.logits.argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % NAN_CHECK_EVERY == 0 or step + 1 == steps:
                _check_finite(first_bad, bad_loss, phase, epoch)
                if bar.active:  # reading the sums synchronises with the device: only for a bar someone sees
                    bar.update(step + 1, stats=f"loss {float(sums['']) / seen:.4f} acc {int(correct) / seen:.3f}")
        _check_finite(first_bad, bad_loss, phase, epoch)
        bar.close()
        rec = {"phase": phase, "epoch": epoch + 1, "epochs": epochs, "precision": "bf16-autocast" if amp else "fp32",
               "loss": float(sums.get("", 0.0)) / max(seen, 1),
               **{f"loss_{k}": float(v) / max(seen, 1) for k, v in sums.items() if k},
               "train_top1": int(correct) / max(seen, 1), **loop.validation(),
               "lr": loop.opt.param_groups[0]["lr"], "s": round(time.time() - t0, 2)}
        stop = end_epoch(rec) if end_epoch is not None else None
        if stop is not None:
            return stop
    return None


def _check_finite(first_bad: torch.Tensor, bad_loss: torch.Tensor, phase: str, epoch: int) -> None:
    bad = int(first_bad)
    if bad >= 0:
        raise TrialFailed(f"loss became {float(bad_loss)} (NaN/inf) in phase {phase}, epoch {epoch + 1}, "
                          f"step {bad + 1}")


def train_plain(model: nn.Module, splits: Splits, t: TrainConfig, device, name: str = "model") -> dict:
    """Dense training of any classifier (the timm baselines in ``bench --data``): test metrics,
    plus the validation top-1 as ``val_top1``."""
    dev = resolve_device(device)
    random_seed(t.seed)
    model.to(dev)
    epochs = t.epochs_dense + t.epochs_prune
    loader = train_loader(splits.train, t, dev, torch.Generator().manual_seed(t.seed))
    opt = make_optimizer(model, t)  # timm's model.no_weight_decay() applies to the baselines too
    loop = Loop(model, loader, splits.val, splits.num_classes, opt, None, t, dev)
    loop.sched = make_schedule(opt, t, loop.steps * epochs, int(t.warmup_epochs * loop.steps))
    fit_epochs(loop, "dense", epochs,
               end_epoch=lambda r: _log.info(f"{logs.tag(f'[{name}]')} epoch {r['epoch']}/{r['epochs']}  loss "
                                             f"{r['loss']:.4f}  val {r['val_top1']:.3f}  ({r['s']:.1f}s)"))
    val = evaluate(model, splits.val, splits.num_classes, dev)
    return {**evaluate(model, splits.test, splits.num_classes, dev), "val_top1": val["top1"]}


def fit(cfg: RunConfig, splits: Splits, dev: torch.device, guard: DeviceGuard = NO_GUARD,
        out: Optional[Path] = None, resume: bool = False,
        on_epoch: EpochCallback | None = None) -> tuple[nn.Module, list[dict], Optional[Stop]]:
    """Both phases (dense, then gates + LoRA), one checkpoint per epoch under ``out``; returns
    the trained (unexported) model, the per-epoch history, and the ``Stop`` that ``on_epoch``
    returned to end training early (None when it ran to the end)."""
    random_seed(cfg.train.seed)
    with guard.shared():
        model = create_hovit(cfg).to(dev)
    phases = _phases(cfg)
    history: list[dict] = []
    start_phase, start_epoch, state = 0, 0, None
    if resume:
        state = _load_checkpoint(out, cfg)
        start_phase, start_epoch, history = state.phase_idx, state.epoch, state.history
        _log.info(f"resuming {cfg.name} at phase {phases[start_phase][0]} epoch {start_epoch}")

    t = cfg.train
    for phase_idx, (phase, epochs) in enumerate(phases):
        if phase_idx < start_phase:
            continue  # finished before the checkpoint; its weights come with the checkpoint
        with guard.shared():
            _prepare_phase(model, cfg, phase)
        loader_gen = torch.Generator().manual_seed(t.seed + phase_idx)
        loop = Loop(model, train_loader(splits.train, t, dev, loader_gen), splits.val, cfg.model.num_classes,
                    None, None, t, dev, guard)
        loop.opt, loop.sched = _optimizer(model, cfg, phase, loop.steps * epochs)
        first_epoch = 0
        if state is not None and phase_idx == start_phase:
            model.load_state_dict(state.model)
            try:
                loop.opt.load_state_dict(state.optim)
            except ValueError:  # its parameter groups differ: written before weight decay skipped 1-D params
                raise HovitError(f"{out / CHECKPOINT}: written by an older hovit-nas whose optimizer had other "
                                 "parameter groups; train again without `resume`") from None
            loop.sched.load_state_dict(state.sched)
            torch.set_rng_state(state.rng)
            loader_gen.set_state(state.loader_rng)
            first_epoch = start_epoch
            state = None
        tau_hook = None
        if phase == "prune":
            tau_hook = lambda gstep, total: set_tau(model, tau_at(
                gstep, total, cfg.prune.tau_start, cfg.prune.tau_end, cfg.prune.tau_schedule))

        def end_epoch(rec, _phase_idx=phase_idx, _loop=loop, _gen=loader_gen):
            if rec["phase"] == "prune" and gates(model):
                rec["tau"] = gates(model)[0].tau
            history.append(rec)
            _log.info(f"{logs.tag(f'[{cfg.name}]')} {rec['phase']} epoch {rec['epoch']}/{rec['epochs']}  loss "
                      f"{rec['loss']:.4f}  train {rec['train_top1']:.3f}  val {rec['val_top1']:.3f}  ({rec['s']:.1f}s)")
            if out is not None:
                _save_checkpoint(out, cfg, model, _loop.opt, _loop.sched, _gen, _phase_idx, rec["epoch"], history)
            return on_epoch(dict(rec, global_epoch=len(history))) if on_epoch is not None else None

        stop = fit_epochs(loop, phase, epochs, first_epoch, step_hook=tau_hook, end_epoch=end_epoch)
        if stop is not None:
            return model, history, stop
    return model, history, None


def train_and_evaluate(cfg: RunConfig, splits: Splits, device: str | torch.device | None = "auto", *,
                       out_dir: str | Path | None = None, resume: bool = False, guard: DeviceGuard = NO_GUARD,
                       on_epoch: EpochCallback | None = None,
                       provenance: Optional["Provenance"] = None) -> RunResult:
    """Train (both phases), export, evaluate val/test; with ``out_dir``, write the run's files.
    Latency is the caller's: it is a property of the exported model (``result.exported``).

    ``result.scores`` (not serialised in ``result.json``) holds the exported model's class
    probabilities per split, ``{"val": (N, K), "test": (N, K)}`` float16, in the splits' order;
    a run directory keeps them as ``scores.npz``. ``provenance``: what the run is made from
    (provenance.py), recorded in the run directory and the model's metadata.

    ``on_epoch`` receives each epoch's record (with ``global_epoch``, over both phases); a
    ``lifecycle.Stop`` it returns ends training there: ``result.stop`` holds it, and nothing is
    exported, scored or written (``val`` and ``test`` are empty). Otherwise ``result.stop`` is None."""
    t_start = time.time()
    check_num_classes(splits, cfg.model.num_classes)
    dev = resolve_device(device)
    out = Path(out_dir) if out_dir else None
    model, history, stop = fit(cfg, splits, dev, guard, out, resume, on_epoch)
    if stop is not None:  # ended early by ``on_epoch``: nothing exported or scored
        result = RunResult(cfg.name, to_dict(cfg), splits.description, str(dev), 0, 0, [], {}, {}, None, history,
                           round(time.time() - t_start, 2), list(splits.classes))
        result.exported, result.scores, result.stop = None, None, stop
        return result
    with guard.shared():
        deployed = export(model)
    probs = {name: predict(deployed, getattr(splits, name), dev, guard) for name in ("val", "test")}
    val, test = (metrics_of(getattr(splits, n), probs[n], cfg.model.num_classes) for n in ("val", "test"))
    selected = [s.gate.selected() if s.gate is not None else list(range(len(s.blocks))) for s in model.stages]
    dense = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)  # before adapters
    result = RunResult(cfg.name, to_dict(cfg), splits.description, str(dev), dense,
                       count_params(deployed), selected, val, test, None, history, round(time.time() - t_start, 2),
                       list(splits.classes), None if provenance is None else provenance.to_dict(sketch=False))
    result.exported, result.stop = deployed, None  # not serialised: for callers that keep using the model
    result.scores = {k: v.astype(np.float16) for k, v in probs.items()}
    if out is not None:
        save_run(out, result, cfg, provenance)
    _log.info(f"{logs.tag(f'[{cfg.name}]')} exported {result.params_exported / 1e6:.2f} M params; val top1 {val['top1']:.4f} "
              f"test top1 {test['top1']:.4f} f1 {test['f1_macro']:.4f}")
    return result


SCORES = "scores.npz"  # a run directory's per-image class probabilities: val, test (N, K) float16


def save_run(out: Path, result: RunResult, cfg: RunConfig, provenance: Optional["Provenance"] = None) -> None:
    """A run directory: the deployable model (its class names and provenance in the metadata),
    the result, the config that reproduces it, the per-image scores and ``provenance.json``."""
    from . import provenance as pv

    save_exported(result.exported, out / "model.safetensors",
                  extra={"name": cfg.name, "selected_blocks": result.selected_blocks},
                  provenance=provenance, classes=result.classes)
    result.save(out / "result.json")
    (out / "config.yaml").write_text(dump_run_config(cfg))
    scores = getattr(result, "scores", None)
    if scores:
        np.savez_compressed(out / SCORES, **scores)
    if provenance is not None:
        pv.write(out, provenance)


@dataclass
class Checkpoint:
    """The one checkpoint format -- a training run's, the supernet's and an extracted subnet's:
    tensors and built-in types only, so it is read with ``torch.load(weights_only=True)`` and
    never unpickles code. Written atomically (a temporary file, then a rename), so an interrupted
    save never corrupts the last one.

    Attributes:
        config: what it was made for, as text: a run config (YAML) or a space (canonical JSON).
        model: the state dict.
        epoch, phase_idx: where training stands (the epoch within the phase).
        history: the per-epoch records so far.
        optim, sched, rng, loader_rng: the optimizer, the schedule (its step count), torch's RNG and
            the loader's generator state, to resume exactly; None where not resumable.
        extra: what one kind adds (the supernet's subnet sampler state; an extract's supernet id).
    """

    config: str
    model: dict
    epoch: int = 0
    phase_idx: int = 0
    history: list = field(default_factory=list)
    optim: Optional[dict] = None
    sched: Optional[dict] = None
    rng: Optional[torch.Tensor] = None
    loader_rng: Optional[torch.Tensor] = None
    extra: dict = field(default_factory=dict)

    KEYS: ClassVar[tuple] = ("config", "model", "epoch", "phase_idx", "history", "optim", "sched", "rng",
                               "loader_rng", "extra")
    LEGACY: ClassVar[dict] = {"space": "config"}  # the supernet's checkpoints before this type: its space

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({k: getattr(self, k) for k in self.KEYS}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> "Checkpoint":
        """Read ``path`` with ``weights_only=True`` (checkpoints from before this type load too).

        Raises:
            HovitError: no such file, or a damaged or foreign file (one line naming it)."""
        if not path.is_file():
            raise HovitError(f"{path}: no checkpoint")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types for a damaged file
            raise HovitError(f"{path}: unreadable checkpoint ({exc.__class__.__name__})") from None
        if not isinstance(d, dict) or "model" not in d:
            raise HovitError(f"{path}: not a hovit-nas checkpoint")
        d = {cls.LEGACY.get(k, k): v for k, v in d.items()}
        extra = dict(d.pop("extra", None) or {}, **{k: d.pop(k) for k in list(d) if k not in cls.KEYS})
        return cls(**{k: v for k, v in d.items() if k in cls.KEYS}, extra=extra)



def _save_checkpoint(out: Path, cfg, model, opt, sched, loader_gen, phase_idx, epoch, history) -> None:
    Checkpoint(dump_run_config(cfg), model.state_dict(), epoch, phase_idx, history, opt.state_dict(),
               sched.state_dict(), torch.get_rng_state(), loader_gen.get_state()).save(out / CHECKPOINT)


def _load_checkpoint(out: Optional[Path], cfg: RunConfig) -> Checkpoint:
    if out is None:
        raise HovitError("`resume` needs `out` DIR (the run directory holding checkpoint.pt)")
    path = out / CHECKPOINT
    if not path.is_file():
        raise HovitError(f"{path}: no checkpoint to resume from")
    state = _read_checkpoint(path)
    if state.config != dump_run_config(cfg):
        raise HovitError(f"{path}: checkpoint was written for a different config; use the same `config`")
    return state


def _read_checkpoint(path: Path) -> Checkpoint:
    return Checkpoint.load(path)



"""Two-phase training: dense, then learnable pruning through LoRA; export; evaluate.

Phase 1 trains all M blocks of every stage. Phase 2 (only when some stage keeps N < M)
freezes the dense weights, trains LoRA adapters + gates + heads, anneals the Gumbel
temperature per step, and gives the gates 10x the learning rate (the paper's recipe).
A model without pruning spends the phase-2 epochs densely, so every config in a search gets
the same number of epochs. One checkpoint per epoch; ``resume=True`` continues from it.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import RunConfig, TrainConfig, dump_run_config
from .data import Splits, check_num_classes
from .errors import HovitError, TrialFailed
from .latency import measure_latency, resolve_device
from .locks import compute_slot
from .metrics import classification_metrics, confusion
from .models import add_lora, count_params, create_hovit, export, save_exported, set_tau, tau_at
from .models.gating import gates

CHECKPOINT = "checkpoint.pt"


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
    latency: Optional[dict]
    history: list = field(default_factory=list)
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2))
        return p


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _phases(cfg: RunConfig) -> list[tuple[str, int]]:
    t = cfg.train
    if cfg.model.pruned:
        return [("dense", t.epochs_dense), ("prune", t.epochs_prune)]
    return [("dense", t.epochs_dense + t.epochs_prune)]


def _optimizer(model, cfg: RunConfig, phase: str, total_steps: int):
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    gate_ids = {id(g.logits) for g in gates(model)}
    groups = [{"params": [p for p in params if id(p) not in gate_ids], "lr": t.lr}]
    if phase == "prune" and gate_ids:
        groups.append({"params": [g.logits for g in gates(model)], "lr": t.lr * cfg.prune.gate_lr_mult,
                       "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    total_steps = max(total_steps, 1)
    if t.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total_steps)
    elif t.schedule == "cosine":
        warm = int(t.warmup_epochs * total_steps / max(1, sum(n for _, n in _phases(cfg))))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warm)) * 0.5 * (
            1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return opt, sched


def _prepare_phase(model, cfg: RunConfig, phase: str) -> None:
    model.set_dense(phase == "dense")
    if phase == "prune":
        add_lora(model, cfg.prune.lora_rank, cfg.prune.lora_alpha)


@torch.inference_mode()
def evaluate(model, dataset, num_classes: int, device: torch.device, batch_size: int = 256) -> dict:
    model.eval()
    preds, labels = [], []
    batches = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False))
    while True:
        with compute_slot(str(device)):  # loading and compute both count as using the device
            batch = next(batches, None)
            if batch is None:
                break
            x, y = batch
            preds.append(model(x.to(device, non_blocking=True)).argmax(1).cpu())
        labels.append(y)
    y_true = torch.cat(labels).numpy() if labels else np.zeros(0, np.int64)
    y_pred = torch.cat(preds).numpy() if preds else np.zeros(0, np.int64)
    return classification_metrics(confusion(y_true, y_pred, num_classes))


def train_loader(dataset, t: TrainConfig, dev: torch.device, generator: torch.Generator) -> DataLoader:
    return DataLoader(dataset, batch_size=t.batch_size, shuffle=True, generator=generator,
                      drop_last=len(dataset) > t.batch_size, num_workers=t.num_workers,
                      pin_memory=dev.type == "cuda", persistent_workers=t.num_workers > 0)


def fit_epochs(model, loader, val_set, num_classes: int, opt, sched, t: TrainConfig, dev: torch.device,
               phase: str, epochs: int, first_epoch: int = 0, steps: Optional[int] = None,
               step_hook: Callable[[int, int], None] | None = None,
               end_epoch: Callable[[dict], None] | None = None) -> None:
    """The training loop: AdamW steps under the device's shared slot, NaN check, val per epoch."""
    amp = dev.type == "cuda" and t.amp
    steps = steps or len(loader)
    for epoch in range(first_epoch, epochs):
        model.train()
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        batches = iter(loader)
        bar = _StepBar(f"{phase} {epoch + 1}/{epochs}", steps)
        for step in range(steps):
            if step_hook is not None:
                step_hook(epoch * steps + step, epochs * steps)
            with compute_slot(str(dev)):  # loading + augmentation + step: no latency timing meanwhile
                batch = next(batches, None)
                if batch is None:
                    break
                x, y = batch[0].to(dev, non_blocking=True), batch[1].to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)
                if not torch.isfinite(loss):
                    raise TrialFailed(f"loss became {loss.item()} (NaN/inf) in phase {phase}, "
                                      f"epoch {epoch + 1}, step {step + 1}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            bar.update(loss_sum / seen, correct / seen)
        bar.close()
        val = evaluate(model, val_set, num_classes, dev)
        rec = {"phase": phase, "epoch": epoch + 1, "epochs": epochs, "loss": loss_sum / max(seen, 1),
               "train_top1": correct / max(seen, 1), "val_top1": val["top1"],
               "lr": opt.param_groups[0]["lr"], "s": round(time.time() - t0, 2)}
        if end_epoch is not None:
            end_epoch(rec)


class _StepBar:
    """A per-step progress bar (epoch, loss, accuracy) on an interactive terminal; silent in
    logs and CI, where the per-epoch lines carry the same figures."""

    def __init__(self, label: str, total: int):
        self.progress = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), transient=True)
            self.task = self.progress.add_task(label, total=total, stats="")
            self.progress.start()

    def update(self, loss: float, acc: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, stats=f"loss {loss:.4f} acc {acc:.3f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _steps(loader, t: TrainConfig) -> int:
    """Optimizer steps per epoch: the whole loader, or the quick-run cap."""
    return min(len(loader), t.max_steps_per_epoch) if t.max_steps_per_epoch else len(loader)


def train_plain(model, splits: Splits, t: TrainConfig, device, log: Callable[[str], None] = None,
                name: str = "model") -> dict:
    """Dense training of any classifier (the timm baselines in ``bench --data``); test metrics."""
    log = log or _log_default
    dev = resolve_device(device)
    seed_everything(t.seed)
    model.to(dev)
    epochs = t.epochs_dense + t.epochs_prune
    loader = train_loader(splits.train, t, dev, torch.Generator().manual_seed(t.seed))
    steps = _steps(loader, t)
    opt = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, steps * epochs))
    fit_epochs(model, loader, splits.val, splits.num_classes, opt, sched, t, dev, "dense", epochs, steps=steps,
               end_epoch=lambda r: log(f"[{name}] epoch {r['epoch']}/{r['epochs']}  loss {r['loss']:.4f}  "
                                       f"val {r['val_top1']:.3f}  ({r['s']:.1f}s)"))
    return evaluate(model, splits.test, splits.num_classes, dev)


def _log_default(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train_and_evaluate(cfg: RunConfig, splits: Splits, device: str | torch.device | None = "auto",
                       out_dir: str | Path | None = None, resume: bool = False,
                       latency: bool = True, latency_batch: int = 1, latency_runs: int = 30,
                       threads: Optional[int] = None, log: Callable[[str], None] | None = _log_default,
                       on_epoch: Callable[[dict], None] | None = None) -> RunResult:
    """The whole run: train (both phases), export, evaluate val/test, measure latency."""
    t_start = time.time()
    log = log or (lambda _m: None)
    check_num_classes(splits, cfg.model.num_classes)
    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    out = Path(out_dir) if out_dir else None
    seed_everything(cfg.train.seed)
    with compute_slot(str(dev)):
        model = create_hovit(cfg).to(dev)
    params_dense = count_params(model)
    phases = _phases(cfg)
    history: list[dict] = []
    start_phase, start_epoch, state = 0, 0, None
    if resume:
        state = _load_checkpoint(out, cfg)
        start_phase, start_epoch, history = state["phase_idx"], state["epoch"], state["history"]
        log(f"resuming {cfg.name} at phase {phases[start_phase][0]} epoch {start_epoch}")

    t = cfg.train
    for phase_idx, (phase, epochs) in enumerate(phases):
        if phase_idx < start_phase:
            continue  # finished before the checkpoint; its weights come with the checkpoint
        with compute_slot(str(dev)):
            _prepare_phase(model, cfg, phase)
        loader_gen = torch.Generator().manual_seed(t.seed + phase_idx)
        loader = train_loader(splits.train, t, dev, loader_gen)
        steps = _steps(loader, t)
        opt, sched = _optimizer(model, cfg, phase, steps * epochs)
        first_epoch = 0
        if state is not None and phase_idx == start_phase:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            sched.load_state_dict(state["sched"])
            torch.set_rng_state(state["rng"])
            loader_gen.set_state(state["loader_rng"])
            first_epoch = start_epoch
            state = None
        tau_hook = None
        if phase == "prune":
            tau_hook = lambda gstep, total: set_tau(model, tau_at(  # noqa: E731
                gstep, total, cfg.prune.tau_start, cfg.prune.tau_end, cfg.prune.tau_schedule))

        def end_epoch(rec, _phase_idx=phase_idx, _opt=opt, _sched=sched, _gen=loader_gen):
            if rec["phase"] == "prune" and gates(model):
                rec["tau"] = gates(model)[0].tau
            history.append(rec)
            log(f"[{cfg.name}] {rec['phase']} epoch {rec['epoch']}/{rec['epochs']}  loss {rec['loss']:.4f}  "
                f"train {rec['train_top1']:.3f}  val {rec['val_top1']:.3f}  ({rec['s']:.1f}s)")
            if out is not None:
                _save_checkpoint(out, cfg, model, _opt, _sched, _gen, _phase_idx, rec["epoch"], history)
            if on_epoch is not None:
                on_epoch(dict(rec, global_epoch=len(history)))

        fit_epochs(model, loader, splits.val, cfg.model.num_classes, opt, sched, t, dev, phase, epochs,
                   first_epoch, steps, step_hook=tau_hook, end_epoch=end_epoch)

    with compute_slot(str(dev)):
        deployed = export(model)
    val = evaluate(deployed, splits.val, cfg.model.num_classes, dev)
    test = evaluate(deployed, splits.test, cfg.model.num_classes, dev)
    selected = [s.gate.selected() if s.gate is not None else list(range(len(s.blocks))) for s in model.stages]
    lat = None
    if latency:
        lat = measure_latency(deployed, cfg.model.img_size, batch=latency_batch, device=dev,
                              runs=latency_runs, threads=threads, in_chans=cfg.model.in_chans).to_dict()
    result = RunResult(cfg.name, run_config_dict(cfg), splits.description, str(dev), params_dense,
                       count_params(deployed), selected, val, test, lat, history, round(time.time() - t_start, 2))
    result.exported = deployed  # not serialised: for callers that keep using the model
    if out is not None:
        save_exported(deployed, out / "model.safetensors", extra={"name": cfg.name, "selected_blocks": selected})
        result.save(out / "result.json")
        (out / "config.yaml").write_text(dump_run_config(cfg))
    log(f"[{cfg.name}] exported {result.params_exported / 1e6:.2f} M params; val top1 {val['top1']:.4f} "
        f"test top1 {test['top1']:.4f} f1 {test['f1_macro']:.4f}"
        + (f"; latency {lat['median_ms']:.2f} ms (batch {latency_batch}, {lat['device_name']})" if lat else ""))
    return result


def run_config_dict(cfg: RunConfig) -> dict:
    from .config import to_dict
    return to_dict(cfg)


def _save_checkpoint(out: Path, cfg, model, opt, sched, loader_gen, phase_idx, epoch, history) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (CHECKPOINT + ".tmp")
    torch.save({"config": dump_run_config(cfg), "phase_idx": phase_idx, "epoch": epoch,
                "model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
                "rng": torch.get_rng_state(), "loader_rng": loader_gen.get_state(), "history": history}, tmp)
    tmp.replace(out / CHECKPOINT)  # atomic: an interrupted save never corrupts the last checkpoint


def _load_checkpoint(out: Optional[Path], cfg: RunConfig) -> dict:
    if out is None:
        raise HovitError("--resume needs --out DIR (the run directory holding checkpoint.pt)")
    path = out / CHECKPOINT
    if not path.is_file():
        raise HovitError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise HovitError(f"{path}: unreadable checkpoint ({exc.__class__.__name__})") from None
    if state["config"] != dump_run_config(cfg):
        raise HovitError(f"{path}: checkpoint was written for a different config; use the same --config")
    return state

"""What every executor shares: the prepared search, the trial template, the study's latency
anchor, and the progress line. Executors import this module, never the dispatcher (search.py)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import optuna
from optuna.trial import TrialState

from .. import study as st
from ..config import EarlyStop, RunConfig, SearchConfig
from ..errors import HovitError
from ..latency import Calibration
from ..space import TrialSpace
from ..target import DeploymentTarget, ensure as ensure_recorded_target
from ..trial import TrialSpec, calibrate_anchor

if TYPE_CHECKING:
    from ..predictor import Screen

_log = logging.getLogger(__name__)


@dataclass
class Failures:
    """The trials of one executor run that failed, and when the run stops starting more: after
    ``allowed`` of them (twice a quarter of the trials it set out to finish, at least 2, plus one
    for each further trial that runs at once, since those fail together from one cause), so a
    cause that fails every trial (a wrong address, an unreachable service, a broken config) never
    fills the study with FAIL trials. A run that stops so, short of its budget, has failed
    (``executors.dispatch``: SearchFailed, exit 1)."""

    allowed: int
    failed: int = 0
    last: str = ""  # the last failed trial's reason

    @classmethod
    def of(cls, remaining: int, concurrent: int = 1) -> "Failures":
        return cls(2 * max(1, remaining // 4) + max(0, concurrent - 1))

    def add(self, reason: str) -> None:
        self.failed += 1
        self.last = reason

    @property
    def exhausted(self) -> bool:
        return self.failed >= self.allowed

    def stop(self) -> bool:
        """True (and one log line) when the run should start no more trials."""
        if self.exhausted:
            _log.info(f"stopping: {self.failed} trials failed (see their fail_reason in the study)")
        return self.exhausted


@dataclass(frozen=True)
class Prepared:
    """A search ready to run: its space, study, budget and the template every trial starts from.
    Immutable once built (``search.prepare``, ``confirm.prepare``): an executor completes its own
    copy of the template (``ready``) and returns its count of failed trials."""

    config: SearchConfig
    space: TrialSpace
    study: optuna.Study
    study_name: str
    storage: str
    trials: int
    trial_template: TrialSpec
    created: bool
    out_dir: Path  # the study's artefacts (study.study_dir)
    early_stop: EarlyStop = field(default_factory=EarlyStop)  # successive halving (rungs.py), as recorded
    # (name, config) of the model the study's latency anchor is calibrated on: the space's fixed
    # point; None where the anchor is inherited (a confirmation reuses its search's)
    anchor_model: Optional[tuple[str, RunConfig]] = None


def _spec_on(prep: Prepared, device: str, threads: Optional[int]) -> TrialSpec:
    """The study's trial template as run on ``device`` with ``threads`` (the trials')."""
    return replace(prep.trial_template, device=device, threads=threads)


def ensure_target(prep: Prepared, device: str, threads: Optional[int]) -> DeploymentTarget:
    """The study's deployment target for trials on ``device`` with ``threads`` (the trials'):
    recorded with a study that has none, refused (HovitError, one line) when the study recorded
    another (target.py)."""
    t = _spec_on(prep, device, threads)
    remote = t.latency_at
    target = DeploymentTarget.of("cpu" if remote else device, t.latency.runtime, t.latency_threads,
                                 t.latency.batch, t.config.model.img_size, t.latency.precision,
                                 remote.machine if remote else None)
    ensure_recorded_target(prep.study, target)
    return target


def ensure_screen(prep: Prepared, target: DeploymentTarget, anchor: Optional[Calibration]) -> Optional["Screen"]:
    """With ``predictor``: the screening predictor fitted for the study's ``target`` on the
    study's latency scale (the study's ``anchor``: predictor.make_screen); else the template's."""
    if prep.config.predictor is not None and prep.trial_template.screen is None:
        from ..predictor import make_screen

        return make_screen(prep.config.predictor, prep.study, target, prep.config.limits.max_latency_ms, anchor)
    return prep.trial_template.screen


def ready(prep: Prepared, device: str, threads: Optional[int],
          run: Callable[[Callable[[], Calibration]], Calibration] = lambda calibrate: calibrate()) -> TrialSpec:
    """The trial template as an executor runs it on ``device`` with ``threads`` (the trials'):
    the study's deployment target recorded or checked (``ensure_target``), its latency anchor
    (``ensure_anchor``; ``run`` runs a calibration where trials run) and the predictor's screen
    (``ensure_screen``) filled in. ``prep`` is not changed. Raises HovitError as those do."""
    target = ensure_target(prep, device, threads)
    anchor = ensure_anchor(prep, device, threads, run)
    return replace(prep.trial_template, anchor=anchor, screen=ensure_screen(prep, target, anchor))


def ensure_anchor(prep: Prepared, device: str, threads: Optional[int],
                  run: Callable[[Callable[[], Calibration]], Calibration] = lambda calibrate: calibrate()
                  ) -> Optional[Calibration]:
    """One calibrated reference per study, so every trial's latency scales by the same figure;
    returns it (the template's, None, when the study is unanchored or timed on a latency service).
    ``device``/``threads`` are the trials'; ``run`` runs the calibration where trials run (a Ray
    task for Ray). The process that created the study calibrates; one that joins a fresh study
    waits for it; a resumed study reuses what it stored, and refuses (HovitError) a device or
    latency thread count other than the one it was calibrated with."""
    if not prep.trial_template.latency.anchor or prep.trial_template.latency_at is not None:
        return prep.trial_template.anchor  # unanchored, or a latency service anchors to its own HoViT-B
    t = _spec_on(prep, device, threads)
    stored = _wait_for_anchor(prep)
    if stored is None:
        if prep.anchor_model is None:
            raise HovitError(f"study {prep.study_name!r} has no latency anchor to inherit; run it with "
                             "`latency_anchor` off or confirm a study that was timed with one")
        name, cfg = prep.anchor_model
        anchor = run(lambda: calibrate_anchor(name, cfg, t))
        stored = prep.study.user_attrs.get(st.ANCHOR_ATTR)  # another driver may have been quicker: keep its
        if stored is None:
            prep.study.set_user_attr(st.ANCHOR_ATTR, anchor.to_dict())
            _log.info(f"latency anchor: {anchor.name} calibrated at {anchor.ms:.3f} ms on {anchor.device} "
                      f"({anchor.threads} threads); each trial is timed alternately with it, reported as ratio x this")
    if stored is not None:
        anchor = Calibration.from_dict(stored)
        if anchor.device.split(":")[0] != device.split(":")[0] or anchor.threads != t.latency_threads:
            raise HovitError(f"study {prep.study_name!r}: its latency anchor was calibrated on {anchor.device} "
                             f"with {anchor.threads} threads, this run uses {device} with {t.latency_threads}; run "
                             f"it the same way (`device`/`threads`/`cpus_per_trial`) or use `study` NEW_NAME")
    return anchor


def _wait_for_anchor(prep: Prepared) -> Optional[dict]:
    """A driver that joined a fresh study waits for its creator's calibration, for as long as a
    live process may stay silent (the heartbeat grace): past that, the creator is presumed dead
    and this driver calibrates."""
    wait = st.storage_of(prep.study).grace_period
    deadline = time.time() + wait
    said = False
    while True:
        stored = prep.study.user_attrs.get(st.ANCHOR_ATTR)
        if stored is not None or prep.created or st.finished_count(prep.study) or time.time() > deadline:
            return stored
        if not said:
            _log.info(f"waiting up to {wait} s for the driver that created the study to calibrate its latency anchor")
            said = True
        time.sleep(1)


def tag(trial: optuna.Trial | optuna.trial.FrozenTrial) -> str:
    """The tag of a trial's training lines: ``    #12`` for search trial 12; ``    t12 seed 2``
    for the confirmation run that retrains search trial 12 with seed 2."""
    a = trial.user_attrs
    return f"    t{a[st.CONFIRMS_ATTR]} seed {a['seed']}" if st.CONFIRMS_ATTR in a else f"    #{trial.number}"


class ProgressReporter:
    """One line per finished trial: done/total, the trial's figures, and the front so far -- or,
    for a confirmation run, the search trial it retrains, its seed, and that trial's mean so far
    (a confirmation has no front of its own)."""

    def __init__(self, total: int):
        self.total, self.t0 = total, time.time()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = st.finished_count(study)
        a = trial.user_attrs
        if trial.state == TrialState.COMPLETE:
            what = (f"{a.get('metric', 'acc')} {trial.values[0]:.4f}  latency {trial.values[1]:.2f} ms  "
                    f"params {a.get('params', 0) / 1e6:.2f} M  ({a.get('wall_s', 0):.0f}s)")
        elif trial.state == TrialState.PRUNED:
            what = f"pruned: {a.get('reason', 'stopped early')}"
        else:
            what = f"FAILED: {a.get('fail_reason', 'unknown')}"
        fp = " [HoViT-B fixed point]" if st.FIXED_POINT_ATTR in a else ""
        if st.CONFIRMS_ATTR in a:
            head, summary = (f"confirm run {done}/{self.total}: trial {a[st.CONFIRMS_ATTR]}{fp}, seed {a['seed']}",
                             _so_far(study, a[st.CONFIRMS_ATTR], a.get("metric", "acc")))
        else:
            head, summary = f"[{done}/{self.total}] trial #{trial.number}{fp}", _front(study, done)
        _log.info(f"{head}: {what}{summary}  [{time.time() - self.t0:.0f}s]")


def _front(study: optuna.Study, done: int) -> str:
    front = study.best_trials if done else []
    if not front:
        return ""
    best = max(front, key=lambda t: t.values[0])
    fastest = min(front, key=lambda t: t.values[1])
    return (f" | front {len(front)}: best {best.values[0]:.4f} @ {best.values[1]:.2f} ms, "
            f"fastest {fastest.values[1]:.2f} ms @ {fastest.values[0]:.4f}")


def _so_far(study: optuna.Study, candidate: int, metric: str) -> str:
    """Search trial ``candidate``'s confirmation so far: its mean val score over the seeds done."""
    import statistics

    runs = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get(st.CONFIRMS_ATTR) == candidate and st.DUPLICATE_ATTR not in t.user_attrs]
    if not runs:
        return ""
    vals = [t.values[0] for t in runs]
    spread = f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else ""
    seeds = ", ".join(str(s) for s in sorted(t.user_attrs["seed"] for t in runs))
    return (f" | trial {candidate} so far: {metric} {statistics.fmean(vals):.4f}{spread} "
            f"over seed{'s' * (len(runs) > 1)} {seeds}")

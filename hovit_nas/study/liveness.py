"""Liveness: the heartbeat thread of the trials a process runs, failing the trials whose owner
stopped beating (on any host), and re-queueing the enqueued work that must complete once (the
fixed point, a confirmation's runs).
"""
from __future__ import annotations

import logging
import threading
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import _compat
from .failures import storage_cause
from .keys import CONFIRMS_ATTR, FIXED_POINT_ATTR
from .storage import Storage, storage_of, study_id, trial_id

REQUEUED_ATTRS = (FIXED_POINT_ATTR, CONFIRMS_ATTR, "seed", "replicate")  # enqueued work that must complete once
_log = logging.getLogger(__name__)


def requeue(study: optuna.Study, trial: FrozenTrial) -> bool:
    """An interrupted (never a genuinely failed) fixed point or confirmation run goes back in the
    queue. Only the process that moved it to FAIL calls this, so it still completes exactly once."""
    attrs = {k: trial.user_attrs[k] for k in REQUEUED_ATTRS if k in trial.user_attrs}
    if FIXED_POINT_ATTR not in attrs and CONFIRMS_ATTR not in attrs:
        return False
    study.enqueue_trial(trial.params or trial.system_attrs.get("fixed_params", {}), user_attrs=attrs)
    return True


def fail_trial(study: optuna.Study, number: int, reason: str, tid: Optional[int] = None) -> bool:
    """Record ``reason`` and move RUNNING trial ``number`` to FAIL (``study.tell``); re-queue it
    if it was the fixed point or a confirmation run. True for the one process whose transition
    won; False when the trial had already finished (another driver may be failing it at the same
    time, or it just completed). ``tid``: its storage id, where the caller has it."""
    tid = trial_id(study, number) if tid is None else tid
    try:
        storage_of(study).set_trial_user_attr(tid, "fail_reason", reason)
        frozen = study.tell(number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # ValueError: "Cannot tell a FAIL trial"
        return False
    requeue(study, frozen)
    return True


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the trials whose owner stopped beating (a dead driver or worker, on any host) and
    return their numbers, each logged on one line."""
    storage = storage_of(study)
    grace = storage.grace_period
    failed = []
    for tid in _compat.stale_trial_ids(storage, study_id(study)):
        t = storage.get_trial(tid)
        if t.state == TrialState.RUNNING and fail_trial(study, t.number, f"stale: no heartbeat for over {grace} s "
                                                                         "(its driver or worker died)", tid):
            failed.append(t.number)
            _log.info(f"trial #{t.number} was left RUNNING by a dead driver (no heartbeat for over {grace} s): "
                      "marked FAIL" + ("; HoViT-B queued again" if FIXED_POINT_ATTR in t.user_attrs else
                      "; queued again" if CONFIRMS_ATTR in t.user_attrs else ""))
    return failed


class Heartbeats:
    """A background thread that records a heartbeat for every trial this process runs."""

    def __init__(self, storage: Storage):
        self.storage, self.ids, self._stop = storage, set(), threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hovit-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        with self._lock:
            self.ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.storage.heartbeat_interval):
            with self._lock:
                ids = list(self.ids)
            for tid in ids:
                try:
                    self.storage.record_heartbeat(tid)
                except Exception as exc:  # any storage hiccup: it must not kill the trial
                    _log.warning(f"heartbeat for trial id {tid} failed: "
                                 f"{storage_cause(exc) or type(exc).__name__}")

    def close(self) -> None:
        self._stop.set()

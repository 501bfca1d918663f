"""One trial's life in a study, the same for every executor (local and Ray).

A trial is asked for, trained (trial.run_trial), then closed in the study with one of Optuna's
states. What decides the state is here, once:

- ``ok`` (trained and scored): COMPLETE, with the objectives (validation accuracy, latency ms);
- ``infeasible`` (a latency or params limit broken: not trained) and ``stopped`` (ended early at
  a rung of successive halving, rungs.py): PRUNED, never on a front;
- a failure (a NaN loss, out of memory, a crash, a dead worker): FAIL, with ``fail_reason``.

Early stopping is a *decision* an ``on_epoch`` callback returns (``Stop``; ``None`` continues),
as a Syne Tune scheduler's ``on_trial_result`` returns one, not an exception: the training loop
(train.fit_epochs) ends the phase on it and the trial reports ``stopped``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

FAIL_REASON = "fail_reason"  # the trial user attr saying why it failed
REASON = "reason"  # the trial user attr saying why it was pruned when its result does not

# a trial result's status (trial.TrialResult.status) -> the state the study records
STATES = {"ok": TrialState.COMPLETE, "infeasible": TrialState.PRUNED, "stopped": TrialState.PRUNED}


@dataclass(frozen=True)
class Stop:
    """A decision to end a trial's training after ``epoch`` (counted over both phases), whose
    validation top-1 there was ``accuracy`` (in [0, 1]); ``reason`` is the one line recorded."""

    reason: str
    epoch: int
    accuracy: float


EpochCallback = Callable[[dict], Optional[Stop]]  # per-epoch record -> a Stop, or None to continue


@dataclass(frozen=True)
class Outcome:
    """How a trial ends in the study: its ``state``, the objectives for COMPLETE, and for FAIL
    (``fail_reason``) or a PRUNED trial whose result says nothing (``reason``) the line why."""

    state: TrialState
    values: Optional[list[float]] = None
    reason: Optional[str] = None

    @classmethod
    def of(cls, status: str, values: Optional[list[float]] = None) -> "Outcome":
        """The outcome of a finished trial whose result has ``status`` (``STATES``); ``values``
        are used only when it completes. Raises KeyError on an unknown status."""
        state = STATES[status]
        return cls(state, list(values) if state == TrialState.COMPLETE else None)

    @classmethod
    def failed(cls, reason: Optional[str]) -> "Outcome":
        """A failure; ``reason`` None keeps the reason the trial already wrote itself."""
        return cls(TrialState.FAIL, None, reason)

    @classmethod
    def stopped_by_scheduler(cls, epoch) -> "Outcome":
        """Stopped by an outside scheduler (Ray Tune's) after ``epoch``, before any result."""
        return cls(TrialState.PRUNED, None, f"stopped early by the scheduler after epoch {epoch}")


def close(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> FrozenTrial:
    """Record ``outcome`` on the running ``trial`` (its reason as a user attr, then Optuna's
    ``study.tell``) and return the frozen trial. Raises what ``tell`` raises (a trial already
    finished, e.g. failed as stale by another driver; a storage error)."""
    if outcome.reason is not None:
        trial.set_user_attr(FAIL_REASON if outcome.state == TrialState.FAIL else REASON, outcome.reason)
    return study.tell(trial, outcome.values, state=outcome.state)

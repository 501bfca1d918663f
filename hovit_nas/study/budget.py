"""The trial budget a study's drivers share, and the one admission check every trial passes
before it trains (``admit``): within the budget, and not a duplicate of an earlier config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .keys import DUPLICATE_ATTR, FIXED_POINT_ATTR

_log = logging.getLogger(__name__)


def counts(study: optuna.Study) -> tuple[int, int, int]:
    """(finished, running, waiting fixed points): what the trial budget counts. A duplicate
    config (never trained) and a failed trial do not use up the budget."""
    done = running = waiting = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and DUPLICATE_ATTR not in t.user_attrs:
            done += 1
        elif t.state == TrialState.RUNNING and DUPLICATE_ATTR not in t.user_attrs:
            running += 1
        elif t.state == TrialState.WAITING and FIXED_POINT_ATTR in t.user_attrs:
            waiting += 1
    return done, running, waiting


def finished_count(study: optuna.Study) -> int:
    return counts(study)[0]


def within_budget(study: optuna.Study, trial: FrozenTrial | optuna.Trial, budget: int) -> bool:
    """After ``ask``: may this trial run? Trials are numbered in creation order, so of several
    drivers racing for the last slot, the lower numbers win. A fixed point always runs."""
    if FIXED_POINT_ATTR in trial.user_attrs:
        return True
    ahead = sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number
                and DUPLICATE_ATTR not in t.user_attrs
                and (t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
                     or (t.state == TrialState.WAITING and FIXED_POINT_ATTR in t.user_attrs)))
    return ahead < budget


def duplicate_of(study: optuna.Study, trial: optuna.Trial) -> Optional[int]:
    """The number of an earlier trial with the same parameters that finished or is running."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        if t.number != trial.number and DUPLICATE_ATTR not in t.user_attrs and t.params == trial.params:
            return t.number
    return None


@dataclass(frozen=True)
class Admission:
    """The verdict on a trial that has its parameters: train it (``state`` None), or close it
    at once as ``state`` -- FAIL when the budget is taken, PRUNED for a duplicate -- with
    ``reason`` recorded on the trial."""

    state: Optional[TrialState] = None
    reason: str = ""
    duplicate_of: Optional[int] = None  # the earlier trial with the same parameters

    @property
    def admitted(self) -> bool:
        return self.state is None


def admit(study: optuna.Study, trial: optuna.Trial, budget: int) -> Admission:
    """The one check both executors make before a trial trains, after its parameters are
    suggested: first the budget (``within_budget``: the lowest trial numbers win the last
    slots, a fixed point always runs), then a duplicate (``duplicate_of``: the same parameters
    finished or running). The verdict's reason is written to the trial's user attrs
    (``fail_reason``; or ``duplicate_of`` and ``reason``) and a duplicate is logged; the caller
    then tells the study ``state``, since only it holds the trial's handle."""
    if not within_budget(study, trial, budget):
        reason = "not run: other drivers took the last trials of the budget"
        trial.set_user_attr("fail_reason", reason)
        return Admission(TrialState.FAIL, reason)
    earlier = None if FIXED_POINT_ATTR in trial.user_attrs else duplicate_of(study, trial)  # replicates: enqueued
    if earlier is None:
        return Admission()
    reason = f"duplicate of trial #{earlier}: the same config is not trained again"
    trial.set_user_attr(DUPLICATE_ATTR, earlier)
    trial.set_user_attr("reason", reason)
    _log.info(f"trial #{trial.number}: same config as trial #{earlier}; recorded as its duplicate, not trained")
    return Admission(TrialState.PRUNED, reason, earlier)


def record(set_attr: Callable[[str, object], None], attrs: dict) -> None:
    """Write a trial's measurements as user attrs."""
    for k, v in attrs.items():
        set_attr(k, v)

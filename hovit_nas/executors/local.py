"""In-process executor: ask a trial, run the pure trial function, tell the study.

Our own small loop rather than ``study.optimize``, because a shared study needs three things
before a trial trains: a slot in the trial budget that several drivers share, a check that the
config was not trained already, and a heartbeat from the moment the trial exists.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Optional

import optuna

from .. import faults, logs
from .. import study as st
from ..device import resolve_device
from ..errors import ConfigError, HovitError, TrialFailed, one_line
from ..lifecycle import Outcome, close
from ..rungs import rung_callback
from ..trial import TrialSpec, run_trial
from .common import Failures, Prepared, ProgressReporter, ready, tag

_log = logging.getLogger(__name__)
MAX_DUPLICATE_STREAK = 50  # proposals in a row already trained: the space is (nearly) exhausted


class LocalExecutor:
    """The ``local`` executor (executors.Executor): trials one after another in this process."""

    name = "local"

    def run(self, prep: Prepared) -> Optional[Failures]:
        return run_local(prep)


def run_local(prep: Prepared) -> Optional[Failures]:
    """Run ``prep``'s remaining trials here, on ``prep.config.device``, until the budget is met;
    returns this run's count of failed trials (None when nothing was left to run)."""
    if st.finished_count(prep.study) >= prep.trials:
        _log.info(f"study already has {prep.trials} finished trials; raise --trials to run more")
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    device = str(resolve_device(prep.config.device))
    driver = _Driver(prep, ready(prep, device, prep.config.threads))
    driver.run()
    return driver.failures


class _Driver:
    def __init__(self, prep: Prepared, template: TrialSpec):
        self.prep, self.study, self.template = prep, prep.study, template
        self.report = ProgressReporter(prep.trials)
        self.failures = Failures.of(prep.trials - st.finished_count(prep.study))
        self.duplicates = 0
        self.poll = min(5.0, st.storage_of(prep.study).heartbeat_interval)

    def run(self) -> None:
        deadline = time.time() + self.prep.config.timeout if self.prep.config.timeout else None
        beats = st.Heartbeats(st.storage_of(self.study))
        current: Optional[optuna.Trial] = None
        tid: Optional[int] = None  # its storage id
        try:
            while self._wants_more(deadline):
                current, tid = st.ask(self.study), None
                faults.reached("created")
                tid = st.trial_id(self.study, current.number)
                beats.add(tid)
                self._one(current, tid)
                beats.discard(tid)
                current = None
        except BaseException as exc:
            if current is not None:  # Ctrl-C or bad input mid-trial: never leave it RUNNING
                reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"aborted: {exc}"
                try:
                    if st.fail_trial(self.study, current.number, reason, tid):
                        _log.info(f"marked interrupted trial #{current.number} failed")
                except Exception:  # the storage itself failed: the heartbeat rule fails it later
                    pass
            raise
        finally:
            beats.close()

    def _wants_more(self, deadline: Optional[float]) -> bool:
        """True when a trial should start now; waits while other drivers' trials may fill the budget."""
        while True:
            st.fail_stale_trials(self.study)
            done, running, _ = st.counts(self.study)
            if done >= self.prep.trials:
                return False
            if deadline is not None and time.time() > deadline:
                _log.info("timeout reached; no new trials started")
                return False
            if self.failures.stop():
                return False
            if self.duplicates >= MAX_DUPLICATE_STREAK:
                _log.info(f"stopping: the last {self.duplicates} proposals were all configs trained already "
                          "(is the space exhausted?)")
                return False
            if done + running < self.prep.trials:
                return True
            time.sleep(self.poll)  # the rest of the budget is running elsewhere: wait for it to finish or fail

    def _one(self, trial: optuna.Trial, tid: int) -> None:
        study, prep = self.study, self.prep
        try:
            cfg = prep.space.suggest(trial)
        except ConfigError as exc:  # a combination the space allows but no model has: not fatal
            self._failed(trial, f"config cannot be built: {one_line(exc)}")
            return
        verdict = st.admit(study, trial, prep.trials)
        if not verdict.admitted:
            study.tell(trial, state=verdict.state)
            self.duplicates += verdict.duplicate_of is not None
            return
        self.duplicates = 0
        spec = replace(self.template, config=cfg)
        on_epoch = rung_callback(st.storage_of(study), st.study_id(study), tid, prep.early_stop,
                                 cfg.train.epochs_dense + cfg.train.epochs_prune)
        st.check_writable(prep.storage)  # a result that cannot be saved must not cost a training
        try:
            with logs.tagged(tag(trial)):  # its training lines, among the search's own
                result = run_trial(spec, on_epoch=on_epoch)
        except HovitError:
            raise  # bad input: abort the search (run() fails the trial)
        except TrialFailed as exc:
            self._failed(trial, str(exc))
            return
        except Exception as exc:  # any other crash of one config must not stop the study
            self._failed(trial, f"{type(exc).__name__}: {exc}")
            return
        st.record(trial.set_user_attr, result.user_attrs())
        faults.reached("write")
        self.report(study, close(study, trial, Outcome.of(result.status, result.values)))

    def _failed(self, trial: optuna.Trial, reason: str) -> None:
        frozen = close(self.study, trial, Outcome.failed(reason))
        self.failures.add(reason)
        self.report(self.study, frozen)

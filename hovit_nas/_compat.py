"""The one adapter over Optuna internals: every reach below a public API lives here.

hovit-nas otherwise uses Optuna's public API (``ask``/``tell``, ``enqueue_trial``, the
storage's public methods). Two jobs have no public API, so they reach in here, and
tests/test_compat.py pins each behaviour relied on, so a release that changes one fails that
test before it can turn into a wrong study:

1. The storage a study was opened on: ``Study`` keeps it as ``_storage``, wrapped in a
   per-process cache whose ``_backend`` is the RDBStorage we built (:func:`rdb_storage`).
   Rungs, heartbeats and the stale check read and write that storage directly, so every driver
   sees the same rows.
2. A RUNNING trial that never beat. Optuna's stale check (``RDBStorage._get_stale_trial_ids``,
   which ``optuna.storages.fail_stale_trials`` also calls) skips a RUNNING trial that has no
   heartbeat row at all, which is what a driver killed between ``ask`` and its first beat
   leaves. :class:`HeartbeatRDBStorage` overrides that method to count such a trial as stale
   once it is older than the grace period, reading Optuna's heartbeat table
   (``optuna.storages._rdb.models.TrialHeartbeatModel``) and trial ids (``FrozenTrial._trial_id``).

Public alternatives considered and why they do not fit: ``optuna.storages.fail_stale_trials``
fails trials without a reason, and Optuna refuses attributes on a finished trial, so the
``fail_reason`` every stale trial records could not be written; ``RetryFailedTrialCallback``
(``RetryHeartbeatStaleTrialCallback`` since Optuna 4.9) re-queues every stale trial with all of
its user attrs, rung records included, where only the fixed point and confirmation runs may go
back in the queue, without partial measurements (study.requeue).

Ray: none. The Ray executor implements Tune's public ``Searcher`` interface itself.
"""
from __future__ import annotations

import datetime as _dt

import optuna
from optuna.trial import TrialState


def rdb_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage ``study`` was opened on, below Optuna's per-process cache: our RDBStorage
    for a study in a database, else whatever storage it has (e.g. in memory)."""
    storage = study._storage
    return getattr(storage, "_backend", storage)


class HeartbeatRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, where a RUNNING trial that never beat (its driver died right after
    creating it) is stale once it started more than ``grace_period`` seconds ago."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = set(super()._get_stale_trial_ids(study_id))
        now = _dt.datetime.now()  # Optuna records datetime_start in local time, without a zone
        silent = [t for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                  if t._trial_id not in stale and t.datetime_start is not None
                  and (now - t.datetime_start).total_seconds() > self.grace_period]
        if silent:
            from optuna.storages._rdb import models

            with self.scoped_session() as session:
                beating = {h.trial_id for h in session.query(models.TrialHeartbeatModel).filter(
                    models.TrialHeartbeatModel.trial_id.in_([t._trial_id for t in silent]))}
            stale |= {t._trial_id for t in silent if t._trial_id not in beating}
        return sorted(stale)


def stale_trial_ids(storage: optuna.storages.RDBStorage, study_id: int) -> list[int]:
    """Ids of the study's RUNNING trials whose owner stopped beating (storage ids, not numbers)."""
    return storage._get_stale_trial_ids(study_id)

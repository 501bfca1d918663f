"""Pins every Optuna behaviour hovit_nas/_compat.py reaches for below the public API, and the
public behaviours the study's races rely on, so a release that changes one fails here first."""
import datetime as dt
import inspect
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from hovit_nas import _compat
from hovit_nas import study as st


def _storage(tmp_path, cls=_compat.HeartbeatRDBStorage, grace=1):
    with warnings.catch_warnings():  # heartbeat_interval is experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(f"sqlite:///{tmp_path / 'c.db'}", heartbeat_interval=1, grace_period=grace)


def _study(storage):
    return optuna.create_study(storage=storage, study_name="c", directions=st.DIRECTIONS)


def test_rdb_storage_is_the_storage_the_study_was_opened_on(tmp_path):
    storage = _storage(tmp_path)
    study = _study(storage)
    assert _compat.rdb_storage(study) is storage  # below Optuna's per-process cache (_CachedStorage._backend)
    by_url = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}")
    assert isinstance(_compat.rdb_storage(by_url), optuna.storages.RDBStorage)
    in_memory = optuna.create_study(directions=st.DIRECTIONS)
    assert isinstance(_compat.rdb_storage(in_memory), optuna.storages.InMemoryStorage)


def test_frozen_trial_id_is_the_storage_id_the_public_api_gives(tmp_path):
    study = _study(_storage(tmp_path))
    trials = [st.ask(study) for _ in range(3)]
    sid = st.study_id(study)
    for t in trials:
        frozen = study.trials[t.number]
        assert frozen._trial_id == st.trial_id(study, t.number)  # _compat reads FrozenTrial._trial_id
        assert _compat.rdb_storage(study).get_trial_id_from_study_id_trial_number(sid, t.number) == frozen._trial_id


def test_optuna_skips_never_beating_trials_and_our_override_counts_them(tmp_path):
    """Optuna's private stale check (the hook we override) exists with the same signature, fails
    a trial whose beat is older than the grace period, and skips one that never beat; ours
    counts that one too. Optuna's public fail_stale_trials goes through the same hook."""
    hook = optuna.storages.RDBStorage._get_stale_trial_ids
    assert list(inspect.signature(hook).parameters) == ["self", "study_id"]
    plain = _storage(tmp_path, optuna.storages.RDBStorage)
    study = _study(plain)
    beat, silent = st.ask(study), st.ask(study)
    plain.record_heartbeat(st.trial_id(study, beat.number))
    time.sleep(2.5)
    sid = st.study_id(study)
    assert plain._get_stale_trial_ids(sid) == [st.trial_id(study, beat.number)]  # the silent one is skipped
    ours = _storage(tmp_path)
    assert sorted(_compat.stale_trial_ids(ours, sid)) == sorted(st.trial_id(study, t.number) for t in (beat, silent))
    again = optuna.load_study(study_name="c", storage=ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(again)  # Optuna's own function calls the overridden hook
    assert {again.trials[t.number].state for t in (beat, silent)} == {TrialState.FAIL}


def test_heartbeat_table_and_start_times_are_what_the_override_reads(tmp_path):
    from optuna.storages._rdb import models

    storage = _storage(tmp_path)
    study = _study(storage)
    t = st.ask(study)
    tid = st.trial_id(study, t.number)
    storage.record_heartbeat(tid)
    with storage.scoped_session() as session:
        rows = session.query(models.TrialHeartbeatModel).filter(models.TrialHeartbeatModel.trial_id.in_([tid])).all()
    assert [r.trial_id for r in rows] == [tid]
    start = study.trials[t.number].datetime_start  # naive local time, compared with datetime.now()
    assert start.tzinfo is None and abs((dt.datetime.now() - start).total_seconds()) < 60


def test_tell_by_number_tells_who_won_a_race_to_fail_a_trial(tmp_path):
    """st.fail_trial relies on study.tell(number, state=FAIL) raising ValueError for a trial that
    already finished, and returning the stored FrozenTrial for the one that moved it."""
    study = _study(_storage(tmp_path))
    t = st.ask(study)
    frozen = study.tell(t.number, state=TrialState.FAIL)
    assert isinstance(frozen, optuna.trial.FrozenTrial) and frozen.state == TrialState.FAIL
    with pytest.raises(ValueError, match="Cannot tell a FAIL trial"):
        study.tell(t.number, state=TrialState.FAIL)
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        _compat.rdb_storage(study).set_trial_user_attr(st.trial_id(study, t.number), "fail_reason", "late")
    u = st.ask(study)
    assert st.fail_trial(study, u.number, "gone") and not st.fail_trial(study, u.number, "gone again")
    assert study.trials[u.number].user_attrs["fail_reason"] == "gone"


def test_enqueue_skip_if_exists_skips_parameters_of_a_trial_in_any_state(tmp_path):
    """create_or_load(add_missing=True) relies on it: a confirmation's pair already enqueued,
    run, or failed is not enqueued again."""
    study = _study(_storage(tmp_path))
    study.enqueue_trial({"candidate": 1, "seed": 1})
    study.enqueue_trial({"candidate": 1, "seed": 1}, skip_if_exists=True)  # WAITING: fixed_params match
    assert len(study.trials) == 1
    t = st.ask(study)
    t.suggest_categorical("candidate", [1])
    t.suggest_categorical("seed", [1])
    study.tell(t, state=TrialState.FAIL)
    study.enqueue_trial({"candidate": 1, "seed": 1}, skip_if_exists=True)  # FAIL: still skipped
    study.enqueue_trial({"candidate": 1, "seed": 2}, skip_if_exists=True)
    assert len(study.trials) == 2 and study.trials[1].system_attrs["fixed_params"] == {"candidate": 1, "seed": 2}


def test_ray_executor_uses_only_tunes_public_searcher_interface():
    """No Ray internals: HovitSearcher overrides only Searcher's public methods (plus pickling)."""
    from ray.tune.search import Searcher

    from hovit_nas.executors.ray import _searcher_class

    cls = _searcher_class()
    assert issubclass(cls, Searcher) and Searcher.FINISHED == "FINISHED"
    overridden = {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_") and hasattr(Searcher, n)}
    assert overridden == {"suggest", "on_trial_complete", "save", "restore"}
    for name in overridden:
        assert list(inspect.signature(getattr(cls, name)).parameters)[:2] == \
            list(inspect.signature(getattr(Searcher, name)).parameters)[:2]

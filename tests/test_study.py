import multiprocessing as mp
import time

import optuna
import pytest

from hovit_nas import study as st
from hovit_nas.errors import HovitError, StorageError
from hovit_nas.space import load_space


def _attrs(**kw):
    return {"space": "hovit", "data": "d", "metric": "top1", "latency_batch": 1, "img_size": 224, **kw}


def _open(url, name="s"):
    sp = load_space("hovit")
    return st.create_or_load(name, url, st.make_sampler("nsga2", 0), _attrs(), _fixed(sp))


def _fixed(sp):
    return [(sp.fixed_point_params(), {st.FIXED_POINT_ATTR: sp.fixed_point})]


def _worker(url, barrier, q):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    barrier.wait()
    study, created = _open(url)
    t = st.ask(study)  # every worker immediately takes a trial
    load_space("hovit").suggest(t)
    q.put((created, t.number, st.FIXED_POINT_ATTR in t.user_attrs))


def test_fixed_point_enqueued_exactly_once_across_concurrent_starts_and_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, barrier, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = [q.get(timeout=5) for _ in procs]
    assert sum(created for created, _, _ in results) == 1
    assert sum(fp for _, _, fp in results) == 1
    study, created = _open(url)  # resume
    assert not created
    trials = study.get_trials()
    assert len(st.fixed_point_trials(study)) == 1 and len(trials) == 4
    fp = st.fixed_point_trials(study)[0]
    assert fp.params["blocks_0"] == "4:2" and fp.user_attrs[st.FIXED_POINT_ATTR] == "hovit_b"


def test_resume_with_other_data_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _open(url)
    with pytest.raises(HovitError, match="was created with data=d, not other; use `study` NEW_NAME"):
        st.create_or_load("s", url, st.make_sampler("nsga2", 0), _attrs(data="other"), _fixed(load_space("hovit")))


def test_raw_timed_study_is_not_resumed_with_anchored_latency(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    _open(url)  # created with no latency_anchored attr: a study from before anchoring (raw timing)
    with pytest.raises(HovitError, match="latency_anchored=false, not true.*set `latency_anchor` to match"):
        st.create_or_load("s", url, st.make_sampler("nsga2", 0), _attrs(latency_anchored=True), _fixed(load_space("hovit")))


def test_anchor_calibrated_once_per_study_and_protocol_kept_on_resume(tmp_path, log_lines):
    from dataclasses import replace
    from pathlib import Path

    from hovit_nas.config import SearchConfig
    from hovit_nas.executors.common import ensure_anchor, ready
    from hovit_nas.latency import Calibration
    from hovit_nas.search import prepare
    from spaces import tiny_space

    spec = SearchConfig(space=str(tiny_space(tmp_path)), storage=f"sqlite:///{tmp_path / 'a.db'}")
    calls, lines = [], log_lines

    def calibrate(_):
        calls.append(1)
        return Calibration("hovit_b", 1.5, {}, "cpu", 1)

    def never(_):
        raise AssertionError("a resumed study must reuse its anchor")

    first = prepare(spec)
    assert ready(first, "cpu", None, run=calibrate).anchor.ms == 1.5 and calls == [1]
    assert first.trial_template.anchor is None  # the prepared search is not changed: the executor's copy is
    assert any("latency anchor: hovit_b calibrated at 1.500 ms" in m for m in lines)
    again = prepare(spec)
    assert not again.created
    assert ensure_anchor(again, "cpu", None, run=never).ms == 1.5
    two = tmp_path / "two" / "tiny.yaml"  # the same space, its latency now timed with 2 threads
    two.parent.mkdir()
    two.write_text(Path(spec.space).read_text().replace("threads: 1", "threads: 2"))
    with pytest.raises(HovitError, match="calibrated on cpu with 1 threads, this run uses cpu with 2"):
        ensure_anchor(prepare(replace(spec, space=str(two))), "cpu", None, run=never)
    off = SearchConfig(space=spec.space, storage=f"sqlite:///{tmp_path / 'b.db'}", latency_anchor=False)
    raw = prepare(off)
    assert ensure_anchor(raw, "cpu", None, run=never) is None and "latency_anchor" not in raw.study.user_attrs


def test_stale_trials_fail_by_heartbeat_including_one_that_never_beat(tmp_path, monkeypatch, log_lines):
    """A trial whose owner stopped beating, and one whose driver died before its first beat, are
    failed; a beating one is not; a stale fixed point is queued again, exactly once."""
    monkeypatch.setenv("HOVIT_NAS_HEARTBEAT", "1,3")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study, _ = _open(url)
    fixed, silent, dead, alive = st.ask(study), st.ask(study), st.ask(study), st.ask(study)
    assert st.FIXED_POINT_ATTR in fixed.user_attrs  # the enqueued HoViT-B, killed before its first beat
    st.storage_of(study).record_heartbeat(st.trial_id(study, dead.number))  # beat once, then its driver died
    beats = st.Heartbeats(st.storage_of(study))
    beats.add(st.trial_id(study, alive.number))
    try:
        time.sleep(4.5)
        lines = log_lines
        failed = st.fail_stale_trials(study)
        assert sorted(failed) == sorted([fixed.number, silent.number, dead.number])
        assert st.fail_stale_trials(study) == []  # already failed: nobody fails them twice
    finally:
        beats.close()
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == optuna.trial.TrialState.RUNNING
    assert all(states[n] == optuna.trial.TrialState.FAIL for n in failed)
    assert "no heartbeat" in study.trials[dead.number].user_attrs["fail_reason"]
    assert sum("left RUNNING by a dead driver" in m for m in lines) == 3
    assert any("HoViT-B queued again" in m for m in lines)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1 and waiting[0].user_attrs[st.FIXED_POINT_ATTR] == "hovit_b"


def test_budget_slots_go_to_the_lowest_trial_numbers(tmp_path):
    study, _ = _open(f"sqlite:///{tmp_path / 'study.db'}")
    trials = [st.ask(study) for _ in range(4)]  # the fixed point, then three racing drivers' trials
    assert [st.within_budget(study, t, 2) for t in trials] == [True, True, False, False]
    study.tell(trials[1], state=optuna.trial.TrialState.FAIL)  # a failed trial frees its slot
    assert st.within_budget(study, trials[2], 2) and not st.within_budget(study, trials[3], 2)


def test_admission_checks_the_budget_first_then_duplicates(tmp_path, log_lines):
    """st.admit, the one check both executors make: over budget is FAIL even for a duplicate
    (nothing ran, and a later slot may free up); within budget, a repeat is a PRUNED duplicate."""
    study, _ = _open(f"sqlite:///{tmp_path / 'study.db'}")
    sp = load_space("hovit")
    fixed = st.ask(study)  # the enqueued fixed point
    sp.suggest(fixed)
    assert st.admit(study, fixed, 0).admitted  # a fixed point always runs
    study.enqueue_trial(fixed.params)
    twin = st.ask(study)  # another driver proposes the same config
    sp.suggest(twin)
    assert twin.params == fixed.params
    over = st.admit(study, twin, 1)  # trial #1, budget 1: the fixed point holds the slot
    assert (over.state, over.duplicate_of) == (optuna.trial.TrialState.FAIL, None) and not over.admitted
    assert study.trials[twin.number].user_attrs["fail_reason"] == over.reason
    assert "duplicate_of" not in study.trials[twin.number].user_attrs  # budget first: no duplicate check ran
    log_lines.clear()
    lines = log_lines
    dup = st.admit(study, twin, 5)
    assert (dup.state, dup.duplicate_of) == (optuna.trial.TrialState.PRUNED, fixed.number)
    assert study.trials[twin.number].user_attrs[st.DUPLICATE_ATTR] == fixed.number
    assert lines == [f"trial #{twin.number}: same config as trial #{fixed.number}; recorded as its duplicate, "
                     "not trained"]
    study.enqueue_trial({**fixed.params, "head_width": 384})
    other = st.ask(study)  # a new config within the budget
    sp.suggest(other)
    assert other.params != fixed.params and st.admit(study, other, 5).admitted


@pytest.mark.parametrize("url, match", [
    ("not a url", "invalid storage URL 'not a url'"),
    ("nosuchdb://x/y", "cannot open storage 'nosuchdb://x/y'"),
    ("sqlite://", "in-memory SQLite study would be lost"),
    ("postgresql+psycopg2://u:secret@127.0.0.1:1/db", r"cannot open storage 'postgresql\+psycopg2://u:\*\*\*@"),
    ("postgresql://u:secret@host:notaport/db", r"invalid storage URL 'postgresql://u:\*\*\*@host:notaport/db'"),
])
def test_invalid_storage_urls(url, match):
    with pytest.raises(StorageError, match=match) as exc:
        st.open_storage(url)
    assert "secret" not in str(exc.value)


def test_samplers():
    assert isinstance(st.make_sampler("tpe", 1), optuna.samplers.TPESampler)
    assert isinstance(st.make_sampler("random", 1), optuna.samplers.RandomSampler)
    with pytest.raises(HovitError, match="unknown sampler"):
        st.make_sampler("cma")


def test_a_start_waits_for_a_concurrent_creator_then_refuses_a_half_created_study(tmp_path, monkeypatch):
    """The creator writes `space` last; a start that loads the study before that waits for it
    (the CI race of stop 24), and a study left with no space and no trial is named as such."""
    import threading

    url = f"sqlite:///{tmp_path / 'study.db'}"
    bare = optuna.create_study(storage=url, study_name="s", directions=st.DIRECTIONS)  # a creator mid-way
    sp = load_space("hovit")

    def finish():
        time.sleep(1.0)
        for k, v in _attrs().items():
            bare.set_user_attr(k, v)

    threading.Thread(target=finish).start()
    t0 = time.monotonic()
    study, created = _open(url)
    assert not created and study.user_attrs["space"] == "hovit" and time.monotonic() - t0 >= 0.9

    optuna.create_study(storage=url, study_name="half", directions=st.DIRECTIONS)
    monkeypatch.setattr(st.creation, "CREATION_WAIT_S", 0.5)  # the module that reads it (study/creation.py)
    with pytest.raises(HovitError, match="records neither a search space nor a trial: a start that was creating it "
                                         "was interrupted, or another tool made it; delete it"):
        st.create_or_load("half", url, st.make_sampler("nsga2", 0), _attrs(), _fixed(sp))

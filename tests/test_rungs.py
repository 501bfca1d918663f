"""Pareto-aware successive halving (rungs.py): the rule on hand-made trials, the rung table in
real SQLite storage, two drivers sharing it, and a driver killed mid-rung then resumed."""
import math
import os
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

import fakes
from conftest import cli_command, run_cli
from spaces import tiny_space

from hovit_nas import study as st
from hovit_nas.config import EarlyStop, SearchConfig
from hovit_nas.errors import ConfigError, HovitError
from hovit_nas.lifecycle import Stop
from hovit_nas.pareto import summarise
from hovit_nas.dominance import fronts as non_dominated_fronts
from hovit_nas.rungs import (ACCURACY, PARETO, RULES, AccuracyRule, ParetoRule, RungRecord, RungRule,
                             crowding_distance, decide, decision_key, rule_for, rung_callback, rung_key, rung_records)
from hovit_nas.search import prepare
from hovit_nas.space import space_from_dict

R = RungRecord


def _numbers(records):
    return [r.trial for r in records]


# ------------------------------------------------------------------------------- the rule

def test_a_fast_less_accurate_trial_survives_where_accuracy_alone_stops_it():
    slow = [R(0, 0.90, 10.0), R(1, 0.89, 11.0), R(2, 0.88, 12.0), R(3, 0.87, 13.0), R(4, 0.86, 14.0)]
    fast = R(5, 0.80, 2.0)  # 10 points less accurate, 5x faster
    records = slow + [fast]
    pareto = decide(records, 5, 1, PARETO, eta=3)
    accuracy = decide(records, 5, 1, ACCURACY, eta=3)
    assert pareto.keep == accuracy.keep == 2  # ceil(6 / 3)
    assert pareto.promote and pareto.rank <= 1  # on the first front with trial 0, both ends: infinite crowding
    assert not accuracy.promote and accuracy.rank == 5
    assert set(_numbers(PARETO.rank(records))[:2]) == {0, 5}
    assert _numbers(ACCURACY.rank(records))[:2] == [0, 1]
    # a slow trial that is worse on both counts than one already there is stopped under either rule
    late = records + [R(6, 0.85, 15.0)]
    assert not decide(late, 6, 1, PARETO, 3).promote and not decide(late, 6, 1, ACCURACY, 3).promote


def test_first_trials_at_a_rung_continue_and_the_cutoff_is_ceil_n_over_eta():
    assert decide([R(7, 0.1, 5.0)], 7, 3, PARETO, 3).promote  # alone at the rung: nothing to compare with
    two = [R(0, 0.9, 1.0), R(1, 0.8, 2.0)]  # 0 is better on both
    d = decide(two, 1, 1, PARETO, 3)
    assert (d.rank, d.n, d.keep, d.promote) == (1, 2, 1, False)
    four = [R(i, 0.5 + i / 10, 10.0 - i) for i in range(4)]  # a chain: each dominates the previous
    assert [decide(four, i, 1, PARETO, 2).promote for i in range(4)] == [False, False, True, True]


def test_fronts_crowding_and_ties():
    recs = [R(0, 0.9, 9.0), R(1, 0.8, 5.0), R(2, 0.7, 1.0), R(3, 0.85, 4.0), R(4, 0.6, 8.0), R(5, 0.9, 9.0)]
    fronts = non_dominated_fronts(recs, key=lambda r: r.objectives)
    assert [sorted(_numbers(f)) for f in fronts] == [[0, 2, 3, 5], [1], [4]]
    d = crowding_distance(fronts[0])
    by = dict(zip(_numbers(fronts[0]), d))
    assert by[2] == math.inf  # the low end of both ranges
    assert by[3] == pytest.approx((0.9 - 0.7) / 0.2 + (9.0 - 1.0) / 8.0)  # the neighbours' gap over the range
    # trials 0 and 5 are identical: ties sort by trial number, so the later one is the high end and
    # the earlier one interior, whichever driver ranks them
    assert by[5] == math.inf and by[0] == pytest.approx((0.9 - 0.85) / 0.2 + (9.0 - 4.0) / 8.0)
    assert _numbers(PARETO.rank(recs)) == [2, 5, 3, 0, 1, 4]
    assert _numbers(ACCURACY.rank(recs)) == [0, 5, 3, 1, 2, 4]
    assert crowding_distance([R(0, 0.5, 1.0), R(1, 0.6, 0.5)]) == [math.inf, math.inf]
    flat = crowding_distance([R(0, 0.5, 3.0), R(1, 0.5, 2.0), R(2, 0.5, 1.0)])  # one objective constant
    assert flat == [math.inf, 1.0, math.inf]


def test_rules_are_strategies_chosen_by_name_in_one_registry():
    from hovit_nas.config import EARLY_STOP_RULES

    assert set(RULES) == set(EARLY_STOP_RULES) - {"none"}  # every rule a space file may name has a ranking
    assert rule_for("pareto") is PARETO and rule_for("accuracy") is ACCURACY
    assert isinstance(ParetoRule(), RungRule) and isinstance(AccuracyRule(), RungRule)
    for name, rule in RULES.items():
        assert rule.name == name and rule.ranks_by and rule.method
        assert set(_numbers(rule.rank([R(2, 0.5, 1.0), R(1, 0.6, 2.0)]))) == {1, 2}
    with pytest.raises(ConfigError, match="no ranking for early-stopping rule 'none'"):
        rule_for("none")

    class Fastest:  # a new rule is one small object: decide() takes any RungRule
        name, ranks_by, method = "fastest", "latency", "latency alone"

        def rank(self, records):
            return sorted(records, key=lambda r: (r.latency_ms, r.trial))

    recs = [R(0, 0.9, 9.0), R(1, 0.1, 1.0), R(2, 0.5, 5.0)]
    assert isinstance(Fastest(), RungRule)
    assert decide(recs, 1, 1, Fastest(), eta=3).promote and not decide(recs, 0, 1, Fastest(), eta=3).promote


def test_rung_epochs_and_validation():
    assert EarlyStop("pareto").rungs(9) == [1, 3]
    assert EarlyStop("pareto").rungs(10) == [1, 3, 9]
    assert EarlyStop("pareto", min_epochs=2, eta=2).rungs(10) == [2, 4, 8]
    assert EarlyStop("pareto").rungs(1) == []
    with pytest.raises(ConfigError, match=r"space.yaml: early_stop.eta: must be >= 2, got 1"):
        from conftest import ROOT
        import yaml
        d = yaml.safe_load((ROOT / "search_spaces" / "hovit-cpu.yaml").read_text())
        space_from_dict({**d, "early_stop": {"rule": "pareto", "eta": 1}}, "space.yaml")


# ------------------------------------------------------------------- the table in storage

def test_rung_table_lives_in_the_study_storage(tmp_path):
    """Two storage handles on one SQLite file (as two processes have) rank against one table; a
    trial below the cutoff gets a Stop decision after its record and its decision are written."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=st.open_storage(url), study_name="s", directions=st.DIRECTIONS)
    other = st.open_storage(url)  # another driver's handle
    sid = st.study_id(study)
    es = EarlyStop("pareto", 1, 3)
    trials = [st.ask(study) for _ in range(4)]
    results = []
    for i, (t, (acc, lat)) in enumerate(zip(trials, [(0.9, 9.0), (0.8, 1.0), (0.7, 5.0), (0.85, 10.0)])):
        storage = st.storage_of(study) if i % 2 == 0 else other
        cb = rung_callback(storage, sid, st.trial_id(study, t.number), es, epochs=9)
        stop = cb({"global_epoch": 1, "val_top1": acc, "latency_ms": lat})
        assert cb({"global_epoch": 2, "val_top1": acc, "latency_ms": lat}) is None  # no rung at epoch 2
        if stop is not None:
            assert isinstance(stop, Stop) and stop.epoch == 1 and stop.accuracy == acc and "ranked" in stop.reason
        results.append(stop is None)
    # 0 is alone; 1 shares the front with 0 (both ends, infinite crowding): the tie goes to the earlier
    # trial, and the top ceil(2/3) = 1 continue; 2 and 3 are dominated by 1 and 0
    recs = rung_records(st.storage_of(study), sid, 1)
    assert [(r.trial, r.accuracy, r.latency_ms) for r in recs] == [(0, 0.9, 9.0), (1, 0.8, 1.0), (2, 0.7, 5.0),
                                                                     (3, 0.85, 10.0)]
    for t, promoted in zip(trials, results):
        got = study.trials[t.number].user_attrs
        dec = got[decision_key(1)]
        assert dec["promote"] == promoted and dec["peers"][dec["rank"]] == t.number
        assert got[rung_key(1)]["val_top1"] == recs[t.number].accuracy
        assert decide([r for r in recs if r.trial in dec["peers"]], t.number, 1, PARETO, 3).to_dict() == dec
    assert results == [True, False, False, False]
    first = st.trial_id(study, trials[0].number)
    assert rung_callback(st.storage_of(study), sid, first, EarlyStop("none"), 9) is None
    assert rung_callback(st.storage_of(study), sid, first, es, 1) is None  # no rung below epoch 1


# --------------------------------------------------------------- real drivers, real kills

def _search(work, space, *extra, env=None):
    """A driver on the fakes (tests/fakes.py, through the plugin hook: orchestration only, nothing
    trained), each epoch 0.3 s asleep so that concurrent drivers interleave; ``space`` made with
    ``fakes.fake_space``."""
    cmd = [*cli_command(), "search", "--space", str(space), "--threads", "1", "--evaluator", fakes.FAKE, *extra]
    env = {**(env or os.environ), **fakes.plugin_env(), fakes.EPOCH_S_ENV: "0.3"}
    return subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)


def _check_table(study, epochs=4):
    """Every decision is the rule applied to the stored records of its peers; stopped trials are
    PRUNED with their rung and accuracy and never on the front; completed ones passed every rung."""
    rungs = EarlyStop("pareto").rungs(epochs)
    trials = study.get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    records = {e: {r.trial: r for r in rung_records(st.storage_of(study), st.study_id(study), e)} for e in rungs}
    front = {t.number for t in study.best_trials}
    for t in trials:
        a = t.user_attrs
        for e in rungs:
            dec = a.get(decision_key(e))
            if dec is None:
                continue
            assert t.number in records[e] and set(dec["peers"]) <= set(records[e])
            assert decide([records[e][n] for n in dec["peers"]], t.number, e, PARETO, 3).to_dict() == dec
        if t.state == TrialState.PRUNED and "duplicate_of" not in a:
            e = a["stopped_at_rung"]
            assert a[rung_key(e)]["val_top1"] == a["rung_accuracy"] and not a[decision_key(e)]["promote"]
            assert t.values is None and t.number not in front and "successive halving" in a["reason"]
            assert len(a["history"]) == e
        if t.state == TrialState.COMPLETE:
            assert all(a[decision_key(e)]["promote"] for e in rungs)
            assert a[rung_key(rungs[-1])]["latency_ms"] == t.values[1]  # latency known before training
    return trials


def test_two_drivers_share_one_rung_table(tmp_path):
    space = fakes.fake_space(tiny_space(tmp_path, trials=4, epochs_dense=3, epochs_prune=1))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    procs = [_search(tmp_path, space, "--storage", url, "--early-stop", "pareto", "--seed", str(i))
             for i in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs[0][-2000:] + errs[1][-2000:]
    ran = [{int(line.split("trial #")[1].split(":")[0].split()[0]) for line in e.splitlines()
            if line.startswith("[") and "trial #" in line} for e in errs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]
    study = optuna.load_study(study_name="tiny-builtin", storage=url)
    assert study.user_attrs["early_stop"] == {"rule": "pareto", "min_epochs": 1, "eta": 3}
    trials = _check_table(study)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs
               for t in trials) == 4
    peers = [set(t.user_attrs[decision_key(1)]["peers"]) for t in trials if decision_key(1) in t.user_attrs]
    assert any(p & ran[0] and p & ran[1] for p in peers), "no decision saw both drivers' trials"
    # the fidelity figures read the same table
    rep = summarise(study)
    assert [f["epoch"] for f in rep["rung_fidelity"]] == [1, 3] and rep["early_stop"]["rule"] == "pareto"
    assert all(f["n"] == len(study.best_trials) or f["n"] >= 1 for f in rep["rung_fidelity"])
    r = run_cli("pareto", "--storage", url, "--study", "tiny-builtin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "rung fidelity, Kendall tau of val top1 at the rung vs final val top1" in r.stdout


def test_driver_killed_mid_rung_then_resumed(tmp_path, monkeypatch):
    """SIGKILL between a trial's rung record and its decision (trial #1 at epoch 1, the table's 3rd
    record); the resumed driver fails it by heartbeat, keeps its record, and finishes the budget."""
    space = fakes.fake_space(tiny_space(tmp_path, trials=4, epochs_dense=3, epochs_prune=1))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["--storage", url, "--early-stop", "pareto"]
    p = _search(tmp_path, space, *args, env=dict(os.environ, HOVIT_NAS_FAULT="rung:3"))
    err = p.communicate(timeout=600)[1]
    assert p.returncode == -9, err[-2000:]
    study = optuna.load_study(study_name="tiny-builtin", storage=url)
    t1 = study.trials[1]
    assert t1.state == TrialState.RUNNING and rung_key(1) in t1.user_attrs and decision_key(1) not in t1.user_attrs
    # a resume that changes the rule is refused (one line); the recorded rule is kept otherwise
    fakes.register(monkeypatch)  # the space's runtime, here as in the drivers
    cfg = SearchConfig(space=str(space), storage=url, threads=1, early_stop="accuracy", evaluator=fakes.FAKE)
    with pytest.raises(HovitError, match=r"^study 'tiny-builtin' was created with early_stop=\{\"rule\": \"pareto\""
                                         r".*use `study` NEW_NAME .*`early_stop`"):
        prepare(cfg)
    r = run_cli("search", "--space", str(space), "--threads", "1", "--storage", url, "--evaluator", fakes.FAKE,
                cwd=tmp_path, env=fakes.plugin_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert "early stopping: pareto successive halving" in r.stderr and "left RUNNING by a dead driver" in r.stderr
    study = optuna.load_study(study_name="tiny-builtin", storage=url)
    trials = _check_table(study)
    t1 = trials[1]
    assert t1.state == TrialState.FAIL and rung_key(1) in t1.user_attrs  # its record stays: it reached the rung
    later = [t for t in trials if t.number > 1 and decision_key(1) in t.user_attrs]
    assert later and all(1 in t.user_attrs[decision_key(1)]["peers"] for t in later)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs
               for t in trials) == 4


def test_asha_and_successive_halving_are_refused_together():
    from hovit_nas.config import RayConfig
    with pytest.raises(ConfigError, match=r"^`asha` \(Ray's scheduler, accuracy alone\) and `early_stop` both"):
        SearchConfig(executor="ray", ray=RayConfig(asha=True), early_stop="pareto").validate()
    with pytest.raises(ConfigError, match=r"`rung_eta` must be >= 2, got 1"):
        SearchConfig(rung_eta=1).validate()
    with pytest.raises(ConfigError, match=r"unknown early stopping rule 'loss'"):
        SearchConfig(early_stop="loss").validate()

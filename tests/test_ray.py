"""Ray Tune executor against a real local Ray cluster and real SQLite / PostgreSQL storages."""
import os
import re
import signal
import subprocess
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import fakes
from conftest import LATENCY_TOKEN, cli_command, dashboard_study, run_cli, start_service
from spaces import tiny_space

pytestmark = pytest.mark.slow


def _study(url, name="tiny-builtin"):
    return optuna.load_study(study_name=name, storage=url)


def _ray_search(work, space, *extra, storage=None, timeout=900, env=None):
    args = ["search", "--space", str(space), "--executor", "ray", "--max-concurrent", "2", "--cpus-per-trial", "1"]
    if storage:
        args += ["--storage", storage]
    return run_cli(*args, *extra, cwd=work, timeout=timeout, env=env)


def _fake_ray_search(work, space, *extra):
    """A Ray search of orchestration only: the fake runtime and evaluator (tests/fakes.py) reach
    the driver and the local Ray instance's workers through the plugin hook; nothing trained."""
    return _ray_search(work, fakes.fake_space(space), "--evaluator", fakes.FAKE, *extra, env=fakes.plugin_env())


def _check_study(study, n):
    """A finished Ray search's study: ``n`` COMPLETE trials, one of them the HoViT-B fixed point,
    none left RUNNING, each timed against the study's one anchor; returns the COMPLETE trials."""
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n
    fps = [t for t in complete if "fixed_point" in t.user_attrs]
    assert len(fps) == 1 and fps[0].params["blocks_0"] == "4:2"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    anchor = study.user_attrs["latency_anchor"]  # calibrated once, in a Ray task, for every trial
    for t in complete:
        assert t.values[0] == t.user_attrs["val"]["top1"] and t.values[1] == t.user_attrs["latency"]["median_ms"]
        assert t.user_attrs["latency"]["anchor_ms"] == anchor["ms"]
        assert {"config", "params", "latency", "history", "ray_node"} <= set(t.user_attrs)
    return complete


def test_ray_runs_four_trials_two_at_a_time_into_sqlite_and_failing_trials_do_not_stop_it(tmp_path):
    """One Ray search (one cluster start) for two rules: 4 trials run 2 at a time into SQLite, and
    trials that fail (lr 1e30 -> a NaN loss) are recorded FAIL with their reason while the search
    goes on to its 4 complete trials."""
    space = tiny_space(tmp_path, trials=4)  # with seed 3, the random sampler draws lr 1e30 for some trials
    d = yaml.safe_load(space.read_text())
    d["params"]["lr"] = {"type": "categorical", "choices": [0.002, 1.0e30]}  # 1e30 -> NaN loss
    space.write_text(yaml.safe_dump(d))
    r = _ray_search(tmp_path, space, "--sampler", "random", "--seed", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "4 trials, 2 at a time" in r.stderr and "[4/4]" in r.stderr
    db = tmp_path / "studies" / "tiny-builtin" / "study.db"
    study = _study(f"sqlite:///{db}")
    complete = _check_study(study, 4)
    spans = sorted((t.datetime_start, t.datetime_complete) for t in complete)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))  # some trials overlapped: 2 ran at once
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.params["lr"] == 1.0e30 for t in failed)
    assert all("NaN" in t.user_attrs["fail_reason"] for t in failed)
    assert all(t.params["lr"] == 0.002 for t in complete)
    assert "FAILED: loss became nan" in r.stderr
    p = run_cli("pareto", cwd=tmp_path)  # the same tools read a Ray-made study
    assert p.returncode == 0 and "Pareto front" in p.stdout, p.stderr
    detail = dashboard_study(f"sqlite:///{db}", "tiny-builtin")
    assert len(detail["trials"]) == len(study.trials) and detail["best_trials"]


def test_asha_stopped_trials_are_pruned_never_on_the_front(tmp_path):
    """ASHA (Tune's scheduler) stops trials on their per-epoch reports; each is PRUNED, never on
    the front. Orchestration only: on the fakes (6 trials of 4 epochs, nothing trained)."""
    space = tiny_space(tmp_path, trials=6, epochs_dense=3, epochs_prune=1, max_steps_per_epoch=2)
    r = _fake_ray_search(tmp_path, space, "--asha")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ASHA early stopping" in r.stderr
    study = _study(f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states and TrialState.FAIL not in states
    front = {t.number for t in study.best_trials}
    for t in study.trials:
        if t.state == TrialState.PRUNED:
            assert t.values is None and t.number not in front
            assert "stopped early by the scheduler" in t.user_attrs["reason"]
        else:
            assert t.values[0] == t.user_attrs["val"]["top1"]  # full-fidelity accuracy only
    assert front <= {t.number for t in study.trials if t.state == TrialState.COMPLETE}


def test_pareto_early_stop_on_ray_uses_the_storage_rung_table(tmp_path):
    """--early-stop pareto on Ray: the trainable ranks at each rung against the study's table and
    a stopped trial is PRUNED with its rung; 3 trials, so the third is below the cutoff or not.
    Orchestration only: on the fakes."""
    from hovit_nas.rungs import decision_key, rung_key

    space = tiny_space(tmp_path, trials=3, epochs_dense=1, epochs_prune=1)  # 2 epochs: one rung, at epoch 1
    r = _fake_ray_search(tmp_path, space, "--early-stop", "pareto")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "early stopping: pareto successive halving, rungs at epochs [1] of 2" in r.stderr
    study = _study(f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    trials = study.get_trials()
    assert len(trials) == 3 and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]
    for t in trials:
        a = t.user_attrs
        assert rung_key(1) in a and a[decision_key(1)]["peers"][a[decision_key(1)]["rank"]] == t.number
        if t.state == TrialState.PRUNED:
            assert a["stopped_at_rung"] == 1 and a["rung_accuracy"] == a[rung_key(1)]["val_top1"]
            assert not a[decision_key(1)]["promote"] and t.values is None
        else:
            assert a[decision_key(1)]["promote"] and a[rung_key(1)]["latency_ms"] == t.values[1]
    assert study.user_attrs["early_stop"]["rule"] == "pareto"


# Ray into PostgreSQL: test_reliability.py::test_no_password_in_any_output_or_file runs a Ray search
# into a PostgreSQL study (as a password-protected role) and checks it as _check_study does.


def _watch(proc):
    """Collect the driver's stderr in a thread; the event fires at its first finished-trial line
    (``[done/total] trial #n``)."""
    import threading

    lines, first_done = [], threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if re.match(r"\[\d+/\d+\] trial #", line):
                first_done.set()

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return lines, first_done, t


def _kill_at_first_finished_trial(cmd, cwd, sig) -> str:
    """Start the driver ``cmd``, send it ``sig`` as its first trial finishes, wait for it to end
    (a SIGKILL: and its Ray children, as a dead terminal would); returns its stderr."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    lines, first_done, reader = _watch(proc)
    assert first_done.wait(600), "".join(lines)[-2000:]
    os.kill(proc.pid, sig)  # a trial is done, the others are running or waiting: the driver is mid-search
    proc.wait(120)
    reader.join(30)
    proc.stderr.close()  # read to its end by the reader; closed here, not left to the garbage collector
    err = "".join(lines)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    else:
        try:  # what a dead terminal does to the driver's Ray children (through the test's warm
            os.killpg(proc.pid, signal.SIGKILL)  # interpreter: its server kills the driver's group)
        except ProcessLookupError:
            pass
        time.sleep(2)
    return err


def test_kill_driver_and_rerun_resumes(tmp_path):
    """Ctrl-C, then SIGKILL, of one search's driver, each mid-search; each rerun of the same
    command resumes, and the last completes the study: nothing completed is lost or re-run, and
    the trials running at each kill are failed with the reason (interrupted; stale heartbeat)."""
    # trials long enough (~10 s each) that the driver is surely mid-search when it is killed: 4 of
    # them, 2 at a time; each kill comes as a trial finishes, so at most 3 are complete after two
    trials = 4
    space = tiny_space(tmp_path, trials=trials, epochs_dense=3, max_steps_per_epoch=8)
    cmd = [*cli_command(), "search", "--space", str(space), "--executor", "ray", "--max-concurrent", "2",
           "--cpus-per-trial", "1"]
    db = tmp_path / "studies" / "tiny-builtin" / "study.db"
    # SIGINT cannot reach a driver started from a background job (SIGINT ignored): then SIGKILL alone
    sigint = signal.getsignal(signal.SIGINT) != signal.SIG_IGN
    before: dict = {}
    for sig in ([signal.SIGINT] if sigint else []) + [signal.SIGKILL]:
        _kill_at_first_finished_trial(cmd, tmp_path, sig)
        now = {t.number: t.values for t in _study(f"sqlite:///{db}").get_trials(states=(TrialState.COMPLETE,))}
        assert len(now) > len(before) and len(now) < trials and all(now[n] == v for n, v in before.items())
        before = now
    r = run_cli(*cmd[len(cli_command()):], cwd=tmp_path, timeout=900)  # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    study = _study(f"sqlite:///{db}")
    complete = _check_study(study, trials)
    after = {t.number: t.values for t in complete}
    assert all(after[n] == v for n, v in before.items())  # nothing completed was lost or re-run
    failed = study.get_trials(states=(TrialState.FAIL,))
    reasons = {t.user_attrs.get("fail_reason", "") for t in failed}
    assert "left RUNNING by a dead driver" in r.stderr
    assert any("stale: no heartbeat" in x for x in reasons), reasons  # the SIGKILL's running trials
    if sigint:
        assert any("interrupted" in x for x in reasons), reasons  # the Ctrl-C's, failed by the driver itself
    assert all(("stale: no heartbeat" in x) or ("interrupted" in x) for x in reasons), reasons


def test_two_node_cluster_each_node_builds_its_own_cache_once(tmp_path):
    """Every Ray node decodes the data once into its own cache; its trials share that copy. The
    latency comes from a latency service in another process (issue 23: from the Ray executor too),
    uploaded from both nodes: every trial's record is that machine's."""
    pytest.importorskip("fastapi", reason="the latency service needs pip install 'hovit-nas[serve]'")
    import ray
    from ray.cluster_utils import Cluster

    service, url = start_service("--threads", "1")

    caches = {"head": tmp_path / "cache-head", "node2": tmp_path / "cache-node2"}
    old = os.environ.get("HOVIT_NAS_CACHE_DIR")
    try:  # a raylet's workers inherit its environment: each node gets its own default cache dir
        os.environ["HOVIT_NAS_CACHE_DIR"] = str(caches["head"])
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        os.environ["HOVIT_NAS_CACHE_DIR"] = str(caches["node2"])
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        if old is None:
            os.environ.pop("HOVIT_NAS_CACHE_DIR", None)
        else:
            os.environ["HOVIT_NAS_CACHE_DIR"] = old
    try:
        space = tiny_space(tmp_path, trials=3)  # the first 2 run at once, one on each 1-CPU node
        env = {"HOVIT_NAS_CACHE_DIR": str(caches["head"]),  # the driver runs on the head node
               "HOVIT_NAS_LATENCY_TOKEN": LATENCY_TOKEN}
        r = run_cli("search", "--space", str(space), "--executor", "ray", "--ray-address", cluster.address,
                    "--max-concurrent", "2", "--cpus-per-trial", "1", "--latency-at", url, cwd=tmp_path, env=env,
                    timeout=900)
        assert r.returncode == 0, r.stderr[-3000:]
        study = _study(f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
        complete = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
        assert len(complete) == 3
        machine = study.user_attrs["deployment_target"]["machine"]
        assert machine and all(t.user_attrs["latency"]["machine"]["id"] == machine for t in complete)
        by_cache = {}
        for t in complete:
            by_cache.setdefault(t.user_attrs["data_cache"], set()).add(t.user_attrs["ray_node"])
        assert set(by_cache) == {str(c) for c in caches.values()}, by_cache  # trials ran on both nodes
        assert all(len(nodes) == 1 for nodes in by_cache.values())  # one cache per node
        for c in caches.values():  # built once per node (train/val/test: 3 entries), whatever ran there
            builds = (c / "builds.log").read_text().splitlines()
            assert len(builds) == 3, builds
    finally:
        ray.shutdown()
        cluster.shutdown()
        service.send_signal(signal.SIGINT)
        service.wait(timeout=30)

"""Kill it at any instant, on any host: heartbeat-failed trials, the fixed point exactly once, one
trial budget for several drivers, no retrained configs, no printed passwords. Real SQLite files,
the real PostgreSQL server from .ci/postgres.sh, real processes killed with SIGKILL."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import fakes
from conftest import cli_command, run_cli
from spaces import tiny_space

pytestmark = pytest.mark.slow
PG = os.environ.get("HOVIT_NAS_TEST_POSTGRES")
needs_pg = pytest.mark.skipif(not PG, reason="no PostgreSQL server (set HOVIT_NAS_TEST_POSTGRES; .ci/run starts one)")


def _search(work, space, *extra, env=None, other_host=False, timeout=600, fake=False):
    """``search`` in its own process; ``fake``: on the fake runtime and evaluator (tests/fakes.py,
    through the plugin hook, for tests of orchestration; ``space`` made with ``fakes.fake_space``)."""
    cmd = [*cli_command(), "search", "--space", str(space), "--threads", "1", *extra]
    if fake:
        cmd += ["--evaluator", fakes.FAKE]
        env = {**(env or {}), **fakes.plugin_env()}
    if other_host:  # the same command from a machine with another name (a new UTS namespace): a fresh
        if os.geteuid() != 0 or not shutil.which("unshare"):  # interpreter, started inside it
            pytest.skip("needs root and unshare to run a driver under another host name")
        cmd = ["unshare", "--uts", "sh", "-c", 'hostname other-host && exec "$@"', "sh", sys.executable, "-m",
               "hovit_nas", *cmd[len(cli_command()):]]
    e = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout, env=e)


def _state(url, name):
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    by = {s: [t for t in trials if t.state == s] for s in TrialState}
    trained = [t for t in by[TrialState.COMPLETE] + by[TrialState.PRUNED] if "duplicate_of" not in t.user_attrs]
    return study, by, trained


def _check(url, name, budget):
    """No RUNNING left, the fixed point completed exactly once, the budget met, no config twice."""
    study, by, trained = _state(url, name)
    assert not by[TrialState.RUNNING], [t.number for t in by[TrialState.RUNNING]]
    fps = [t for t in by[TrialState.COMPLETE] if "fixed_point" in t.user_attrs]
    assert len(fps) == 1 and fps[0].params["blocks_0"] == "4:2"
    assert len(trained) == budget
    keys = [tuple(sorted(t.params.items())) for t in trained]
    assert len(set(keys)) == len(keys), "a config was trained twice"
    return study, by


def _unique(prefix):
    return f"{prefix}{os.getpid()}{int(time.time() * 1000) % 10**8}"


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=needs_pg)])
def test_dead_driver_is_seen_from_another_host(tmp_path, backend):
    """SIGKILL as HoViT-B's training starts; a driver under another host name fails it and re-runs
    it. Orchestration only: on the fakes (nothing trained)."""
    name = _unique("host")
    space = fakes.fake_space(tiny_space(tmp_path, trials=3, name=name))
    url = f"sqlite:///{tmp_path / 'study.db'}" if backend == "sqlite" else PG
    args = ["--storage", url, "--study", name]
    r = _search(tmp_path, space, *args, env={"HOVIT_NAS_FAULT": "training:1"}, fake=True)
    assert r.returncode == -9, r.stderr[-2000:]
    _, by, _ = _state(url, name)
    assert len(by[TrialState.RUNNING]) == 1 and "fixed_point" in by[TrialState.RUNNING][0].user_attrs
    r = _search(tmp_path, space, *args, other_host=True, fake=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "left RUNNING by a dead driver" in r.stderr and "HoViT-B queued again" in r.stderr
    study, by = _check(url, name, 3)
    assert len(by[TrialState.FAIL]) == 1 and "no heartbeat" in by[TrialState.FAIL][0].user_attrs["fail_reason"]


def test_kill_right_after_the_fixed_point_is_created(tmp_path):
    """The driver dies between ask and its first heartbeat, the trial being HoViT-B."""
    space = tiny_space(tmp_path, trials=2)
    r = _search(tmp_path, space, env={"HOVIT_NAS_FAULT": "created"})
    assert r.returncode == -9, r.stderr[-2000:]
    url = f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}"
    _, by, _ = _state(url, "tiny-builtin")
    assert [t.number for t in by[TrialState.RUNNING]] == [0] and not by[TrialState.RUNNING][0].params
    r = _search(tmp_path, space)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trial #0 was left RUNNING by a dead driver" in r.stderr
    _check(url, "tiny-builtin", 2)


def test_two_drivers_share_one_budget_and_never_train_a_config_twice(tmp_path):
    # a small space (8 configs) and the random sampler make repeated proposals likely; orchestration
    # only: on the fakes (nothing trained)
    space = fakes.fake_space(tiny_space(tmp_path, trials=6))
    import yaml
    d = yaml.safe_load(space.read_text())
    d["params"] = {"blocks": {"type": "categorical", "choices": ["1:1", "4:2"]},
                   "downsample": d["params"]["downsample"], "head_width": {"type": "int", "low": 256, "high": 512,
                                                                           "step": 256}}
    space.write_text(yaml.safe_dump(d))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cmd = [*cli_command(), "search", "--space", str(space), "--threads", "1", "--storage", url,
           "--sampler", "random", "--evaluator", fakes.FAKE]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, **fakes.plugin_env())) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errs[0][-2000:] + errs[1][-2000:]
    study, by = _check(url, "tiny-builtin", 6)
    assert len(study.trials) < 40  # duplicates are recorded, not retrained, and do not run away
    for t in study.trials:
        if "duplicate_of" in t.user_attrs:
            assert t.state == TrialState.PRUNED and study.trials[t.user_attrs["duplicate_of"]].params == t.params


@pytest.mark.parametrize("n", ["0", "-3"])
def test_trials_below_one_are_refused(tmp_path, n):
    r = run_cli("search", "--space", str(tiny_space(tmp_path)), "--trials", n, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == f"error: --trials must be >= 1 (or omitted for the space's " \
                                                    f"default), got {n}"
    assert not (tmp_path / "studies").exists()  # nothing created


def _psql(sql):
    from sqlalchemy import make_url
    u = make_url(PG)
    subprocess.run(["psql", "-h", u.host, "-p", str(u.port), "-U", u.username or "postgres", "-d", u.database,
                    "-v", "ON_ERROR_STOP=1", "-c", sql], check=True, capture_output=True, text=True)


@needs_pg
def test_no_password_in_any_output_or_file(tmp_path):
    """A password-protected role: search (local and Ray), pareto and pin never print or write it."""
    from sqlalchemy import make_url
    secret = "pw-Zq81-s3cret"
    role = _unique("hovit_role")
    _psql(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}' SUPERUSER")
    url = make_url(PG).set(username=role, password=secret).render_as_string(hide_password=False)
    name = _unique("pw")
    space = tiny_space(tmp_path, trials=3, name=name)
    out = []
    r = _search(tmp_path, space, "--storage", url, "--trials", "2")
    out.append(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _search(tmp_path, space, "--storage", url, "--executor", "ray", "--max-concurrent", "1", timeout=900)
    out.append(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr[-2000:]
    study = optuna.load_study(study_name=f"{name}-builtin", storage=url)  # Ray into PostgreSQL: 2 local, 1 Ray
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 3 and len(study.trials) == 3 and "ray_node" in done[-1].user_attrs
    assert [t.user_attrs.get("fixed_point") for t in done].count("hovit_b") == 1
    for cmd in (["pareto", "--storage", url, "--study", f"{name}-builtin"],
                ["pin", "--storage", url, "--study", f"{name}-builtin"]):
        r = run_cli(*cmd, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
        out.append(r.stdout + r.stderr)
    assert all(secret not in o for o in out)
    assert "***" in out[0]  # the URL is shown, masked
    ray_dir = tmp_path / "studies" / f"{name}-builtin" / "ray"
    assert ray_dir.is_dir()  # Ray's experiment state lives next to the study's artefacts
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaked, leaked


@needs_pg
def test_plain_postgresql_url_works(tmp_path):
    from sqlalchemy import make_url
    url = make_url(PG).set(drivername="postgresql").render_as_string(hide_password=False)
    name = _unique("plain")
    r = _search(tmp_path, tiny_space(tmp_path, trials=1, name=name), "--storage", url)
    assert r.returncode == 0, r.stderr[-2000:]
    assert optuna.load_study(study_name=f"{name}-builtin", storage=url).trials[0].state == TrialState.COMPLETE


def test_printed_commands_are_shell_quoted_and_artefacts_sit_next_to_the_study(tmp_path):
    work, elsewhere = tmp_path / "cwd", tmp_path / "store"
    work.mkdir()
    url = f"sqlite:///{elsewhere / 'my studies' / 'db.sqlite'}"
    r = _search(work, tiny_space(tmp_path, trials=1), "--storage", url, "--study", "my study")
    assert r.returncode == 0, r.stderr[-2000:]
    hint = r.stderr.split("see `", 1)[1].split("`", 1)[0]
    assert hint.startswith("hovit-nas pareto --study 'my study' --storage 'sqlite:///")
    p = subprocess.run([*cli_command(), *__import__("shlex").split(hint)[1:]], cwd=work,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (elsewhere / "my studies" / "pareto.html").is_file()
    assert not any(Path(work).iterdir()), list(work.iterdir())  # nothing landed in the current directory

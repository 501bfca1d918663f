"""Issue 19, kind 6: a Ray worker killed mid-trial (as the out-of-memory killer does) leaves a
failed trial with the error's type and first line as its fail reason; the search goes on, and
the terminal shows that one line, not Ray's raw traceback. Orchestration only: the fake runtime and
evaluator (tests/fakes.py) reach the Ray workers through the plugin hook; the fault points are the
trial's own (trial.run_trial), reached alike."""
import optuna
import pytest
from optuna.trial import TrialState

import fakes
from conftest import run_cli
from spaces import tiny_space

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("point", ["training", "latency"])
def test_a_killed_ray_worker_fails_its_trial_with_a_reason(tmp_path, point):
    space = fakes.fake_space(tiny_space(tmp_path, trials=2))
    env = {"HOVIT_NAS_FAULT": f"{point}:1", "HOVIT_NAS_FAULT_ONCE": str(tmp_path / "killed-once"), **fakes.plugin_env()}
    env.pop("HOVIT_NAS_DEBUG", None)
    r = run_cli("search", "--space", str(space), "--executor", "ray", "--max-concurrent", "1", "--cpus-per-trial",
                "1", "--sampler", "random", "--evaluator", fakes.FAKE, cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "killed-once").exists(), "the fault fired"
    study = optuna.load_study(study_name="tiny-builtin",
                              storage=f"sqlite:///{tmp_path / 'studies' / 'tiny-builtin' / 'study.db'}")
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    reason = failed[0].user_attrs["fail_reason"]
    assert reason.startswith(("ActorDiedError", "RayActorError", "WorkerCrashedError")), reason
    assert "\n" not in reason
    assert len([t for t in study.trials if t.state == TrialState.COMPLETE]) == 2  # the search carried on
    assert f"FAILED: {reason}" in r.stderr
    assert "FAILED: unknown" not in r.stderr
    assert "Traceback" not in r.stderr, r.stderr[-3000:]

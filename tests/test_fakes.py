"""Orchestration on the fakes (tests/fakes.py, registered through runtimes.register and
evaluators.register): a real study in real SQLite, the real admission, fixed point, rungs and
trial lifecycle; nothing trained and nothing timed on a real runtime, so it runs in seconds."""
import pytest
import yaml
from optuna.trial import TrialState
from scipy.stats import spearmanr

import fakes
from spaces import tiny_space


def test_a_search_with_successive_halving_runs_on_the_fake_runtime_and_evaluator(tmp_path, monkeypatch):
    from hovit_nas import evaluators, runtimes
    from hovit_nas.config import SearchConfig, run_config_from_dict
    from hovit_nas.errors import ConfigError, HovitError
    from hovit_nas.rungs import decision_key
    from hovit_nas.search import run_search

    fakes.register(monkeypatch)
    with pytest.raises(HovitError, match="already registered"):
        runtimes.register("fake", runtimes.CAPS["fake"], fakes.FakeRuntime)
    with pytest.raises(ConfigError, match="already registered"):
        evaluators.register("train", evaluators.CAPS["train"], lambda supernet: fakes.FakeEvaluator())
    space = tiny_space(tmp_path, trials=8, epochs_dense=2)  # the built-in budget: 2 dense + 1 pruning epoch
    d = yaml.safe_load(space.read_text())
    d["latency"]["runtime"] = "fake"
    space.write_text(yaml.safe_dump(d, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    prep = run_search(SearchConfig(space=str(space), evaluator="fake", early_stop="pareto", rung_min_epochs=1,
                                   rung_eta=2, threads=1, sampler="random", seed=0))
    trials = prep.study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(stopped) == 8 and not [t for t in trials if t.state == TrialState.FAIL]
    assert prep.study.user_attrs["latency_runtime"] == "fake" and prep.study.user_attrs["evaluator"] == "fake"
    assert sum(bool(t.user_attrs.get("fixed_point")) for t in trials) == 1
    # rungs decided on the evaluator's per-epoch records, and a Stop became PRUNED with its reason
    assert stopped and all(t.user_attrs["status"] == "stopped" and "stopped at the rung" in t.user_attrs["reason"]
                           and t.user_attrs[decision_key(t.user_attrs["stopped_at_rung"])]["promote"] is False
                           for t in stopped)
    for t in complete:  # the scores are the fake's: top-1 near its accuracy (269 val images), per-image kept
        want = fakes.accuracy_of(run_config_from_dict(t.user_attrs["config"], "trial"))
        assert abs(t.values[0] - want) < 0.12 and t.user_attrs["scores"]["val"]["shape"][0] == 269
    # the fake runtime's latency follows the parameter count, through the real anchored protocol
    rho = spearmanr([t.user_attrs["params"] for t in trials], [t.values[1] if t.values else
                                                                 t.user_attrs["latency_ms"] for t in trials])[0]
    assert rho > 0.8, rho



def test_a_plugin_registers_in_the_cli_process_and_a_broken_one_is_one_line(tmp_path):
    """HOVIT_NAS_PLUGINS (hovit_nas/plugins.py) reaches a `hovit-nas` process: the fake evaluator is
    an --evaluator choice there, and a plugin that cannot be imported is one line, exit 2."""
    from conftest import run_cli

    r = run_cli("search", "--help", cwd=tmp_path, env=fakes.plugin_env())
    assert r.returncode == 0 and "[train|supernet|fake]" in r.stdout, r.stdout
    r = run_cli("search", "--help", cwd=tmp_path)  # without it: the built-in choices
    assert r.returncode == 0 and "[train|supernet]" in r.stdout
    r = run_cli("pareto", cwd=tmp_path, env={"HOVIT_NAS_PLUGINS": "no_such_plugin_module"})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("error: HOVIT_NAS_PLUGINS: cannot import plugin 'no_such_plugin_module': "
                                "ModuleNotFoundError: No module named 'no_such_plugin_module'")

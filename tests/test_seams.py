"""The seams a maintainer extends: each protocol and its implementations, and the one place each
rule lives (space, class count, progress bar, executor dispatch)."""
import inspect

import optuna
import pytest

from hovit_nas.config import with_num_classes
from hovit_nas.errors import ConfigError
from hovit_nas.models import hovit_b
from hovit_nas.space import Space, TrialSpace, load_space


def _signature_matches(cls, protocol, method):
    want = list(inspect.signature(getattr(protocol, method)).parameters)
    return list(inspect.signature(getattr(cls, method)).parameters) == want


def test_search_and_confirmation_spaces_both_implement_the_trial_space_protocol():
    from hovit_nas.confirm import ConfirmSpace

    sp = load_space("hovit-cpu")
    cfg = sp.fixed_point_config()
    confirm = ConfirmSpace({3: cfg, 5: cfg}, [1, 2])
    for space in (sp, confirm):
        assert isinstance(space, TrialSpace)
        assert _signature_matches(type(space), TrialSpace, "suggest")
    got = confirm.suggest(optuna.trial.FixedTrial({"candidate": 5, "seed": 2}))
    assert got.train.seed == 2 and got.name == "t5-seed2" and got is not cfg  # a copy per run
    assert not hasattr(confirm, "fixed_point_config")  # its latency anchor is inherited, never calibrated
    assert isinstance(sp, Space) and sp.suggest(optuna.trial.FixedTrial(sp.fixed_point_params())).model.pruned


def test_the_class_count_is_adapted_in_one_function():
    cfg = hovit_b(img_size=32, num_classes=9)
    assert with_num_classes(cfg, 9) is cfg  # already built for the data: unchanged
    three = with_num_classes(cfg, 3)
    assert three is not cfg and three.model.num_classes == 3 and cfg.model.num_classes == 9
    with pytest.raises(ConfigError, match="num_classes"):
        with_num_classes(cfg, 1)


def test_progress_bar_is_silent_off_a_terminal_and_drawn_on_one():
    from hovit_nas.progress import Bar

    off = Bar("x", 10, enabled=False)
    off.update(3, stats="loss 1")  # a no-op, never an error
    off.close()
    assert not off.active
    with Bar("caching", 4, stats=True, enabled=True) as on:
        assert on.active
        on.update(advance=2)
        on.update(4, stats="done")
    assert not on.active


def test_both_executors_implement_the_protocol_and_one_registry_dispatches():
    from hovit_nas.config import EXECUTORS as NAMES
    from hovit_nas.executors import EXECUTORS, Executor, executor_for
    from hovit_nas.executors.local import LocalExecutor
    from hovit_nas.executors.ray import RayExecutor

    assert set(EXECUTORS) == set(NAMES)  # every --executor value has an implementation
    for name, cls in (("local", LocalExecutor), ("ray", RayExecutor)):
        ex = executor_for(name)
        assert isinstance(ex, cls) and isinstance(ex, Executor) and ex.name == name
        assert _signature_matches(cls, Executor, "run")
    with pytest.raises(ConfigError, match="unknown executor 'dask'"):
        executor_for("dask")


def test_search_and_confirm_dispatch_through_the_one_function():
    """Neither search.py nor confirm/run.py names an executor: both hand Prepared to dispatch()."""
    import ast
    from pathlib import Path

    import hovit_nas

    pkg = Path(hovit_nas.__file__).parent
    for mod in ("search.py", "confirm/run.py"):
        tree = ast.parse((pkg / mod).read_text())
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert "dispatch" in names and not {"run_local", "run_ray"} & (names | imported), mod


def test_a_warning_raised_from_our_code_fails_the_test():
    """pyproject's filterwarnings: error::Warning:hovit_nas (a deprecation warned at our call site
    shows up as a failure, not as a wrong result later)."""
    code = compile("import warnings\nwarnings.warn('old API', DeprecationWarning)", "<hovit_nas>", "exec")
    with pytest.raises(DeprecationWarning, match="old API"):
        exec(code, {"__name__": "hovit_nas.somewhere"})


def test_asking_a_heartbeat_study_warns_nothing(tmp_path):
    """Optuna warns when a heartbeat storage is used outside Study.optimize; our executors drive
    ask/tell on purpose, so st.ask silences exactly that warning, locally (no process-wide filter)."""
    import warnings

    from hovit_nas import study as st

    study = optuna.create_study(storage=st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), directions=st.DIRECTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st.ask(study)
    with pytest.warns(UserWarning, match=st.ASK_WARNING):
        study.ask()
    assert not [f for f in warnings.filters if f[1] is not None and "Heartbeat" in f[1].pattern]


def _compared_strings(tree) -> list[tuple[int, str]]:
    """(line, string) for every string constant a comparison (==, !=, in, not in) tests against."""
    import ast

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                out += [(node.lineno, c.value) for c in items if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    return out


def test_runtimes_implement_one_protocol_and_no_code_outside_branches_on_their_names():
    """Issue 31: what a runtime can do is data in its registry; nothing outside runtimes/ compares
    a value with a runtime's name."""
    import ast
    from pathlib import Path

    import hovit_nas
    from hovit_nas import runtimes

    for name in runtimes.NAMES:
        rt = runtimes.get(name)
        assert isinstance(rt, runtimes.Runtime) and rt.name == name and rt.caps is runtimes.CAPS[name]
        for method in ("compile", "run", "module", "quantize", "supports"):
            assert _signature_matches(type(rt), runtimes.Runtime, method), (name, method)
    assert runtimes.resolve("auto", "cpu").name == "onnxruntime" and runtimes.exported() == ("onnxruntime", "openvino")
    pkg = Path(hovit_nas.__file__).parent
    found = [f"{p.relative_to(pkg)}:{line} == {v!r}" for p in sorted(pkg.rglob("*.py")) if "runtimes" not in p.parts
             for line, v in _compared_strings(ast.parse(p.read_text())) if v in runtimes.NAMES]
    assert not found, found


def _imports_no_torch(code: str, *args: str) -> None:
    """Run ``code`` in a fresh interpreter; then neither torch nor the executors may be imported."""
    import subprocess
    import sys

    from conftest import ROOT

    code += ("; bad = [m for m in sys.modules if m == 'torch' or m.startswith('hovit_nas.executors')]; "
             "assert not bad, bad; print('ok')")
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and p.stdout.strip().endswith("ok"), p.stdout[-2000:] + p.stderr[-2000:]


def test_pareto_on_a_committed_study_imports_no_torch():
    """Issue 31: the report reads the study's records (record.py) and decides with stats.py; it
    imports neither torch nor the executors (--no-baselines: timing baselines needs torch)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        _imports_no_torch("import sys; from click.testing import CliRunner; from hovit_nas.cli import main; "
                          "r = CliRunner().invoke(main, ['pareto', '--study', 'pcam-cpu', '--no-baselines', "
                          "'--out', sys.argv[1]]); "
                          "assert r.exit_code == 0, r.output; assert 'Pareto front' in r.output", f"{tmp}/p.html")


def test_reading_a_confirmation_imports_no_torch():
    """Issue 31: a confirmation's figures (confirm/figures.py, what pareto and pin read) are apart
    from running one (confirm/run.py): importing them imports neither torch nor the executors."""
    _imports_no_torch("import sys; import hovit_nas.confirm.figures")


def test_one_trial_lifecycle_maps_a_result_to_a_state_for_both_executors(tmp_path):
    """Issue 31: the status -> state mapping and the closing of a trial live in lifecycle.py; the
    executors neither compare a result's status nor name the COMPLETE state themselves."""
    import ast
    from pathlib import Path

    from optuna.trial import TrialState

    import hovit_nas
    from hovit_nas import study as st
    from hovit_nas.lifecycle import FAIL_REASON, REASON, STATES, Outcome, close

    assert Outcome.of("ok", [0.9, 1.5]) == Outcome(TrialState.COMPLETE, [0.9, 1.5])
    assert Outcome.of("infeasible", [0.0, 9.0]) == Outcome.of("stopped", None) == Outcome(TrialState.PRUNED)
    with pytest.raises(KeyError):
        Outcome.of("finished")
    study = optuna.create_study(storage=st.open_storage(f"sqlite:///{tmp_path / 's.db'}"), study_name="s",
                                directions=st.DIRECTIONS)
    got = [close(study, st.ask(study), o) for o in (Outcome.of("ok", [0.9, 1.5]), Outcome.failed("loss became nan"),
                                                    Outcome.stopped_by_scheduler(2), Outcome.failed(None))]
    assert [t.state for t in got] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.FAIL]
    assert got[0].values == [0.9, 1.5] and got[1].user_attrs == {FAIL_REASON: "loss became nan"}
    assert got[2].user_attrs == {REASON: "stopped early by the scheduler after epoch 2"} and got[3].user_attrs == {}

    pkg = Path(hovit_nas.__file__).parent / "executors"
    found = [f"{p.name}:{line} == {v!r}" for p in sorted(pkg.glob("*.py"))
             for line, v in _compared_strings(ast.parse(p.read_text())) if v in STATES]
    found += [f"{p.name}: names TrialState.COMPLETE" for p in sorted(pkg.glob("*.py"))
              if p.name != "common.py" and "TrialState.COMPLETE" in p.read_text()]  # common: the progress line reads it
    assert not found, found


def test_device_threads_and_runtime_options_are_declared_once():
    """Issue 31: ``--device``, ``--threads`` and ``--runtime`` are each declared in one place in the
    CLI, and every command that has one shows the same choices for the same vocabulary."""
    from pathlib import Path

    from click.testing import CliRunner

    import hovit_nas
    from hovit_nas.cli import main

    lines = (Path(hovit_nas.__file__).parent / "cli.py").read_text().splitlines()
    shared = {"device": "DEVICE", "threads": "threads_settings(", "runtime": "decls"}
    for option, settings in shared.items():
        found = [line.strip() for line in lines if f'"--{option}"' in line]
        own = [line for line in found if settings not in line]
        if option == "runtime":  # bench's --runtimes is a comma-separated list of them, not one
            own = [line for line in own if '"runtimes", dict(' not in line]
        assert found and not own, (option, own)
    helps = {c: " ".join(CliRunner().invoke(main, [c, "--help"]).output.split())
             for c in ("train", "search", "confirm", "deploy")}
    assert all("torch device: auto (the GPU when there is one, else the CPU)" in h for h in helps.values()), helps

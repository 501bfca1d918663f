"""In-process executor: ``study.optimize`` calling the pure trial function."""
from __future__ import annotations

from typing import Callable

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from .. import study as st
from ..errors import HovitError, TrialFailed
from ..latency import resolve_device
from ..search import Prepared, ProgressReporter, SearchSpec, ensure_anchor, trial_spec_for
from ..trial import run_trial


def make_objective(prep: Prepared, log: Callable[[str], None]):
    def objective(trial: optuna.Trial):
        trial.set_user_attr("owner", st.owner_id())
        cfg = prep.space.suggest(trial)
        spec = trial_spec_for(prep, cfg)
        try:
            result = run_trial(spec, log=lambda m: log(f"    #{trial.number} {m.split('] ', 1)[-1]}"))
        except TrialFailed as exc:
            trial.set_user_attr("fail_reason", str(exc))
            raise
        except HovitError:
            raise  # bad input: abort the search (the trial is recorded as FAIL by Optuna)
        except Exception as exc:  # noqa: BLE001 - a crashing config must not stop the study
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise TrialFailed(str(exc)) from exc
        st.record_result(trial.set_user_attr, result, spec.max_latency_ms, spec.max_params_m)
        if result["status"] != "ok":
            raise optuna.TrialPruned(result.get("reason", ""))
        return result["accuracy"], result["latency_ms"]

    return objective


def run_local(prep: Prepared, spec: SearchSpec, log: Callable[[str], None]) -> None:
    remaining = prep.trials - st.finished_count(prep.study)
    if remaining <= 0:
        log(f"study already has {prep.trials} finished trials; raise --trials to run more")
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ensure_anchor(prep, str(resolve_device(spec.device)), spec.threads, log)
    try:
        _optimize(prep, spec, log, remaining)
    except KeyboardInterrupt:
        failed = st.fail_interrupted_trials(prep.study)
        if failed:
            log(f"marked interrupted trials {failed} failed")
        raise


def _optimize(prep: Prepared, spec: SearchSpec, log: Callable[[str], None], remaining: int) -> None:
    prep.study.optimize(
        make_objective(prep, log), n_trials=remaining + 2 * max(1, remaining // 4), timeout=spec.timeout,
        catch=(TrialFailed,), gc_after_trial=True,
        callbacks=[MaxTrialsCallback(prep.trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                   ProgressReporter(prep.trials, log)])

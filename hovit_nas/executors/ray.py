"""Ray Tune executor: Ray runs the trials, Optuna decides them and keeps the study.

The search algorithm is our own ``HovitSearcher`` on Tune's public ``Searcher`` interface: it
asks and tells the *same* Optuna study (sampler and storage) as a local run, so ``hovit-nas
pareto``, ``pin`` and ``optuna-dashboard`` read the same records. It does what Ray's
``OptunaSearch`` does for a define-by-run space, plus what a shared multi-objective NAS study
needs:

- the trial budget, shared with every other driver, is checked before and after each ``ask``;
  a config already trained is recorded as a duplicate and never sent to a worker;
- the driver records a heartbeat for every trial it has open, so if it dies, the next driver
  fails those trials; a worker that dies is reported by Tune and its trial is FAIL;
- a trial without final metrics (stopped by ASHA or by a rung of ``--early-stop``, or
  infeasible under a constraint) is told as PRUNED, never COMPLETE, so a low-fidelity accuracy
  cannot reach the Pareto front;
- trials still open when the driver stops (Ctrl-C) are told FAIL ("interrupted") on the way out.

The trainable is the same pure ``run_trial`` the local executor calls; it writes its user attrs
straight into the storage. The storage URL reaches workers through the environment, never
through Tune's pickled experiment state (it may hold a password). Latency stays honest under
concurrency through the device guard (device.py: a measurement waits for, and blocks, other
trials' compute on that device) and the study's anchor (latency.py, calibrated once in a Ray task
with the trials' resources), which cancels what the guard cannot stop (worker start-up, the Tune
loop, other tenants).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import faults
from .. import study as st
from ..config import run_config_from_dict, to_dict
from ..device import DeviceGuard
from ..errors import ConfigError, HovitError, TrialFailed, one_line
from ..lifecycle import FAIL_REASON, Outcome, Stop, close
from ..rungs import rung_callback
from ..space import TrialSpace
from .common import Failures, Prepared, ProgressReporter, ready

if TYPE_CHECKING:
    from ..trial import TrialSpec

# Kept light at import time (no torch): Ray unpickles the trainable in fresh workers, and the
# heavy imports happen inside the device's shared slot, so they never overlap a latency
# measurement of another trial on this node.

FINAL = "final"
STORAGE_ENV = "HOVIT_NAS_STORAGE_URL"
_log = logging.getLogger(__name__)


def _searcher_class():
    from ray.tune.search import Searcher

    class HovitSearcher(Searcher):
        """Tune's searcher interface (``suggest`` / ``on_trial_complete``, the public API for a
        custom search algorithm) over the Optuna study itself: ask and tell on the same
        storage, with the study's sampler, budget, duplicate rule and heartbeats."""

        def __init__(self, study: optuna.Study, space: TrialSpace, budget: int, interrupt: "_Interrupt",
                     failures: Optional[Failures] = None):
            super().__init__()  # no metric/mode: the trial tells the study both objectives itself
            self._study, self._space = study, space
            self.failures = failures or Failures.of(budget - st.finished_count(study))
            self._budget, self._interrupt = budget, interrupt
            self._reporter = ProgressReporter(budget)
            self._open: dict[str, tuple[optuna.Trial, int]] = {}  # Tune's trial id -> (Optuna trial, storage id)
            self._finished: set[str] = set()
            self._heartbeats: Optional[st.Heartbeats] = None
            self._errored: set[str] = set()  # failed in Tune, waiting for the error's reason

        @property
        def _beats(self) -> st.Heartbeats:
            if self._heartbeats is None:
                self._heartbeats = st.Heartbeats(st.storage_of(self._study))
            return self._heartbeats

        def __getstate__(self):
            """Tune pickles the searcher into its experiment state (tuner.pkl): leave out the live
            study, its open trials and the heartbeats, whose storage URL may hold a password.
            Resuming never unpickles it: the Optuna study is the search state."""
            return dict(self.__dict__, _heartbeats=None, _study=None, _open={})

        def suggest(self, trial_id: str) -> Optional[dict]:
            study, budget = self._study, self._budget
            while True:
                st.fail_stale_trials(study)
                done, running, _ = st.counts(study)
                if done >= budget:
                    return Searcher.FINISHED
                if self.failures.stop():  # a cause that fails every trial: no more FAIL trials for it
                    return Searcher.FINISHED
                if done + running >= budget:
                    return None  # the rest of the budget is running: Tune asks again later
                trial = st.ask(study)
                faults.reached("created")
                tid = st.trial_id(study, trial.number)
                self._open[trial_id] = (trial, tid)
                self._beats.add(tid)
                try:
                    cfg = self._space.suggest(trial)
                except ConfigError as exc:  # a combination the space allows but no model has: not fatal
                    reason = f"config cannot be built: {one_line(exc)}"
                    self._close(trial_id, Outcome.failed(reason))
                    self.failures.add(reason)
                    continue
                verdict = st.admit(study, trial, budget)
                if verdict.admitted:  # the trainable reads these two; Tune shows the parameters
                    return {**trial.params, "optuna_trial_number": trial.number, "run_config": to_dict(cfg)}
                self._close(trial_id, Outcome(verdict.state))
                if verdict.duplicate_of is None:
                    return None  # the budget is taken: Tune asks again later

        def _close(self, trial_id: str, outcome: Outcome) -> FrozenTrial:
            trial, tid = self._open.pop(trial_id)
            self._beats.discard(tid)
            return close(self._study, trial, outcome)

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
            if trial_id in self._finished or trial_id not in self._open:
                return
            if self._interrupt.requested and not (result and result.get(FINAL)):
                return  # stopped by Ctrl-C, not by the scheduler: fail_open_trials records it as interrupted
            if error:  # Tune calls RecordTrialErrors.on_trial_error next, with the error: it closes the trial
                self._errored.add(trial_id)
                return
            if result and result.get(FINAL):  # the trial's own result: the one status -> state mapping
                outcome = Outcome.of(result["status"], [result["accuracy"], result["latency_ms"]])
            elif result:  # Tune's scheduler stopped it after an epoch, before its result: never on the front
                outcome = Outcome.stopped_by_scheduler(result.get("epoch", "?"))
            else:
                outcome = Outcome(TrialState.PRUNED)
            self._finish(trial_id, outcome)

        def record_error(self, trial_id: str, reason: str) -> None:
            """A trial's task or worker failed (Tune's ``on_trial_error``): keep the reason the
            trial wrote itself (a NaN loss, out of memory), else Ray's, then tell FAIL."""
            if trial_id in self._finished or trial_id not in self._open:
                return
            self._errored.discard(trial_id)
            trial, tid = self._open[trial_id]
            frozen = st.storage_of(self._study).get_trial(tid)
            own = FAIL_REASON in frozen.user_attrs or frozen.state != TrialState.RUNNING
            self._finish(trial_id, Outcome.failed(None if own else reason))

        def _finish(self, trial_id: str, outcome: Outcome) -> None:
            trial = self._open[trial_id][0]
            faults.reached("write")
            try:
                frozen = self._close(trial_id, outcome)
            except Exception as exc:  # e.g. already failed as stale by another driver: report what is stored
                _log.info(f"trial #{trial.number}: could not record its end ({type(exc).__name__}: {exc})")
                frozen = next(t for t in self._study.get_trials(deepcopy=False) if t.number == trial.number)
            self._finished.add(trial_id)
            if outcome.state == TrialState.FAIL:
                self.failures.add(frozen.user_attrs.get(FAIL_REASON, "unknown"))
            self._reporter(self._study, frozen)

        def save(self, checkpoint_path: str) -> None:
            """The study in the Optuna storage *is* the search state; Tune's pickled copy of live
            storage handles, samplers and closures would be neither portable nor needed."""
            import json
            with open(checkpoint_path, "w") as f:
                json.dump({"optuna_study": self._study.study_name if self._study else None}, f)

        def restore(self, checkpoint_path: str) -> None:
            pass  # resume = re-run the same command: the Optuna study holds every trial

        def fail_open_trials(self, reason: str) -> list[int]:
            """Tell FAIL, with ``reason``, every trial this searcher handed out that has not
            finished; returns their numbers. Stops the heartbeat thread."""
            failed = []
            for trial_id, (trial, tid) in list(self._open.items()):
                if trial_id not in self._finished:
                    self._beats.discard(tid)
                    why = "its Ray task failed (Ray gave no error)" if trial_id in self._errored else reason
                    if st.fail_trial(self._study, trial.number, why, tid):
                        failed.append(trial.number)
                    self._finished.add(trial_id)
            if self._heartbeats is not None:
                self._heartbeats.close()
            return failed

    return HovitSearcher


def error_reason(trial) -> str:
    """A failed Tune trial's error as one line, ``Type: first line`` (e.g. ``ActorDiedError: The
    actor died unexpectedly before finishing this task.`` for a worker the OOM killer ended)."""
    exc = None
    try:  # the driver's local copy: at on_trial_error, Tune has not yet synced it to its storage path
        from ray import cloudpickle

        with open(trial.pickled_error_file, "rb") as f:
            exc = cloudpickle.load(f)
    except Exception:  # an unreadable error file must not hide the failure
        try:
            exc = trial.get_pickled_error()
        except Exception:
            pass
    if exc is not None:
        cause = getattr(exc, "cause", None)  # RayTaskError wraps the trainable's own exception
        exc = cause if isinstance(cause, BaseException) else exc
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    try:
        text = trial.get_error() or ""
    except Exception:
        text = ""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return lines[-1] if lines else "its Ray task failed (Ray gave no error)"


def _error_callback(searcher):
    """Tune's ``on_trial_error`` hook: hands each failed trial's error to the searcher."""
    from ray import tune

    class RecordTrialErrors(tune.Callback):
        def on_trial_error(self, iteration, trials, trial, **info):
            searcher.record_error(trial.trial_id, error_reason(trial))

    return RecordTrialErrors()


class _Interrupt:
    """Ctrl-C during ``tuner.fit``: ask Tune to stop at its next step, instead of raising
    KeyboardInterrupt at an arbitrary point inside Ray, which can leave one of its locks held and
    hang the process at exit. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> "_Interrupt":
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def stopper(self):
        from ray import tune

        interrupt = self

        class StopOnInterrupt(tune.Stopper):
            def __call__(self, trial_id, result) -> bool:
                return False

            def stop_all(self) -> bool:
                return interrupt.requested

        return StopOnInterrupt()


def _storage_url(fallback: Optional[str]) -> str:
    url = os.environ.get(STORAGE_ENV) or fallback
    if not url:
        raise HovitError(f"this Ray worker has no storage URL: set {STORAGE_ENV} on the cluster's nodes "
                         "(the URL holds a password, so it is not shipped with the trials)")
    return url


def make_trainable(prep: Prepared, template: TrialSpec, device: str, threads: Optional[int]):
    """The function Ray runs: rebuild the config, run the pure trial (from the executor's
    ``template``, common.ready), write attrs, report."""
    from sqlalchemy.engine import make_url

    fallback = None if make_url(prep.storage).password else prep.storage  # never pickle a password
    study_name, early_stop = prep.study_name, prep.early_stop

    def hovit_trial(config: dict) -> None:
        from ray import tune

        guard = DeviceGuard.of(device)
        with guard.shared():
            from ..trial import run_trial
        storage = st.open_storage(_storage_url(fallback))
        study_id = storage.get_study_id_from_name(study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, config["optuna_trial_number"])

        def set_attr(key, value):
            storage.set_trial_user_attr(trial_id, key, value)

        spec = replace(template, config=run_config_from_dict(config["run_config"], "trial config"), device=device,
                       threads=threads)
        set_attr("ray_node", os.uname().nodename)
        st.check_writable(_storage_url(fallback))  # a result that cannot be saved must not cost a training
        rung = rung_callback(storage, study_id, trial_id, early_stop,
                             spec.config.train.epochs_dense + spec.config.train.epochs_prune)

        def on_epoch(rec: dict) -> Optional[Stop]:
            if rung is not None:
                stop = rung(rec)  # a Stop below the rung's cutoff: training ends, run_trial returns "stopped"
                if stop is not None:
                    return stop
            # every report carries every key (Tune checks presence); only the final one has values
            tune.report({"epoch": rec["global_epoch"], "val_top1_epoch": rec["val_top1"], "loss": rec["loss"],
                         FINAL: False, "status": "running", "accuracy": None, "latency_ms": None})
            return None

        try:
            result = run_trial(spec, on_epoch=on_epoch, guard=guard)
        except TrialFailed as exc:
            set_attr(FAIL_REASON, str(exc))
            raise
        except Exception as exc:  # any other crash: recorded, then Tune reports the trial as errored
            set_attr(FAIL_REASON, f"{type(exc).__name__}: {exc}")
            raise
        st.record(set_attr, result.user_attrs())
        epochs = spec.config.train.epochs_dense + spec.config.train.epochs_prune
        tune.report({FINAL: True, "status": result.status, "accuracy": result.accuracy,
                     "latency_ms": result.latency_ms, "epoch": epochs + 1,
                     "val_top1_epoch": (result.val or {}).get("top1"), "loss": None})

    return hovit_trial


def _init_ray(address: Optional[str], storage: str) -> bool:
    """Start (or join) Ray. Workers get the storage URL from their environment: a local Ray
    inherits the driver's; a cluster's job gets it in its runtime environment."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("HOVIT_NAS_LOCK_DIR", "PYTHONPATH", "HOVIT_NAS_HEARTBEAT") if k in os.environ}
    try:
        if address:
            env[STORAGE_ENV] = storage
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False)
        else:
            os.environ[STORAGE_ENV] = storage  # inherited by the local Ray's processes only
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                     runtime_env={"env_vars": env} if env else None, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise HovitError(f"cannot connect to Ray at {address or 'a new local instance'}: {exc}") from None
    res = ray.cluster_resources()
    _log.info(f"ray: {int(res.get('CPU', 0))} CPUs, {res.get('GPU', 0):g} GPUs"
              + (f" at {address}" if address else " (local instance)"))
    return True


class RayExecutor:
    """The ``ray`` executor (executors.Executor): trials on a Ray cluster, through Tune."""

    name = "ray"

    def run(self, prep: Prepared) -> Optional[Failures]:
        return run_ray(prep)


def run_ray(prep: Prepared) -> Optional[Failures]:
    """Run ``prep``'s remaining trials on Ray (``prep.config.ray``: address, resources, ASHA),
    starting a local instance when no address is given; returns this run's count of failed
    trials (None when nothing was left to run)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    cfg, r = prep.config, prep.config.ray
    cpus, gpus = float(r.cpus_per_trial or 1), float(r.gpus_per_trial or 0)
    remaining = prep.trials - st.finished_count(prep.study)
    if remaining <= 0:
        _log.info(f"study already has {prep.trials} finished trials; raise --trials to run more")
        return None
    started = _init_ray(r.address, prep.storage)
    try:
        if gpus > 0 and ray.cluster_resources().get("GPU", 0) < gpus:
            raise HovitError(f"`gpus_per_trial` {gpus:g} but the Ray cluster has "
                             f"{ray.cluster_resources().get('GPU', 0):g} GPUs")
        max_conc = r.max_concurrent or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        device = "cuda" if gpus > 0 else ("cpu" if cfg.device in ("auto", "cpu") else cfg.device)
        threads = cfg.threads or max(1, int(cpus))
        template = ready(prep, device, threads,
                         run=lambda calibrate: ray.get(ray.remote(num_cpus=cpus, num_gpus=gpus)(calibrate).remote()))
        interrupt = _Interrupt()
        failures = Failures.of(remaining, max_conc)
        searcher = _searcher_class()(prep.study, prep.space, budget=prep.trials, interrupt=interrupt,
                                     failures=failures)
        epochs = prep.space.base.train.epochs_dense + prep.space.base.train.epochs_prune
        scheduler = (ASHAScheduler(time_attr="epoch", metric="val_top1_epoch", mode="max", max_t=epochs + 1,
                                   grace_period=1, reduction_factor=2) if r.asha else FIFOScheduler())
        tuner = tune.Tuner(
            tune.with_resources(make_trainable(prep, template, device, threads), {"cpu": cpus, "gpu": gpus}),
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_conc),
                                        scheduler=scheduler, num_samples=-1, reuse_actors=True,
                                        time_budget_s=cfg.timeout),
            run_config=tune.RunConfig(name="trials", storage_path=str(prep.out_dir / "ray"), verbose=0,
                                      stop=interrupt.stopper(), callbacks=[_error_callback(searcher)],
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
        _log.info(f"ray: {remaining} trials, {max_conc} at a time, {cpus:g} CPU + {gpus:g} GPU each on {device}"
                  + (", ASHA early stopping (validation accuracy only)" if r.asha else ""))
        # Ctrl-C is ours (exit 130, open trials marked failed), not Tune's
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        # a failed trial is one line (its fail_reason, from the progress reporter), not Ray's raw traceback
        os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "1" if os.environ.get("HOVIT_NAS_DEBUG") else "0")
        if not os.environ.get("HOVIT_NAS_DEBUG"):  # "Trials did not complete: [...]": each has its own line above
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)
        try:
            with interrupt:
                tuner.fit()
            if interrupt.requested:
                raise KeyboardInterrupt
        finally:
            failed = searcher.fail_open_trials("interrupted: the driver stopped before the trial finished")
            if failed:
                _log.info(f"marked unfinished trials {failed} failed")
    finally:
        if started:
            ray.shutdown()
    return failures

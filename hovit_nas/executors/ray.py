"""Ray Tune executor: Ray runs the trials, Optuna decides them and keeps the study.

The search algorithm is Ray's ``OptunaSearch`` on the *same* storage and study name, so
``hovit-nas pareto``, ``pin`` and ``optuna-dashboard`` read the same records as after a local
run. Our subclass fixes what a multi-objective NAS study needs:

- a trial without final metrics (stopped by ASHA, or infeasible under a constraint) is told as
  PRUNED, never COMPLETE, so a low-fidelity accuracy cannot reach the Pareto front;
- a trial that raised is told as FAIL; its reason is already a user attr (written by the trial);
- trials still open when the driver stops (Ctrl-C) are told FAIL ("interrupted") on the way out.

The trainable is the same pure ``run_trial`` the local executor calls; it writes its user attrs
straight into the storage. Latency is kept honest under concurrency by the per-device lock
(locks.py): a measurement waits for, and blocks, other trials' compute on that device; and by
the study's anchor (latency.py), calibrated once in a Ray task with the trials' resources, which
cancels what the lock cannot stop (worker start-up, the Tune loop, other tenants).
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Optional

import optuna
from optuna.trial import TrialState

from .. import study as st
from ..config import run_config_from_dict, to_dict
from ..errors import HovitError, TrialFailed
from ..locks import compute_slot

if TYPE_CHECKING:
    from ..search import Prepared, SearchSpec

# Kept light at import time (no torch): Ray unpickles the trainable in fresh workers, and the
# heavy imports below happen inside the device's shared slot, so they never overlap a latency
# measurement of another trial on this node.

FINAL = "final"


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class HovitOptunaSearch(OptunaSearch):
        def __init__(self, *args, reporter: Optional[Callable] = None, interrupt: Optional["_Interrupt"] = None,
                     **kwargs):
            super().__init__(*args, **kwargs)
            self._reporter, self._interrupt = reporter, interrupt

        def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            if self._interrupt and self._interrupt.requested and not (result and result.get(FINAL)):
                return  # stopped by Ctrl-C, not by the scheduler: fail_open_trials records it as interrupted
            ot_trial = self._ot_trials[trial_id]
            if error:
                state, values = TrialState.FAIL, None
            elif result and result.get(FINAL) and result.get("status") == "ok":
                state, values = TrialState.COMPLETE, [result["accuracy"], result["latency_ms"]]
            else:  # stopped early, or infeasible: never on the front
                state, values = TrialState.PRUNED, None
                if result and not result.get(FINAL):
                    ot_trial.set_user_attr("reason", f"stopped early by the scheduler after epoch "
                                                     f"{result.get('epoch', '?')}")
            try:
                self._ot_study.tell(ot_trial, values, state=state)
            except Exception as exc:  # noqa: BLE001 - e.g. already finished elsewhere
                optuna.logging.get_logger(__name__).warning(f"tell failed for trial {ot_trial.number}: {exc}")
            self._completed_trials.add(trial_id)
            if self._reporter is not None:
                self._reporter(self._ot_study, self._ot_study.trials[ot_trial.number])

        def save(self, checkpoint_path: str) -> None:
            """The study in the Optuna storage *is* the search state; Tune's pickled copy of live
            storage handles, samplers and closures would be neither portable nor needed."""
            import json
            with open(checkpoint_path, "w") as f:
                json.dump({"optuna_study": self._study_name}, f)

        def restore(self, checkpoint_path: str) -> None:
            pass  # resume = re-run the same command: the Optuna study holds every trial

        def fail_open_trials(self, reason: str) -> list[int]:
            failed = []
            for trial_id, ot_trial in self._ot_trials.items():
                if trial_id not in self._completed_trials:
                    try:
                        ot_trial.set_user_attr("fail_reason", reason)
                        self._ot_study.tell(ot_trial, None, state=TrialState.FAIL)
                        failed.append(ot_trial.number)
                        st.requeue_fixed_point(self._ot_study, self._ot_study.trials[ot_trial.number])
                    except Exception:  # noqa: BLE001
                        pass
                    self._completed_trials.add(trial_id)
            return failed

    return HovitOptunaSearch


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


def _define_by_run(prep: "Prepared"):
    owner = st.owner_id()

    def define(trial) -> dict:
        trial.set_user_attr("owner", owner)
        cfg = prep.space.suggest(trial)
        return {"optuna_trial_number": trial.number, "run_config": to_dict(cfg)}

    return define


def make_trainable(prep: "Prepared", device: str, threads: Optional[int]):
    """The function Ray runs: rebuild the config, run the pure trial, write attrs, report."""
    template = prep.trial_template
    storage_url, study_name = prep.storage, prep.study_name

    def hovit_trial(config: dict) -> None:
        from ray import tune

        with compute_slot(device):
            from ..trial import run_trial
        storage = st.open_storage(storage_url)
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study_name), config["optuna_trial_number"])

        def set_attr(key, value):
            storage.set_trial_user_attr(trial_id, key, value)

        spec = replace(template, config=run_config_from_dict(config["run_config"], "trial config"), device=device,
                       threads=threads)
        set_attr("ray_node", os.uname().nodename)
        try:
            # every report carries every key (Tune checks presence); only the final one has values
            result = run_trial(spec, on_epoch=lambda rec: tune.report(
                {"epoch": rec["global_epoch"], "val_top1_epoch": rec["val_top1"], "loss": rec["loss"], FINAL: False,
                 "status": "running", "accuracy": None, "latency_ms": None}), log=None)
        except TrialFailed as exc:
            set_attr("fail_reason", str(exc))
            raise
        except Exception as exc:  # noqa: BLE001
            set_attr("fail_reason", f"{type(exc).__name__}: {exc}")
            raise
        st.record_result(set_attr, result, spec.max_latency_ms, spec.max_params_m)
        epochs = spec.config.train.epochs_dense + spec.config.train.epochs_prune
        tune.report({FINAL: True, "status": result["status"], "accuracy": result.get("accuracy"),
                     "latency_ms": result["latency_ms"], "epoch": epochs + 1,
                     "val_top1_epoch": result.get("val", {}).get("top1"), "loss": None})

    return hovit_trial


def _init_ray(address: Optional[str], log: Callable[[str], None]):
    import ray

    env = {k: os.environ[k] for k in ("HOVIT_NAS_LOCK_DIR", "PYTHONPATH") if k in os.environ}
    runtime_env = {"env_vars": env} if env else None
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env,
                     log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise HovitError(f"cannot connect to Ray at {address or 'a new local instance'}: {exc}") from None
    res = ray.cluster_resources()
    log(f"ray: {int(res.get('CPU', 0))} CPUs, {res.get('GPU', 0):g} GPUs"
        + (f" at {address}" if address else " (local instance)"))
    return True


def run_ray(prep: "Prepared", spec: "SearchSpec", log: Callable[[str], None]) -> None:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter

    from ..search import ProgressReporter, ensure_anchor

    r = spec.ray
    cpus, gpus = float(r.get("cpus_per_trial") or 1), float(r.get("gpus_per_trial") or 0)
    remaining = prep.trials - st.finished_count(prep.study)
    if remaining <= 0:
        log(f"study already has {prep.trials} finished trials; raise --trials to run more")
        return
    started = _init_ray(r.get("address"), log)
    try:
        if gpus > 0 and ray.cluster_resources().get("GPU", 0) < gpus:
            raise HovitError(f"--gpus-per-trial {gpus:g} but the Ray cluster has "
                             f"{ray.cluster_resources().get('GPU', 0):g} GPUs")
        max_conc = r.get("max_concurrent") or max(1, int(ray.cluster_resources().get("CPU", 1) // cpus))
        device = "cuda" if gpus > 0 else ("cpu" if spec.device in ("auto", "cpu") else spec.device)
        threads = spec.threads or max(1, int(cpus))
        ensure_anchor(prep, device, threads, log,
                      run=lambda calibrate: ray.get(ray.remote(num_cpus=cpus, num_gpus=gpus)(calibrate).remote()))
        reporter = ProgressReporter(prep.trials, log)
        interrupt = _Interrupt()
        searcher = _searcher_class()(
            space=_define_by_run(prep), metric=["accuracy", "latency_ms"], mode=["max", "min"],
            sampler=prep.study.sampler, study_name=prep.study_name, storage=st.open_storage(prep.storage),
            reporter=reporter, interrupt=interrupt)
        epochs = prep.space.base.train.epochs_dense + prep.space.base.train.epochs_prune
        scheduler = (ASHAScheduler(time_attr="epoch", metric="val_top1_epoch", mode="max", max_t=epochs + 1,
                                   grace_period=1, reduction_factor=2) if r.get("asha") else FIFOScheduler())
        storage_path = os.path.abspath(os.path.join("studies", prep.study_name, "ray"))
        tuner = tune.Tuner(
            tune.with_resources(make_trainable(prep, device, threads), {"cpu": cpus, "gpu": gpus}),
            tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=max_conc),
                                        scheduler=scheduler, num_samples=remaining, reuse_actors=True,
                                        time_budget_s=spec.timeout),
            run_config=tune.RunConfig(name="trials", storage_path=storage_path, verbose=0, stop=interrupt.stopper(),
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
        log(f"ray: {remaining} trials, {max_conc} at a time, {cpus:g} CPU + {gpus:g} GPU each on {device}"
            + (", ASHA early stopping" if r.get("asha") else ""))
        # Ctrl-C is ours (exit 130, open trials marked failed), not Tune's
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        try:
            with interrupt:
                tuner.fit()
            if interrupt.requested:
                raise KeyboardInterrupt
        finally:
            failed = searcher.fail_open_trials("interrupted: the driver stopped before the trial finished")
            if failed:
                log(f"marked unfinished trials {failed} failed")
    finally:
        if started:
            ray.shutdown()

"""Where trials run: in this process (local) or on a Ray cluster. Same trial function, same records.

An executor is one small object behind the :class:`Executor` protocol: given a prepared search
(``common.Prepared``: study, space, budget, trial template) it runs trials until the budget is
met, through the same admission (``study.admit``), heartbeat and rung rules. :func:`dispatch` is
the one place an executor is chosen by name, for a search (search.py) and a confirmation
(confirm/run.py) alike; the implementations load lazily, so choosing ``local`` never imports Ray.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .common import Failures, Prepared



@runtime_checkable
class Executor(Protocol):
    """Runs a prepared search's remaining trials and returns when the budget is met, the
    timeout passes or too many trials failed; Ctrl-C propagates as KeyboardInterrupt after
    open trials are marked FAIL. Raises HovitError for bad input (e.g. a Ray address)."""

    name: str  # as in SearchConfig.executor / --executor

    def run(self, prep: "Prepared") -> Optional["Failures"]:
        """Returns this run's count of failed trials (None when nothing was left to run)."""


def _local() -> Executor:
    from .local import LocalExecutor

    return LocalExecutor()


def _ray() -> Executor:
    from .ray import RayExecutor

    return RayExecutor()


EXECUTORS: dict[str, Callable[[], Executor]] = {"local": _local, "ray": _ray}  # config.EXECUTORS


def executor_for(name: str) -> Executor:
    """The executor registered as ``name``; ConfigError for any other."""
    from ..errors import ConfigError

    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]()


def dispatch(prep: "Prepared") -> None:
    """Run ``prep`` on the executor its config names (``prep.config.executor``).

    Raises:
        SearchFailed: the executor stopped because too many trials failed (``common.Failures``),
            short of the budget: one line with the last failure's reason (exit 1, not 0)."""
    from .. import study as st
    from ..errors import SearchFailed

    failures = executor_for(prep.config.executor).run(prep)
    done = st.finished_count(prep.study)
    if failures is not None and failures.exhausted and done < prep.trials:
        last = (failures.last.strip().splitlines() or ["unknown"])[0][:300]
        raise SearchFailed(f"study {prep.study_name!r} stopped after {failures.failed} failed trials, with {done} of "
                           f"{prep.trials} finished; the last failure: {last}; fix its cause, then re-run the same "
                           "command to resume")

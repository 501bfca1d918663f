"""How a trial gets its accuracy, behind one protocol: an :class:`Evaluator`, chosen once when a
search is prepared (search.prepare) and carried by the trial template.

- ``train`` (evaluators/standalone.py): the config trained stand-alone (dense phase, then learnable
  pruning through LoRA), exported, scored on val and test;
- ``supernet`` (evaluators/supernet.py): the subnet with inherited weights from a trained
  supernet, BatchNorm recalibrated, scored on val only; nothing trained.

What an evaluator can do is data (:data:`CAPS`), read without importing torch, so the settings
check (config.SearchConfig.validate) and the report ask the registry instead of comparing names.
The trial (trial.run_trial) is the same for both: latency on the target, ``evaluator.score()``,
then int8 where the target asks and the evaluator trains.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol, runtime_checkable

from .. import plugins
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import RunConfig
    from ..data import Splits
    from ..lifecycle import EpochCallback, Stop


@dataclass(frozen=True)
class Capabilities:
    """What an evaluator does, as data."""

    trains: bool  # the trial trains (epochs: early stopping, rungs, int8 after training apply)
    scores_test: bool  # the trial scores the test split too
    estimates: bool  # its accuracies are estimates, to be confirmed stand-alone before any pin
    needs: Optional[str] = None  # the SearchConfig field it needs (a path), else None


CAPS: dict[str, Capabilities] = {
    "train": Capabilities(trains=True, scores_test=True, estimates=False),
    "supernet": Capabilities(trains=False, scores_test=False, estimates=True, needs="supernet"),
}
NAMES = tuple(CAPS)


@dataclass
class Scored:
    """What an evaluator measured for one config."""

    val: dict  # metrics.classification_metrics (with auc, nll)
    test: Optional[dict]
    probs: dict  # "val" (and "test") -> (N, K) class probabilities, float16
    exported: object = None  # the deployable model (an exported HoViT), for int8
    history: list = field(default_factory=list)
    params_dense: Optional[int] = None
    selected_blocks: Optional[list] = None
    data: Optional[str] = None
    estimate: Optional[dict] = None  # {"by": ..., ...} when the accuracy is an estimate
    stop: Optional["Stop"] = None  # training ended early by the trial's on_epoch (lifecycle.Stop): nothing scored


@runtime_checkable
class Evaluator(Protocol):
    """Scores one config on the splits (see the module docstring)."""

    name: str
    caps: Capabilities

    def study_attrs(self, study: str, space, splits: "Splits", data, recorded: dict) -> dict:
        """The study attrs that say how its trials are scored; refuses (HovitError, one line) a
        study scored another way, or an evaluator that does not fit the space or the data."""

    def restrict(self, space):
        """The space as this evaluator searches it (the supernet: its shared choices only)."""

    def score(self, cfg: "RunConfig", splits: "Splits", device, guard,
              on_epoch: Optional["EpochCallback"]) -> Scored:
        """``cfg`` scored on ``splits``; raises TrialFailed as training does. ``on_epoch`` gets
        each training epoch's record; a ``lifecycle.Stop`` it returns ends training, and the
        result carries it in ``stop`` with nothing scored."""


_MADE_BY: dict[str, Callable[[Optional[str]], "Evaluator"]] = {}  # registered evaluators' factories


def register(name: str, caps: Capabilities, make: Callable[[Optional[str]], "Evaluator"]) -> None:
    """Add an evaluator (a scoring method of your own, or a test's fake): ``make(supernet)``
    builds it, ``caps`` says what it does. ``SearchConfig.evaluator`` accepts it from then on, and
    so does ``--evaluator`` when a plugin (plugins.py: ``HOVIT_NAS_PLUGINS``) registers it at import.

    Raises:
        ConfigError: ``name`` is taken."""
    if name in CAPS:
        raise ConfigError(f"an evaluator named {name!r} is already registered")
    CAPS[name], _MADE_BY[name] = caps, make


def known() -> tuple[str, ...]:
    """Every evaluator name a setting may use: the registry's, read now (after the plugins of
    ``HOVIT_NAS_PLUGINS``, plugins.py, have registered theirs)."""
    plugins.load()
    return tuple(CAPS)


def get(name: str, supernet: Optional[str] = None) -> Evaluator:
    """The evaluator ``name`` (``supernet``: over the supernet directory ``supernet``).

    Raises:
        ConfigError: an unknown name."""
    if name not in known():
        raise ConfigError(f"unknown evaluator {name!r}; one of {', '.join(CAPS)}")
    if name in _MADE_BY:
        return _MADE_BY[name](supernet)
    import importlib

    module = importlib.import_module(f"{__name__}.{'standalone' if name == NAMES[0] else name}")
    return module.make(supernet)

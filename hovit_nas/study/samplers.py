"""The samplers a search can use (NSGA-II, TPE, random), how each driver seeds its own, and the
constraint values a trial records for them.
"""
from __future__ import annotations

import os
import time
from typing import Optional

import optuna
from optuna.trial import FrozenTrial

from ..config import SAMPLERS
from ..errors import HovitError


def make_sampler(name: str = "nsga2", seed: Optional[int] = None, population: int = 8,
                 constraints: bool = False) -> optuna.samplers.BaseSampler:
    cfunc = constraints_func if constraints else None
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed, constraints_func=cfunc)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=population, multivariate=True,
                                          constraints_func=cfunc)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise HovitError(f"unknown sampler {name!r}; one of {', '.join(SAMPLERS)}")


def driver_seed(seed: Optional[int], created: bool) -> Optional[int]:
    """The driver that creates a study samples with ``seed`` (reproducible); any other driver
    (a resume, or a second one at once) mixes in its own start, so it does not replay the
    first driver's proposals."""
    if seed is None or created:
        return seed
    return (seed * 1_000_003 + time.time_ns() + os.getpid()) % 2**32


def constraints_func(trial: FrozenTrial) -> list[float]:
    """Optuna constraint values (<= 0 is feasible), recorded by the trial as a user attr."""
    return list(trial.user_attrs.get("constraints", [0.0]))


def population_for(trials: int) -> int:
    return max(4, min(50, trials // 3))

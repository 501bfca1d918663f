"""Pareto dominance and non-dominated sorting: the one definition every ranking uses.

The study's objectives are (accuracy, latency ms), maximised and minimised in that order (the
study's ``DIRECTIONS``). ``a`` dominates ``b`` when it is at least as good on every objective and
strictly better on one (Deb et al., "A fast and elitist multiobjective genetic algorithm:
NSGA-II", IEEE TEC 2002, the definition Optuna's ``study.best_trials`` uses too). Successive
halving (rungs.py) ranks rung records with :func:`fronts`; the report (pareto.py) asks which
trials dominate HoViT-B and which confirmed candidates are non-dominated.

A rung or a confirmation holds tens of points, so the plain quadratic sort is used: clearer than
NSGA-II's fast sort, and it costs nothing at this size.
"""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
MAXIMIZE, MINIMIZE = 1, -1
SENSES = (MAXIMIZE, MINIMIZE)  # (accuracy up, latency down), as the study's DIRECTIONS


def dominates(a: Sequence[float], b: Sequence[float], senses: Sequence[int] = SENSES) -> bool:
    """True when ``a`` is no worse than ``b`` on every objective and better on at least one.

    ``a``, ``b``: one value per objective, in the order of ``senses`` (``MAXIMIZE`` or
    ``MINIMIZE`` each); by default (accuracy, latency ms). Raises ValueError when the lengths
    differ."""
    if not len(a) == len(b) == len(senses):
        raise ValueError(f"dominance needs {len(senses)} objective values each, got {len(a)} and {len(b)}")
    better = False
    for x, y, s in zip(a, b, senses):
        if s * x < s * y:
            return False
        better = better or s * x > s * y
    return better


def fronts(items: Sequence[T], key: Callable[[T], Sequence[float]] = lambda x: x,
           senses: Sequence[int] = SENSES) -> list[list[T]]:
    """Non-dominated fronts 0, 1, ...: front 0 is every item that no other item dominates;
    front k is the same over what fronts 0..k-1 left. Every item lands in exactly one front,
    and each front keeps the input order. ``key`` maps an item to its objective values."""
    rest, out = list(items), []
    while rest:
        values = [key(r) for r in rest]
        first = [i for i, v in enumerate(values) if not any(dominates(o, v, senses) for o in values)]
        out.append([rest[i] for i in first])
        taken = set(first)
        rest = [r for i, r in enumerate(rest) if i not in taken]
    return out


def non_dominated(items: Sequence[T], key: Callable[[T], Sequence[float]] = lambda x: x,
                  senses: Sequence[int] = SENSES) -> list[T]:
    """Front 0 of :func:`fronts`: the items no other item dominates, in input order."""
    return fronts(items, key, senses)[0] if items else []

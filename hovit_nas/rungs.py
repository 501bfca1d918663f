"""Successive halving inside each trial, with the rung table in the study's storage.

At epochs ``r, r*eta, r*eta**2, ...`` of a trial's budget (config.EarlyStop) the trial writes
its rung record -- validation top-1 at that epoch, and its latency, which was measured before
training -- as one user attr, ``rung_<epoch>``, then ranks itself among every trial of the study
that has a record at that epoch. It continues only if it is in the top ``ceil(n / eta)``: the
asynchronous ASHA promotion decision, taken when the trial reaches the rung, so nobody waits.

The ranking is a rule object chosen by name (``RULES``): ``pareto`` (ParetoRule) sorts (rung
accuracy up, latency down) into non-dominated fronts (dominance.py), then by crowding distance
inside a front, as in Syne Tune's MOASHA. A fast trial that is a little less accurate sits on
the first front and continues, where accuracy alone (``accuracy``, AccuracyRule: the usual
ASHA rule, kept for comparison) would stop it.

Optuna's pruners refuse multi-objective studies (``Trial.report`` raises), so the records are
plain storage writes. Because the table is the storage, concurrent Ray workers, several drivers
and a resumed driver all rank against the same rungs. It only ever grows, one atomic write per
record: a driver killed between its record and its decision leaves a valid record (that trial
did reach the rung) and no decision; its trial is failed by the heartbeat like any other.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import optuna

from . import faults, logs
from .config import EarlyStop
from .dominance import fronts
from .errors import ConfigError
from .lifecycle import EpochCallback, Stop

_log = logging.getLogger(__name__)

RUNG_PREFIX = "rung_"


def rung_key(epoch: int) -> str:
    return f"{RUNG_PREFIX}{epoch}"


def decision_key(epoch: int) -> str:
    return f"{RUNG_PREFIX}{epoch}_decision"


@dataclass(frozen=True)
class RungRecord:
    """One trial at one rung."""

    trial: int  # the trial's number in the study
    accuracy: float  # validation top-1 after the rung's epoch, in [0, 1]
    latency_ms: float  # the trial's latency objective (ms), known before training

    @property
    def objectives(self) -> tuple[float, float]:
        """(accuracy, latency ms): the order of dominance.SENSES."""
        return self.accuracy, self.latency_ms


@dataclass(frozen=True)
class Decision:
    """Where a trial ranked at a rung, and whether it continues."""

    epoch: int
    rank: int  # 0 = best
    n: int  # trials at this rung, this one included
    keep: int  # the top ``keep`` continue: ceil(n / eta)
    peers: tuple[int, ...]  # trial numbers, best first

    @property
    def promote(self) -> bool:
        return self.rank < self.keep

    def to_dict(self) -> dict:
        return {"rank": self.rank, "n": self.n, "keep": self.keep, "promote": self.promote,
                "peers": list(self.peers)}


# --------------------------------------------------------------------------------- ranking

def crowding_distance(front: Sequence[RungRecord]) -> list[float]:
    """NSGA-II's crowding distance of each record in ``front`` (Deb et al. 2002, sec. III-B):
    the two ends of each objective are infinite; inside, the sum over objectives of the
    neighbours' gap over the range. Ties sort by trial number, so every driver agrees."""
    n = len(front)
    dist = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    for value in (lambda r: r.accuracy, lambda r: r.latency_ms):
        order = sorted(range(n), key=lambda i: (value(front[i]), front[i].trial))
        lo, hi = value(front[order[0]]), value(front[order[-1]])
        dist[order[0]] = dist[order[-1]] = math.inf
        if hi == lo:
            continue
        for j in range(1, n - 1):
            dist[order[j]] += (value(front[order[j + 1]]) - value(front[order[j - 1]])) / (hi - lo)
    return dist


@runtime_checkable
class RungRule(Protocol):
    """An early-stopping rule: how the trials at a rung are ordered, best first. Like a Syne
    Tune or Ray Tune scheduler, it is one small object chosen by name (``RULES``); the promotion
    itself (top ``ceil(n / eta)`` continue) is :func:`decide`'s, the same for every rule."""

    name: str  # as written in a space file's ``early_stop.rule`` and ``--early-stop``
    ranks_by: str  # what it ranks on, for log lines and stop reasons
    method: str  # how, in a few words, for the search's opening lines

    def rank(self, records: Sequence[RungRecord]) -> list[RungRecord]:
        """``records``, best first; ties go to the earlier trial, so every driver ranks alike."""
        ...


@dataclass(frozen=True)
class ParetoRule:
    """Non-dominated fronts of (rung accuracy up, latency down), as MOASHA ranks (Schmucker et
    al., "Multi-objective asynchronous successive halving", 2021; Syne Tune), then NSGA-II
    crowding distance inside a front, larger first."""

    name: str = "pareto"
    ranks_by: str = "(accuracy, latency)"
    method: str = "(val top1, latency): non-dominated sort + crowding"

    def rank(self, records: Sequence[RungRecord]) -> list[RungRecord]:
        out: list[RungRecord] = []
        for front in fronts(records, key=lambda r: r.objectives):
            dist = crowding_distance(front)
            out += [r for _, r in sorted(zip(dist, front), key=lambda p: (-p[0], p[1].trial))]
        return out


@dataclass(frozen=True)
class AccuracyRule:
    """ASHA's ranking (Li et al., "A system for massively parallel hyperparameter tuning",
    MLSys 2020): rung accuracy alone, kept for comparison with the Pareto rule."""

    name: str = "accuracy"
    ranks_by: str = "accuracy"
    method: str = "val top1 alone"

    def rank(self, records: Sequence[RungRecord]) -> list[RungRecord]:
        return sorted(records, key=lambda r: (-r.accuracy, r.trial))


PARETO, ACCURACY = ParetoRule(), AccuracyRule()
RULES: dict[str, RungRule] = {r.name: r for r in (PARETO, ACCURACY)}  # config.EARLY_STOP_RULES, less "none"


def rule_for(name: str) -> RungRule:
    """The rule registered as ``name``; ConfigError for any other (``none`` has no ranking)."""
    try:
        return RULES[name]
    except KeyError:
        raise ConfigError(f"no ranking for early-stopping rule {name!r}; one of {', '.join(RULES)}") from None


def decide(records: Sequence[RungRecord], trial: int, epoch: int, rule: RungRule, eta: int) -> Decision:
    """The promotion decision for ``trial`` (whose record is among ``records``): it continues
    when ``rule`` ranks it in the top ``ceil(n / eta)`` of the ``n`` records at the rung (ASHA's
    promotion, taken asynchronously when the trial arrives). ValueError if ``trial`` has no record."""
    order = rule.rank(records)
    numbers = [r.trial for r in order]
    return Decision(epoch, numbers.index(trial), len(order), math.ceil(len(order) / eta), tuple(numbers))


# ------------------------------------------------------------------------ the stored table

def rung_records(storage: optuna.storages.BaseStorage, study_id: int, epoch: int) -> list[RungRecord]:
    """Every trial of the study with a record at ``epoch``, whatever its state since: a trial
    that reached the rung and then finished, was stopped later or died still reached it."""
    out = []
    for t in storage.get_all_trials(study_id, deepcopy=False):
        rec = t.user_attrs.get(rung_key(epoch))
        if rec is not None:
            out.append(RungRecord(t.number, float(rec["val_top1"]), float(rec["latency_ms"])))
    return out


def rung_callback(storage: optuna.storages.BaseStorage, study_id: int, trial_id: int, early_stop: EarlyStop,
                  epochs: int) -> Optional[EpochCallback]:
    """A trial's ``on_epoch`` for successive halving (None when the rule is ``none`` or the
    budget of ``epochs`` has no rung): at a rung it writes its record, ranks by the rule
    (``rule_for(early_stop.rule)``), writes the decision, and returns a ``lifecycle.Stop`` unless
    promoted (None: the trial continues). ``storage`` is the RDB storage itself, not Optuna's cache, so the table read is
    the one every driver writes; ``study_id``/``trial_id`` are that storage's ids. The callback
    reads ``global_epoch``, ``val_top1`` (in [0, 1]) and ``latency_ms`` from each record."""
    rungs = set(early_stop.rungs(epochs)) if early_stop.active else set()
    if not rungs:
        return None
    rule, eta = rule_for(early_stop.rule), early_stop.eta
    number = storage.get_trial(trial_id).number

    def on_epoch(rec: dict) -> Optional[Stop]:
        epoch = rec["global_epoch"]
        if epoch not in rungs:
            return None
        acc, lat = float(rec["val_top1"]), float(rec["latency_ms"])
        storage.set_trial_user_attr(trial_id, rung_key(epoch), {"val_top1": acc, "latency_ms": lat})
        faults.reached("rung")
        d = decide(rung_records(storage, study_id, epoch), number, epoch, rule, eta)
        storage.set_trial_user_attr(trial_id, decision_key(epoch), d.to_dict())
        line = (f"rung at epoch {epoch}: val top1 {acc:.4f} @ {lat:.2f} ms ranks {d.rank + 1} of {d.n} by "
                f"{rule.ranks_by}; the top {d.keep} continue")
        _log.info(" ".join(filter(None, (logs.tag(""), line))))
        if d.promote:
            return None
        return Stop(f"stopped at the rung at epoch {epoch}: val top1 {acc:.4f} @ {lat:.2f} ms ranked "
                    f"{d.rank + 1} of {d.n} by {rule.ranks_by} ({rule.name} successive halving, top "
                    f"{d.keep} continue)", epoch, acc)

    return on_epoch


# ------------------------------------------------------------------------------ fidelity

@dataclass(frozen=True)
class Fidelity:
    """How well one rung's accuracy orders the completed trials as their final accuracy does."""

    epoch: int
    n: int  # completed trials with an accuracy at this epoch
    tau: Optional[float]  # Kendall tau-b (scipy); None below 3 trials or when one side is constant
    p: Optional[float]

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "n": self.n, "tau": self.tau, "p": self.p}


def accuracy_at(t: optuna.trial.FrozenTrial, epoch: int) -> Optional[float]:
    """A trial's validation top-1 after ``epoch``: its rung record, else its training history."""
    rec = t.user_attrs.get(rung_key(epoch))
    if rec is not None:
        return float(rec["val_top1"])
    hist = t.user_attrs.get("history") or []
    return float(hist[epoch - 1]["val_top1"]) if len(hist) >= epoch else None


def fidelity(complete: list[optuna.trial.FrozenTrial], early_stop: EarlyStop) -> list[Fidelity]:
    """Kendall tau between each rung's accuracy and the final objective over completed trials: do
    the early rungs rank trials as the full budget does, on this data? The rungs are the study's
    (``early_stop``), also for a study searched without early stopping (its histories hold
    every epoch)."""
    from scipy.stats import kendalltau

    epochs = max((len(t.user_attrs.get("history") or []) for t in complete), default=0)
    out = []
    for e in early_stop.rungs(epochs):
        pairs = [(a, t.values[0]) for t in complete if (a := accuracy_at(t, e)) is not None]
        tau = p = None
        if len(pairs) >= 3 and len({a for a, _ in pairs}) > 1 and len({f for _, f in pairs}) > 1:
            res = kendalltau([a for a, _ in pairs], [f for _, f in pairs])
            if math.isfinite(res.statistic):
                tau, p = float(res.statistic), float(res.pvalue)
        out.append(Fidelity(e, len(pairs), tau, p))
    return out

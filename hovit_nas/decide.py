"""Picking one architecture under noise (issue 32): the rules ``pin`` applies.

- **non-inferiority** (``pin --non-inferior-to REF --margin M``): the fastest candidate whose
  one-sided 95 % lower bound of (candidate − REF) on the validation objective is above −M. With
  a confirmation (``hovit-nas confirm``) the comparison is paired twice: on the same images, and
  seed by seed (candidate and REF were retrained with the same seeds); without one, each
  candidate's single search trial is compared on the same images with the study's measured seed
  noise added (stats.compare_to_reference).
- **one-standard-error rule** (the default when no other rule is asked for): the fastest candidate
  whose mean score is within one SE of the best candidate's (stats.one_se_rule).

A candidate is a confirmed trial (its runs over seeds) or, unconfirmed, a search trial.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import stats
from .errors import HovitError
from .noise import Noise, Row
from .record import TrialRecord


@dataclass
class Choice:
    """What a rule picked, and the evidence ``best.yaml`` records."""

    trial: int
    rule: str  # in words
    evidence: dict = field(default_factory=dict)


def _paired_run(a: TrialRecord, b: TrialRecord, noise: Noise) -> tuple[float, float]:
    """(a − b on val, its SE over images): paired when both stored per-image scores of the same
    split, else from their binomial SEs (unpaired)."""
    from .noise import rows_of

    ra, rb = rows_of([a], noise)[0], rows_of([b], noise)[0]
    from .noise import difference

    d, se, _ = difference(ra, rb, noise.metric, noise.labels)
    return d, se


def non_inferior(candidates: dict, reference: int, margin: float, noise: Noise, confirmed: bool,
                 latency: dict) -> Choice:
    """The fastest candidate non-inferior to ``reference`` within ``margin``.

    Args:
        candidates: trial number -> {seed: TrialRecord} (confirmed: its runs per seed; else one
            entry, its search trial; the reference's fixed-point replicates count as its seeds).
        reference: the reference's trial number (a key of ``candidates``).
        margin: M, in the objective's units (0.01 = one point of top-1).
        confirmed: whether ``candidates`` are confirmation runs (seeds matched).
        latency: trial number -> its latency (ms): mean over confirmation runs, else the trial's.
    Raises:
        HovitError: no candidate is non-inferior (the line gives the closest one's bound).
    """
    ref = candidates[reference]
    out, evidence = [], {}
    for n, runs in candidates.items():
        if n == reference:
            continue
        if confirmed:
            seeds = sorted(set(runs) & set(ref))
            per_seed = [_paired_run(runs[s], ref[s], noise) for s in seeds]
            cmp = stats.compare_to_reference(per_seed) if per_seed else None
        else:
            run = next(iter(runs.values()))
            diffs = [_paired_run(run, r, noise) for r in ref.values()]
            d = float(np.mean([x for x, _ in diffs]))
            se = math.sqrt(float(np.mean([s ** 2 for _, s in diffs])))
            seed_var = (noise.seed_sd or 0.0) ** 2 * (1 + 1 / len(ref))
            cmp = stats.compare_to_reference([(d, se)], seed_var)
        if cmp is None:
            continue
        evidence[n] = {**cmp.to_dict(), "latency_ms": latency[n], "non_inferior": cmp.non_inferior(margin)}
        if cmp.non_inferior(margin):
            out.append(n)
    rule = (f"the fastest {'confirmed ' if confirmed else ''}trial non-inferior to trial {reference} within margin "
            f"{margin:g} (one-sided 95 % lower bound of the difference above -{margin:g}"
            + ("; paired on the same images and seeds)" if confirmed else
               "; paired on the same images, the study's seed noise added: UNCONFIRMED)"))
    if not out:
        closest = max(evidence.items(), key=lambda kv: kv[1]["lower_95_one_sided"], default=None)
        why = (f"; the closest, trial {closest[0]}, has a lower bound of {closest[1]['lower_95_one_sided']:+.4f}"
               if closest else "")
        raise HovitError(f"no candidate is non-inferior to trial {reference} within margin {margin:g}{why}; "
                         "nothing written (a wider margin, more confirmation seeds, or a longer budget may resolve it)")
    pick = min(out, key=lambda n: latency[n])
    return Choice(pick, rule, {"reference": reference, "margin": margin, "comparisons": evidence,
                               "picked": dict(evidence[pick])})


def one_se(rows: list[Row], confirmed: Optional[dict] = None) -> Choice:
    """The one-standard-error rule over ``rows`` (noise.Row) or, with ``confirmed`` (trial ->
    confirm.Confirmed), over the confirmed candidates' means, whose SE is the spread over seeds."""
    if confirmed:
        pts = [{"trial": n, "accuracy": c.mean("val"), "latency_ms": c.mean("latency_ms"),
                "se_total": math.sqrt(c.sd("val") ** 2 / c.n + _images_se(c))} for n, c in confirmed.items()]
        how = "confirmed mean validation score (SE from the spread over seeds and the validation images)"
    else:
        pts = [{"trial": r.trial, "accuracy": r.accuracy, "latency_ms": r.latency_ms,
                "se_total": (r.acc_interval.high - r.acc_interval.low) / (2 * stats.Z95)} for r in rows]
        how = "validation score of the search's trials (SE from images and the study's seed noise): UNCONFIRMED"
    pick = stats.one_se_rule(pts)
    if pick is None:
        raise HovitError("no candidate to pick from")
    best = max(pts, key=lambda r: r["accuracy"])
    return Choice(pick["trial"], f"one-standard-error rule: the fastest trial within one SE of the best, on the {how}",
                  {"best": dict(best), "picked": dict(pick), "within": sorted(p["trial"] for p in pts
                                                                  if p["accuracy"] >= best["accuracy"] - best["se_total"])})


def _images_se(c) -> float:
    """The images' variance of a confirmed candidate's mean score: binomial over its val images
    (the same images in every seed, so not averaged away)."""
    run = next(iter(c.runs.values()), None)
    n = int((run.val.get("n") if run is not None else 0) or 0)
    p = min(max(c.mean("val"), 0.0), 1.0)
    return p * (1 - p) / n if n > 1 else 0.0

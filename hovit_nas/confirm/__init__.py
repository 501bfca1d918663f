"""Confirmation: retrain the front's leading candidates and HoViT-B over further seeds.

A search picks among many noisy trials on one seed's validation score, so its winner is partly the
luckiest (selection bias, the classic trap of NAS). ``hovit-nas confirm`` retrains the top-k front
trials (by validation score) and the fixed point with n new seeds, and ``pin`` then chooses by the
mean over those seeds, with a paired comparison against the fixed point on the same seeds.

The runs live in a linked study, ``<study>-confirm``, in the same storage: the dashboard shows
them, and the search's front is never mixed with them. Each run is a trial whose parameters are
(candidate trial, seed), all enqueued up front by the process that creates the linked study, and
they go through the same executors, heartbeat, budget and duplicate rules as a search, so a
confirmation is kill-and-resume safe like the search itself.

A study scored by a supernet (``search --evaluator supernet``) is confirmed the same way: its
candidates are trained stand-alone with the full dense + pruning pipeline (their training-only
parameters at the space's base values, as the supernet scored them), and the table and the
``pareto`` plot show each one's supernet estimate beside its stand-alone figures.

Two modules: ``run`` runs a confirmation (the linked study, its candidates and seeds, through an
executor); ``figures`` reads what it measured (per-seed figures, paired differences to HoViT-B, the
table). The report (``pareto``, ``pin``) imports ``figures`` alone: neither torch nor an executor.
"""
from __future__ import annotations

from .figures import (SUFFIX, Confirmed, Paired, belongs_to, check_same_splits, confirm_name, confirmed,
                      format_table, paired)
from .run import ConfirmConfig, ConfirmSpace, candidates, prepare, run_confirm

__all__ = ["SUFFIX", "confirm_name", "ConfirmConfig", "candidates", "ConfirmSpace", "prepare", "run_confirm",
           "Paired", "paired", "Confirmed", "belongs_to", "check_same_splits", "confirmed", "format_table"]

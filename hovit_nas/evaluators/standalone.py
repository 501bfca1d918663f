"""The ``train`` evaluator: each config trained stand-alone, with the full dense + pruning
pipeline (train.train_and_evaluate), exported and scored on val and test."""
from __future__ import annotations

from dataclasses import dataclass

from . import CAPS, Scored


@dataclass
class Standalone:
    name: str = "train"

    @property
    def caps(self):
        return CAPS[self.name]

    def study_attrs(self, study: str, space, splits, data, recorded: dict) -> dict:
        from ..errors import ConfigError

        had = recorded.get("supernet")
        if had:
            raise ConfigError(f"study {study!r} was scored by supernet {had['id']} ({had['dir']}); pass `evaluator` "
                              f"supernet `supernet` {had['dir']}, or use `study` NEW_NAME")
        return {}

    def restrict(self, space):
        return space

    def score(self, cfg, splits, device, guard, on_epoch) -> Scored:
        from ..train import train_and_evaluate

        r = train_and_evaluate(cfg, splits, device, guard=guard, on_epoch=on_epoch)
        if r.stop is not None:
            return Scored({}, None, {}, history=r.history, stop=r.stop)
        return Scored(r.val, r.test, r.scores, r.exported, r.history, r.params_dense, r.selected_blocks, r.data)


def make(supernet=None) -> Standalone:
    return Standalone()

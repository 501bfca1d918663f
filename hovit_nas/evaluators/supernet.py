"""The ``supernet`` evaluator: a subnet with inherited weights from a trained supernet, BatchNorm
recalibrated on fixed training images, scored on val; nothing trained (supernet.estimate). The
supernet must be of the study's space, at its resolution, trained on its very splits."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from . import CAPS, Scored


@dataclass
class SupernetEstimate:
    path: str  # the supernet directory (`supernet train`'s --out), absolute
    name: str = "supernet"

    @property
    def caps(self):
        return CAPS[self.name]

    def restrict(self, space):
        from ..supernet import ARCH_PARAMS

        return replace(space, params=[p for p in space.params if p.name in ARCH_PARAMS])

    def study_attrs(self, study: str, space, splits, data, recorded: dict) -> dict:
        """``evaluator`` supernet and the supernet's ``{"id", "dir"}``.

        Raises:
            HovitError: no supernet at ``path``; it does not match the space, resolution or data
                (by membership: supernet.check_data); the study was scored by another supernet or
                trained stand-alone (one line each)."""
        import logging

        from .. import provenance as pv
        from ..errors import ConfigError
        from ..space import load_space
        from ..supernet import check_data, load, provenance_of

        sn = load(self.path)
        rec = sn.record
        if rec["space"] != space.name or sn.space.base.model.img_size != space.base.model.img_size:
            raise ConfigError(f"supernet {self.path} was trained over space {rec['space']} at "
                              f"{sn.space.base.model.img_size} px, not {space.name} at {space.base.model.img_size} px")
        made = provenance_of(sn)
        if made is not None and made.space is not None:
            pv.check_space(made.space, pv.space_record(load_space(space.source or space.name)),
                           f"supernet {self.path}", "scoring a search")
        check_data(sn, self.path, splits, data, "scoring a search's trials (estimates on val, BatchNorm "
                   "recalibrated on train)")
        had = recorded.get("supernet")
        if recorded and not had:
            raise ConfigError(f"study {study!r} trained its trials stand-alone; leave `evaluator` out, or use `study` "
                              "NEW_NAME")
        if had and had["id"] != rec["id"]:
            raise ConfigError(f"study {study!r} was scored by supernet {had['id']} ({had['dir']}), not {rec['id']} "
                              f"({self.path}); use that supernet, or `study` NEW_NAME")
        logging.getLogger("hovit_nas.search").info(
            f"accuracy: supernet {rec['id']} ({self.path}) estimates each trial with inherited weights, BatchNorm "
            "recalibrated; nothing is trained")
        return {"evaluator": self.name, "supernet": {"id": rec["id"], "dir": str(Path(self.path).resolve())}}

    def score(self, cfg, splits, device, guard, on_epoch) -> Scored:
        from ..supernet import estimate, load

        with guard.shared():
            _, val, probs = estimate(self.path, cfg, splits, device)
        return Scored(val, None, {"val": probs}, estimate={"by": "supernet",
                                                            "supernet": load(self.path, device).record["id"]})


def make(supernet=None) -> SupernetEstimate:
    from ..errors import ConfigError

    if supernet is None:
        raise ConfigError("`evaluator` supernet needs `supernet` DIR (the supernet to score with)")
    return SupernetEstimate(str(Path(supernet).resolve()))

"""Running a confirmation: what ``hovit-nas confirm`` was asked for (``ConfirmConfig``), the
candidates it retrains, the space of its runs (``ConfirmSpace``: candidate x seed), the linked
study created or resumed (``prepare``), and its runs through the one executor dispatch
(``run_confirm``).
"""
from __future__ import annotations

import copy
import logging
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .. import provenance as pv
from .. import study as st
from ..config import DataOptions, DataSpec, LatencyConfig, RayConfig, RunConfig, SearchConfig, from_dict, \
    run_config_from_dict, with_num_classes
from ..errors import HovitError
from ..noise import LABELS_ATTR, labels_attr
from .figures import SUFFIX, confirm_name

if TYPE_CHECKING:
    from ..executors.common import Prepared

_log = logging.getLogger(__name__)


@dataclass
class ConfirmConfig:
    """What ``hovit-nas confirm`` was asked for."""

    study: str
    storage: str
    data: Optional[str] = None  # the search's --data (None: the built-in digits)
    data_options: DataOptions = field(default_factory=DataOptions)
    top_k: int = 4
    seeds: int = 3
    first_seed: int = 1  # seeds first_seed .. first_seed + seeds - 1; the search trained with seed 0
    device: str = "auto"
    threads: Optional[int] = None
    executor: str = "local"
    ray: RayConfig = field(default_factory=RayConfig)

    def validate(self) -> "ConfirmConfig":
        if self.top_k < 1 or self.seeds < 2:
            raise HovitError(f"`top_k` must be >= 1 and `seeds` >= 2 (a spread needs two), got {self.top_k}, "
                             f"{self.seeds}")
        return self

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))


def candidates(study: optuna.Study, top_k: int) -> list[FrozenTrial]:
    """The top-k front trials by validation score, and the fixed point (once)."""
    front = sorted(study.best_trials, key=lambda t: (-t.values[0], t.values[1]))[:top_k]
    fixed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
             if st.FIXED_POINT_ATTR in t.user_attrs]
    out = front + [t for t in fixed[:1] if t.number not in {f.number for f in front}]
    if not out:
        raise HovitError(f"study {study.study_name!r} has no completed trials to confirm")
    return out


class ConfirmSpace:
    """The space of confirmation runs (a ``space.TrialSpace``): a trial's parameters are the
    candidate trial's number and the seed; its config is the candidate's with that seed. Its
    latency anchor is the search's, inherited, never calibrated again (``anchor_model`` None)."""

    def __init__(self, configs: dict[int, RunConfig], seeds: list[int]):
        self.configs, self.seeds = configs, seeds
        self.base = next(iter(configs.values()))
        self.name = "confirm"

    def suggest(self, trial: optuna.trial.BaseTrial) -> RunConfig:
        n = trial.suggest_categorical("candidate", sorted(self.configs))
        seed = trial.suggest_categorical("seed", self.seeds)
        cfg = copy.deepcopy(self.configs[n])
        cfg.train.seed, cfg.name = seed, f"t{n}-seed{seed}"
        return cfg


def prepare(cfg: ConfirmConfig) -> "Prepared":
    """The linked confirmation study, created or resumed, ready for an executor.

    Raises:
        StorageError: the storage is read-only or its disk full (``study.check_writable``), before
            the data is loaded: the runs are recorded in the search's own storage.
        HovitError: no such study, not a hovit-nas study, or other data than the search's.
    """
    from ..executors.common import Prepared  # the heavy part (torch); pareto/pin only read figures
    from ..trial import TrialSpec, get_data

    cfg.validate()
    parent = st.load(cfg.study, cfg.storage)
    st.check_writable(cfg.storage)  # before any work: the runs are recorded with the search, in its storage
    a = parent.user_attrs
    space_def = a.get("space_def") or {}
    cands = candidates(parent, cfg.top_k)
    configs = {t.number: run_config_from_dict(t.user_attrs["config"], f"trial {t.number}") for t in cands}
    seed = ((space_def.get("base") or {}).get("train") or {}).get("seed", 0)
    data = DataSpec.of(cfg.data, a["img_size"], seed, cfg.data_options)
    splits = get_data(data)
    if splits.description != a.get("data"):
        raise HovitError(f"study {cfg.study!r} was searched on {a.get('data')}, not {splits.description}; "
                         "pass the search's `data` (and split options)")
    searched = st.recorded_data_args(a)
    if searched is not None and searched != st.data_args(data):
        raise HovitError(f"study {cfg.study!r} was searched with {shlex.join(searched)}, not "
                         f"{shlex.join(st.data_args(data))}; pass the same data and split options")
    made = pv.Provenance.from_dict(a.get(pv.STUDY_ATTR))
    now = pv.data_record(splits, data.img_size, pv.data_rule(data), keep_train_ids=False)
    pv.check_same_data(made.data if made else None, now, f"study {cfg.study!r}",
                       "a confirmation (its runs are compared with the search's, on the same images)")
    configs = {n: with_num_classes(c, splits.num_classes) for n, c in configs.items()}
    latency = from_dict(LatencyConfig, space_def.get("latency") or {}, "latency")
    latency.batch = a.get("latency_batch", latency.batch)
    latency.runtime = a.get("latency_runtime", "torch")
    latency.precision = a.get("latency_precision", "fp32")
    latency.anchor = st.ANCHOR_ATTR in a  # timed like its search: anchored to the same calibration, or raw
    if a.get("latency_at"):  # timed like its search: by the same latency service, which anchors itself
        m = a["latency_at"]["machine"]
        latency.threads, latency.batch = m["threads"], m["batch"]
    name = confirm_name(cfg.study)
    pairs = [({"candidate": t.number, "seed": s},
              {st.CONFIRMS_ATTR: t.number, "seed": s,
               **({st.FIXED_POINT_ATTR: t.user_attrs[st.FIXED_POINT_ATTR]} if st.FIXED_POINT_ATTR in t.user_attrs
                  else {})}) for t in cands for s in cfg.seed_list]
    attrs = {"confirms_study": cfg.study, st.CONFIRMS_UID_ATTR: st.identity(parent),
             "metric": a.get("metric", "top1"), "data": a.get("data"),
             **({st.DATA_ARGS_ATTR: searched} if searched is not None else {}),
             "img_size": a.get("img_size"), "latency_batch": latency.batch, "latency_anchored": latency.anchor,
             "latency_runtime": latency.runtime, "latency_precision": latency.precision,
             **({"latency_at": a["latency_at"]} if a.get("latency_at") else {}),
             "space": f"{a.get('space')}{SUFFIX}", "num_classes": splits.num_classes,
             "classes": list(splits.classes), LABELS_ATTR: labels_attr(splits),
             pv.STUDY_ATTR: (made or pv.Provenance("study", now)).with_(kind="confirmation", data=now).to_dict()}
    if st.ANCHOR_ATTR in a:
        attrs[st.ANCHOR_ATTR] = a[st.ANCHOR_ATTR]  # the search's calibration: figures stay comparable
    study, created = st.create_or_load(name, cfg.storage, optuna.samplers.RandomSampler(), attrs, pairs,
                                       add_missing=True)
    trials = len(pairs)
    _log.info(f"confirmation study {name!r} in {st.shown(cfg.storage)} ({'created' if created else 'resumed'}): "
              f"{len(cands)} candidates (trials {', '.join(str(t.number) for t in cands)}) x seeds {cfg.seed_list}; "
              f"{st.finished_count(study)}/{trials} runs done")
    st.fail_stale_trials(study)
    space = ConfirmSpace(configs, cfg.seed_list)
    search = SearchConfig(study=name, storage=cfg.storage, device=cfg.device, threads=cfg.threads,
                          metric=attrs["metric"], executor=cfg.executor, ray=cfg.ray)
    template = TrialSpec(config=space.base, data=data, device=cfg.device, threads=cfg.threads,
                         metric=attrs["metric"], latency=latency, latency_at=_service_of(a))
    return Prepared(search, space, study, name, cfg.storage, trials, template, created,
                    st.study_dir(cfg.study, cfg.storage))


def _service_of(attrs: dict):
    """A search timed by a latency service is confirmed on the same machine (remote.py); the
    token comes from ``HOVIT_NAS_LATENCY_TOKEN`` here too."""
    at = attrs.get("latency_at")
    if not at:
        return None
    import os

    from ..remote import LatencyService
    from ..service import TOKEN_ENV

    return LatencyService(at["url"], machine=at["machine"]["id"], token=os.environ.get(TOKEN_ENV))


def run_confirm(cfg: ConfirmConfig) -> "Prepared":
    """Create or resume the linked study and run its executor; storage failures are one line
    (StorageError), as in ``search.run_search``."""
    from ..executors import dispatch

    prep = prepare(cfg)
    with st.storage_errors(prep.storage):
        dispatch(prep)
    return prep

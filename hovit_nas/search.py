"""The dispatcher: resolve the space, data and study, then hand the trials to an executor."""
from __future__ import annotations

import logging
import os
from dataclasses import replace

from . import evaluators
from . import provenance as pv
from . import study as st
from .config import DataSpec, EarlyStop, LatencyConfig, SearchConfig, from_dict, to_dict, with_num_classes
from .device import resolve_device
from .latency import resolve_runtime
from .models.quantize import check as check_precision
from .remote import LatencyService
from .noise import LABELS_ATTR, labels_attr
from .record import RECORD_VERSION, VERSION_ATTR
from .rungs import rule_for
from .service import TOKEN_ENV
from .executors import dispatch
from .executors.common import Prepared
from .errors import ConfigError
from .space import load_space
from .trial import TrialSpec, get_data

_log = logging.getLogger(__name__)


def prepare(cfg: SearchConfig) -> Prepared:
    cfg.validate()
    space = load_space(cfg.space)
    space_rec = pv.space_record(space)
    evaluator = evaluators.get(cfg.evaluator, cfg.supernet)
    space = evaluator.restrict(space)  # a supernet scores architectures: training-only choices stay at base
    if cfg.predictor is not None:  # a missing or malformed profile stops the search before any work
        from .predictor import load_profile

        load_profile(cfg.predictor)
    builtin = cfg.data is None
    if builtin:
        space = space.with_builtin_budget()
        _log.info(f"data: built-in digits (scikit-learn load_digits, 8x8 upsampled to {space.base.model.img_size} px) "
                  f"with the space's builtin_data budget; pass --data for your dataset")
    name = st.check_study_name(cfg.study or (f"{space.name}-builtin" if builtin else space.name))
    storage = st.absolute_url(cfg.storage or st.default_storage(name))
    with st.storage_errors(storage):  # before any work: a foreign study, a full or read-only storage
        st.recorded_attrs(name, storage)
        st.check_writable(storage)
    latency = replace(space.latency, **{k: v for k, v in (("batch", cfg.latency_batch), ("anchor", cfg.latency_anchor),
                                                          ("runtime", cfg.runtime), ("precision", cfg.precision))
                                   if v is not None})
    trial_device = "cuda" if cfg.executor == "ray" and cfg.ray.gpus_per_trial > 0 else resolve_device(cfg.device)
    remote = None
    recorded = st.recorded_attrs(name, storage)
    timed_at = (recorded.get("latency_at") or {}).get("url")
    if timed_at and not cfg.latency_at:
        raise ConfigError(f"study {name!r} was timed by the latency service at {timed_at}; pass `latency_at` "
                          f"{timed_at} (its machine must be the same), or use `study` NEW_NAME")
    if cfg.latency_at and recorded and not timed_at:
        raise ConfigError(f"study {name!r} was timed here, not by a latency service; leave `latency_at` out, or "
                          "use `study` NEW_NAME")
    if cfg.latency_at:  # the deployment machine's service sets the target and times every trial
        remote, latency, remote_identity = use_latency_service(cfg, latency)
    else:
        latency.runtime = resolve_runtime(latency.runtime, trial_device)
        if cfg.runtime is None:  # a resumed study keeps the runtime it was timed on, unless --runtime says otherwise
            latency.runtime = st.recorded_latency(name, storage, "latency_runtime") or latency.runtime
        if cfg.precision is None:  # likewise its precision
            latency.precision = st.recorded_latency(name, storage, "latency_precision") or latency.precision
        check_precision(latency.precision, latency.runtime, trial_device)
    # the data after the target: a wrong service address is one line before any decoding
    data = DataSpec.of(cfg.data, space.base.model.img_size, space.base.train.seed, cfg.data_options)
    splits = get_data(data)
    space = replace(space, base=with_num_classes(space.base, splits.num_classes))
    made = pv.Provenance("study", pv.data_record(splits, data.img_size, pv.data_rule(data), keep_train_ids=False),
                         space_rec, data.img_size)
    if recorded:  # a resume: the same data, by membership; the same space, by name (its definition may move)
        was = pv.Provenance.from_dict(recorded.get(pv.STUDY_ATTR))
        pv.check_same_data(was.data if was else None, made.data, f"study {name!r}", "a resume")
        if was is not None and was.space is not None:
            pv.check_space(was.space, space_rec, f"study {name!r}", "a resume")
    scored_by = evaluator.study_attrs(name, space, splits, data, recorded)
    early_stop = resolve_early_stop(cfg, space.early_stop, recorded.get("early_stop"))
    trials = cfg.trials or space.trials
    attrs = {"space": space.name, "space_def": space.to_dict(), "data": splits.description,
             st.DATA_ARGS_ATTR: st.data_args(data), "data_sizes": splits.sizes, "metric": cfg.metric, "latency_batch": latency.batch,
             "latency_anchored": latency.anchor, "latency_runtime": latency.runtime,
             "latency_precision": latency.precision,
             "img_size": space.base.model.img_size,
             "num_classes": splits.num_classes, "population": st.population_for(trials),
             "early_stop": to_dict(early_stop), pv.STUDY_ATTR: made.to_dict(sketch=False),
             "classes": list(splits.classes), LABELS_ATTR: labels_attr(splits), VERSION_ATTR: RECORD_VERSION,
             **({"latency_at": {"url": remote.url, "machine": remote_identity}} if remote else {}),
             **scored_by}
    constraints = cfg.limits.active
    sampler = st.make_sampler(cfg.sampler, cfg.seed, attrs["population"], constraints)
    fixed = space.fixed_point_trials()
    with st.storage_errors(storage):
        study, created = st.create_or_load(name, storage, sampler, attrs, fixed)
    if not created:  # its own stream, so a resumed or second driver does not replay the first one's proposals
        pop = study.user_attrs.get("population", attrs["population"])
        study.sampler = st.make_sampler(cfg.sampler, st.driver_seed(cfg.seed, created), pop, constraints)
    out_dir = st.study_dir(name, storage)
    _log.info(f"study {name!r} in {st.shown(storage)} ({'created' if created else 'resumed'}; "
              f"{st.finished_count(study)}/{trials} trials done); artefacts in {out_dir}")
    st.fail_stale_trials(study)
    _log.info(f"data: {splits.description} {splits.sizes}; objectives: val {cfg.metric} (max), "
              f"latency ms at batch {latency.batch} on {latency.runtime} (min) at {latency.precision}")
    if early_stop.active:
        t = space.base.train
        _log.info(f"early stopping: {early_stop.rule} successive halving, rungs at epochs "
                  f"{early_stop.rungs(t.epochs_dense + t.epochs_prune)} of {t.epochs_dense + t.epochs_prune}; the top "
                  f"1/{early_stop.eta} at each continue, ranked by {rule_for(early_stop.rule).method}")
    template = TrialSpec(config=space.base, data=data, device=cfg.device, threads=cfg.threads, metric=cfg.metric,
                         latency=latency, limits=cfg.limits, latency_at=remote,
                         evaluator=evaluator)
    return Prepared(cfg, space, study, name, storage, trials, template, created, out_dir, early_stop,
                    anchor_model=(space.fixed_point, space.fixed_point_config()))


def use_latency_service(cfg: SearchConfig, latency: LatencyConfig) -> tuple[LatencyService, LatencyConfig, dict]:
    """``latency_at``: the service's target (runtime, precision, threads, batch) becomes the
    study's, its machine id is what a resume must match, and it anchors to its own HoViT-B (no
    local anchor). The token is read here (``HOVIT_NAS_LATENCY_TOKEN``), so Ray workers carry it.
    Returns the client (with the machine id), the latency settings, and the machine's identity.

    Raises:
        HovitError: the service cannot be reached or refuses the token, or an explicit
            ``runtime``/``precision``/``latency_batch`` differs from the service's."""
    svc = LatencyService(cfg.latency_at, wait_s=cfg.latency_wait_s, token=os.environ.get(TOKEN_ENV))
    ident = svc.identity()
    for key, mine, theirs in (("runtime", cfg.runtime, ident["runtime"]), ("precision", cfg.precision,
                                                                          ident["precision"]),
                              ("latency_batch", cfg.latency_batch, ident["batch"])):
        if mine is not None and mine != theirs:
            raise ConfigError(f"`{key}` {mine} differs from the latency service's {theirs} at {svc.url}; leave "
                              f"`{key}` out, or start the service with it")
    _log.info(f"latency: timed by the service at {svc.url} on {ident['cpu']} ({ident['hostname']}, machine "
              f"{ident['id']}): {ident['runtime']} {ident['runtime_version']}, {ident['precision']}, "
              f"{ident['threads']} thread(s), batch {ident['batch']}; anchored there to its own HoViT-B")
    latency = replace(latency, runtime=ident["runtime"], precision=ident["precision"], threads=ident["threads"],
                      batch=ident["batch"], anchor=False)
    return replace(svc, machine=ident["id"]), latency, ident


def resolve_early_stop(cfg: SearchConfig, space_rule: EarlyStop, recorded: dict | None) -> EarlyStop:
    """A resumed study keeps the rule it recorded, a new one takes the space's; the command line
    overrides either (and a resume that changes it is refused by the study's compatibility check)."""
    base = from_dict(EarlyStop, recorded, "study early_stop") if recorded else space_rule
    es = EarlyStop(cfg.early_stop or base.rule, cfg.rung_min_epochs or base.min_epochs, cfg.rung_eta or base.eta)
    es.validate("early stopping")
    if es.active and cfg.ray.asha:
        raise ConfigError("`asha` (Ray's scheduler, accuracy alone) and successive halving "
                          f"(early_stop: {es.rule}) both stop trials early; choose one")
    return es


def run_search(cfg: SearchConfig) -> Prepared:
    """Prepare the study and run the executor.

    Raises:
        StorageError: the storage failed (disk full, read-only, locked, server gone): one line
            naming it; the study stays intact and the same command resumes it.
        HovitError: bad input (space, data, options, a foreign study), one line.
    """
    prep = prepare(cfg)
    with st.storage_errors(prep.storage):
        dispatch(prep)
    hint = st.command("hovit-nas", "pareto", "--study", prep.study_name, storage=prep.storage)
    _log.info(f"done: {st.finished_count(prep.study)} finished trials in study {prep.study_name!r}; see `{hint}`")
    return prep

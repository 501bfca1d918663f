"""The ``hovit-nas`` command: argument handling only; the work lives in the library modules."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from .errors import HovitError, TrialFailed, one_line


def handle_errors(fn):
    """Bad input -> one line, exit 2; failed run -> one line, exit 1; never a raw traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except HovitError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(2)
        except TrialFailed as exc:
            click.echo(f"failed: {one_line(exc)}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except Exception as exc:  # noqa: BLE001
            if os.environ.get("HOVIT_NAS_DEBUG"):
                raise
            if "DataError" in str(exc) or "unreadable image" in str(exc):  # from a DataLoader worker
                click.echo(f"error: {one_line(exc)}", err=True)
                sys.exit(2)
            click.echo(f"internal error: {exc.__class__.__name__}: {one_line(exc)} "
                       "(set HOVIT_NAS_DEBUG=1 for the traceback)", err=True)
            sys.exit(1)

    return wrapper


def data_options(fn):
    opts = [
        click.option("--data", "data", default=None,
                     help="Class folder, train/val/test folder, or MedMNIST .npz (default: built-in digits)."),
        click.option("--split-index", default=None, help="JSON with train_idx/val_idx/test_idx for a class folder."),
        click.option("--external-test", default=None, help="Separate test folder (e.g. CRC-VAL-HE-7K)."),
        click.option("--download", is_flag=True, help="Allow downloading a MedMNIST .npz that is missing."),
        click.option("--max-per-split", type=int, default=None, help="Cap each split (stratified) for quick runs."),
        click.option("--no-augment", is_flag=True, help="Disable flips/rotations."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def make_spec(img_size: int, data, split_index, external_test, download, max_per_split, no_augment, seed=0):
    from .data import DataSpec
    return DataSpec(path=data, img_size=img_size, split_index=split_index, external_test=external_test,
                    download=download, max_per_split=max_per_split, augment=not no_augment, seed=seed)


def resolve_config(config: str):
    from .config import load_run_config
    from .models import PRESETS

    if config in PRESETS:
        return PRESETS[config]()
    return load_run_config(config)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hovit-nas")
def main():
    """hovit-nas: search small, fast HoViT classifiers (accuracy vs latency)."""


@main.command()
@click.option("--config", "config", required=True, help="Run config YAML, or a preset: hovit_b, hovit_s, ...")
@data_options
@click.option("--img-size", type=int, default=None, help="Override model.img_size.")
@click.option("--epochs-dense", type=int, default=None)
@click.option("--epochs-prune", type=int, default=None)
@click.option("--epochs", type=int, default=None, help="Shortcut: dense epochs (prune epochs = half).")
@click.option("--batch-size", type=int, default=None)
@click.option("--max-steps", type=int, default=None, help="Cap steps per epoch.")
@click.option("--device", default="auto")
@click.option("--threads", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--out", "out", default=None, help="Run directory (checkpoint, model, result.json).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@handle_errors
def train(config, data, split_index, external_test, download, max_per_split, no_augment, img_size, epochs_dense,
          epochs_prune, epochs, batch_size, max_steps, device, threads, seed, out, resume):
    """Train one config: dense phase, pruning phase, export, evaluate."""
    from .data import load_data
    from .models import PRESETS
    from .train import train_and_evaluate

    cfg = resolve_config(config)
    if img_size:
        cfg.model.img_size = img_size
    if epochs is not None:
        cfg.train.epochs_dense, cfg.train.epochs_prune = epochs, max(1, epochs // 2) if cfg.model.pruned else 0
    for key, val in (("epochs_dense", epochs_dense), ("epochs_prune", epochs_prune), ("batch_size", batch_size),
                     ("max_steps_per_epoch", max_steps), ("seed", seed)):
        if val is not None:
            setattr(cfg.train, key, val)
    cfg.validate()
    spec = make_spec(cfg.model.img_size, data, split_index, external_test, download, max_per_split, no_augment,
                     cfg.train.seed)
    splits = load_data(spec)
    if config in PRESETS and cfg.model.num_classes != splits.num_classes:
        click.echo(f"preset {config}: num_classes {cfg.model.num_classes} -> {splits.num_classes} (from the data)",
                   err=True)
        cfg.model.num_classes = splits.num_classes  # a preset adapts; a config file must match (else exit 2)
    click.echo(f"data: {splits.description} {splits.sizes}", err=True)
    out = out or str(Path("runs") / cfg.name)
    r = train_and_evaluate(cfg, splits, device, out_dir=out, resume=resume, threads=threads)
    click.echo(f"test: top1 {r.test['top1']:.4f}  f1 {r.test['f1_macro']:.4f}  recall {r.test['recall_macro']:.4f}  "
               f"precision {r.test['precision_macro']:.4f}  params {r.params_exported / 1e6:.2f} M  "
               f"latency {r.latency['median_ms']:.2f} ms")
    click.echo(f"wrote {out}/model.safetensors, {out}/result.json")


@main.command("eval")
@click.argument("model_path")
@data_options
@click.option("--device", default="auto")
@handle_errors
def eval_cmd(model_path, data, split_index, external_test, download, max_per_split, no_augment, device):
    """Evaluate an exported model (a .safetensors file or a run directory) on a dataset."""
    import json

    from .data import check_num_classes, load_data
    from .latency import resolve_device
    from .models import load_exported
    from .train import evaluate

    p = Path(model_path)
    if p.is_dir():
        p = p / "model.safetensors"
    dev = resolve_device(device)
    model = load_exported(p, dev)
    splits = load_data(make_spec(model.config.img_size, data, split_index, external_test, download,
                                 max_per_split, True))
    check_num_classes(splits, model.config.num_classes)
    res = {name: evaluate(model, ds, splits.num_classes, dev) for name, ds in (("val", splits.val), ("test", splits.test))}
    for name, m in res.items():
        click.echo(f"{name}: top1 {m['top1']:.4f}  f1 {m['f1_macro']:.4f}  recall {m['recall_macro']:.4f}  "
                   f"precision {m['precision_macro']:.4f}  (n={m['n']})")
    click.echo(json.dumps({k: {kk: v for kk, v in m.items() if kk != "confusion"} for k, m in res.items()}))


@main.command("export")
@click.argument("run_dir")
@click.option("--out", "out", default=None, help="Output .safetensors (default RUN_DIR/model.safetensors).")
@handle_errors
def export_cmd(run_dir, out):
    """Export a training checkpoint: keep selected blocks, merge LoRA, fuse BN."""
    import torch

    from .models import count_params, create_hovit, export, save_exported
    from .train import _phases, _prepare_phase

    run = Path(run_dir)
    if not (run / "config.yaml").is_file() and not (run / "checkpoint.pt").is_file():
        raise HovitError(f"{run}: not a run directory (no config.yaml / checkpoint.pt)")
    import yaml

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True) \
        if (run / "checkpoint.pt").is_file() else None
    if state is None:
        raise HovitError(f"{run}/checkpoint.pt: missing")
    from .config import run_config_from_dict
    cfg = run_config_from_dict(yaml.safe_load(state["config"]), f"{run}/checkpoint.pt:config")
    model = create_hovit(cfg)
    phase = _phases(cfg)[state["phase_idx"]][0]
    _prepare_phase(model, cfg, phase)
    model.load_state_dict(state["model"])
    deployed = export(model)
    dest = save_exported(deployed, out or run / "model.safetensors")
    click.echo(f"exported {count_params(deployed) / 1e6:.3f} M params -> {dest}")


@main.command()
@click.option("--device", default="auto")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--img-size", type=int, default=224, show_default=True)
@click.option("--num-classes", type=int, default=9, show_default=True)
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per model per round.")
@click.option("--rounds", type=int, default=5, show_default=True, help="Interleaved passes over all models.")
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads (recorded).")
@click.option("--cuda-graph", is_flag=True, help="Replay a captured CUDA graph (GPU only).")
@click.option("--models", default=None, help="Comma-separated subset (default: all rows).")
@click.option("--anchor/--no-anchor", default=True, show_default=True,
              help="Time every model alternately with an exported HoViT-B, cancelling machine drift.")
@data_options
@click.option("--epochs", type=int, default=None, help="With --data: epochs to train each model.")
@click.option("--max-steps", type=int, default=None)
@click.option("--out", "out", default="results/bench", show_default=True)
@handle_errors
def bench(device, batch, img_size, num_classes, runs, rounds, warmup, threads, cuda_graph, models, anchor, data, split_index,
          external_test, download, max_per_split, no_augment, epochs, max_steps, out):
    """The paper's Table 1 structure: params, latency, ratio to efficientnet_b0 (+ accuracy with --data)."""
    from .bench import format_table, run_bench, write_report

    trainer = None
    if data is not None:
        trainer, num_classes = _bench_trainer(data, split_index, external_test, download, max_per_split, no_augment,
                                              img_size, epochs or 2, max_steps, device, threads)
    click.echo(f"bench: {img_size} px, batch {batch}, device {device}", err=True)
    report = run_bench(img_size, batch, device, num_classes, runs, warmup, threads, cuda_graph,
                       models.split(",") if models else None, trainer, rounds, anchor,
                       log=lambda m: click.echo(m, err=True))
    report["command"] = "hovit-nas " + " ".join(sys.argv[1:])
    click.echo(format_table(report))
    js, cs = write_report(report, out)
    click.echo(f"wrote {js} and {cs}")


def _bench_trainer(data, split_index, external_test, download, max_per_split, no_augment, img_size, epochs,
                   max_steps, device, threads):
    from .config import TrainConfig
    from .data import load_data
    from .models import PRESETS
    from .train import train_and_evaluate, train_plain

    splits = load_data(make_spec(img_size, data, split_index, external_test, download, max_per_split, no_augment))
    click.echo(f"data: {splits.description} {splits.sizes}", err=True)
    t = TrainConfig(epochs_dense=epochs, epochs_prune=max(1, epochs // 2), max_steps_per_epoch=max_steps)

    def trainer(name, model_or_cfg):
        log = lambda m: click.echo(m, err=True)  # noqa: E731
        if name in PRESETS:  # HoViT: both phases + export; returns the exported model
            cfg = model_or_cfg
            cfg.model.num_classes, cfg.train = splits.num_classes, t
            r = train_and_evaluate(cfg, splits, device, latency=False, threads=threads, log=log)
            return r.exported, r.test
        return model_or_cfg, train_plain(model_or_cfg, splits, t, device, name=name, log=log)

    return trainer, splits.num_classes


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@main.command()
@click.option("--space", default="hovit", show_default=True, help="Space name (search_spaces/NAME.yaml) or file.")
@data_options
@click.option("--study", "study_name", default=None, help="Study name (default: the space's; '<space>-builtin' "
                                                          "on the built-in data). An existing study is resumed.")
@click.option("--storage", default=None, help="SQLAlchemy URL (default sqlite:///studies/<study>/study.db).")
@click.option("--trials", type=int, default=None, help="Finished trials wanted in the study, in total.")
@click.option("--timeout", type=float, default=None, help="Stop starting trials after S seconds.")
@click.option("--sampler", type=click.Choice(["nsga2", "tpe", "random"]), default="nsga2", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--threads", type=int, default=None, help="CPU threads per trial.")
@click.option("--metric", type=click.Choice(["top1", "f1_macro"]), default="top1", show_default=True)
@click.option("--max-latency", type=float, default=None, help="Constraint: latency (ms) of the exported model.")
@click.option("--max-params", type=float, default=None, help="Constraint: exported params (millions).")
@click.option("--latency-batch", type=int, default=None, help="Batch size of the latency objective (space default 1).")
@click.option("--latency-anchor/--no-latency-anchor", default=None,
              help="Time each candidate alternately with HoViT-B, cancelling machine drift (space default: on).")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--ray-address", default=None, help="auto | ray://host:10001 (default: start a local Ray).")
@click.option("--cpus-per-trial", type=float, default=1.0, show_default=True)
@click.option("--gpus-per-trial", type=float, default=0.0, show_default=True)
@click.option("--max-concurrent", type=int, default=None, help="Trials at once on Ray.")
@click.option("--asha", is_flag=True, help="Ray: stop weak trials early (ASHA on val accuracy); they are PRUNED.")
@handle_errors
def search(space, data, split_index, external_test, download, max_per_split, no_augment, study_name, storage, trials,
           timeout, sampler, seed, device, threads, metric, max_latency, max_params, latency_batch, latency_anchor,
           executor, ray_address, cpus_per_trial, gpus_per_trial, max_concurrent, asha):
    """Multi-objective search (accuracy up, latency down); HoViT-B is always the first trial."""
    from .search import SearchSpec, run_search

    _quiet_optuna()
    opts = {"split_index": split_index, "external_test": external_test, "download": download,
            "max_per_split": max_per_split, "augment": not no_augment}
    spec = SearchSpec(space=space, data=data, data_options=opts, study=study_name, storage=storage, trials=trials,
                      timeout=timeout, sampler=sampler, seed=seed, device=device, threads=threads, metric=metric,
                      max_latency_ms=max_latency, max_params_m=max_params, latency_batch=latency_batch,
                      latency_anchor=latency_anchor, executor=executor,
                      ray={"address": ray_address, "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial,
                           "max_concurrent": max_concurrent, "asha": asha})
    run_search(spec, log=lambda m: click.echo(m, err=True))


def _study_opts(fn):
    fn = click.option("--storage", default=None, help="SQLAlchemy URL of the study storage.")(fn)
    return click.option("--study", "study_name", default=None, help="Study name (default: the only one under ./studies).")(fn)


@main.command()
@_study_opts
@click.option("--out", "out", default=None, help="HTML plot path (default studies/<study>/pareto.html).")
@click.option("--bench", "bench_json", default="results/bench/bench.json", show_default=True,
              help="Baselines from `hovit-nas bench` (shown when measured on the same device and batch).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def pareto(study_name, storage, out, bench_json, as_json):
    """Print the Pareto front and hypervolume; write a plotly HTML."""
    import json

    from . import pareto as pa
    from . import study as st

    _quiet_optuna()
    name, url = st.resolve_study(study_name, storage)
    rep = pa.summarise(st.load(name, url))
    bench = pa.load_bench(bench_json, rep)
    path = pa.plot(rep, out or Path("studies") / name / "pareto.html", bench)
    if as_json:
        click.echo(json.dumps({k: v for k, v in rep.items() if k != "all"}, indent=2))
    else:
        click.echo(pa.format_report(rep))
        click.echo(f"baselines: {'from ' + bench_json if bench else 'none for this device/batch (run hovit-nas bench)'}")
    click.echo(f"wrote {path}")


@main.command()
@_study_opts
@click.option("--max-latency", type=float, default=None, help="Most accurate front trial under this latency (ms).")
@click.option("--knee", is_flag=True, help="The knee of the front (default when no --max-latency).")
@click.option("--trial", "trial", type=int, default=None, help="Write this completed trial instead (any, not only the front).")
@click.option("--out", "out", default=None, help="Default studies/<study>/best.yaml.")
@handle_errors
def pin(study_name, storage, max_latency, knee, trial, out):
    """Choose one config from the front and write studies/<study>/best.yaml."""
    from . import pareto as pa
    from . import study as st

    if sum(x is not None and x is not False for x in (max_latency, trial, knee or None)) > 1:
        raise HovitError("choose one of --knee, --max-latency and --trial")
    _quiet_optuna()
    name, url = st.resolve_study(study_name, storage)
    default = Path("studies") / name / ("best.yaml" if trial is None else f"trial-{trial}.yaml")
    path, doc = pa.pin(st.load(name, url), url, out or default, max_latency, knee, trial)
    o = doc["objectives"]
    click.echo(f"pinned trial {doc['trial']} ({doc['chosen_by']}): " + ", ".join(f"{k} {v:.4f}" for k, v in o.items())
               + f", {doc['params'] / 1e6:.2f} M params -> {path}")
    click.echo(f"reproduce: hovit-nas train --config {path}")

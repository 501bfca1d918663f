"""The ``hovit-nas`` command: argument handling only; the work lives in the library modules.

Related options arrive as one typed object (``DataOptions``, ``Limits``, ``RayConfig``,
``BenchConfig``), and one handler maps every exception to an exit code (errors.exit_status).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import sys
from pathlib import Path
from typing import Callable, Optional

import click

from . import evaluators, plugins
from .config import (CALIBRATION_IMAGES, EARLY_STOP_RULES, EVAL_RUNTIMES, EXECUTORS, EXPORT_FORMATS,
                     LATENCY_WAIT_S, METRICS, PRECISIONS, QUANTIZABLE, RUNTIMES, SAMPLERS)
from .errors import HovitError, exit_status

try:  # the plugins first (HOVIT_NAS_PLUGINS, plugins.py): an evaluator one registers is an --evaluator choice
    plugins.load()
    _PLUGIN_ERROR: Optional[HovitError] = None
except HovitError as exc:  # reported by `main` as one line, exit 2
    _PLUGIN_ERROR = exc


class _Main(click.Group):
    """Bad input -> one line, exit 2; a failed run -> one line, exit 1; Ctrl-C -> 130; never a
    raw traceback (``HOVIT_NAS_DEBUG=1`` shows it)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except (Exception, KeyboardInterrupt) as exc:  # the one handler: every error becomes an exit code
            if os.environ.get("HOVIT_NAS_DEBUG") and not isinstance(exc, KeyboardInterrupt):
                raise
            code, line = exit_status(exc)
            click.echo(_as_flags(self.get_command(ctx, ctx.invoked_subcommand or ""), line), err=True)
            sys.exit(code)


def _as_flags(command: click.Command | None, line: str) -> str:
    """Library errors name a setting as `name` (the field of its config object); on the command
    line that is a flag: `trials` -> --trials, `latency_anchor` -> --latency-anchor/--no-latency-anchor.
    Names the command has no option for stay as they are."""
    flags: dict[str, str] = {}
    subcommands = list(command.commands.values()) if isinstance(command, click.Group) else []  # `supernet train`
    for p in [*getattr(command, "params", []), *(p for c in subcommands for p in c.params)]:
        if isinstance(p, click.Option):
            shown = "/".join(p.opts[:1] + p.secondary_opts[:1])
            for key in [p.name, *(o.lstrip("-").replace("-", "_") for o in p.opts)]:
                flags.setdefault(key, shown)
    return re.sub(r"`([a-z_]+)`", lambda m: flags.get(m.group(1), m.group(0)), line)


_log = logging.getLogger(__name__)


def grouped(name: str, build: Callable, *options: tuple) -> Callable:
    """Options given as ``(decls, dest, click kwargs)`` that reach the command as one object:
    ``name = build(**{dest: value})``."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            kwargs[name] = build(**{dest: kwargs.pop(dest) for _, dest, _ in options})
            return fn(*args, **kwargs)

        for decls, dest, kw in reversed(options):
            wrapper = click.option(*decls, dest, **kw)(wrapper)
        return wrapper

    return decorate


def _data_options(**v):
    from .config import DataOptions

    return DataOptions(split_index=v["split_index"], external_test=v["external_test"], download=v["download"],
                       max_per_split=v["max_per_split"], augment=not v["no_augment"],
                       cache_dir=v["cache_dir"])


DEVICE = dict(default="auto", show_default=True,
              help="torch device: auto (the GPU when there is one, else the CPU), cpu, cuda or cuda:N.")


def device_option() -> Callable:
    """``--device``, declared once for every command that trains, scores or times."""
    return click.option("--device", **DEVICE)


def threads_settings(help: str = "CPU threads.", default: Optional[int] = None) -> dict:
    """``--threads``'s settings, the same everywhere; ``help`` says what the threads do here."""
    return dict(type=int, default=default, show_default=default is not None, help=help)


def threads_option(help: str = "CPU threads.", default: Optional[int] = None) -> Callable:
    """``--threads``, declared once (``threads_settings``)."""
    return click.option("--threads", **threads_settings(help, default))


def runtime_option(choices: tuple, default: Optional[str] = None, help: Optional[str] = None,
                   alias: bool = False) -> Callable:
    """``--runtime`` (``--runtimes`` too where ``alias``), declared once: ``choices`` is the view
    of the runtime registry this command accepts (config.RUNTIMES, EVAL_RUNTIMES, QUANTIZABLE)."""
    decls = ("--runtime", "--runtimes") if alias else ("--runtime",)
    return click.option(*decls, "runtime", type=click.Choice(choices), default=default,
                        show_default=default is not None, help=help)


data_option = click.option("--data", "data", default=None,
                           help="Class folder, train/val/test folder, or MedMNIST .npz (default: built-in digits).")
data_options = grouped(
    "data_options", _data_options,
    (("--split-index",), "split_index", dict(default=None, help="JSON with train_idx/val_idx/test_idx for a class folder.")),
    (("--external-test",), "external_test", dict(default=None, help="Separate test folder (e.g. CRC-VAL-HE-7K).")),
    (("--download",), "download", dict(is_flag=True, help="Allow downloading a MedMNIST .npz that is missing.")),
    (("--max-per-split",), "max_per_split", dict(type=int, default=None, help="Cap each split (stratified).")),
    (("--no-augment",), "no_augment", dict(is_flag=True, help="Disable flips/rotations.")),
    (("--cache-dir",), "cache_dir", dict(default=None, help="Where decoded datasets are cached (default: "
                                         "$HOVIT_NAS_CACHE_DIR, else ~/.cache/hovit-nas); one build per node.")),
)


def resolve_config(config: str):
    from .config import load_run_config
    from .models import PRESETS

    if config in PRESETS:
        return PRESETS[config]()
    return load_run_config(config)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hovit-nas")
@click.option("-v", "--verbose", count=True, help="More detail (-v: debug lines).")
@click.option("-q", "--quiet", count=True, help="Less output (-q: warnings and errors only).")
def main(verbose: int, quiet: int):
    """hovit-nas: search small, fast HoViT classifiers (accuracy vs latency)."""
    from .logs import setup

    setup(verbose, quiet)
    if _PLUGIN_ERROR is not None:
        raise _PLUGIN_ERROR


@main.command()
@click.option("--config", "config", required=True, help="Run config YAML, or a preset: hovit_b, hovit_s, ...")
@data_option
@data_options
@click.option("--img-size", type=int, default=None, help="Override model.img_size.")
@click.option("--epochs-dense", type=int, default=None)
@click.option("--epochs-prune", type=int, default=None)
@click.option("--epochs", type=int, default=None, help="Shortcut: dense epochs (prune epochs = half).")
@click.option("--batch-size", type=int, default=None)
@click.option("--max-steps", type=int, default=None, help="Cap steps per epoch.")
@device_option()
@threads_option()
@click.option("--seed", type=int, default=None)
@click.option("--amp/--no-amp", default=None,
              help="Train under bf16 autocast where the device computes bf16 natively (CUDA; CPUs with "
                   "AVX512-BF16 or AMX), or in fp32 throughout (default: the config's train.amp, on). "
                   "Each epoch's record says which ran.")
@click.option("--out", "out", default=None, help="Run directory (checkpoint, model, result.json).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@runtime_option(RUNTIMES, help="Where the exported model is timed (default: a pinned best.yaml's deployment "
                               "target, else auto: ONNX Runtime on the CPU, PyTorch on a GPU).")
def train(config, data, data_options, img_size, epochs_dense, epochs_prune, epochs, batch_size, max_steps, device,
          threads, seed, amp, out, resume, runtime):
    """Train one config: dense phase, pruning phase, export, evaluate, time on a named target."""
    from .config import TrainOverrides
    from .metrics import macro_note
    from .models import PRESETS
    from .trial import train_run

    cfg = TrainOverrides(img_size, epochs, epochs_dense, epochs_prune, batch_size, max_steps, seed, amp).apply(
        resolve_config(config))
    r, splits, out = train_run(cfg, data, data_options, adapt_classes=config in PRESETS, device=device,
                               threads=threads, out_dir=out, resume=resume,
                               target=_train_target(config, cfg, runtime, device, threads))
    click.echo(f"test: top1 {r.test['top1']:.4f}  f1 {r.test['f1_macro']:.4f}  recall {r.test['recall_macro']:.4f}  "
               f"precision {r.test['precision_macro']:.4f}  params {r.params_exported / 1e6:.2f} M  "
               f"latency {r.latency['median_ms']:.2f} ms on {r.latency.get('target', '?')}  "
               f"{macro_note(r.test, splits.classes)}".rstrip())
    click.echo(f"wrote {out}/model.safetensors, {out}/result.json")


def _train_target(config: str, cfg, runtime, device, threads):
    """``train``'s latency target: ``--runtime`` on this device, else a pinned best.yaml's
    deployment target (at fp32: an int8 model is made by ``export``), else None (auto)."""
    from dataclasses import replace

    from .latency import target_for

    if runtime is not None:
        from .device import resolve_device

        return target_for(cfg.model.img_size, resolve_device(device), threads, runtime)
    if config.endswith((".yaml", ".yml")) and os.path.isfile(config):
        import yaml

        from .release import pinned_target

        doc = yaml.safe_load(Path(config).read_text()) or {}
        t = pinned_target(doc) if isinstance(doc, dict) and "config" in doc else None
        if t is not None:
            return replace(t, precision="fp32", threads=threads or t.threads)
    return None


@main.command("eval")
@click.argument("model_path")
@data_option
@data_options
@device_option()
@runtime_option(EVAL_RUNTIMES, help="For an .onnx: onnxruntime or openvino (CPU); default: the runtime an int8 "
                                    "model was made for, else onnxruntime. A .safetensors runs on torch.")
@click.option("--latency/--no-latency", "timed", default=True, show_default=True,
              help="Also time the file on its runtime here (batch 1), naming the target.")
@threads_option("CPU threads for the latency.")
def eval_cmd(model_path, data, data_options, device, runtime, timed, threads):
    """Evaluate an exported model (.safetensors, .onnx, or a run directory) on a dataset."""
    import json

    from .deploy import evaluate_exported
    from .metrics import macro_note

    ev = evaluate_exported(model_path, data, data_options, device, runtime)
    click.echo(f"classes: {', '.join(ev.classes)}" + (
        "" if ev.mapped is None else f" (mapped by name: the model's outputs {ev.mapped} in this order)"))
    for name, m in ev.metrics.items():
        auc = "" if m.get("auc") is None else f"  auc {m['auc']:.4f}"
        click.echo(f"{name}: top1 {m['top1']:.4f}  f1 {m['f1_macro']:.4f}  recall {m['recall_macro']:.4f}  "
                   f"precision {m['precision_macro']:.4f}{auc}  (n={m['n']}) {macro_note(m, ev.splits.classes)}".rstrip())
    if timed:
        from .device import resolve_device

        lat = ev.latency(threads, str(resolve_device(device)))
        click.echo(f"latency {lat['median_ms']:.3f} ms on {lat['target']} (unanchored, this machine: "
                   f"{lat['device_name']})")
    click.echo(json.dumps({k: {kk: v for kk, v in m.items() if kk != "confusion"} for k, m in ev.metrics.items()}))


@main.command("export")
@click.argument("run_dir")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="safetensors", show_default=True,
              help="onnx: dynamic batch axis, checked against PyTorch with onnxruntime on export.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="int8: post-training quantization for --runtime, calibrated on train images of --data (ONNX).")
@runtime_option(QUANTIZABLE, "onnxruntime",
                help="int8 only: the runtime the int8 model is made for (each wants its own int8 graph).")
@data_option
@data_options
@click.option("--calibration-images", type=int, default=CALIBRATION_IMAGES, show_default=True,
              help="int8 only: train images the activation ranges are observed on.")
@click.option("--out", "out", default=None,
              help="Output file (default RUN_DIR/model.safetensors, model.onnx or model.int8.RUNTIME.onnx).")
def export_cmd(run_dir, fmt, precision, runtime, data, data_options, calibration_images, out):
    """Export a training checkpoint: keep selected blocks, merge LoRA, fuse BN; optionally int8."""
    from .deploy import exported_run, save_model
    from .models import count_params
    from .outputs import check_output, default_output

    check_output(out or Path(run_dir), "the exported model")  # before the export (and an int8 calibration)
    if precision == "int8":
        from .deploy import export_int8

        if fmt != "onnx":
            raise click.UsageError("--precision int8 writes ONNX: add --format onnx")
        out = out or default_output(Path(run_dir) / f"model.int8.{runtime}.onnx", "export")
        dest, q8, fp32 = export_int8(run_dir, data, data_options, runtime, calibration_images, out)
        click.echo(f"int8 for {runtime} ({q8.calibration_images} calibration images): val top1 {q8.val['top1']:.4f} "
                   f"(fp32 {fp32['top1']:.4f}, change {q8.val['top1'] - fp32['top1']:+.4f}), "
                   f"test top1 {q8.test['top1']:.4f}")
        click.echo(f"exported int8 -> {dest}")
        return
    run = exported_run(run_dir)
    name = "model.onnx" if fmt == "onnx" else "model.safetensors"
    dest, check = save_model(run, fmt, out or default_output(Path(run_dir) / name, "export"))
    if check is not None:
        from .models.onnx import TOLERANCE

        click.echo(f"checked with onnxruntime against PyTorch: max abs difference {check.max_abs:.2e}, "
                   f"max relative {check.max_rel:.2e} (allowed {TOLERANCE:g})")
    if run.classes:
        click.echo(f"classes (output order): {', '.join(run.classes)}")
    click.echo(f"exported {count_params(run.model) / 1e6:.3f} M params -> {dest}")


def _bench_config(**v):
    from .bench import BenchConfig

    v["models"] = v["models"].split(",") if v["models"] else []
    from .bench import BOTH

    v["runtimes"] = v["runtimes"].split(",") if v["runtimes"] else [BOTH]
    return BenchConfig(**v)


@main.command()
@grouped(
    "cfg", _bench_config,
    (("--device",), "device", DEVICE),
    (("--batch",), "batch", dict(type=int, default=1, show_default=True)),
    (("--img-size",), "img_size", dict(type=int, default=224, show_default=True)),
    (("--num-classes",), "num_classes", dict(type=int, default=9, show_default=True)),
    (("--runs",), "runs", dict(type=int, default=20, show_default=True, help="Timed runs per model per round.")),
    (("--rounds",), "rounds", dict(type=int, default=5, show_default=True, help="Interleaved passes over all models.")),
    (("--warmup",), "warmup", dict(type=int, default=10, show_default=True)),
    (("--min-time",), "min_time_s", dict(type=float, default=1.0, show_default=True,
                                          help="Seconds timed per model per round, at least (the anchor "
                                               "calibrates over 3x).")),
    (("--threads",), "threads", threads_settings("CPU threads (recorded).")),
    (("--cuda-graph",), "cuda_graph", dict(is_flag=True, help="Replay a captured CUDA graph (GPU only).")),
    (("--models",), "models", dict(default=None, help="Comma-separated subset (default: all rows); a .yaml "
                                                       "is a HoViT run config, e.g. a pinned best.yaml.")),
    (("--runtime", "--runtimes"), "runtimes", dict(default=None,
                                                   help="Comma-separated: torch, onnxruntime, openvino (CPU; "
                                                        "pip install 'hovit-nas[openvino]'), auto (onnxruntime on "
                                                        "CPU, torch on GPU). Default: torch and onnxruntime, where "
                                                        "it runs (--runtimes is an alias).")),
    (("--anchor/--no-anchor",), "anchor", dict(default=True, show_default=True,
                                               help="Time every model alternately with an exported HoViT-B.")),
)
@data_option
@data_options
@click.option("--epochs", type=int, default=None, help="With --data: epochs to train each model.")
@click.option("--max-steps", type=int, default=None)
@click.option("--out", "out", default=None,
              help="Folder for bench.json and bench.csv (default: a new runs/bench-DATE-TIME).")
def bench(cfg, data, data_options, epochs, max_steps, out):
    """The paper's Table 1 structure: params, latency, ratio to efficientnet_b0 (+ accuracy with --data)."""
    from .bench import format_table, run_bench, trainer_for, write_report
    from .outputs import check_output, run_folder

    if out:
        check_output(out, "the bench report", metavar="DIR")  # before the timing, not after it
    trainer = None
    if data is not None:
        trainer, cfg.num_classes = trainer_for(cfg, data, data_options, epochs or 2, max_steps)
    _log.info(f"bench: {cfg.img_size} px, batch {cfg.batch}, device {cfg.device}")
    report = run_bench(cfg, trainer)
    report["command"] = "hovit-nas " + " ".join(sys.argv[1:])
    click.echo(format_table(report))
    js, cs = write_report(report, out or run_folder("bench"))
    click.echo(f"wrote {js} and {cs}")


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _limits(**v):
    from .config import Limits

    return Limits(**v)


def _ray_config(**v):
    from .config import RayConfig

    return RayConfig(**v)


def ray_options(*extra: tuple) -> Callable:
    """Where Ray runs trials, as one ``RayConfig`` argument named ``ray``."""
    return grouped(
        "ray", _ray_config,
    (("--ray-address",), "address", dict(default=None, help="auto | ray://host:10001 (default: start a local Ray).")),
    (("--cpus-per-trial",), "cpus_per_trial", dict(type=float, default=1.0, show_default=True)),
    (("--gpus-per-trial",), "gpus_per_trial", dict(type=float, default=0.0, show_default=True)),
        (("--max-concurrent",), "max_concurrent", dict(type=int, default=None, help="Trials at once on Ray.")),
        *extra)


@main.command()
@click.option("--space", default="hovit", show_default=True, help="Space name (search_spaces/NAME.yaml) or file.")
@data_option
@data_options
@click.option("--study", "study", default=None, help="Study name (default: the space's; '<space>-builtin' "
                                                          "on the built-in data). An existing study is resumed.")
@click.option("--storage", default=None, envvar="HOVIT_NAS_STORAGE", show_envvar=True,
              help="SQLAlchemy URL (default sqlite:///studies/<study>/study.db).")
@click.option("--trials", type=int, default=None, help="Finished trials wanted in the study, in total (>= 1).")
@click.option("--timeout", type=float, default=None, help="Stop starting trials after S seconds.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default="nsga2", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option()
@threads_option("CPU threads per trial.")
@click.option("--metric", type=click.Choice(METRICS), default="top1", show_default=True)
@grouped(
    "limits", _limits,
    (("--max-latency",), "max_latency_ms", dict(type=float, default=None,
                                                help="Constraint: latency (ms) of the exported model.")),
    (("--max-params",), "max_params_m", dict(type=float, default=None, help="Constraint: exported params (millions).")),
)
@click.option("--latency-batch", type=int, default=None, help="Batch size of the latency objective (space default 1).")
@click.option("--latency-anchor/--no-latency-anchor", default=None,
              help="Time each candidate alternately with HoViT-B, cancelling machine drift (space default: on).")
@runtime_option(RUNTIMES, alias=True, help="Where latency is timed: onnxruntime, torch (eager), openvino (CPU), or "
                                           "auto = onnxruntime on CPU, torch on CUDA (space default: auto). A study "
                                           "keeps its runtime.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Deployment precision: fp32, or int8 = post-training quantization for the runtime "
                   "(onnxruntime or openvino, CPU), calibrated on train images; the accuracy objective is then the "
                   "int8 model's (space default: fp32). A study keeps its precision.")
@click.option("--latency-at", "latency_at", default=None, metavar="URL",
              help="Time every trial on a latency service (hovit-nas latency-serve on the deployment machine; "
                   "token in $HOVIT_NAS_LATENCY_TOKEN): its runtime, precision, threads and batch are the target.")
@click.option("--latency-wait", "latency_wait_s", type=float, default=LATENCY_WAIT_S, show_default=True,
              help="Seconds a trial waits for an unreachable or busy latency service before it fails.")
@click.option("--predictor", default=None, metavar="PROFILE",
              help="With --max-latency: a profile-target profile of this target; a trial whose predicted latency is "
                   "over the limit by more than the predictor's held-out error is neither measured nor trained.")
@click.option("--evaluator", type=click.Choice(evaluators.known()), default="train", show_default=True,
              help="How a trial gets its accuracy: train (stand-alone, both phases) or supernet (inherited weights "
                   "from --supernet, BatchNorm recalibrated; nothing trained).")
@click.option("--supernet", default=None, metavar="DIR", help="With --evaluator supernet: `supernet train`'s --out.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True)
@ray_options(
    (("--asha-accuracy-only", "--asha"), "asha",
     dict(is_flag=True, help="Ray only: Ray Tune's ASHA scheduler, which ranks by validation accuracy ALONE "
                             "(latency ignored, so it favours slow, accurate models); stopped trials are PRUNED. "
                             "--early-stop pareto also weighs latency.")),
)
@click.option("--early-stop", type=click.Choice(EARLY_STOP_RULES), default=None,
              help="Successive halving, both executors: at rungs (epochs r, r*eta, ...) a trial continues only in "
                   "the top 1/eta of the trials that reached the rung, ranked by (val top1, latency) [pareto] or "
                   "val top1 alone [accuracy]; stopped trials are PRUNED. Default: the study's, else the space's "
                   "(none).")
@click.option("--rung-min-epochs", type=int, default=None, help="First rung r, in epochs (space default 1).")
@click.option("--rung-eta", type=int, default=None, help="Reduction factor eta between rungs (space default 3).")
def search(**options):
    """Multi-objective search (accuracy up, latency down); HoViT-B is always the first trial."""
    from .config import SearchConfig
    from .search import run_search

    _quiet_optuna()
    run_search(SearchConfig(**options))  # every option is a SearchConfig field of the same name


@main.command()
@click.option("--study", "study_name", default=None, help="The search's study (default: the only one under ./studies).")
@click.option("--storage", default=None, envvar="HOVIT_NAS_STORAGE", show_envvar=True,
              help="SQLAlchemy URL of the study storage.")
@data_option
@data_options
@click.option("--top-k", type=int, default=4, show_default=True, help="Front candidates to retrain (by val score).")
@click.option("--seeds", type=int, default=3, show_default=True, help="Further seeds per candidate (>= 2).")
@device_option()
@threads_option("CPU threads per run.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True)
@ray_options()
def confirm(study_name, storage, data, data_options, top_k, seeds, device, threads, executor, ray):
    """Retrain the top-k front trials and HoViT-B over further seeds (study <study>-confirm), so
    that `pin` chooses on confirmed figures. Re-running resumes."""
    from . import study as st
    from .confirm import ConfirmConfig, confirmed, format_table, run_confirm
    from .pareto import pin_command

    _quiet_optuna()
    name, url = st.resolve_study(study_name, storage)
    cfg = ConfirmConfig(study=name, storage=st.absolute_url(url), data=data, data_options=data_options, top_k=top_k,
                        seeds=seeds, device=device, threads=threads, executor=executor, ray=ray)
    run_confirm(cfg)
    parent = st.load(name, url)
    click.echo(format_table(confirmed(parent), parent.user_attrs.get("metric", "top1")))
    click.echo(f"next: {pin_command(name, url)}")


def _study_opts(fn):
    fn = click.option("--storage", default=None, envvar="HOVIT_NAS_STORAGE", show_envvar=True,
                      help="SQLAlchemy URL of the study storage.")(fn)
    return click.option("--study", "study_name", default=None, help="Study name (default: the only one under ./studies).")(fn)


@main.command()
@_study_opts
@click.option("--out", "out", default=None, help="HTML plot path (default: pareto.html next to the study; a new "
                                                   "runs/pareto-STUDY-DATE-TIME/ where git tracks that file).")
@click.option("--baselines/--no-baselines", default=True, show_default=True,
              help="Time EfficientNet-B0 and LeViT-128S on the study's deployment target (once; kept with the "
                   "study) and overlay them; HoViT-B is the study's fixed point.")
@click.option("--bench", "bench_json", default=None,
              help="Baselines from a `hovit-nas bench` JSON instead (used when it was measured on the study's "
                   "device, batch, resolution, threads and runtime).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--noise/--no-noise", default=True, show_default=True,
              help="Intervals, the noise-aware front and HoViT-B's standing beyond noise (--no-noise: the plain "
                   "point front only).")
def pareto(study_name, storage, out, baselines, bench_json, as_json, noise):
    """Print the Pareto front and hypervolume; write a plotly HTML."""
    import json

    from . import pareto as pa
    from . import study as st
    from .outputs import check_output, default_output, unwritable

    _quiet_optuna()
    name, url = st.resolve_study(study_name, storage)
    html = (check_output(out, "the HTML plot") if out
            else default_output(st.study_dir(name, url) / "pareto.html", f"pareto-{name}"))
    not_written = unwritable(html)  # next to a study on a read-only share: the report is still printed
    with st.storage_errors(url):
        study = st.load(name, url)
        rep = pa.summarise(study)
        bench = pa.load_bench(bench_json, rep)
        if bench is None and baselines:
            from .bench import baselines_on_target

            bench = baselines_on_target(study)
    path = None if not_written else pa.plot(rep, html, bench, noise)
    if as_json:
        shown = {k: v for k, v in rep.items() if k != "all"}
        shown["confirmed"] = {n: c.to_dict() for n, c in rep["confirmed"].items()}
        click.echo(json.dumps({**shown, "baselines": bench}, indent=2))
    else:
        click.echo(pa.format_report(rep, noise))
        click.echo(pa.format_baselines(bench))
    if path is None:
        _log.warning(f"the HTML plot was not written: {not_written}; pass --out FILE to write it elsewhere")
    else:
        click.echo(f"wrote {path}")
    if not as_json:
        click.echo("\n".join(pa.next_steps(study, url)))


@main.command()
@_study_opts
@click.option("--max-latency", type=float, default=None, help="Most accurate front trial under this latency (ms).")
@click.option("--knee", is_flag=True, help="The knee of the front.")
@click.option("--non-inferior-to", "non_inferior_to", default=None, metavar="REF",
              help="The fastest candidate whose one-sided 95 % lower bound of (score - REF's) is above -MARGIN: REF is "
                   "hovit_b (the fixed point) or a trial number; paired on the same images (and seeds, once confirmed).")
@click.option("--margin", type=float, default=None,
              help="The non-inferiority margin in the score's units (0.01 = 1 point; default: the space's noise.margin).")
@click.option("--trial", "trial", type=int, default=None, help="Write this completed trial instead (any, not only the front).")
@click.option("--out", "out", default=None, help="Default: best.yaml (or trial-N.yaml) next to the study; a new "
                                                   "runs/pin-STUDY-DATE-TIME/ where git tracks that file.")
def pin(study_name, storage, max_latency, knee, non_inferior_to, margin, trial, out):
    """Choose one config and write best.yaml next to the study. Default rule: the one-standard-error
    rule (the fastest candidate within one SE of the best); --non-inferior-to, --max-latency, --knee
    or --trial choose otherwise."""
    from . import pareto as pa
    from . import study as st
    from .errors import HovitError
    from .outputs import default_output

    if sum(x is not None and x is not False for x in (max_latency, trial, knee or None, non_inferior_to)) > 1:
        raise HovitError("choose one of --knee, --max-latency, --non-inferior-to and --trial")
    if margin is not None and non_inferior_to is None:
        raise HovitError("--margin goes with --non-inferior-to REF")
    if margin is not None and not margin > 0:
        raise HovitError(f"--margin must be > 0, got {margin}")
    from .outputs import check_output

    _quiet_optuna()
    name, url = st.resolve_study(study_name, storage)
    one_se = max_latency is None and trial is None and not knee and non_inferior_to is None
    with st.storage_errors(url):
        study = st.load(name, url)
        out = out or default_output(st.study_dir(name, url) / ("best.yaml" if trial is None else f"trial-{trial}.yaml"),
                                    f"pin-{name}")
        dest = check_output(out, "the pinned config")
        path, doc = pa.pin(study, url, dest, max_latency, knee, trial, non_inferior_to, margin, one_se)
    o = doc["objectives"]
    click.echo(f"pinned trial {doc['trial']} ({doc['chosen_by']}): " + ", ".join(f"{k} {v:.4f}" for k, v in o.items())
               + f", {doc['params'] / 1e6:.2f} M params -> {path}")
    ev = (doc.get("evidence") or {}).get("picked")
    if ev and "lower_95_one_sided" in ev:
        click.echo(f"evidence: difference to trial {doc['evidence']['reference']} {ev['difference']:+.4f} (SE "
                   f"{ev['se']:.4f}, {ev['seeds']} seed(s)); one-sided 95 % lower bound {ev['lower_95_one_sided']:+.4f} "
                   f"> -{doc['evidence']['margin']:g}; {ev['latency_ms']:.2f} ms")
    c = doc["confirmation"]
    if doc["confirmed"]:
        vs = c["val_minus_fixed_point"]
        click.echo(f"confirmed over {c['n']} seeds: val {c['val']['mean']:.4f} ± {c['val']['sd']:.4f}, test "
                   f"{c['test']['mean']:.4f} ± {c['test']['sd']:.4f}" + (
                       "" if vs is None else f"; val − HoViT-B {vs['mean']:+.4f} (95 % interval "
                                             f"{vs['ci95'][0]:+.4f} .. {vs['ci95'][1]:+.4f})"))
    else:
        click.echo("UNCONFIRMED: chosen on one seed's validation score; "
                   f"`{pa.confirm_command(study, url)}` retrains the top candidates and HoViT-B over more seeds")
    click.echo(f"reproduce: {pa.reproduce_command(study, path, doc)}")
    int8 = pa.int8_command(study, doc)
    if int8:  # the study's deployed model is int8: the same quantization after training
        click.echo(f"then int8, as the study did: {int8}")
    click.echo("\n".join(pa.deploy_steps(study, url, path, doc)))


@main.command()
@_study_opts
@click.option("--best", default=None, help="The pinned config (default: best.yaml next to the study).")
@data_option
@data_options
@click.option("--out", "out", default=None, help="Run directory (default runs/<config name>).")
@device_option()
@threads_option("CPU threads for training.")
def deploy(study_name, storage, best, data, data_options, out, device, threads):
    """From a pinned config to a deployable file: retrain, export for the study's deployment target
    (runtime, precision), eval that file, time it, and check both against what the study recorded."""
    import json

    from . import study as st
    from .release import deploy as run

    _quiet_optuna()
    name, url = st.resolve_study(study_name, storage)
    with st.storage_errors(url):
        study = st.load(name, url)
    best = best or str(st.study_dir(name, url) / "best.yaml")
    if data is None:  # the study's own data and split options
        recorded = st.recorded_data_args(study.user_attrs)
        if recorded is None:
            from .errors import HovitError

            raise HovitError(f"study {name!r} does not record its data options: pass `--data` (and its split options)")
        data, rec_opts = st.data_of(recorded)
        rec_opts.cache_dir = data_options.cache_dir
        data_options = rec_opts
    d = run(best, data, data_options, study=study, out=out, device=device, threads=threads)
    click.echo(f"classes (output order): {', '.join(d.classes)}")
    auc = lambda m: "" if m.get("auc") is None else f"  auc {m['auc']:.4f}"
    click.echo(f"deployed file: val top1 {d.val['top1']:.4f}{auc(d.val)}, test top1 {d.test['top1']:.4f}"
               f"{auc(d.test)}; latency {d.latency['median_ms']:.3f} ms on {d.target}")
    for c in d.checks:
        diff = f"x{c['difference']:.3f}" if c["what"].startswith("latency") else f"{c['difference']:+.4f}"
        click.echo(f"check {c['what']}: study {c['study']:.4f}, deployed {c['deployed']:.4f} ({diff}; 95 % noise "
                   f"{c['noise_95']:.4f}, {c['how']}): {c['verdict']}")
    (d.run_dir / "deploy.json").write_text(json.dumps(d.to_dict(), indent=1))
    click.echo(f"wrote {d.model_file} (deployable) and {d.run_dir / 'deploy.json'}")


@main.command("check-budget")
@click.option("--space", default="hovit", show_default=True, help="Space name or file.")
@data_option
@data_options
@click.option("--seeds", type=int, default=2, show_default=True, help="Training seeds per architecture (>= 2).")
@click.option("--metric", type=click.Choice(METRICS), default="top1", show_default=True)
@device_option()
@threads_option("CPU threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def check_budget(space, data, data_options, seeds, metric, device, threads, as_json):
    """Before a long search: can its budget tell architectures apart? Trains the space's smallest,
    HoViT-B and its largest over --seeds seeds and says whether their differences are beyond noise."""
    import json

    from .budget import check_budget as run, format_check

    c = run(space, data, data_options, seeds=seeds, metric=metric, device=device, threads=threads)
    click.echo(json.dumps(c.to_dict(), indent=1) if as_json else format_check(c))


@main.command("latency-serve")
@runtime_option(QUANTIZABLE, "onnxruntime", help="Where models are timed (the CPU).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="int8: each model is post-training quantized for the runtime on arrival.")
@threads_option("CPU threads per measurement.", default=1)
@click.option("--batch", type=int, default=1, show_default=True, help="Images per timed forward.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", type=int, default=8765, show_default=True)
@click.option("--max-upload-mb", type=float, default=256.0, show_default=True, help="Largest model file accepted.")
@click.option("--queue", type=int, default=8, show_default=True, help="Requests that may wait for the one slot.")
@click.option("--queue-timeout", "queue_timeout_s", type=float, default=600.0, show_default=True,
              help="Seconds a request may wait for the slot.")
def latency_serve(**options):
    """Time uploaded models on this machine for searches elsewhere (token: $HOVIT_NAS_LATENCY_TOKEN)."""
    from .service import ServiceConfig, serve

    serve(ServiceConfig(**options).validate())


@main.command("profile-target")
@click.option("--space", default="hovit-wide-cpu", show_default=True,
              help="Space to draw architectures from (its resolution and latency protocol).")
@click.option("--n", "n", type=int, default=100, show_default=True, help="Architectures, stratified by FLOPs.")
@runtime_option(RUNTIMES, "onnxruntime")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
@threads_option("CPU threads (default: the space's latency threads, else 1).")
@click.option("--latency-batch", "batch", type=int, default=None, help="Images per timed forward (space default).")
@click.option("--latency-at", "latency_at", default=None, metavar="URL",
              help="Measure on a latency service instead (its runtime, precision, threads and batch).")
@click.option("--rounds", type=int, default=2, show_default=True, help="Interleaved measurements per architecture.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", "out", default=None, help="Profile JSON (default profiles/SPACE-RUNTIME-PRECISION.json).")
def profile_target(space, n, runtime, precision, threads, batch, latency_at, rounds, seed, out):
    """Measure N architectures on a deployment target, for its latency predictor (search --predictor)."""
    from .predictor import Fit, sweep

    path, prof = sweep(space, n, runtime=runtime, precision=precision, threads=threads, batch=batch,
                       latency_at=latency_at, rounds=rounds, seed=seed, out=out)
    click.echo(f"profile of {len(prof.points)} architectures on {prof.target['name']} ({prof.cpu}): {path}")
    for what, fig in (("held-out predictor (5-fold)", prof.fit), ("one round against the other", prof.repeat)):
        if fig:
            click.echo(f"  {what}: {Fit(**fig).line()}")


@main.group()
def supernet():
    """Train once, rank many: a weight-sharing HoViT supernet over a space (issue 21)."""


@supernet.command("train")
@click.option("--space", default="hovit-wide-cpu", show_default=True, help="Space name or file.")
@data_option
@data_options
@click.option("--epochs", type=int, default=None, help="Epochs (default: the space's dense + pruning epochs).")
@click.option("--sandwich-k", type=int, default=2, show_default=True,
              help="Random subnets per step besides the largest and the smallest (the sandwich rule).")
@click.option("--distill/--no-distill", default=True, show_default=True,
              help="In-place distillation: the largest subnet's predictions teach the others.")
@click.option("--max-steps", type=int, default=None, help="Cap steps per epoch.")
@device_option()
@threads_option()
@click.option("--out", "out", default=None, help="Supernet directory (default supernets/SPACE).")
@click.option("--resume", is_flag=True, help="Continue from OUT/supernet.pt.")
def supernet_train(space, data, data_options, epochs, sandwich_k, distill, max_steps, device, threads, out, resume):
    """Train a supernet with the sandwich rule and in-place distillation."""
    from .supernet import SupernetConfig, run_supernet_train

    dest, rec = run_supernet_train(space, data, data_options, SupernetConfig(epochs, sandwich_k, distill),
                                   device=device, threads=threads, max_steps=max_steps, out=out, resume=resume)
    last = rec["history"][-1] if rec["history"] else {}
    click.echo(f"supernet {rec['id']} ({rec['params'] / 1e6:.1f} M shared params) over {rec['space']}: val top1 "
               f"{last.get('val_top1_largest', float('nan')):.4f} largest, {last.get('val_top1_smallest', float('nan')):.4f} "
               f"smallest subnet; wrote {dest}/supernet.pt, {dest}/supernet.json")


@supernet.command("sweep")
@click.option("--supernet", "supernet_dir", required=True, metavar="DIR", help="`supernet train`'s --out.")
@click.option("--profile", required=True, metavar="FILE",
              help="A `profile-target` profile of the deployment target, measured on this machine.")
@data_option
@data_options
@click.option("--subnets", "n", type=int, default=1000, show_default=True, help="Distinct subnets to draw.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--bn-images", type=int, default=None,
              help="Training images BatchNorm is recalibrated on, per subnet (default 512, as the supernet evaluator).")
@click.option("--val-images", type=int, default=None,
              help="Estimate on this many val images (a fixed draw; default all): faster, at a larger standard error.")
@click.option("--workers", type=int, default=None,
              help="On the CPU: estimating processes of one thread each (default: one per core).")
@device_option()
@click.option("--out", "out", default=None, help="Sweep directory (default sweeps/<supernet id>).")
def supernet_sweep(supernet_dir, profile, data, data_options, n, seed, bn_images, val_images, workers, device, out):
    """Estimate many subnets; time only those the latency predictor cannot rule off the front."""
    import shlex

    from .config import DataSpec
    from .study import data_args
    from .sweep import run_sweep

    dest, sw = run_sweep(supernet_dir, profile, data, data_options, n=n, seed=seed, device=device,
                         bn_images=bn_images, val_images=val_images, workers=workers, out=out,
                         command=shlex.join(["hovit-nas", *sys.argv[1:]]))
    sec = sw.seconds
    click.echo(f"swept {len(sw.subnets)} subnets of supernet {sw.supernet} in {sec['total']:.0f} s (estimates "
               f"{sec['estimate']:.0f} s, timing {sec['measure']:.0f} s): timed {sw.measured} "
               f"(rounds: {', '.join(map(str, sw.rounds))}) on {sw.target['name']}")
    click.echo(f"front: {len(sw.front)} subnets, every one timed (val top-1 is the supernet's estimate, ±1.96 SE)")
    for s in sw.front:
        click.echo(f"  {s.name}  {s.measured_ms:8.3f} ms  val top-1 {s.val_top1:.4f} ± {1.96 * s.val_se:.4f}")
    best = max(sw.front, key=lambda s: s.val_top1)
    extract = ["hovit-nas", "supernet", "extract", "--supernet", str(supernet_dir), "--config",
               str(dest / "front" / f"{best.name}.yaml"), *data_args(DataSpec.of(data, 0, options=data_options))]
    click.echo(f"wrote {dest}/sweep.json, {dest}/sweep.html and {dest}/front/*.yaml")
    click.echo(f"the most accurate front member as a run: {shlex.join(extract)}")


@supernet.command("extract")
@click.option("--supernet", "supernet_dir", required=True, metavar="DIR", help="`supernet train`'s --out.")
@click.option("--config", "config", required=True, help="The subnet: a run config YAML (e.g. `pin`'s best.yaml).")
@data_option
@data_options
@click.option("--finetune", type=int, default=0, show_default=True, help="Epochs of fine-tuning after extraction.")
@device_option()
@click.option("--out", "out", default=None, help="Run directory (default runs/<supernet id>-<config name>).")
def supernet_extract(supernet_dir, config, data, data_options, finetune, device, out):
    """A subnet with inherited weights (BN recalibrated, optionally fine-tuned) as a run directory."""
    from .supernet import extract_run

    dest, r = extract_run(supernet_dir, resolve_config(config), data, data_options, finetune=finetune,
                          device=device, out=out)
    click.echo(f"val top1 {r.val['top1']:.4f}  test top1 {r.test['top1']:.4f}  params {r.params_exported / 1e6:.2f} M  "
               f"latency {r.latency['median_ms']:.2f} ms; wrote {dest} (export, eval and bench accept it)")

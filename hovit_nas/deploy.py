"""What happens to a trained model: export (safetensors, ONNX), int8, and the evaluation of an
exported file -- each with the provenance that ties it to its data (provenance.py).

- :func:`exported_run`: a run directory's last checkpoint as the deployable model (kept blocks,
  LoRA merged, BN fused), with the run's class names and provenance;
- :func:`save_model`: that model as ``.safetensors`` or ``.onnx``, the class names and
  provenance in the file's metadata;
- :func:`quantize_int8` / :func:`export_int8`: post-training int8 for ONNX Runtime or OpenVINO;
- :func:`evaluate_exported` (``hovit-nas eval``): a model file scored on a dataset, on the
  splits it was made with when it is that dataset, with its classes matched by name.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from . import provenance as pv
from . import runtimes
from .config import CALIBRATION_IMAGES, RunConfig, run_config_from_dict
from .data import Splits, check_num_classes
from .device import NO_GUARD, DeviceGuard, resolve_device
from .errors import ConfigError, HovitError
from .models import create_hovit, export
from .train import CHECKPOINT, _phases, _prepare_phase, _read_checkpoint, evaluate, metrics_of, predict

if TYPE_CHECKING:
    from .config import DataOptions

_log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ export
@dataclass
class ExportedRun:
    """A run directory's deployable model and what it was made from."""

    config: RunConfig
    model: nn.Module  # the exported HoViT
    provenance: Optional[pv.Provenance]  # None: a run from before provenance was recorded
    classes: Optional[list]  # class names in output order (None: not recorded)


def exported_run(run_dir: str | Path) -> ExportedRun:
    """The deployable model of a run directory's last checkpoint, with its provenance.

    Raises:
        HovitError: not a run directory, or an unreadable checkpoint."""
    run = Path(run_dir)
    if not (run / CHECKPOINT).is_file():
        raise HovitError(f"{run}: not a run directory (no {CHECKPOINT})")
    state = _read_checkpoint(run / CHECKPOINT)
    import yaml

    cfg = run_config_from_dict(yaml.safe_load(state.config), f"{run / CHECKPOINT}:config")
    model = create_hovit(cfg)
    _prepare_phase(model, cfg, _phases(cfg)[state.phase_idx][0])
    model.load_state_dict(state.model)
    prov = pv.read(run)
    result = run / "result.json"
    classes = json.loads(result.read_text()).get("classes") if result.is_file() else None
    if prov is None:
        pv.legacy(f"run {run}")
    return ExportedRun(cfg, export(model), prov, classes or (list(prov.data.classes) if prov and prov.data else None))


def export_checkpoint(run_dir: str | Path) -> nn.Module:
    """The deployable model of a run directory's last checkpoint (kept blocks, LoRA merged, BN fused)."""
    return exported_run(run_dir).model


def save_model(run: ExportedRun, fmt: str, out: str | Path) -> tuple[Path, Optional[object]]:
    """``run``'s model as ``fmt`` (``safetensors`` or ``onnx``, checked against PyTorch with
    onnxruntime) at ``out``, with its class names and provenance (kind ``model``) in the
    metadata. Returns the path and the ONNX check (None for safetensors)."""
    from .models import save_exported
    from .models.onnx import save_onnx

    prov = run.provenance.with_(kind="model") if run.provenance is not None else None
    if fmt == "onnx":
        return save_onnx(run.model, out, prov, run.classes)
    return save_exported(run.model, out, provenance=prov, classes=run.classes), None


# -------------------------------------------------------------------------------------- int8
@dataclass
class Int8:
    """A trained, exported model post-training quantized for a runtime, and its scores."""

    model: bytes  # ONNX, with the export's metadata (models/quantize.quantize)
    runtime: str  # onnxruntime | openvino: what it was quantized for, and scored on
    val: dict  # metrics.classification_metrics of the int8 model
    test: dict
    calibration_images: int
    seconds: float  # calibration, quantization and scoring
    scores: Optional[dict] = None  # per split, the int8 model's class probabilities (N, K) float16

    def record(self) -> dict:
        """What a trial or run keeps of it (not the model)."""
        from .models.quantize import TOOLS

        return {"runtime": self.runtime, "tool": TOOLS[self.runtime],
                "calibration_images": self.calibration_images, "s": self.seconds}


def quantize_int8(deployed: nn.Module, splits: Splits, runtime: str, calibration_images: int = CALIBRATION_IMAGES,
                  seed: int = 0, threads: Optional[int] = None, guard: DeviceGuard = NO_GUARD,
                  provenance: Optional[pv.Provenance] = None) -> Int8:
    """Post-training int8 quantization of an exported model for ``runtime``, calibrated on
    ``calibration_images`` train images drawn by ``seed`` (models/quantize.py), then scored on
    the val and test splits on that runtime (CPU, ``threads``). ``deployed``: an exported HoViT
    (its config, the splits' class names and ``provenance`` go into the ONNX metadata, so
    ``eval`` reads the file) or any classifier of the splits' images (a baseline).

    Raises:
        QuantizationError: the tool failed on this architecture, or the runtime cannot load its
            int8 graph.
        HovitError: the runtime is not available (NNCF or OpenVINO missing).
    """
    import numpy as np

    from .models import quantize as q
    from .models.onnx import metadata, module_of, onnx_bytes

    t0 = time.time()
    arch, cpu = getattr(deployed, "config", None), torch.device("cpu")  # a HoViT's ArchConfig; None for a baseline
    _, chans, size, _ = splits.train.images.shape
    with guard.shared():
        calibration = q.calibration_set(splits.train, calibration_images, seed)
        meta = metadata(arch, provenance, list(splits.classes)) if arch is not None else None
        fp32 = onnx_bytes(deployed, size, chans, meta)
        data = q.quantize(fp32, calibration, runtime)
        with q.loading(runtime):  # the runtime cannot compile this architecture's int8 graph
            model = module_of(data, arch, runtime, cpu, threads)
    probs = {name: predict(model, getattr(splits, name), cpu, guard) for name in ("val", "test")}
    val, test = (metrics_of(getattr(splits, n), probs[n], splits.num_classes) for n in ("val", "test"))
    return Int8(data, runtime, val, test, len(calibration), round(time.time() - t0, 2),
                {k: v.astype(np.float16) for k, v in probs.items()})


def _run_data(run: ExportedRun, data: Optional[str], options: "DataOptions") -> tuple[Splits, pv.DataRecord]:
    """The run's data, split by the rule it recorded (else as ``train`` splits: with its seed),
    at its resolution, without augmentation; and the data's provenance."""
    from .config import DataSpec
    from .data import load_data

    rule = run.provenance.data.rule if run.provenance is not None and run.provenance.data is not None else {}
    spec = DataSpec.of(data, run.model.config.img_size, int(rule.get("seed", run.config.train.seed)),
                       replace(options, augment=False))
    spec = replace(spec, **{k: rule[k] for k in ("val_frac", "test_frac") if rule.get(k) is not None})
    splits = load_data(spec)
    return splits, pv.data_record(splits, spec.img_size, pv.data_rule(spec), keep_train_ids=False)


def export_int8(run_dir: str | Path, data: Optional[str], options: "DataOptions", runtime: str,
                calibration_images: int = CALIBRATION_IMAGES, out: str | Path | None = None) -> tuple[Path, Int8, dict]:
    """``hovit-nas export --precision int8``: a run directory's exported model, post-training
    quantized for ``runtime`` with calibration images from the train split of ``data`` (split
    by the run's recorded rule, as ``train`` did; the dataset cache, no augmentation), written as
    ONNX (default ``RUN_DIR/model.int8.RUNTIME.onnx``) that ``eval`` and the runtimes read.

    Returns:
        The file, the int8 model's record and scores (``Int8``), and the fp32 model's val metrics.
    Raises:
        ProvenanceError: ``data`` is not the run's (other classes or other splits, by membership).
        HovitError: not a run directory, a class count other than the model's, the runtime
            unavailable, fewer than 1 calibration image; QuantizationError: the tool failed.
    """
    from .models.quantize import check

    check("int8", runtime, "cpu")
    if calibration_images < 1:
        raise ConfigError(f"`calibration_images` must be >= 1, got {calibration_images}")
    run = exported_run(run_dir)
    splits, now = _run_data(run, data, options)
    if run.provenance is not None:
        pv.check_same_data(run.provenance.data, now, f"run {run_dir}", "int8 calibration and scoring")
    else:  # a run from before provenance: its result's data description is all there is
        result = Path(run_dir) / "result.json"
        trained_on = json.loads(result.read_text()).get("data") if result.is_file() else None
        if trained_on and trained_on != splits.description:
            raise HovitError(f"{run_dir} was trained on {trained_on}, not {splits.description}; pass its `data` (and "
                             "split options): calibration and scores must come from its own splits")
    arch = run.model.config
    check_num_classes(splits, arch.num_classes)
    prov = run.provenance.with_(kind="model") if run.provenance is not None else None
    q8 = quantize_int8(run.model, splits, runtime, calibration_images, provenance=prov)
    fp32 = evaluate(run.model, splits.val, arch.num_classes, torch.device("cpu"))
    dest = Path(out) if out else Path(run_dir) / f"model.int8.{runtime}.onnx"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(q8.model)
    return dest, q8, fp32


# ---------------------------------------------------------------------------------- evaluate
def model_file(model_path: str | Path) -> Path:
    """The model file of ``eval MODEL``: a file, or a run directory's ``model.safetensors``."""
    p = Path(model_path)
    return p / "model.safetensors" if p.is_dir() else p


def file_provenance(path: Path) -> tuple[Optional[pv.Provenance], Optional[list]]:
    """(provenance, class names) from an exported file's metadata (either may be None: a file
    from before they were recorded).

    Raises:
        HovitError: not a hovit-nas export; ProvenanceError: an unreadable record."""
    from .models.export import CLASSES_KEY, PROVENANCE_KEY, read_safetensors_metadata
    from .models.onnx import read_metadata

    meta = read_metadata(path) if path.suffix == ".onnx" else read_safetensors_metadata(path)
    classes = json.loads(meta[CLASSES_KEY]) if meta.get(CLASSES_KEY) else None
    return pv.Provenance.from_json(meta.get(PROVENANCE_KEY)), classes


class _Reordered(nn.Module):
    """A model whose outputs are put in the data's class order: output j is the model's perm[j]."""

    def __init__(self, model: nn.Module, perm: list[int]):
        super().__init__()
        self.model, self.perm, self.config = model, perm, getattr(model, "config", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.perm]


@dataclass
class Evaluation:
    """What ``eval`` measured, and how the model was matched to the data."""

    metrics: dict  # "val" | "test" -> metrics.classification_metrics (with auc, nll)
    splits: Splits
    classes: list  # the data's class names, in the order the metrics use
    mapped: Optional[list] = None  # perm[j]: the model output read as data class j (same names, another order)
    provenance: Optional[pv.Provenance] = None  # the model's
    probs: dict = field(default_factory=dict, repr=False)  # "val" | "test" -> (N, K) class probabilities
    runtime: str = "torch"  # what it ran on
    file: Optional[Path] = None  # the model file scored

    def latency(self, threads: Optional[int] = None, device: str = "cpu") -> dict:
        """The scored file's latency on its runtime here (batch 1, ``threads`` or torch's count,
        fp32 or the file's int8), with the target's name (``target``)."""
        from .latency import measure, target_for
        from .models import load_exported
        from .models.onnx import read_metadata

        p = self.file
        onnx = p.suffix == ".onnx"
        precision = read_metadata(p).get("precision", "fp32") if onnx else "fp32"
        model = p.read_bytes() if onnx else load_exported(p, device)
        size = self.splits.train.images.shape[-1]
        t = target_for(size, "cpu" if onnx else device, threads, self.runtime)
        # an int8 file is already quantized: timed as the ONNX it is, on its runtime
        lat = measure(model, t, in_chans=self.splits.train.images.shape[1])
        name = t.name.replace("/fp32", f"/{precision}") if precision != "fp32" else t.name
        return {**lat.to_dict(), "target": name}


def evaluate_exported(model_path: str | Path, data: Optional[str], options: "DataOptions",
                      device: str = "auto", runtime: Optional[str] = None) -> Evaluation:
    """``hovit-nas eval``: an exported model (``.safetensors``, ``.onnx``, or a run directory)
    scored on the val and test splits of ``data`` (no augmentation), at the model's resolution.
    ``runtime``: for an ``.onnx``, ``onnxruntime`` or ``openvino`` (default: the runtime an int8
    model was quantized for, else onnxruntime); a ``.safetensors`` runs on torch.

    Where the model records its provenance, the data is split by the model's recorded rule (its
    split seed and fractions), so the model's own dataset is scored on its own held-out images;
    classes are matched by name (the same names in another order are mapped, and said so); and
    other data is refused when it holds the model's training images (provenance.check_scored_on).

    Raises:
        ProvenanceError: other class names, or data that holds the model's training images.
        DataError: the data's class count differs from the model's, or the data is bad.
    """
    from .config import DataSpec
    from .data import load_data
    from .models import load_exported

    p = model_file(model_path)
    prov, classes = file_provenance(p)
    if p.suffix == ".onnx":  # the session takes host arrays: batches are read on the CPU
        from .models.onnx import load_onnx, read_metadata
        model, dev = load_onnx(p, device, runtime), torch.device("cpu")
        runtime = runtime or read_metadata(p).get("quantized_for") or "onnxruntime"
    elif runtime is not None and runtimes.get(runtime).caps.exported:
        raise HovitError(f"{p}: a .safetensors model runs on torch; export it with --format onnx to run it on "
                         f"{runtime}")
    else:
        dev = resolve_device(device)
        model = load_exported(p, dev)
    made = prov.data if prov is not None else None
    rule = made.rule if made is not None else {}
    spec = DataSpec.of(data, model.config.img_size, int(rule.get("seed") or 0), replace(options, augment=False))
    spec = replace(spec, **{k: rule[k] for k in ("val_frac", "test_frac") if rule.get(k) is not None})
    splits = load_data(spec)
    what = f"model {p}"
    perm = None
    if made is not None:
        now = pv.data_record(splits, spec.img_size, pv.data_rule(spec), keep_train_ids=False)
        perm = pv.check_class_names(made, now, what)
        pv.check_scored_on(made, now, splits, what)
    else:
        pv.legacy(what)
        if classes:  # a file that names its classes but records no provenance
            stub = pv.DataRecord("?", tuple(classes), spec.img_size, {})
            perm = pv.check_class_names(stub, pv.DataRecord(splits.description, tuple(splits.classes),
                                                            spec.img_size, {}, names_are_indices=splits.description
                                                            .startswith(("MedMNIST npz", "builtin:"))), what)
    check_num_classes(splits, model.config.num_classes)
    if perm is not None:
        model = _Reordered(model, perm)
    probs = {name: predict(model, getattr(splits, name), dev) for name in ("val", "test")}
    metrics = {name: metrics_of(getattr(splits, name), probs[name], splits.num_classes) for name in probs}
    return Evaluation(metrics, splits, list(splits.classes), perm, prov, probs, runtime or "torch", p)

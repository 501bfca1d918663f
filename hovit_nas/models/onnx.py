"""Thin glue over torch.onnx and onnxruntime: the deployable model as ONNX, checked on export.

Many users deploy with ONNX Runtime, where the latency ranking across model families differs
from PyTorch eager (depthwise convolutions are cheap there). So the exported model can be
written as ONNX (dynamic batch axis, checked against PyTorch by onnxruntime on export), timed on
onnxruntime (latency.py), and evaluated from the ``.onnx`` file (``eval``).
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import ArchConfig, from_dict, to_dict
from ..errors import HovitError
from ..runtimes.onnxruntime import OnnxModel, session  # noqa: F401 (re-exported: where they lived)

FORMAT = "hovit-nas/onnx/1"
_log = logging.getLogger(__name__)
TOLERANCE = 1e-4  # max |onnx - torch| / max |torch| accepted on export


def onnx_bytes(model: nn.Module, img_size: int, in_chans: int = 3, metadata: Optional[dict] = None) -> bytes:
    """The model as ONNX (opset 18, batch axis dynamic), eval mode, on the CPU."""
    import onnx

    model = model.eval().cpu()
    x = torch.randn(2, in_chans, img_size, img_size)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=18, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=v)
    return proto.SerializeToString()


@dataclass
class OnnxCheck:
    max_abs: float
    max_rel: float  # max |onnx - torch| / max |torch|


def check(model: nn.Module, onnx_model: bytes, img_size: int, in_chans: int = 3,
          batches: tuple[int, ...] = (1, 3)) -> OnnxCheck:
    """onnxruntime against PyTorch on random inputs at several batch sizes (the batch axis is
    dynamic); a difference over TOLERANCE (relative) is an export error."""
    sess = session(onnx_model)
    model = model.eval().cpu()
    worst_abs, scale = 0.0, 0.0
    for b in batches:
        x = torch.randn(b, in_chans, img_size, img_size, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = model(x).numpy()
        out = sess.run(None, {"images": x.numpy()})[0]
        worst_abs, scale = max(worst_abs, float(np.abs(out - ref).max())), max(scale, float(np.abs(ref).max()))
    result = OnnxCheck(worst_abs, worst_abs / max(scale, 1e-12))
    if result.max_rel > TOLERANCE:
        raise HovitError(f"ONNX export differs from PyTorch by {result.max_rel:.2e} relative (max abs "
                         f"{result.max_abs:.2e}), over the {TOLERANCE:g} allowed")
    return result


def metadata(cfg: ArchConfig, provenance=None, classes: Optional[list] = None) -> dict:
    """What a hovit-nas ONNX export carries: the format tag and the architecture (``load_onnx``),
    and where known its class names in output order and its provenance (models/export.py's
    ``provenance_metadata``; an int8 model keeps them)."""
    from .export import provenance_metadata

    return {"format": FORMAT, "config": json.dumps(to_dict(cfg)), **provenance_metadata(provenance, classes)}


def save_onnx(model: nn.Module, path: str | Path, provenance=None, classes: Optional[list] = None
              ) -> tuple[Path, OnnxCheck]:
    """An exported HoViT as ``.onnx`` with its config (and class names and provenance, where
    given) in the metadata, checked on the way."""
    cfg: ArchConfig = model.config
    data = onnx_bytes(model, cfg.img_size, cfg.in_chans, metadata(cfg, provenance, classes))
    result = check(model, data, cfg.img_size, cfg.in_chans)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p, result


def read_metadata(path: Path) -> dict:
    """A hovit-nas ONNX export's metadata (``metadata``; an int8 model adds ``precision``,
    ``quantized_for`` and ``calibration_images``: models/quantize.py).

    Raises:
        HovitError: no such file, not ONNX, or not a hovit-nas export.
    """
    import onnx

    if not path.is_file():
        raise HovitError(f"{path}: no such ONNX model")
    try:
        meta = {m.key: m.value for m in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception as exc:  # any parse failure is bad input
        raise HovitError(f"{path}: not an ONNX file ({type(exc).__name__})") from None
    if meta.get("format") != FORMAT:
        raise HovitError(f"{path}: not a hovit-nas ONNX export (format {meta.get('format')!r})")
    return meta


def load_onnx(path: str | Path, device: str | torch.device = "cpu", runtime: Optional[str] = None) -> nn.Module:
    """A hovit-nas ``.onnx`` export as a module (tensors in, logits out) on ``runtime``:
    ``onnxruntime`` (``OnnxModel``) or ``openvino`` (``openvino.OpenVinoModel``, CPU only).
    None: the runtime an int8 model was quantized for, else onnxruntime; an int8 model run on
    the other runtime is logged as a warning. ``device`` ``auto``: the CPU for OpenVINO or an int8
    model, else device.resolve_device's choice.

    Raises:
        HovitError: no such file, not ONNX, not a hovit-nas export (no config in its metadata),
            or the runtime is unknown, missing or cannot run on ``device``.
    """
    p = Path(path)
    meta = read_metadata(p)
    config = from_dict(ArchConfig, json.loads(meta["config"]), "model")
    made_for = meta.get("quantized_for")
    runtime = runtime or made_for or "onnxruntime"
    if str(device) == "auto":  # int8 models, and runtimes without a GPU, run on the CPU here
        from .. import runtimes
        from ..device import resolve_device

        gpu = "cuda" in runtimes.get(runtime).caps.devices
        device = "cpu" if not gpu or made_for else resolve_device("auto")
    if made_for and made_for != runtime:
        _log.warning(f"{p}: int8 model quantized for {made_for}, run on {runtime}: its accuracy holds, but its "
                     f"int8 graph is laid out for {made_for} (models/quantize.py)")
    return module_of(p, config, runtime, device)


def module_of(model: Path | bytes, config: ArchConfig, runtime: str, device: str | torch.device = "cpu",
              threads: Optional[int] = None) -> nn.Module:
    """An ONNX model (a file or bytes) as a module on ``runtime`` (an exported runtime of the
    registry: runtimes/; e.g. ``onnxruntime`` or ``openvino``, CPU only).

    Raises:
        HovitError: the runtime is unknown, runs no ONNX model, is missing or cannot run on ``device``."""
    from .. import runtimes

    rt = runtimes.get(runtime)
    if not rt.caps.exported:
        raise HovitError(f"an .onnx model runs on {' or '.join(runtimes.exported())}, not {runtime!r}")
    rt.require()
    return rt.module(model, config, device, threads)

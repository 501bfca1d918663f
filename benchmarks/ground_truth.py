"""A ground truth that ranks (issue 33): architectures of ``hovit-wide-cpu`` trained stand-alone
at a deployment budget over several seeds on the whole PatchCamelyon set of our source
(pcam-26k: train 20,000 / valid 3,000 / test 3,000; valid and test come from different slides),
and the cheap scores a search could use, measured against it.

Setting: the packaged ``hovit-wide-cpu`` space at 64 px, its base training and pruning settings
(the ones a search trial and the supernet use), one thread per process, fp32 (this machine's CPU
has no native bf16: see ``bf16`` below). The architectures are 16 of the 30 that
``search_efficiency.py`` drew stratified by latency from the committed ONNX Runtime profile
(every other one, so they span its whole latency range), plus HoViT-B, the space's fixed point.

A budget is ``E`` epochs of ``S`` steps of 64 images, split 2:1 between the dense and the
pruning phase as the space does (an architecture without pruning trains densely throughout):

- the space's search trial: 3 epochs of 30 steps (90 steps);
- 3x that trial: 3 epochs of 90 steps (270 steps);
- the deployment budget: 3 epochs of 312 steps (936 steps, 10.4x the trial: every training
  image seen 3 times) or 6 of 312 (1,872 steps, 20.8x), chosen by the ``pilot``.

Every run keeps its per-image class probabilities on valid and test (float16, in
``scores/RUN.npz``, with the split's labels once in ``labels.npz``), so any two runs compare
paired on the same images, and any score (top-1, AUC, NLL) can be recomputed.

Stages (each resumable: a finished run is a row of ``runs.jsonl`` and is skipped; an interrupted
one resumes from its last epoch's checkpoint; several workers may share one job list, each
claims a run before it starts it):

- ``bf16``: one interleaved timing of a training step, fp32 against bf16 autocast, HoViT-B and
  HoViT-S at 64 px, batch 64, 1 thread (``bf16.json``);
- ``run``: train the runs a job list names (``--jobs pilot|truth|trial|trial3x``), score them;
- ``report``: the tables and figures (``ground_truth.json``, ``ground_truth.txt``).

    PYTHONPATH=. taskset -c 0 python benchmarks/ground_truth.py --stage run --jobs all &
    PYTHONPATH=. taskset -c 1 python benchmarks/ground_truth.py --stage run --jobs all &
    PYTHONPATH=. python benchmarks/ground_truth.py --stage report
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
PROFILE = ROOT / "results" / "latency-predictor" / "hovit-wide-cpu-onnxruntime-fp32.json"
STANDALONE = ROOT / "results" / "search-efficiency" / "standalone.jsonl"  # the 30 stratified architectures
SPACE = "hovit-wide-cpu"
FULL = 312  # steps in one pass over 20,000 training images at batch 64 (drop_last)

# job lists: (architecture indices or "all", seeds, epochs, steps per epoch)
PILOT_ARCHS = [2, 7, 11, 14]  # of the 16 below: fast, middle, slow, slowest quarter
TRIAL, TRIAL3X, TRUTH = (3, 30), (3, 90), (3, FULL)
JOBS = {
    # the pilot: a few architectures at the three budgets below and 6 full epochs (where rankings settle)
    "pilot": [(PILOT_ARCHS, (0, 1), *TRIAL), (PILOT_ARCHS, (0, 1), *TRUTH), (PILOT_ARCHS, (0, 1), 6, FULL)],
    "truth": [("all", (0, 1), *TRUTH), ("all", (2,), *TRUTH)],
    "trial": [("all", (0, 1), *TRIAL)],
    "trial3x": [("all", (0, 1), *TRIAL3X)],
    # everything, cheapest and most needed first (each stage's results are usable as soon as it ends)
    "all": [("all", (0, 1), *TRIAL), ("all", (0, 1), *TRUTH), ("all", (0, 1), *TRIAL3X), ("all", (2,), *TRUTH),
            (PILOT_ARCHS, (0, 1), 6, FULL)],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", required=True, choices=["bf16", "run", "report"])
    ap.add_argument("--jobs", default="pilot", help="run: comma-separated job lists (" + ", ".join(JOBS) + ")")
    ap.add_argument("--data", default=None, help="pcam-26k (default: built under ~/.cache/hovit-nas/pcam-26k "
                                                 "from the shared data with pcam-26k.sh)")
    ap.add_argument("--out", default=str(ROOT / "results" / "ground-truth"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("hovit_nas").addHandler(logging.FileHandler(out / f"{a.stage}.log"))
    logging.getLogger("hovit_nas").setLevel(logging.INFO)
    {"bf16": bf16, "run": run, "report": report}[a.stage](a, out)


# ------------------------------------------------------------------------------------ shared
def data_path(a) -> Path | None:
    if a.data:
        return Path(a.data)
    dest = Path(os.environ.get("HOVIT_NAS_CACHE_DIR", Path.home() / ".cache" / "hovit-nas")) / "pcam-26k"
    if not dest.exists():
        script = SHARED / "pcam-26k.sh"
        if not script.is_file():
            return None
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["bash", str(script), str(dest)], check=True)
    return dest


def _cpu() -> str:
    import torch

    from hovit_nas.latency import device_name
    return device_name(torch.device("cpu"))


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def architectures() -> list[dict]:
    """The 17 architectures: 16 of search_efficiency's 30 (every other one, by latency), then
    HoViT-B (the space's fixed point). Each: name, config (a run config dict), profile latency."""
    from hovit_nas.config import to_dict
    from hovit_nas.space import load_space

    rows = _rows(STANDALONE)
    picked = [rows[i] for i in np.linspace(0, len(rows) - 1, 16).round().astype(int)]
    out = [{"name": r["name"], "config": r["config"], "profile_latency_ms": r["profile_latency_ms"]} for r in picked]
    space = load_space(SPACE)
    out.append({"name": "hovit_b", "config": to_dict(space.fixed_point_config()), "profile_latency_ms": None})
    return out


def jobs(names: str) -> list[tuple[dict, int, int, int]]:
    archs = architectures()
    out = []
    for name in names.split(","):
        for which, seeds, epochs, steps in JOBS[name]:
            for i in (range(len(archs)) if which == "all" else which):
                out += [(archs[i], s, epochs, steps) for s in seeds]
    return out


def run_name(arch: dict, seed: int, epochs: int, steps: int) -> str:
    return f"{arch['name']}-e{epochs}x{steps}-s{seed}"


def _splits(a):
    from hovit_nas.config import DataOptions, DataSpec
    from hovit_nas.trial import get_data

    return get_data(DataSpec.of(str(data_path(a)), 64, 0, DataOptions()))


@__import__("torch").inference_mode()
def probabilities(model, dataset) -> np.ndarray:
    """Softmax class probabilities of ``model`` on every image of ``dataset``, (N, K) float32."""
    import torch

    from hovit_nas.data import Batches

    model.eval()
    out = [torch.softmax(model(x).float(), 1) for x, _ in Batches(dataset, 512, torch.device("cpu"),
                                                                    shuffle=False, augment=False)]
    return torch.cat(out).numpy()


def scores(labels: np.ndarray, p: np.ndarray) -> dict:
    """top-1, balanced accuracy, AUC (binary: of class 1) and NLL of probabilities ``p`` (N, 2)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, log_loss, roc_auc_score

    pred = p.argmax(1)
    return {"top1": float(accuracy_score(labels, pred)), "balanced": float(balanced_accuracy_score(labels, pred)),
            "auc": float(roc_auc_score(labels, p[:, 1])), "nll": float(log_loss(labels, p, labels=[0, 1])),
            "n": int(len(labels))}


# ------------------------------------------------------------------------------------- bf16
def bf16(a, out: Path) -> None:
    """Interleaved step timing: fp32 and bf16 autocast alternate in rounds, so drift hits both."""
    import dataclasses
    import statistics

    import torch
    import torch.nn.functional as F

    from hovit_nas.config import load_run_config
    from hovit_nas.models import create_hovit
    from hovit_nas.train import make_optimizer

    res = {"cpu": _cpu(), "capability": torch.backends.cpu.get_cpu_capability(),
           "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
           "amx": bool(torch.cpu._is_amx_tile_supported()), "threads": 1, "batch": 64, "img_size": 64, "models": {}}
    for preset in ("hovit_b", "hovit_s"):
        cfg = load_run_config(ROOT / "studies" / f"{preset}.yaml")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=64, num_classes=2))
        torch.manual_seed(0)
        m = create_hovit(cfg)
        opt = make_optimizer(m, cfg.train)
        x, y = torch.randn(64, 3, 64, 64), torch.randint(0, 2, (64,))
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(5):
            for kind in ("fp32", "bf16"):
                for i in range(4):
                    t0 = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=kind == "bf16"):
                        loss = F.cross_entropy(m(x).float(), y)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if i:  # the first step of a round warms that precision up
                        times[kind].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        res["models"][preset] = {"fp32_ms": 1e3 * med["fp32"], "bf16_ms": 1e3 * med["bf16"],
                                 "ratio_bf16_over_fp32": med["bf16"] / med["fp32"],
                                 "fp32_range_ms": [1e3 * min(times["fp32"]), 1e3 * max(times["fp32"])],
                                 "bf16_range_ms": [1e3 * min(times["bf16"]), 1e3 * max(times["bf16"])],
                                 "steps_each": len(times["fp32"])}
        print(preset, json.dumps(res["models"][preset]), flush=True)
    (out / "bf16.json").write_text(json.dumps(res, indent=1))


# -------------------------------------------------------------------------------------- run
def _claim(out: Path, name: str) -> bool:
    """Claim run ``name`` for this process (a file holding its pid); a claim whose process is gone
    is taken over. False when another live process holds it."""
    d = out / "claims"
    d.mkdir(exist_ok=True)
    f = d / name
    try:
        fd = os.open(f, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            pid = int(f.read_text() or 0)
            os.kill(pid, 0)
            return pid == os.getpid()
        except (ValueError, ProcessLookupError):
            f.unlink(missing_ok=True)  # its process is gone
            return _claim(out, name)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def run(a, out: Path) -> None:
    import copy

    from hovit_nas.config import run_config_from_dict
    from hovit_nas.space import load_space
    from hovit_nas.train import train_and_evaluate

    if data_path(a) is None:
        print(f"skipped: {SHARED / 'pcam-26k.sh'} is absent (the shared PatchCamelyon data)")
        return
    splits = _splits(a)
    (out / "scores").mkdir(exist_ok=True)
    labels = out / "labels.npz"
    if not labels.exists():
        np.savez_compressed(labels, val=splits.val.labels.astype(np.uint8), test=splits.test.labels.astype(np.uint8))
    space = load_space(SPACE)
    path = out / "runs.jsonl"
    for arch, seed, epochs, steps in jobs(a.jobs):
        name = run_name(arch, seed, epochs, steps)
        if name in {r["run"] for r in _rows(path)} or not _claim(out, name):
            continue
        cfg = copy.deepcopy(space.base)
        cfg.model = run_config_from_dict(arch["config"], arch["name"]).model
        cfg.model.num_classes = splits.num_classes
        cfg.name, cfg.train.seed = name, seed
        cfg.train.epochs_dense, cfg.train.epochs_prune = 2 * epochs // 3, epochs - 2 * epochs // 3
        cfg.train.max_steps_per_epoch = steps
        cfg.validate()
        rdir = out / "runs" / name
        t0 = time.time()
        r = train_and_evaluate(cfg, splits, "cpu", out_dir=rdir, resume=(rdir / "checkpoint.pt").exists())
        pv, pt = probabilities(r.exported, splits.val), probabilities(r.exported, splits.test)
        np.savez_compressed(out / "scores" / f"{name}.npz", val=pv.astype(np.float16), test=pt.astype(np.float16))
        row = {"run": name, "arch": arch["name"], "seed": seed, "epochs": epochs, "steps_per_epoch": steps,
               "steps": epochs * min(steps, FULL),
               "profile_latency_ms": arch["profile_latency_ms"], "val": scores(splits.val.labels, pv),
               "test": scores(splits.test.labels, pt), "history": [{k: h[k] for k in ("phase", "epoch", "val_top1",
                                                                                        "loss")} for h in r.history],
               "params": r.params_exported, "selected": r.selected_blocks, "s": round(time.time() - t0, 1),
               "cpu": _cpu(), "data": splits.description, "sizes": splits.sizes}
        _append(path, row)
        (out / "runs" / name / "checkpoint.pt").unlink(missing_ok=True)  # the scores are kept; 1 checkpoint each is MBs
        print(f"{name}: val top1 {row['val']['top1']:.4f} auc {row['val']['auc']:.4f}; test top1 "
              f"{row['test']['top1']:.4f} auc {row['test']['auc']:.4f}  ({row['s']:.0f} s)", flush=True)
        (out / "claims" / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- report
def report(a, out: Path) -> None:
    rows = _rows(out / "runs.jsonl")
    print(f"{len(rows)} runs")


if __name__ == "__main__":
    main()

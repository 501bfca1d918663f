"""A ground truth that ranks (issue 33): architectures of ``hovit-wide-cpu`` trained stand-alone
at a deployment budget over several seeds on the whole PatchCamelyon set of our source
(pcam-26k: train 20,000 / valid 3,000 / test 3,000; valid and test come from different slides),
and the cheap scores a search could use, measured against it.

Setting: the packaged ``hovit-wide-cpu`` space at 64 px, its base training and pruning settings
(the ones a search trial and the supernet use), one thread per process, fp32 on any CPU (the
runs began on a CPU without native bf16, and the ground truth keeps one precision; see ``bf16``
below). The supernets train at the product's default: bf16 autocast where the CPU has native
bf16, which each epoch's record states. The architectures are 16 of the 30 that
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

- ``bf16``: one interleaved timing of a training step, fp32 against bf16 autocast, HoViT-B (its
  dense and its pruning phase) and HoViT-S at 64 px, batch 64, 1 thread (``bf16.json``);
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
    ap.add_argument("--stage", required=True, choices=["bf16", "run", "supernet", "latency", "report"])
    ap.add_argument("--variant", default="base", choices=list(VARIANTS), help="supernet: which variant")
    ap.add_argument("--finetune", type=int, default=0, help="supernet: also fine-tune each extracted subnet (epochs)")
    ap.add_argument("--rounds", type=int, default=3, help="latency: interleaved rounds")
    ap.add_argument("--jobs", default="pilot", help="run: comma-separated job lists (" + ", ".join(JOBS) + ")")
    ap.add_argument("--data", default=None, help="pcam-26k (default: built under ~/.cache/hovit-nas/pcam-26k "
                                                 "from the shared data with pcam-26k.sh)")
    ap.add_argument("--out", default=str(ROOT / "results" / "ground-truth"))
    ap.add_argument("--metric", default="top1", choices=["top1", "auc", "nll", "balanced"],
                    help="report: the ground truth's score the proxies are ranked against")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("hovit_nas").addHandler(logging.FileHandler(out / f"{a.stage}.log"))
    logging.getLogger("hovit_nas").setLevel(logging.INFO)
    {"bf16": bf16, "run": run, "supernet": supernet_stage, "latency": latency_stage, "report": report}[a.stage](a, out)


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
    """Interleaved step timing: fp32 and bf16 autocast alternate in rounds, so drift hits both; for
    each model's phases (the dense phase, and HoViT-B's pruning phase: gates and LoRA over a frozen
    base)."""
    import dataclasses
    import statistics

    import torch
    import torch.nn.functional as F

    from hovit_nas.config import load_run_config
    from hovit_nas.models import create_hovit
    from hovit_nas.train import _prepare_phase, make_optimizer

    res = {"cpu": _cpu(), "capability": torch.backends.cpu.get_cpu_capability(),
           "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
           "amx": bool(torch.cpu._is_amx_tile_supported()), "threads": 1, "batch": 64, "img_size": 64, "models": {}}
    for preset, phase in (("hovit_b", "dense"), ("hovit_b", "prune"), ("hovit_s", "dense")):
        cfg = load_run_config(ROOT / "studies" / f"{preset}.yaml")
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, img_size=64, num_classes=2))
        torch.manual_seed(0)
        m = create_hovit(cfg)
        _prepare_phase(m, cfg, phase)
        m.train()
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
        key = preset if phase == "dense" else f"{preset}_{phase}"
        res["models"][key] = {"phase": phase, "fp32_ms": 1e3 * med["fp32"], "bf16_ms": 1e3 * med["bf16"],
                              "ratio_bf16_over_fp32": med["bf16"] / med["fp32"],
                              "fp32_range_ms": [1e3 * min(times["fp32"]), 1e3 * max(times["fp32"])],
                              "bf16_range_ms": [1e3 * min(times["bf16"]), 1e3 * max(times["bf16"])],
                              "steps_each": len(times["fp32"])}
        print(key, json.dumps(res["models"][key]), flush=True)
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
        cfg.train.amp = False  # the ground truth is fp32 throughout, on any CPU (it began on one without bf16)
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
               "cpu": _cpu(), "precision": "fp32", "data": splits.description, "sizes": splits.sizes}
        _append(path, row)
        (out / "runs" / name / "checkpoint.pt").unlink(missing_ok=True)  # the scores are kept; 1 checkpoint each is MBs
        print(f"{name}: val top1 {row['val']['top1']:.4f} auc {row['val']['auc']:.4f}; test top1 "
              f"{row['test']['top1']:.4f} auc {row['test']['auc']:.4f}  ({row['s']:.0f} s)", flush=True)
        (out / "claims" / name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------- supernet
VARIANTS = {  # name -> (epochs of the space's 30 steps, distill, BN images, few-shot split by)
    "base": (30, True, 512, None),
    "long": (60, True, 512, None),
    "no-distill": (30, False, 512, None),
    "bn-2048": ("base", True, 2048, None),  # the base supernet, BatchNorm recalibrated on 4x the images
    "few-shot": (30, True, 512, "downsample_1"),  # one supernet per downsampling type (Zhao et al. 2021)
}


def _space_fixed(key: str, value):
    """The space with one architecture choice fixed at ``value`` (a few-shot sub-supernet's space)."""
    import yaml

    from hovit_nas.space import resolve_space_path

    d = yaml.safe_load(resolve_space_path(SPACE).read_text())
    name, stage = key.rsplit("_", 1)
    d["params"][name] = dict(d["params"][name], choices=[value])
    d["base"]["model"]["stages"][int(stage)]["downsample"] = value
    d["name"] = f"{SPACE}-{key}-{value}"
    if value == "attention":  # HoViT-B downsamples by convolution: this sub-space's fixed point is its variant
        d["fixed_point"] = "hovit_b_attn_down"
    return d


def supernet_stage(a, out: Path) -> None:
    """Train the ``--variant`` supernet(s) on pcam-26k and write each ground-truth architecture's
    estimate (inherited weights, BatchNorm recalibrated, val top1) to ``supernet.jsonl``; with
    ``--finetune E``, also each one extracted and fine-tuned for E epochs of the space's steps."""
    import copy
    import tempfile

    import torch
    import yaml

    from hovit_nas import supernet as S
    from hovit_nas.config import DataOptions, run_config_from_dict

    epochs, distill, bn, split = VARIANTS[a.variant]
    data = str(data_path(a))
    splits = _splits(a)
    path = out / "supernet.jsonl"
    done = {(r["variant"], r["arch"]) for r in _rows(path)}
    trained = {}

    def train(space_name: str, tag: str, n_epochs: int) -> Path:
        dest = out / "supernets" / tag
        if not (dest / "supernet.json").exists():
            t0 = time.time()
            S.run_supernet_train(space_name, data, DataOptions(), S.SupernetConfig(epochs=n_epochs, distill=distill),
                                 device="cpu", threads=1, out=dest, resume=(dest / "supernet.pt").exists())
            (dest / "train_s.txt").write_text(f"{time.time() - t0:.1f}\n")
        return dest

    if split is None:
        base_tag = "base" if epochs == "base" else a.variant
        dirs = {None: train(SPACE, base_tag, VARIANTS["base"][0] if epochs == "base" else epochs)}
    else:
        dirs = {}
        for value in ("conv", "attention"):
            d = _space_fixed(split, value)
            f = out / "supernets" / f"{d['name']}.yaml"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(yaml.safe_dump(d, sort_keys=False))
            dirs[value] = train(str(f), f"{a.variant}-{value}", epochs)
    for arch in architectures():
        if (a.variant, arch["name"]) in done:
            continue
        cfg = run_config_from_dict(arch["config"], arch["name"])
        cfg.model.num_classes = splits.num_classes
        key = cfg.model.stages[1].downsample if split else None
        sn = S.load(dirs[key])
        calib = S.bn_images(splits.train, bn, sn.space.base.train.seed, torch.device("cpu"))
        t0 = time.time()
        _, val = S.score_subnet(sn.net, cfg, calib, splits.val, splits.num_classes, torch.device("cpu"))
        row = {"variant": a.variant, "arch": arch["name"], "supernet": sn.record["id"],
               "estimate_val_top1": val["top1"], "estimate_val_auc": val.get("auc"), "s": round(time.time() - t0, 1)}
        if a.finetune:
            with tempfile.TemporaryDirectory() as tmp:
                _, r = S.extract_run(dirs[key], copy.deepcopy(cfg), data, DataOptions(), finetune=a.finetune,
                                     device="cpu", out=Path(tmp) / "x")
            row["finetuned_val_top1"], row["finetune_epochs"] = r.val["top1"], a.finetune
        _append(path, row)
        print(f"{a.variant} {arch['name']}: estimate {row['estimate_val_top1']:.4f}"
              + (f", fine-tuned {row['finetuned_val_top1']:.4f}" if a.finetune else ""), flush=True)


def latency_stage(a, out: Path) -> None:
    """Every ground-truth architecture's latency on one scale: ONNX Runtime, 1 thread, batch 1,
    64 px, anchored to HoViT-B, in interleaved rounds (``latency.jsonl``)."""
    from hovit_nas.config import run_config_from_dict
    from hovit_nas.latency import Protocol, calibrate_on, measure, target_for
    from hovit_nas.models import create_hovit, export

    target = target_for(64, "cpu", 1, "onnxruntime")
    archs = architectures()
    models = {x["name"]: export(create_hovit(run_config_from_dict(x["config"], x["name"]))) for x in archs}
    anchor = calibrate_on("hovit_b", models["hovit_b"], target, 3.0)
    times: dict = {k: [] for k in models}
    for _ in range(a.rounds):
        for k, m in models.items():
            times[k].append(measure(m, target, Protocol(20, 5, 1.0), anchor=anchor).median_ms)
    path = out / "latency.jsonl"
    path.unlink(missing_ok=True)
    for k, v in times.items():
        _append(path, {"arch": k, "latency_ms": float(np.median(v)), "rounds_ms": v, "target": target.name,
                       "anchor_ms": anchor.ms, "cpu": _cpu()})
    print(f"latency of {len(models)} architectures on {target.name}, {a.rounds} interleaved rounds", flush=True)


# ----------------------------------------------------------------------------------- report
METRICS = ("top1", "auc", "nll", "balanced")  # nll: lower is better (ranked as -nll)


def _sign(metric: str) -> float:
    return -1.0 if metric == "nll" else 1.0


def table(rows: list[dict], epochs: int, steps: int, split: str = "test") -> dict:
    """{arch: {seed: {metric: value}}} of one budget (nll signed, so higher is better everywhere)."""
    out: dict = {}
    for r in rows:
        if r["epochs"] == epochs and r["steps_per_epoch"] == steps:
            out.setdefault(r["arch"], {})[r["seed"]] = {m: _sign(m) * r[split][m] for m in METRICS}
    return out


def kendall(a, b) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def boot_ci(fn, n: int, b: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of ``fn(idx)`` over architectures resampled with replacement."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(b):
        idx = rng.integers(0, n, n)
        if len(set(idx.tolist())) < 3:
            continue
        v = fn(idx)
        if np.isfinite(v):
            vals.append(v)
    lo, hi = np.percentile(vals, [2.5, 97.5]) if vals else (float("nan"), float("nan"))
    return float(lo), float(hi)


def _icc(groups: list) -> tuple:
    """One-way ANOVA intraclass correlation of per-architecture groups of seed scores, with the
    seed SD (within) and the architecture SD (between, net of seed noise); (nan, ...) when undefined."""
    k_bar = np.mean([len(g) for g in groups])
    grand = np.mean(np.concatenate(groups))
    msb = sum(len(g) * (g.mean() - grand) ** 2 for g in groups) / (len(groups) - 1)
    msw = sum(((g - g.mean()) ** 2).sum() for g in groups) / sum(len(g) - 1 for g in groups)
    icc = float((msb - msw) / (msb + (k_bar - 1) * msw)) if msb + (k_bar - 1) * msw > 0 else float("nan")
    return icc, float(np.sqrt(msw)), float(np.sqrt(max(msb - msw, 0.0) / k_bar))


def _seeds_for_tau(icc) -> float | None:
    """Seeds per architecture whose means agree at tau 0.8 between two such sets (Spearman-Brown
    on the one-seed ICC; tau = (2/pi) arcsin r for normal scores); None when the ICC is not in (0, 1)."""
    if icc is None or not np.isfinite(icc) or not 0 < icc < 1:
        return None
    target_r = np.sin(0.8 * np.pi / 2)
    return float(target_r * (1 - icc) / (icc * (1 - target_r)))


def seed_agreement(t: dict, metric: str) -> dict:
    """Seed-to-seed Kendall tau of the ground truth (each pair of seeds, over the architectures
    both have), its bootstrap interval, and the reliability behind it: the share of the variance
    across runs that is the architecture's (one-way ANOVA intraclass correlation), and the seeds a
    k-seed mean needs for tau 0.8 (Spearman-Brown, tau = (2/pi) arcsin r for normal scores)."""
    seeds = sorted({s for v in t.values() for s in v})
    pairs = []
    for i, a in enumerate(seeds):
        for b in seeds[i + 1:]:
            archs = [k for k, v in t.items() if a in v and b in v]
            if len(archs) >= 4:
                x = np.array([t[k][a][metric] for k in archs])
                y = np.array([t[k][b][metric] for k in archs])
                pairs.append({"seeds": [a, b], "n": len(archs), "tau": kendall(x, y),
                              "ci95": boot_ci(lambda idx: kendall(x[idx], y[idx]), len(archs))})
    full = [k for k, v in t.items() if len(v) >= 2]
    icc, icc_ci, seed_sd, arch_sd = None, None, None, None
    if len(full) >= 3:
        groups = [np.array([t[k][s][metric] for s in t[k]]) for k in full]
        icc, seed_sd, arch_sd = _icc(groups)
        icc_ci = boot_ci(lambda idx: _icc([groups[i] for i in idx])[0], len(groups))
    # the seeds whose mean reaches tau 0.8 at the ICC's estimate, and at its 95 % upper bound (the
    # fewest the data allow: if the architectures differ as much as they plausibly can)
    return {"pairs": pairs, "tau_mean": float(np.mean([p["tau"] for p in pairs])) if pairs else None,
            "icc_one_seed": icc, "icc_ci95": icc_ci, "seeds_for_tau_0_8": _seeds_for_tau(icc),
            "seeds_for_tau_0_8_at_icc_upper": _seeds_for_tau(icc_ci[1] if icc_ci else None),
            **({"seed_sd": seed_sd, "arch_sd": arch_sd} if icc is not None else {}),
            "tau_expected_one_seed": float(2 / np.pi * np.arcsin(icc)) if icc is not None and -1 < icc < 1 else None}


def proxy_vs_truth(proxy: dict, truth: dict, name: str, gt_tau: float | None) -> dict:
    """Kendall tau and Spearman of a proxy's scores against the ground truth's (arch -> value,
    higher is better), over the architectures both have, with bootstrap intervals, and the share
    of the attainable ranking it reaches (its tau over the ground truth's own seed-to-seed tau)."""
    from scipy.stats import spearmanr

    archs = sorted(set(proxy) & set(truth))
    x, y = np.array([proxy[a] for a in archs]), np.array([truth[a] for a in archs])
    tau = kendall(x, y)
    rho = float(spearmanr(x, y).statistic)
    return {"proxy": name, "n": len(archs), "tau": tau, "tau_ci95": boot_ci(lambda i: kendall(x[i], y[i]), len(archs)),
            "spearman": rho, "spearman_ci95": boot_ci(lambda i: float(spearmanr(x[i], y[i]).statistic), len(archs)),
            "share_of_attainable": (tau / gt_tau) if gt_tau and gt_tau > 0 else None, "archs": archs,
            "x": x.tolist(), "y": y.tolist()}


def _mean(t: dict, metric: str) -> dict:
    return {a: float(np.mean([v[metric] for v in s.values()])) for a, s in t.items()}


def report(a, out: Path) -> None:
    """The ground truth's own agreement, every proxy against it, and one plotly page."""
    rows = _rows(out / "runs.jsonl")
    archs = {x["name"]: x for x in architectures()}
    res: dict = {"cpu": sorted({r["cpu"] for r in rows}), "runs": len(rows), "budgets": {}}
    truth = table(rows, *TRUTH)
    lines = [f"ground truth: {SPACE} at 64 px on pcam-26k (train 20,000 / valid 3,000 / test 3,000), "
             f"{len(rows)} runs, CPU {', '.join(res['cpu'])}, one thread per run",
             f"deployment budget: {TRUTH[0]} epochs of {TRUTH[1]} steps ({TRUTH[0] * TRUTH[1]} steps of 64 images, "
             f"{TRUTH[0] * TRUTH[1] / 90:.1f}x the 90-step trial); {len(truth)} architectures, seeds per architecture "
             f"{sorted({len(v) for v in truth.values()})}"]
    res["truth"] = {}
    for m in METRICS:
        ag = seed_agreement(truth, m)
        res["truth"][m] = ag
        pairs = "; ".join(f"seeds {p['seeds']}: tau {p['tau']:+.3f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] "
                          f"(n {p['n']})" for p in ag["pairs"])
        lines.append(f"  test {m}{' (as -nll)' if m == 'nll' else ''}: {pairs or 'fewer than 2 seeds yet'}"
                     + (f"; one-seed reliability (ICC) {ag['icc_one_seed']:.2f} [{ag['icc_ci95'][0]:+.2f}, "
                        f"{ag['icc_ci95'][1]:+.2f}], architecture SD {ag['arch_sd']:.4f} vs seed SD "
                        f"{ag['seed_sd']:.4f}" if ag["icc_one_seed"] is not None else "")
                     + (f"; a mean over {ag['seeds_for_tau_0_8']:.1f} seeds would reach tau 0.8"
                        if ag.get("seeds_for_tau_0_8") else "")
                     + (f"; at the ICC's upper bound, {ag['seeds_for_tau_0_8_at_icc_upper']:.1f} seeds at least"
                        if ag.get("seeds_for_tau_0_8_at_icc_upper") else ""))
    # the pilot: seed agreement at each budget, on the architectures the pilot trains at every budget
    budgets = sorted({(r["epochs"], r["steps_per_epoch"]) for r in rows})
    for e, st in budgets:
        res["budgets"][f"{e}x{st}"] = {split: {m: seed_agreement(table(rows, e, st, split), m) for m in METRICS}
                                       for split in ("val", "test")}
    lines.append("which score ranks architectures most stably across seeds (issue 32): Kendall tau between seeds 0 "
                 "and 1 [95 % bootstrap over architectures] and the one-seed reliability (ICC, over every seed), by "
                 "budget and split:")
    for k, v in res["budgets"].items():
        for split, by in v.items():
            lines.append(f"  {k:>7} {split:>4}: " + "; ".join(
                f"{m} tau {by[m]['pairs'][0]['tau']:+.3f} [{by[m]['pairs'][0]['ci95'][0]:+.2f}, "
                f"{by[m]['pairs'][0]['ci95'][1]:+.2f}]"
                + (f" ICC {by[m]['icc_one_seed']:.2f}" if by[m]["icc_one_seed"] is not None else "")
                if by[m]["pairs"] else f"{m} -" for m in METRICS))
    # the proxies, against the ground truth's mean over seeds on test
    gt_metric = a.metric
    gt = _mean(truth, gt_metric)
    gt_tau = res["truth"][gt_metric]["tau_mean"]
    proxies = {}
    trial, trial3 = table(rows, *TRIAL, split="val"), table(rows, *TRIAL3X, split="val")
    for m in ("top1", "auc", "nll"):
        if trial:
            proxies[f"(i) 90-step trial, val {m}, seed 0"] = {k: v[0][m] for k, v in trial.items() if 0 in v}
            proxies[f"(i) 90-step trial, val {m}, 2-seed mean"] = _mean({k: v for k, v in trial.items() if len(v) > 1}, m)
        if trial3:
            proxies[f"(ii) 270-step trial, val {m}, seed 0"] = {k: v[0][m] for k, v in trial3.items() if 0 in v}
    rung = {r["arch"]: r["history"][0]["val_top1"] for r in rows if (r["epochs"], r["steps_per_epoch"]) == TRIAL
            and r["seed"] == 0 and r["history"]}
    if rung:
        proxies["(iii) successive-halving rung (epoch 1 of the trial), val top1"] = rung
    sn = _rows(out / "supernet.jsonl")
    for label in sorted({x["variant"] for x in sn}):
        proxies[f"(iv) supernet estimate, {label}"] = {x["arch"]: x["estimate_val_top1"] for x in sn
                                                       if x["variant"] == label and "estimate_val_top1" in x}
        ft = {x["arch"]: x["finetuned_val_top1"] for x in sn if x["variant"] == label and "finetuned_val_top1" in x}
        if ft:
            proxies[f"(v) supernet + fine-tune, {label}"] = ft
    lat = {x["arch"]: x["latency_ms"] for x in _rows(out / "latency.jsonl")}
    if not lat:  # before the latency stage: the committed ONNX Runtime profile's figure of each architecture
        lat = {r["arch"]: r["profile_latency_ms"] for r in rows if r.get("profile_latency_ms")}
    if lat:
        proxies["(vi) latency alone (slower = more accurate)"] = lat
    params = {r["arch"]: float(r["params"]) for r in rows if (r["epochs"], r["steps_per_epoch"]) == TRUTH}
    if params:
        proxies["(vii) zero-cost: exported parameters"] = params
    res["proxies"] = [proxy_vs_truth(v, gt, k, gt_tau) for k, v in proxies.items() if len(set(v) & set(gt)) >= 4]
    for p in res["proxies"]:  # the ground truth's seed range of each point, for the plot's error bars
        p["y_range"] = [[min(v[gt_metric] for v in truth[x].values()), max(v[gt_metric] for v in truth[x].values())]
                        for x in p["archs"]]
    # the one ranking in these data that is stable across seeds (val top-1 at 3x the trial, ICC 0.66):
    # whether a proxy ranks as longer trials do, which can be judged where the ground truth cannot
    ref3 = {k: v for k, v in trial3.items() if len(v) > 1}
    ref = _mean(ref3, "top1")
    ref_tau = seed_agreement(ref3, "top1")["tau_mean"] if ref3 else None
    for p in res["proxies"]:
        if ref and not p["proxy"].startswith("(ii)"):  # (ii) is one of the reference's own seeds
            v = proxies[p["proxy"]]
            p["vs_trial3x_val"] = {k: w for k, w in proxy_vs_truth(v, ref, p["proxy"], ref_tau).items()
                                   if k in ("n", "tau", "tau_ci95", "share_of_attainable")}
    res["trial3x_val_reference"] = {"seed_tau": ref_tau, "archs": len(ref)}
    lines.append(f"proxies against the ground truth (mean test {gt_metric} over its seeds; Kendall tau [95 % bootstrap "
                 "over architectures]; "
                 + (f"share = tau / the ground truth's own seed tau {gt_tau:.3f}):" if gt_tau and gt_tau > 0 else
                    f"no share: the ground truth's own seed tau is {gt_tau if gt_tau is None else round(gt_tau, 3)}, "
                    "so it does not rank and no proxy can be judged against it):"))
    for p in res["proxies"]:
        share = "" if p["share_of_attainable"] is None else f", share {p['share_of_attainable']:+.2f}"
        lines.append(f"  {p['proxy']}: tau {p['tau']:+.3f} [{p['tau_ci95'][0]:+.2f}, {p['tau_ci95'][1]:+.2f}], "
                     f"Spearman {p['spearman']:+.3f} (n {p['n']}{share})")
    if ref:
        lines.append(f"the same proxies against the trials' val ranking at 3x the trial's budget (270 steps, val top1, "
                     f"mean of seeds 0 and 1; its own seed tau {ref_tau:+.3f}): whether a proxy ranks as longer "
                     "trials do (share = tau / that seed tau)")
        for p in res["proxies"]:
            r = p.get("vs_trial3x_val")
            if r:
                share = "" if r["share_of_attainable"] is None else f", share {r['share_of_attainable']:+.2f}"
                lines.append(f"  {p['proxy']}: tau {r['tau']:+.3f} [{r['tau_ci95'][0]:+.2f}, {r['tau_ci95'][1]:+.2f}] "
                             f"(n {r['n']}{share})")
    (out / "ground_truth.json").write_text(json.dumps(res, indent=1, default=float))
    (out / "ground_truth.txt").write_text("\n".join(lines) + "\n")
    _plot(res, out / "ground_truth.html", gt_metric)
    print("\n".join(lines))


def _plot(res: dict, path: Path, metric: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ps = res.get("proxies") or []
    if not ps:
        return
    cols = 3
    rows = -(-len(ps) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[
        f"{p['proxy']}<br>tau {p['tau']:+.2f}" + (f" (vs 270-step trials' val: {p['vs_trial3x_val']['tau']:+.2f})"
                                                  if p.get("vs_trial3x_val") else "") for p in ps])
    for i, p in enumerate(ps):
        lo = [y - r[0] for y, r in zip(p["y"], p["y_range"])]
        hi = [r[1] - y for y, r in zip(p["y"], p["y_range"])]
        fig.add_trace(go.Scatter(x=p["x"], y=p["y"], mode="markers", text=p["archs"], hoverinfo="text+x+y",
                                 error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo, thickness=1),
                                 showlegend=False, marker=dict(size=8)), i // cols + 1, i % cols + 1)
        fig.update_yaxes(title_text=f"ground truth test {metric}", row=i // cols + 1, col=i % cols + 1)
    fig.update_layout(title="each cheap score (x) against the ground truth (y: mean over seeds, bars: the seeds' range; "
                            "one point per architecture)",
                      height=330 * rows, template="plotly_white", font=dict(size=10))
    fig.write_html(path, include_plotlyjs=True)


if __name__ == "__main__":
    main()

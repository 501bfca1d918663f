"""Train once, rank many? The supernet mode's rank fidelity and compute against the full search
(issue 21, item 4).

Setting: the packaged ``hovit-wide-cpu`` space (64 px, a full trial = 2 dense + 1 pruning epoch
of 30 steps of 64 images), the whole shared pcam-subset (4000 / 1000 / 3000), one thread per
process, one hypervolume reference for every method (val top1 0.5 = chance on this binary task,
latency 1.1x the slowest measured trial of any run). The trial budget is the committed
multifidelity runs' (results/multifidelity): 8 full trials per run. Compute is counted in
epoch-equivalents: one optimizer step of one (sub)network over one batch is 1/30 of an epoch, so
a stand-alone trial costs 3 and one supernet epoch with the sandwich rule costs 2 + k.

Stages (each writes under ``--out`` and can be run alone, in its own process; the committed
results ran them in the order below, two at a time, one per core):

- ``standalone``: ``--n`` architectures drawn stratified by latency from the committed ONNX
  Runtime profile of this space (results/latency-predictor: 120 architectures with measured
  latency), one per latency stratum, each trained stand-alone with the full dense + pruning
  pipeline (the space's base training and pruning settings, which the supernet shares);
  ``--train-seed 1`` repeats them with another training seed: the stand-alone figures' own
  rank noise, the ceiling on any estimate's tau;
- ``firstn``: which blocks a depth means -- each of them with a pruned stage (M:N, N < M)
  trained again as its first N blocks (what the supernet deploys), against the learned gates;
- ``supernet``: ``hovit-nas supernet train`` over the space and data for ``--epochs`` epochs
  (into ``OUT/supernet-E``);
- ``fidelity``: each stand-alone architecture's supernet estimate (inherited weights, BatchNorm
  recalibrated); Kendall tau and Spearman, tau within latency thirds; and the fine-tune gap:
  ``--finetune-n`` of them extracted and fine-tuned for one trial's steps (3 epochs) against
  their stand-alone val top1;
- ``search``: method (a) NSGA-II with every trial at full budget, (b) NSGA-II + Pareto
  successive halving (``--seeds`` seeds each, until 8 trials' worth of epochs are spent), and
  (c) NSGA-II over ``--subnets`` subnets scored by the supernet, whose top-``--top-k`` front
  trials are then retrained stand-alone (the full pipeline, one seed);
- ``report``: the tables (``efficiency.txt``), every figure (``efficiency.json``) and one plotly
  page (``efficiency.html``): hypervolume of the stand-alone front against cumulative compute,
  one curve per method, and supernet estimate against stand-alone val top1, one point per
  architecture.

    PYTHONPATH=. taskset -c 1 python benchmarks/search_efficiency.py --stage standalone
    PYTHONPATH=. taskset -c 1 python benchmarks/search_efficiency.py --stage standalone --train-seed 1
    PYTHONPATH=. taskset -c 1 python benchmarks/search_efficiency.py --stage firstn
    PYTHONPATH=. taskset -c 0 python benchmarks/search_efficiency.py --stage supernet --epochs 30
    PYTHONPATH=. taskset -c 0 python benchmarks/search_efficiency.py --stage fidelity --epochs 30
    PYTHONPATH=. taskset -c 1 python benchmarks/search_efficiency.py --stage search --methods a --seeds 0,1
    PYTHONPATH=. taskset -c 1 python benchmarks/search_efficiency.py --stage search --methods b --seeds 0
    PYTHONPATH=. taskset -c 0 python benchmarks/search_efficiency.py --stage search --methods c --seeds 0 --epochs 30
    PYTHONPATH=. python benchmarks/search_efficiency.py --stage report --epochs 30
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
PROFILE = ROOT / "results" / "latency-predictor" / "hovit-wide-cpu-onnxruntime-fp32.json"
SPACE = "hovit-wide-cpu"
TRIAL_EPOCHS = 3  # a full hovit-wide-cpu trial: 2 dense + 1 pruning epoch
TRIALS = 8  # the committed multifidelity runs' budget, in full trials
LABELS = {"a": "(a) NSGA-II, full budget", "b": "(b) NSGA-II + Pareto halving",
          "c": "(c) supernet + NSGA-II, top-k retrained"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", required=True, choices=["standalone", "firstn", "supernet", "fidelity", "search",
                                                        "report"])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pcam-subset"))
    ap.add_argument("--n", type=int, default=30, help="stand-alone architectures for the rank fidelity")
    ap.add_argument("--epochs", type=int, default=30, help="supernet training epochs (of 30 steps)")
    ap.add_argument("--sandwich-k", type=int, default=2)
    ap.add_argument("--finetune-n", type=int, default=6)
    ap.add_argument("--train-seed", type=int, default=0, help="standalone: the training seed (others: a repeat, "
                    "the stand-alone figures' own rank noise)")
    ap.add_argument("--methods", default="a,b,c")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--subnets", type=int, default=500)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "results" / "search-efficiency"))
    a = ap.parse_args()
    if not Path(a.data).is_dir():
        print(f"skipped: {a.data} is absent (the shared pcam-subset)")
        return
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / f"{a.stage}.log")
    logging.getLogger("hovit_nas").addHandler(handler)
    logging.getLogger("hovit_nas").setLevel(logging.INFO)
    {"standalone": standalone, "firstn": firstn, "supernet": supernet, "fidelity": fidelity, "search": search,
     "report": report}[a.stage](a, out)


def _splits(a):
    from hovit_nas.config import DataOptions, DataSpec
    from hovit_nas.trial import get_data

    return get_data(DataSpec.of(a.data, 64, 0, DataOptions()))


def _space(splits):
    from dataclasses import replace

    from hovit_nas.config import with_num_classes
    from hovit_nas.space import load_space

    space = load_space(SPACE)
    return replace(space, base=with_num_classes(space.base, splits.num_classes))


def _cpu() -> str:
    import torch

    from hovit_nas.latency import device_name
    return device_name(torch.device("cpu"))


def _rows(path: Path) -> list[dict]:
    """The rows of a resumable JSON-lines file ([] before its first row)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


# ------------------------------------------------------------------------------- stand-alone
def draw(n: int, seed: int = 0) -> list[dict]:
    """``n`` profile points, one per latency stratum (the profile sorted by measured latency and
    cut into ``n`` equal strata)."""
    pts = sorted(json.loads(PROFILE.read_text())["points"], key=lambda p: p["latency_ms"])
    rng = np.random.default_rng(seed)
    return [s[int(rng.integers(len(s)))] for s in np.array_split(np.array(pts, dtype=object), n)]


def standalone(a, out: Path) -> None:
    import copy

    from hovit_nas.config import run_config_from_dict
    from hovit_nas.train import train_and_evaluate

    splits = _splits(a)
    space = _space(splits)
    path = out / ("standalone.jsonl" if not a.train_seed else f"standalone-s{a.train_seed}.jsonl")
    done = {r["name"] for r in _rows(path)}
    for i, p in enumerate(draw(a.n)):
        cfg = copy.deepcopy(space.base)
        cfg.model = run_config_from_dict(p["config"], "profile").model
        cfg.name = f"arch{i:02d}"
        cfg.train.seed = a.train_seed
        if cfg.name in done:
            continue
        t0 = time.time()
        r = train_and_evaluate(cfg, splits, "cpu")
        row = {"name": cfg.name, "config": p["config"], "profile_latency_ms": p["latency_ms"],
               "standalone_val": r.val["top1"], "standalone_test": r.test["top1"], "selected": r.selected_blocks,
               "params": r.params_exported, "s": round(time.time() - t0, 1)}
        _append(path, row)
        print(f"{cfg.name}: val {row['standalone_val']:.4f} at {p['latency_ms']:.3f} ms (profile) "
              f"{row['s']:.0f} s", flush=True)


def firstn(a, out: Path) -> None:
    """Which blocks a depth means: each stand-alone architecture with a pruned stage (M:N, N < M)
    trained again as its first-N-blocks architecture (what the supernet deploys: no gates, the
    same epochs), against the learned gates' choice (``standalone``)."""
    import copy

    from hovit_nas.config import run_config_from_dict
    from hovit_nas.models.supernet import deployed
    from hovit_nas.train import train_and_evaluate

    splits = _splits(a)
    space = _space(splits)
    path = out / "firstn.jsonl"
    done = {r["name"] for r in _rows(path)}
    for r in _rows(out / "standalone.jsonl"):
        arch = run_config_from_dict(r["config"], r["name"]).model
        if r["name"] in done or all(not st.keep or st.keep >= st.blocks for st in arch.stages):
            continue
        cfg = copy.deepcopy(space.base)
        cfg.model, cfg.name = deployed(arch), r["name"] + "-firstn"
        res = train_and_evaluate(cfg, splits, "cpu")
        row = {"name": r["name"], "learned_val": r["standalone_val"], "firstn_val": res.val["top1"]}
        _append(path, row)
        print(f"{r['name']}: learned gates {row['learned_val']:.4f}, first N {row['firstn_val']:.4f}", flush=True)


# ---------------------------------------------------------------------------------- supernet
def supernet(a, out: Path) -> None:
    from hovit_nas.config import DataOptions
    from hovit_nas.supernet import SupernetConfig, run_supernet_train

    t0 = time.time()
    dest, rec = run_supernet_train(SPACE, a.data, DataOptions(), SupernetConfig(epochs=a.epochs,
                                   sandwich_k=a.sandwich_k), device="cpu", threads=1,
                                   out=out / f"supernet-{a.epochs}", resume=(out / f"supernet-{a.epochs}" /
                                                                             "supernet.pt").exists())
    (dest / "train_s.txt").write_text(f"{time.time() - t0:.1f}\n")
    print(f"supernet {rec['id']}: {a.epochs} epochs in {time.time() - t0:.0f} s; last epoch "
          f"{json.dumps(rec['history'][-1])}", flush=True)


def fidelity(a, out: Path) -> None:
    import torch
    from scipy.stats import kendalltau, spearmanr

    from hovit_nas import supernet as S
    from hovit_nas.config import DataOptions, run_config_from_dict

    splits = _splits(a)
    space = _space(splits)
    sdir = out / f"supernet-{a.epochs}"
    sn = S.load(sdir)
    calib = S.bn_images(splits.train, S.BN_IMAGES, space.base.train.seed, torch.device("cpu"))
    rows = _rows(out / "standalone.jsonl")
    for r in rows:
        cfg = run_config_from_dict(r["config"], r["name"])
        cfg.model.num_classes = splits.num_classes
        r["estimate"] = S.score_subnet(sn.net, cfg, calib, splits.val, splits.num_classes, torch.device("cpu"))[1]["top1"]
    est, sa = np.array([r["estimate"] for r in rows]), np.array([r["standalone_val"] for r in rows])
    lat = np.array([r["profile_latency_ms"] for r in rows])
    thirds = np.array_split(np.argsort(lat), 3)
    res = {"supernet": sn.record["id"], "epochs": a.epochs, "n": len(rows),
           "kendall_tau": float(kendalltau(est, sa).statistic), "spearman": float(spearmanr(est, sa).statistic),
           "tau_latency_thirds": [float(kendalltau(est[i], sa[i]).statistic) for i in thirds], "rows": rows}
    rep = out / "standalone-s1.jsonl"
    if rep.exists():  # the stand-alone figures' own rank noise: seed 0 against seed 1
        again = {r["name"]: r["standalone_val"] for r in _rows(rep)}
        both = [r for r in rows if r["name"] in again]
        s0, s1 = np.array([r["standalone_val"] for r in both]), np.array([again[r["name"]] for r in both])
        e = np.array([r["estimate"] for r in both])
        res["standalone_repeat"] = {"n": len(both), "kendall_tau_seed0_seed1": float(kendalltau(s0, s1).statistic),
                                    "kendall_tau_estimate_vs_mean": float(kendalltau(e, (s0 + s1) / 2).statistic),
                                    "mean_abs_diff": float(np.mean(np.abs(s0 - s1))),
                                    "kendall_tau_estimate_vs_latency": float(kendalltau(e, [
                                        r["profile_latency_ms"] for r in both]).statistic),
                                    "kendall_tau_standalone_mean_vs_latency": float(kendalltau((s0 + s1) / 2, [
                                        r["profile_latency_ms"] for r in both]).statistic)}
        print(f"stand-alone repeat: {res['standalone_repeat']}", flush=True)
    # the fine-tune gap: extracted + fine-tuned for one trial's steps vs stand-alone
    gap, before = [], out / f"fidelity-{a.epochs}.json"
    if not a.finetune_n and before.exists():  # --finetune-n 0: keep the fine-tune figures measured before
        gap = json.loads(before.read_text())["finetune"]
    for r in [rows[i] for i in np.linspace(0, len(rows) - 1, a.finetune_n).round().astype(int)]:
        cfg = run_config_from_dict(r["config"], r["name"])
        t0 = time.time()
        _, result = S.extract_run(sdir, cfg, a.data, DataOptions(), finetune=TRIAL_EPOCHS, device="cpu",
                                  out=out / "extracted" / f"{a.epochs}-{r['name']}")
        gap.append({"name": r["name"], "standalone_val": r["standalone_val"], "estimate": r["estimate"],
                    "finetuned_val": result.val["top1"], "gap": result.val["top1"] - r["standalone_val"],
                    "s": round(time.time() - t0, 1)})
        print(f"fine-tune {r['name']}: {gap[-1]}", flush=True)
    res["finetune"] = gap
    (out / f"fidelity-{a.epochs}.json").write_text(json.dumps(res, indent=1))
    print(f"supernet-{a.epochs}: Kendall tau {res['kendall_tau']:.3f}, Spearman {res['spearman']:.3f}, thirds "
          f"{res['tau_latency_thirds']}", flush=True)


# ------------------------------------------------------------------------------------ search
def _epochs(t) -> int:
    return len(t.user_attrs.get("history") or [])


def _started(study) -> int:
    """Trials started (not WAITING: the enqueued fixed point waits until a driver takes it)."""
    from optuna.trial import TrialState

    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))


def search(a, out: Path) -> None:
    from hovit_nas.config import SearchConfig
    from hovit_nas.executors.local import run_local
    from hovit_nas.search import prepare
    from hovit_nas.study import finished_count

    work = out / "studies"
    work.mkdir(exist_ok=True)
    for m in a.methods.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            name = f"{m}-s{seed}" if m != "c" else f"c{a.epochs}-s{seed}"
            db = work / f"{name}.db"
            for stale in (db, work / f"{name}.retrained.jsonl"):  # a fresh study per run
                stale.unlink(missing_ok=True)
            t0 = time.time()
            if m == "c":
                cfg = SearchConfig(space=SPACE, data=a.data, study=name, storage=f"sqlite:///{db}",
                                   trials=a.subnets, seed=seed, device="cpu", threads=1, evaluator="supernet",
                                   supernet=str(out / f"supernet-{a.epochs}"))
                run_local(prepare(cfg))
                _retrain_top_k(a, out, name, db)
            else:
                cfg = SearchConfig(space=SPACE, data=a.data, study=name, storage=f"sqlite:///{db}", trials=TRIALS,
                                   seed=seed, device="cpu", threads=1, early_stop="pareto" if m == "b" else "none")
                prep = prepare(cfg)
                while sum(_epochs(t) for t in prep.study.get_trials(deepcopy=False)) < TRIALS * TRIAL_EPOCHS:
                    prep.trials = finished_count(prep.study) + 1
                    before = _started(prep.study)
                    run_local(prep)
                    if _started(prep.study) == before:
                        break  # the driver would not start one
            (work / f"{name}.wall_s").write_text(f"{time.time() - t0:.1f}\n")
            print(f"{name}: {time.time() - t0:.0f} s", flush=True)


def _retrain_top_k(a, out: Path, name: str, db: Path) -> None:
    """Method (c)'s answer: the top-k of the supernet front retrained stand-alone (the full
    pipeline, the space's base training and pruning settings: those the supernet scored)."""
    import optuna

    from hovit_nas.confirm import candidates
    from hovit_nas.config import run_config_from_dict
    from hovit_nas.train import train_and_evaluate

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    splits = _splits(a)
    path = out / "studies" / f"{name}.retrained.jsonl"
    done = {r["trial"] for r in _rows(path)}
    for t in candidates(study, a.top_k)[:a.top_k]:
        if t.number in done:
            continue
        cfg = run_config_from_dict(t.user_attrs["config"], f"{name} trial {t.number}")
        r = train_and_evaluate(cfg, splits, "cpu")
        row = {"trial": t.number, "estimate": t.values[0], "latency_ms": t.values[1], "standalone_val": r.val["top1"]}
        _append(path, row)
        print(f"{name} retrained trial {t.number}: estimate {t.values[0]:.4f}, stand-alone {r.val['top1']:.4f}",
              flush=True)


# ------------------------------------------------------------------------------------ report
def _train_s(out: Path, epochs: int) -> str:
    p = out / f"supernet-{epochs}" / "train_s.txt"
    return p.read_text().strip() if p.exists() else "?"


def report(a, out: Path) -> None:
    import optuna
    import plotly.graph_objects as go
    from optuna.trial import TrialState
    from plotly.subplots import make_subplots

    from hovit_nas.pareto import hypervolume_2d

    work = out / "studies"
    runs = {}
    sup = json.loads((out / f"supernet-{a.epochs}" / "supernet.json").read_text())
    sup_epochs = len(sup["history"]) * (2 + sup["training"]["sandwich_k"])
    for db in sorted(work.glob("*.db")):
        study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        if db.stem.startswith("c"):
            if not db.stem.startswith(f"c{a.epochs}-"):
                continue
            rp = work / f"{db.stem}.retrained.jsonl"
            if not rp.exists():
                continue  # its search or retraining has not finished
            rt = _rows(rp)
            pts = [(r["standalone_val"], r["latency_ms"], TRIAL_EPOCHS) for r in rt]
            done = [t for t in trials if t.state == TrialState.COMPLETE]  # the rest: duplicates, pruned
            spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
            runs[db.stem] = {"start": sup_epochs, "points": pts, "subnets": len(done), "duplicates": len(trials) - len(done),
                             "per_subnet_s": {"median": float(np.median(spans)), "mean": float(np.mean(spans)),
                                              "p90": float(np.percentile(spans, 90)), "sum": float(np.sum(spans))},
                             "estimates": [(t.values[0], t.values[1]) for t in trials if t.state == TrialState.COMPLETE],
                             "retrained": rt}
        else:
            pts = [(t.values[0] if t.state == TrialState.COMPLETE else None,
                    t.values[1] if t.state == TrialState.COMPLETE else None, _epochs(t)) for t in trials]
            runs[db.stem] = {"start": 0, "points": pts, "trials": len(trials)}
        wall = work / f"{db.stem}.wall_s"
        runs[db.stem]["wall_s"] = float(wall.read_text()) if wall.exists() else None
    lat_max = max(p[1] for r in runs.values() for p in r["points"] if p[1] is not None)
    ref = (0.5, 1.1 * lat_max)
    curves = {}
    for k, r in runs.items():
        cum, done, curve = r["start"], [], [(0, 0.0), (r["start"], 0.0)]
        for acc, lat, e in r["points"]:
            cum += e
            if acc is not None:
                done.append((acc, lat))
            curve.append((cum, hypervolume_2d(done, ref)))
        curves[k] = curve
    final = {k: c[-1][1] for k, c in curves.items()}
    per = {m: sorted(k for k in runs if k.split("-")[0].rstrip("0123456789") == m) for m in "abc"}
    a_final = float(np.mean([final[k] for k in per["a"]])) if per["a"] else None
    a_compute = TRIALS * TRIAL_EPOCHS
    lines = [f"search efficiency: {SPACE} at 64 px on pcam-subset (4000/1000/3000), 1 thread per process, {_cpu()}",
             f"hypervolume reference (val top1 {ref[0]}, {ref[1]:.3f} ms); compute in epoch-equivalents (30 steps of "
             f"one network; a trial = {TRIAL_EPOCHS}); budget of (a), (b): {a_compute}",
             f"supernet: {len(sup['history'])} epochs x (2 + k={sup['training']['sandwich_k']}) subnets = "
             f"{sup_epochs} epoch-equivalents, id {sup['id']}, trained in {_train_s(out, a.epochs)} s on 1 thread "
             "(the (c) rows' wall time is its search and retraining only)", "",
             f"{'run':<10} {'final HV':>9} {'compute':>8} {'x (a)':>6} {'reaches (a) mean HV at':>23} "
             f"{'wall s':>8} {'trials / subnets':>17}"]
    rows = {}
    for k in sorted(runs):
        c = curves[k]
        reach = next((e for e, h in c if a_final is not None and h >= a_final - 1e-12), None)
        rows[k] = {"final_hv": final[k], "compute": c[-1][0], "reach": reach, "wall_s": runs[k]["wall_s"]}
        lines.append(f"{k:<10} {final[k]:>9.4f} {c[-1][0]:>8} {c[-1][0] / a_compute:>6.2f} "
                     f"{('never' if reach is None else f'{reach} ({reach / a_compute:.2f}x)'):>23} "
                     f"{runs[k]['wall_s'] or float('nan'):>8.0f} "
                     f"{runs[k].get('trials') or runs[k].get('subnets'):>17}")
    lines.append("")
    for m in "abc":
        if per[m]:
            hv = [final[k] for k in per[m]]
            lines.append(f"{LABELS[m]:<42} mean final HV {np.mean(hv):.4f} over {len(hv)} seed(s)")
    if a_final is not None and per["c"]:
        ratio = [rows[k]["reach"] / a_compute if rows[k]["reach"] else None for k in per["c"]]
        lines.append(f"target: (c) reaches (a)'s mean final HV {a_final:.4f} with <= 0.25x (a)'s compute "
                     f"({a_compute * 0.25:.0f}): per seed {ratio} -> "
                     + ("MET" if all(r is not None and r <= 0.25 for r in ratio) else "MISSED"))
        lines.append(f"the supernet's training alone is {sup_epochs / a_compute:.2f}x (a)'s compute; a further "
                     f"deployment target costs (c) only its evaluations and top-k retraining "
                     f"({a.top_k * TRIAL_EPOCHS} = {a.top_k * TRIAL_EPOCHS / a_compute:.2f}x)")
    fid_path = out / f"fidelity-{a.epochs}.json"
    fid = json.loads(fid_path.read_text()) if fid_path.exists() else None
    if fid:
        lines += ["", f"rank fidelity over {fid['n']} architectures stratified by latency: Kendall tau "
                  f"{fid['kendall_tau']:.3f}, Spearman {fid['spearman']:.3f}; tau in latency thirds (fast, middle, "
                  f"slow): {', '.join(f'{t:.3f}' for t in fid['tau_latency_thirds'])} -> target tau >= 0.6 "
                  + ("MET" if fid["kendall_tau"] >= 0.6 else "MISSED")]
        sr = fid.get("standalone_repeat")
        if sr:
            lines.extend([f"  the stand-alone figures' own noise ({sr['n']} architectures, training seed 0 vs 1): "
                         f"Kendall tau {sr['kendall_tau_seed0_seed1']:.3f}, mean |difference| "
                         f"{100 * sr['mean_abs_diff']:.1f} points; estimate vs the 2-seed mean: tau "
                         f"{sr['kendall_tau_estimate_vs_mean']:.3f}",
                         f"  tau against latency: supernet estimate {sr['kendall_tau_estimate_vs_latency']:+.3f}, "
                          f"stand-alone 2-seed mean {sr['kendall_tau_standalone_mean_vs_latency']:+.3f}"])
        pruned = [(sel, st["keep"]) for r in fid["rows"] for sel, st in zip(r["selected"], r["config"]["model"]["stages"])
                  if st.get("keep") and st["keep"] < st["blocks"]]
        prefix = sum(list(sel) == list(range(k)) for sel, k in pruned)
        lines.append(f"  which blocks a depth means: in the stand-alone runs the learned gates kept the first N of M "
                     f"blocks in {prefix} of {len(pruned)} pruned stages (the supernet uses the first N)")
        fp = out / "firstn.jsonl"
        if fp.exists():
            fr = _rows(fp)
            d = np.array([r["firstn_val"] - r["learned_val"] for r in fr])
            from scipy.stats import t as student_t

            half = student_t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            lines.append(f"  first N blocks trained stand-alone minus learned gates (M:N, N < M; {len(d)} architectures, "
                         f"seed 0): mean {100 * d.mean():+.2f} points, 95 % interval {100 * (d.mean() - half):+.2f} .. "
                         f"{100 * (d.mean() + half):+.2f}")
        for g in fid["finetune"]:
            lines.append(f"  fine-tune gap {g['name']}: stand-alone {g['standalone_val']:.4f}, inherited "
                         f"{g['estimate']:.4f}, fine-tuned {TRIAL_EPOCHS} epochs {g['finetuned_val']:.4f} "
                         f"(gap {100 * g['gap']:+.1f} points)")
        gaps = [abs(g["gap"]) for g in fid["finetune"]]
        if gaps:
            signed = [g["gap"] for g in fid["finetune"]]
            lines.append(f"  target: fine-tuned within 1 point of stand-alone: {sum(x <= 0.01 for x in gaps)} of "
                         f"{len(gaps)} within ±1 point, {sum(x >= -0.01 for x in signed)} of {len(gaps)} no more than "
                         f"1 point below (mean gap {100 * np.mean(signed):+.1f} points)")
    for k in per["c"]:
        ps = runs[k]["per_subnet_s"]
        lines.append(f"  {k}: {runs[k]['subnets']} subnets scored ({runs[k]['duplicates']} repeated configs pruned by the "
                     f"duplicate rule), {ps['sum']:.0f} s of trials: median {ps['median']:.1f} s, "
                     f"mean {ps['mean']:.1f} s, p90 {ps['p90']:.1f} s per subnet (latency + estimate; 1 thread)")
        rt = runs[k]["retrained"]
        lines.append(f"  {k} top-{len(rt)}: estimate vs stand-alone val: "
                     + ", ".join(f"#{r['trial']} {r['estimate']:.3f}/{r['standalone_val']:.3f}" for r in rt))
    text = "\n".join(lines)
    print(text)
    (out / "efficiency.txt").write_text(text + "\n")
    (out / "efficiency.json").write_text(json.dumps({"command": " ".join(["python", *sys.argv]),
                                                     "reference": ref, "rows": rows, "curves": curves,
                                                     "fidelity": fid, "supernet": sup["id"],
                                                     "supernet_epoch_equivalents": sup_epochs}, indent=1))
    colours = {"a": "#1f77b4", "b": "#d62728", "c": "#2ca02c"}
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "hypervolume of the stand-alone front vs compute",
        "supernet estimate vs stand-alone val top1" + (f" (Kendall τ {fid['kendall_tau']:.2f})" if fid else "")))
    for k, c in curves.items():
        m = k[0]
        fig.add_trace(go.Scatter(x=[p[0] for p in c], y=[p[1] for p in c], mode="lines", line_shape="hv",
                                 name=k, line=dict(color=colours[m], dash="solid" if k.endswith("s0") else "dot")),
                      row=1, col=1)
    if fid:
        rs = fid["rows"]
        fig.add_trace(go.Scatter(x=[r["standalone_val"] for r in rs], y=[r["estimate"] for r in rs], mode="markers",
                                 name=f"architecture ({len(rs)} by latency)", text=[r["name"] for r in rs],
                                 marker=dict(color=[r["profile_latency_ms"] for r in rs], colorscale="Viridis",
                                             showscale=True, colorbar=dict(title="ms", x=1.02))), row=1, col=2)
    for k in per["c"]:
        rt = runs[k]["retrained"]
        fig.add_trace(go.Scatter(x=[r["standalone_val"] for r in rt], y=[r["estimate"] for r in rt], mode="markers",
                                 name=f"{k} top-k", marker=dict(symbol="x", size=10, color="#2ca02c")), row=1, col=2)
    fig.update_xaxes(title_text="compute (epoch-equivalents)", row=1, col=1)
    fig.update_yaxes(title_text="hypervolume", row=1, col=1)
    fig.update_xaxes(title_text="stand-alone val top1", row=1, col=2)
    fig.update_yaxes(title_text="supernet estimate", row=1, col=2)
    fig.update_layout(height=600, width=1300, title=f"search efficiency ({SPACE}, 64 px, pcam-subset)",
                      legend=dict(orientation="h", y=-0.18, x=0))
    fig.write_html(out / "efficiency.html", include_plotlyjs=True)


if __name__ == "__main__":
    main()

"""Does Pareto-aware successive halving find the accuracy/latency front with fewer epochs?

Four methods on the shared pcam-subset with the ``hovit-cpu`` space, ``--seeds`` seeds each,
every run a fresh SQLite study driven by the library's local executor, and every run given the
same budget of training epochs (``--trials`` full trials' worth):

  (a) NSGA-II, every trial at full budget;
  (b) NSGA-II + Pareto-aware successive halving (``--early-stop pareto``);
  (c) NSGA-II + accuracy-only successive halving (``--early-stop accuracy``: the same machinery
      ranking by accuracy alone -- the ASHA rule -- so it runs on the local executor like (b);
      Ray's ASHAScheduler is not used);
  (d) random search, every trial at full budget.

A run starts trials while its cumulative training epochs are below the budget (so it may end up
to one trial over it). Reported, with one hypervolume reference point for all runs (val top1
0.5 = chance on this binary task, latency 1.1x the slowest completed trial of any run):

- hypervolume against cumulative training epochs, per run and the mean over seeds (plotly HTML
  and a text table), and the epochs at which (b), (c), (d) first reach (a)'s final hypervolume;
- stopped eventual-front trials: the front of every full-budget result of all runs (the pooled
  front) is the reference. A trial stopped by (b) or (c) counts when its config, trained to the
  full budget, lies on that front. To keep this cheap, a stopped trial is retrained only if it
  could: its rung accuracy plus the largest gain any completed trial made from that rung to its
  final accuracy, at its (known) latency, would not be dominated by the pooled front; the others
  are counted as off the front. Training is seeded and single-threaded, so the retrained
  curve repeats the stopped one (checked: the retrained rung accuracy is printed next to the
  recorded one);
- Kendall tau between each rung's val top1 and the final val top1 (rungs.fidelity), over the
  full-budget runs' completed trials, and over all runs' completed trials.

    taskset -c 1 python benchmarks/multifidelity.py [--seeds 3] [--trials 8] [--epochs 4,2]
        [--img-size 64] [--max-per-split 300] [--methods a,b,c,d] [--out results/multifidelity]
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METHODS = {"a": ("nsga2", "none", "NSGA-II, full budget"),
           "b": ("nsga2", "pareto", "NSGA-II + Pareto halving"),
           "c": ("nsga2", "accuracy", "NSGA-II + accuracy-only halving"),
           "d": ("random", "none", "random search, full budget")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pcam-subset"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=8, help="full-budget trials per run; the epoch budget is this x epochs")
    ap.add_argument("--epochs", default="4,2", help="dense,prune epochs of a full trial")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--max-per-split", type=int, default=300)
    ap.add_argument("--methods", default="a,b,c,d")
    ap.add_argument("--no-fill-in", action="store_true", help="skip retraining stopped front candidates")
    ap.add_argument("--report-only", action="store_true", help="report on the studies already in OUT/studies")
    ap.add_argument("--out", default=str(ROOT / "results" / "multifidelity"))
    a = ap.parse_args()
    if not Path(a.data).is_dir():
        print(f"skipped: {a.data} is absent (the shared pcam-subset)")
        return

    import optuna
    import torch
    import yaml
    from optuna.trial import TrialState

    from hovit_nas.config import DataOptions, EarlyStop, SearchConfig
    from hovit_nas.executors.local import run_local
    from hovit_nas.dominance import dominates, non_dominated
    from hovit_nas.pareto import hypervolume_2d
    from hovit_nas.rungs import accuracy_at, fidelity
    from hovit_nas.search import prepare

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    out = Path(a.out)
    work = out / "studies"
    work.mkdir(parents=True, exist_ok=True)
    runs_log = logging.FileHandler(out / "runs.log")  # every trial's log lines (hovit-nas's loggers)
    logging.getLogger("hovit_nas").addHandler(runs_log)
    logging.getLogger("hovit_nas").setLevel(logging.INFO)

    dense, prune = (int(v) for v in a.epochs.split(","))
    full = dense + prune
    budget = a.trials * full
    d = yaml.safe_load((ROOT / "search_spaces" / "hovit-cpu.yaml").read_text())
    d["name"] = "mf"
    d["base"]["model"]["img_size"] = a.img_size
    d["base"]["train"].update(epochs_dense=dense, epochs_prune=prune, max_steps_per_epoch=None)
    d["latency"] = {"batch": 1, "runs": 10, "warmup": 2, "threads": 1}
    space = work / "mf.yaml"
    space.write_text(yaml.safe_dump(d, sort_keys=False))
    rungs = EarlyStop().rungs(full)
    print(f"budget: {budget} epochs per run ({a.trials} trials x {full} epochs); rungs at epochs {rungs} (eta 3); "
          f"{a.img_size} px, {a.max_per_split} images per split; 1 thread", flush=True)

    runs = {}  # (method, seed) -> {"trials": [...], "wall_s": ...}
    t_all = time.time()
    for m in a.methods.split(","):
        sampler, rule, label = METHODS[m]
        for seed in range(a.seeds):
            name = f"{m}-s{seed}"
            db = work / f"{name}.db"
            if a.report_only:
                trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)
                runs[(m, seed)] = {"trials": trials, "wall_s": _wall(trials), "early_stop": rule}
                continue
            if db.exists():
                db.unlink()
            cfg = SearchConfig(space=str(space), data=a.data, data_options=DataOptions(max_per_split=a.max_per_split),
                               study=name, storage=f"sqlite:///{db}", trials=a.trials, sampler=sampler, seed=seed,
                               device="cpu", threads=1, early_stop=rule)
            t0 = time.time()
            prep = prepare(cfg)
            while True:  # one trial at a time until the epoch budget is spent
                used = sum(_epochs(t) for t in prep.study.get_trials(deepcopy=False))
                if used >= budget:
                    break
                prep.trials = _done(prep.study) + 1
                before = _started(prep.study)
                run_local(prep)
                failed = sum(t.state == TrialState.FAIL for t in prep.study.get_trials(deepcopy=False))
                if _started(prep.study) == before or failed > 5:
                    break  # the driver would not start one, or configs keep failing
            trials = prep.study.get_trials(deepcopy=False)
            runs[(m, seed)] = {"trials": trials, "wall_s": time.time() - t0, "early_stop": rule}
            st = {s: sum(t.state == s for t in trials) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
            print(f"({m}) {label} seed {seed}: {len(trials)} trials ({st[TrialState.COMPLETE]} complete, "
                  f"{st[TrialState.PRUNED]} pruned, {st[TrialState.FAIL]} failed), "
                  f"{sum(_epochs(t) for t in trials)} epochs, {time.time() - t0:.0f} s  [{time.time() - t_all:.0f} s]",
                  flush=True)

    complete = {k: [t for t in r["trials"] if t.state == TrialState.COMPLETE] for k, r in runs.items()}
    all_complete = [t for ts in complete.values() for t in ts]
    ref = (0.5, 1.1 * max(t.values[1] for t in all_complete))

    # hypervolume against cumulative epochs
    curves = {}
    for k, r in runs.items():
        cum, pts, curve = 0, [], [(0, 0.0)]
        for t in sorted(r["trials"], key=lambda t: t.number):
            cum += _epochs(t)
            if t.state == TrialState.COMPLETE:
                pts.append(tuple(t.values))
            curve.append((cum, hypervolume_2d(pts, ref)))
        curves[k] = curve
    grid = list(range(0, max(c[-1][0] for c in curves.values()) + 1))
    mean_curve = {m: [_mean(_at(curves[(m, s)], e) for s in range(a.seeds)) for e in grid]
                  for m in a.methods.split(",")}
    final = {k: _at(c, budget) for k, c in curves.items()}
    target = _mean(final[("a", s)] for s in range(a.seeds)) if "a" in a.methods else None

    # stopped trials that the full-budget front would hold
    stopped = {k: [t for t in r["trials"] if t.state == TrialState.PRUNED and t.user_attrs.get("stopped_at_rung")]
               for k, r in runs.items()}
    pooled = [tuple(t.values) for t in all_complete]
    gain = {e: max((t.values[0] - accuracy_at(t, e) for t in all_complete if accuracy_at(t, e) is not None),
                   default=0.0) for e in rungs}
    refill = []
    for k, ts in stopped.items():
        for t in ts:
            e = t.user_attrs["stopped_at_rung"]
            best_case = (t.user_attrs["rung_accuracy"] + max(gain[e], 0.0), t.user_attrs["latency_ms"])
            if not any(dominates(p, best_case) for p in pooled):
                refill.append((k, t))
    print(f"stopped trials: {sum(len(v) for v in stopped.values())}; front candidates retrained at full budget: "
          f"{len(refill)} (the rest cannot reach the pooled front even with the largest rung-to-final gain seen: "
          f"{ {e: round(g, 4) for e, g in gain.items()} })", flush=True)
    retrained = {}
    if not a.no_fill_in:
        from hovit_nas.config import DataSpec, run_config_from_dict
        from hovit_nas.train import train_and_evaluate
        from hovit_nas.trial import get_data

        splits = get_data(DataSpec.of(a.data, a.img_size, 0, DataOptions(max_per_split=a.max_per_split)))
        for k, t in refill:
            cfg = run_config_from_dict(t.user_attrs["config"], f"{k} trial {t.number}")
            r = train_and_evaluate(cfg, splits, "cpu")
            e = t.user_attrs["stopped_at_rung"]
            retrained[(k, t.number)] = (r.val["top1"], t.user_attrs["latency_ms"])
            print(f"  retrained ({k[0]}) seed {k[1]} trial {t.number}: rung {e} recorded {t.user_attrs['rung_accuracy']:.4f}, "
                  f"retrained {r.history[e - 1]['val_top1']:.4f}; final val top1 {r.val['top1']:.4f} @ "
                  f"{t.user_attrs['latency_ms']:.3f} ms", flush=True)
    points = pooled + list(retrained.values())
    front = non_dominated(points)
    on_front = {k: [t.number for t in ts if (k, t.number) in retrained and retrained[(k, t.number)] in front]
                for k, ts in stopped.items()}

    # Kendall tau, rung vs final
    es = EarlyStop()
    fid_full = [f.to_dict() for f in fidelity([t for (m, _), ts in complete.items() if m in "ad" for t in ts], es)]
    fid_all = [f.to_dict() for f in fidelity(all_complete, es)]

    # report
    lines = [f"multifidelity benchmark: hovit-cpu space at {a.img_size} px on pcam-subset ({a.max_per_split} per "
             f"split), {full} epochs per full trial ({dense} dense + {prune} prune), budget {budget} epochs per run, "
             f"rungs at {rungs}, eta 3, {a.seeds} seeds; 1 thread; hypervolume reference (val top1 {ref[0]}, "
             f"{ref[1]:.3f} ms)", "",
             f"{'method':<36} {'HV per seed at budget':<26} {'mean':>7} {'trials':>7} {'stopped':>8} "
             f"{'stopped on front':>17} {'epochs to (a) final HV':>24}"]
    summary = {}
    for m in a.methods.split(","):
        hvs = [final[(m, s)] for s in range(a.seeds)]
        reach = [_reach(curves[(m, s)], target) for s in range(a.seeds)] if target is not None else []
        reach_mean = next((e for e, v in zip(grid, mean_curve[m]) if v >= target - 1e-12), None) if target else None
        n_trials = [len(runs[(m, s)]["trials"]) for s in range(a.seeds)]
        n_stop = [len(stopped[(m, s)]) for s in range(a.seeds)]
        n_front = [len(on_front[(m, s)]) for s in range(a.seeds)]
        summary[m] = {"label": METHODS[m][2], "hv": hvs, "hv_mean": _mean(hvs), "trials": n_trials,
                      "stopped": n_stop, "stopped_on_front": n_front, "epochs_to_a_final_per_seed": reach,
                      "epochs_to_a_final_mean_curve": reach_mean,
                      "ratio_to_budget": None if reach_mean is None else reach_mean / budget,
                      "wall_s": [round(runs[(m, s)]["wall_s"], 1) for s in range(a.seeds)]}
        rs = "never" if reach_mean is None else f"{reach_mean} ({reach_mean / budget:.2f}x)"
        lines.append(f"({m}) {METHODS[m][2]:<32} {' '.join(f'{h:.4f}' for h in hvs):<26} {_mean(hvs):>7.4f} "
                     f"{sum(n_trials):>7} {sum(n_stop):>8} {sum(n_front):>17} {rs:>24}")
    lines += ["", "epochs to (a)'s final hypervolume: on the mean-over-seeds curve; per seed: "
              + "; ".join(f"({m}) {summary[m]['epochs_to_a_final_per_seed']}" for m in summary),
              f"pooled full-budget front: {len(front)} points from {len(points)} full-budget results "
              f"({len(retrained)} of them retrained stopped trials)",
              "rung/final Kendall tau (val top1 at the rung vs final val top1, completed trials):",
              "  full-budget runs (a),(d): " + _fmt_fid(fid_full),
              "  all runs:                 " + _fmt_fid(fid_all), "",
              f"{'cumulative epochs':>18} " + " ".join(f"{'(' + m + ') mean HV':>12}" for m in summary)]
    for e in sorted(set(list(range(0, grid[-1] + 1, full)) + [budget])):
        if e <= grid[-1]:
            lines.append(f"{e:>18} " + " ".join(f"{mean_curve[m][e]:>12.4f}" for m in summary))
    if target is not None and "b" in summary and "c" in summary:
        ratio = summary["b"]["ratio_to_budget"]
        lines += ["", f"target 1: (b) reaches (a)'s final HV {target:.4f} with <= 0.5x (a)'s epochs: "
                  + ("never reached" if ratio is None else f"{ratio:.2f}x") + " -> "
                  + ("MET" if ratio is not None and ratio <= 0.5 else "MISSED"),
                  f"target 2: (b) stops fewer eventual-front trials than (c): {sum(summary['b']['stopped_on_front'])} "
                  f"vs {sum(summary['c']['stopped_on_front'])} -> "
                  + ("MET" if sum(summary['b']['stopped_on_front']) < sum(summary['c']['stopped_on_front']) else "NOT MET")]
    lines.append(f"total wall time {time.time() - t_all:.0f} s")
    text = "\n".join(lines)
    print(text)
    (out / "multifidelity.txt").write_text(text + "\n")
    (out / "multifidelity.json").write_text(json.dumps({
        "command": " ".join(["python", "benchmarks/multifidelity.py", *sys.argv[1:]]),
        "budget_epochs": budget, "epochs_per_trial": full, "rungs": rungs, "reference_point": ref,
        "target_hv": target, "summary": summary, "fidelity_full_budget_runs": fid_full, "fidelity_all_runs": fid_all,
        "stopped_on_front": {f"{k[0]}-s{k[1]}": v for k, v in on_front.items()},
        "retrained": {f"{k[0]}-s{k[1]}#{n}": v for (k, n), v in retrained.items()},
        "curves": {f"{k[0]}-s{k[1]}": c for k, c in curves.items()}}, indent=1))
    _plot(curves, mean_curve, grid, summary, budget, target, out / "multifidelity.html", a.seeds)


def _epochs(t) -> int:
    """Training epochs a trial spent: its history (complete, or stopped at a rung)."""
    return len(t.user_attrs.get("history") or [])


def _wall(trials) -> float:
    """A finished run's wall time from its trials' timestamps (for --report-only)."""
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else math.nan


def _started(study) -> int:
    from optuna.trial import TrialState
    return sum(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False))


def _done(study) -> int:
    from hovit_nas.study import finished_count
    return finished_count(study)


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def _at(curve, e) -> float:
    """Hypervolume after ``e`` cumulative epochs (a step function)."""
    v = 0.0
    for c, h in curve:
        if c > e:
            break
        v = h
    return v


def _reach(curve, target):
    return next((c for c, h in curve if h >= target - 1e-12), None)


def _fmt_fid(fid) -> str:
    return "; ".join(f"epoch {f['epoch']}: " + (f"tau {f['tau']:+.3f} (p {f['p']:.2g}, n {f['n']})"
                                                if f["tau"] is not None else f"n/a (n {f['n']})") for f in fid)


def _plot(curves, mean_curve, grid, summary, budget, target, path, seeds) -> None:
    import plotly.graph_objects as go

    colours = {"a": "#1f77b4", "b": "#d62728", "c": "#2ca02c", "d": "#7f7f7f"}
    fig = go.Figure()
    for (m, s), c in curves.items():
        fig.add_trace(go.Scatter(x=[p[0] for p in c], y=[p[1] for p in c], mode="lines", line_shape="hv",
                                 line=dict(color=colours[m], width=1), opacity=0.35, name=f"({m}) seed {s}",
                                 legendgroup=m, showlegend=False))
    for m, ys in mean_curve.items():
        fig.add_trace(go.Scatter(x=grid, y=ys, mode="lines", line_shape="hv", line=dict(color=colours[m], width=3),
                                 name=f"({m}) {summary[m]['label']}: mean of {seeds}", legendgroup=m))
    if target is not None:
        fig.add_hline(y=target, line_dash="dot", annotation_text="(a) final HV (mean)")
    fig.add_vline(x=budget, line_dash="dash", annotation_text="budget")
    fig.add_vline(x=budget / 2, line_dash="dot", annotation_text="0.5x budget")
    fig.update_layout(title="hypervolume vs cumulative training epochs (hovit-cpu space, pcam-subset)",
                      xaxis_title="cumulative training epochs", yaxis_title="hypervolume (val top1 x ms)",
                      template="plotly_white", height=560)
    fig.write_html(path, include_plotlyjs=True)


if __name__ == "__main__":
    main()

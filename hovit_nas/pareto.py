"""The accuracy/latency Pareto front: hypervolume, HoViT-B's standing, plots, and pinning.

The front is the non-dominated set of the study's completed trials (dominance.py, the
definition Optuna's ``study.best_trials`` uses), with the fixed point's replicates merged into one
row (noise.py). Only COMPLETE trials have objective values, so a pruned or early-stopped trial can
never sit on the front with a low-fidelity accuracy. Under noise (stats.py, noise.py) every
figure carries its interval, and the noise-aware front keeps what is not dominated beyond noise.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Optional, Sequence

import optuna
import yaml
from optuna.trial import TrialState

from . import noise as noise_mod
from . import provenance as pv
from . import record, stats
from . import study as st
from .config import run_config_from_dict
from .confirm.figures import confirmed, format_table
from .record import StudyRecord
from .dominance import dominates, non_dominated
from .errors import HovitError
from .rungs import fidelity


def hypervolume_2d(points: Sequence[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy up, latency down) points, bounded by ``ref`` = (acc, latency)."""
    pts = sorted((lat, acc) for acc, lat in points if acc > ref[0] and lat < ref[1])
    area, best_acc = 0.0, ref[0]
    for i, (lat, acc) in enumerate(pts):  # sweep latency upwards; accuracy reached so far is a staircase
        best_acc = max(best_acc, acc)
        next_lat = pts[i + 1][0] if i + 1 < len(pts) else ref[1]
        area += (next_lat - lat) * (best_acc - ref[0])
    return area


def reference_point(rec: StudyRecord, rows: list) -> tuple[float, float, str]:
    """The declared point: the space's ``reference_point`` where set; latency defaults to 2x
    HoViT-B's measured latency (else 2x the slowest trial)."""
    decl = rec.space_def.get("reference_point") or {}
    acc = float(decl.get("accuracy", 0.0))
    if "latency_ms" in decl:
        return acc, float(decl["latency_ms"]), "declared in the space"
    fp = [r for r in rows if r.members[0].fixed_point]
    if fp:
        return acc, 2.0 * fp[0].latency_ms, "2x HoViT-B latency"
    lat = 2.0 * max((r.latency_ms for r in rows), default=1.0)
    return acc, lat, "2x slowest trial"


def _arch(t) -> str:
    if not t.config:
        return json.dumps(t.params)
    cfg = run_config_from_dict(t.config, f"trial {t.number}")
    stages = " ".join(f"{s.blocks}:{s.kept}" + ("" if s.downsample == "none" else f"/{s.downsample[:4]}")
                      for s in cfg.model.stages)
    p = cfg.prune
    extra = f" tau {p.tau_start:.2g}->{p.tau_end:.2g} r{p.lora_rank}" if cfg.model.pruned else ""
    return f"[{stages}] head {cfg.model.head_width}{extra}"


def summarise(study: optuna.Study) -> dict:
    """The study's report as plain data (what ``pareto --json`` prints): the point front and, under
    ``noise``, every figure with its interval, the noise-aware front, HoViT-B's standing beyond
    noise and the hypervolume's interval (noise.py, stats.py). Reads the study's records once."""
    rec = StudyRecord.read(study)
    every = record.trials(study)
    complete = [t for t in every if t.complete]
    if not complete:
        raise HovitError(f"study {study.study_name!r} has no completed trials yet")
    conf = confirmed(study)
    nz = noise_mod.measure(rec, every, {"val": [list(c.val.values()) for c in conf.values()],
                                        "latency_ms": [list(c.latency_ms.values()) for c in conf.values()]})
    rows = noise_mod.rows_of(every, nz)
    front = sorted(non_dominated(rows, key=lambda r: (r.accuracy, r.latency_ms)), key=lambda r: r.latency_ms)
    ref_acc, ref_lat, ref_why = reference_point(rec, rows)
    hv = hypervolume_2d([(r.accuracy, r.latency_ms) for r in front], (ref_acc, ref_lat))
    history, done = [], []
    for t in complete:
        done.append((t.accuracy, t.latency_ms))
        history.append({"trial": t.number, "hypervolume": hypervolume_2d(done, (ref_acc, ref_lat))})
    fixed_row = next((r for r in rows if r.members[0].fixed_point), None)
    fixed = None
    if fixed_row is not None:
        dom = [r.trial for r in rows if dominates((r.accuracy, r.latency_ms), (fixed_row.accuracy,
                                                                                fixed_row.latency_ms))]
        fixed = {"trial": fixed_row.trial, "accuracy": fixed_row.accuracy, "latency_ms": fixed_row.latency_ms,
                 "on_front": any(r is fixed_row for r in front), "dominated_by": dom}
    counts = {s.name: sum(t.state == s.name for t in every) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)}
    es = rec.early_stop
    frozen = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {
        "study": study.study_name, "metric": rec.metric,
        "precision": rec.latency_precision,
        "supernet": rec.supernet,  # {"id", "dir"}: accuracies are supernet estimates
        "data": rec.data, "latency_batch": rec.latency_batch,
        "runtime": rec.latency_runtime, "target": rec.target_label,
        "device": next((t.latency.get("device_name") for t in complete), None),
        "img_size": rec.img_size, "classes": rec.classes,
        "threads": next((t.latency.get("threads") for t in complete), None),
        "counts": counts, "reference_point": {"accuracy": ref_acc, "latency_ms": ref_lat, "why": ref_why},
        "hypervolume": hv, "hypervolume_history": history, "fixed_point": fixed,
        "front": [_row(r, rec.metric) for r in front], "all": [_row(r, rec.metric) for r in rows],
        "confirmed": conf,  # trial -> Confirmed (confirm/figures.py); {} before `hovit-nas confirm`
        "early_stop": {"rule": es.rule, "min_epochs": es.min_epochs, "eta": es.eta},
        "rung_fidelity": [f.to_dict() for f in fidelity(frozen, es)],
        "noise": _noise_report(rows, front, fixed_row, nz, (ref_acc, ref_lat)),
    }


def _noise_report(rows: list, front: list, fixed_row, nz, ref: tuple[float, float]) -> dict:
    """The noise section of the report (see ``summarise``)."""
    nfront = noise_mod.noise_front(rows, nz)
    best = noise_mod.indistinguishable_from_best(rows, nz)
    pts = [{"accuracy": r.accuracy, "latency_ms": r.latency_ms, "se": r.se, "cv": r.cv} for r in rows]
    hv = stats.hypervolume_interval(pts, ref, hypervolume_2d, nz.seed_sd)
    paired = any(noise_mod.difference(a, b, nz.metric, nz.labels)[2] for a, b in zip(rows, rows[1:]))
    fp = None
    if fixed_row is not None:
        fp = {"trial": fixed_row.trial, "runs": fixed_row.runs, "trials": [m.number for m in fixed_row.members],
              "accuracy": fixed_row.accuracy, "interval": [fixed_row.acc_interval.low, fixed_row.acc_interval.high],
              "latency_ms": fixed_row.latency_ms,
              "latency_interval": [fixed_row.lat_interval.low, fixed_row.lat_interval.high],
              "dominated_beyond_noise_by": noise_mod.dominators(fixed_row, rows, nz)}
    return {**nz.to_dict(), "paired": paired,
            "rows": {r.trial: {"accuracy": r.accuracy, "interval": [r.acc_interval.low, r.acc_interval.high],
                               "se_images": r.se, "latency_ms": r.latency_ms,
                               "latency_interval": [r.lat_interval.low, r.lat_interval.high], "cv": r.cv,
                               "runs": r.runs} for r in rows},
            "front": [r.trial for r in front], "noise_front": [r.trial for r in nfront],
            "indistinguishable_from_best": best, "fixed_point": fp, "hypervolume": hv.to_dict()}


def _row(r, metric: str) -> dict:
    """One architecture's figures (a noise.Row: one trial, or the fixed point's replicates, whose
    first trial names it); ``fp32_accuracy``: at an int8 target, the fp32 model's val ``metric``
    (``accuracy`` is the int8 model's), else None."""
    t = r.members[0]
    fp32 = t.val_fp32 or {}
    return {"trial": r.trial, "accuracy": r.accuracy, "latency_ms": r.latency_ms, "params": t.n_params,
            "test_top1": t.test.get("top1"), "arch": _arch(t),
            "fp32_accuracy": (stats.objective(fp32, metric) if fp32 else None), "fixed_point": bool(t.fixed_point),
            "runs": r.runs}


def _estimated(rep: dict) -> str:
    """The accuracy label's suffix for a study scored by a supernet (its figures are estimates)."""
    sn = rep.get("supernet")
    return f" (supernet {sn['id']} estimate: inherited weights, not trained)" if sn else ""


def format_report(rep: dict, noise: bool = True) -> str:
    """The report as text; ``noise`` False: the plain point front only (as before issue 32)."""
    c = rep["counts"]
    int8 = rep.get("precision") == "int8"  # the fp32 score beside the int8 one
    nz = rep.get("noise") if noise else None
    lines = [f"study {rep['study']}: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed"
             + (f", {c['RUNNING']} running" if c["RUNNING"] else "")
             + f"; data: {rep['data']}; device: {rep['device']}",
             "classes (output order): " + (", ".join(rep["classes"]) if rep.get("classes") else
                                           "not recorded (a study from before class names were kept)"),
             f"objectives: val {_axis(rep)}{' of the int8 model' if int8 else ''}{_estimated(rep)} (max), "
             f"latency ms (min) on deployment target {rep['target']}"]
    if nz:
        lines.append(_noise_line(nz))
    lines += [f"Pareto front ({len(rep['front'])} trials):",
              f"  {'trial':>5}  {_axis(rep):>8}" + (f"  {'95 % interval':>17}" if nz else "")
              + (f"  {'fp32':>6}" if int8 else "") + f"  {'latency':>9}" + (f"  {'95 % interval':>15}" if nz else "")
              + f"  {'params':>7}  {'test':>6}  architecture"]
    for r in rep["front"]:
        fp32 = "" if not int8 else f"  {'–':>6}" if r["fp32_accuracy"] is None else f"  {r['fp32_accuracy']:>6.4f}"
        test = "-" if r["test_top1"] is None else f"{r['test_top1']:.4f}"  # a supernet estimate scores val only
        row = (nz or {}).get("rows", {}).get(r["trial"]) or (nz or {}).get("rows", {}).get(str(r["trial"]))
        acc_i = f"  [{row['interval'][0]:.4f}, {row['interval'][1]:.4f}]" if row else ""
        lat_i = f"  [{row['latency_interval'][0]:5.2f}, {row['latency_interval'][1]:5.2f}]ms" if row else ""
        runs = f" ({r['runs']} seeds)" if r.get("runs", 1) > 1 else ""
        lines.append(f"  {r['trial']:>5}  {r['accuracy']:>8.4f}{acc_i}{fp32}  {r['latency_ms']:>7.2f}ms{lat_i}  "
                     f"{(r['params'] or 0) / 1e6:>6.2f}M  {test:>6}  {r['arch']}"
                     + ("  <- HoViT-B" + runs if r["fixed_point"] else ""))
    ref = rep["reference_point"]
    hv = f"{rep['hypervolume']:.4f}"
    if nz:
        h = nz["hypervolume"]
        hv += f" (95 % interval {h['low']:.4f} .. {h['high']:.4f}, resampling each trial within its noise)"
    lines.append(f"hypervolume {hv} (reference: {_axis(rep)} {ref['accuracy']}, "
                 f"latency {ref['latency_ms']:.2f} ms = {ref['why']})")
    if nz:
        lines += _noise_lines(rep, nz)
    fp = rep["fixed_point"]
    if fp is None:
        lines.append("HoViT-B fixed point: not completed yet")
    elif fp["on_front"]:
        lines.append(f"HoViT-B (trial {fp['trial']}, {fp['accuracy']:.4f} @ {fp['latency_ms']:.2f} ms) is ON the front")
    else:
        lines.append(f"HoViT-B (trial {fp['trial']}, {fp['accuracy']:.4f} @ {fp['latency_ms']:.2f} ms) is dominated "
                     f"by trials {fp['dominated_by']}" + (" (point estimates)" if nz else ""))
    if nz and nz.get("fixed_point"):
        f = nz["fixed_point"]
        by = f["dominated_beyond_noise_by"]
        lines.append(f"HoViT-B over {f['runs']} seed(s): {_axis(rep)} {f['accuracy']:.4f} [{f['interval'][0]:.4f}, "
                     f"{f['interval'][1]:.4f}] @ {f['latency_ms']:.2f} ms [{f['latency_interval'][0]:.2f}, "
                     f"{f['latency_interval'][1]:.2f}]: " + (f"dominated beyond noise by {len(by)} trial(s) {by}"
                                                             if by else "dominated beyond noise by no trial"))
    lines.append(format_fidelity(rep))
    lines.append(format_table(rep["confirmed"], rep["metric"]))
    return "\n".join(lines)


def _axis(rep: dict) -> str:
    """The accuracy axis' name: the metric, or -nll for the NLL objective (stats.objective)."""
    return "-nll" if rep["metric"] == "nll" else rep["metric"]


def _noise_line(nz: dict) -> str:
    from .noise import Noise

    return Noise(nz["metric"], nz["seed_sd"], nz["seed_df"], nz["seed_source"], nz["latency_cv"], nz["latency_df"],
                 nz["latency_source"], nz["z"]).line() + ("" if nz.get("paired") else
                                                           "; trials compared unpaired (no per-image scores)")


def _noise_lines(rep: dict, nz: dict) -> list[str]:
    nf, best = nz["noise_front"], nz["indistinguishable_from_best"]
    extra = sorted(set(nf) - set(nz["front"]))
    return [f"noise-aware front ({len(nf)} trials {nf}): no other trial is at least as good on both axes and better "
            f"beyond noise on one" + (f"; beside the point front it keeps {extra}" if extra else
                                      "; the same trials as the point front"),
            f"{len(best)} trial(s) statistically indistinguishable from the best val {_axis(rep)}: {best}"]


def format_fidelity(rep: dict) -> str:
    """One line: Kendall tau of each rung's val top1 against the final objective."""
    es, fid = rep["early_stop"], rep["rung_fidelity"]
    how = (f"{es['rule']} successive halving" if es["rule"] != "none" else "no early stopping; rungs it would use")
    if not fid:
        return f"rung fidelity: no rung inside the trials' budget ({how})"
    parts = [f"epoch {f['epoch']}: " + (f"tau {f['tau']:+.2f} (p {f['p']:.2g}, n {f['n']})" if f["tau"] is not None
                                        else f"n/a (n {f['n']})") for f in fid]
    return (f"rung fidelity, Kendall tau of val top1 at the rung vs final val {rep['metric']} over completed trials "
            f"({how}, eta {es['eta']}): " + "; ".join(parts))


def load_bench(path: Optional[str | Path], rep: dict) -> Optional[dict]:
    """Baselines from a ``hovit-nas bench`` JSON measured on the same device, batch, resolution,
    threads and runtime as the study (its rows on other runtimes are left out)."""
    if not path or not Path(path).is_file():
        return None
    bench = json.loads(Path(path).read_text())
    same = (bench.get("device_name") == rep["device"] and bench.get("batch") == rep["latency_batch"]
            and bench.get("img_size") == rep.get("img_size") and bench.get("threads") == rep.get("threads"))
    rows = [r for r in bench.get("rows", []) if r.get("runtime", "torch") == rep["runtime"]]
    return dict(bench, rows=rows, source=f"from {path}") if same and rows else None


def format_baselines(bench: Optional[dict]) -> str:
    """One line: each baseline's latency on the study's target (``baselines_on_target``) or from
    a bench file (``load_bench``), or why there are none."""
    if not bench:
        return "baselines: none (--no-baselines, or the --bench file was not measured on this study's target)"
    if not bench.get("rows"):
        return f"baselines: {bench.get('note', 'none')}"
    rows = [r for r in bench["rows"] if r.get("kind", "baseline") == "baseline"]
    shown = ", ".join(f"{r['model']} {r['latency_ms']:.2f} ms" for r in rows)
    source = bench.get("source") or f"on {bench['target']}"
    return f"baselines {source}: {shown}" + (f" ({bench['note']})" if bench.get("note") else "")


def _error_bars(rows: list[dict], nz: Optional[dict], color: str) -> dict:
    """plotly error bars on both axes from the report's 95 % intervals (none without ``nz``)."""
    if not nz:
        return {}
    iv = [nz["rows"].get(r["trial"]) or nz["rows"].get(str(r["trial"])) for r in rows]
    ok = all(v is not None for v in iv)
    if not ok:
        return {}
    return {"error_y": dict(type="data", symmetric=False, array=[v["interval"][1] - r["accuracy"] for v, r in zip(iv, rows)],
                            arrayminus=[r["accuracy"] - v["interval"][0] for v, r in zip(iv, rows)], color=color,
                            thickness=1, width=3, visible=True),
            "error_x": dict(type="data", symmetric=False,
                            array=[v["latency_interval"][1] - r["latency_ms"] for v, r in zip(iv, rows)],
                            arrayminus=[r["latency_ms"] - v["latency_interval"][0] for v, r in zip(iv, rows)],
                            color=color, thickness=1, width=3, visible=True)}


def plot(rep: dict, out: str | Path, bench: Optional[dict] = None, noise: bool = True) -> Path:
    """All trials, the front highlighted, HoViT-B marked, baselines, and the hypervolume history;
    with ``noise`` (and a report that has it): 95 % error bars on both axes and the noise-aware
    front marked beside the point front."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.65, 0.35],
                        subplot_titles=("accuracy vs latency", "hypervolume history"))
    hover = lambda rows: [f"trial {r['trial']}<br>{r['arch']}<br>params {(r['params'] or 0) / 1e6:.2f} M"
                          + (f"<br>int8 (fp32 {r['fp32_accuracy']:.4f})" if r.get("fp32_accuracy") is not None else "")
                          for r in rows]
    nz = rep.get("noise") if noise else None
    rest = [r for r in rep["all"] if r["trial"] not in {f["trial"] for f in rep["front"]}]
    fig.add_trace(go.Scatter(x=[r["latency_ms"] for r in rest], y=[r["accuracy"] for r in rest], mode="markers",
                             name="trials" + (" (95 % intervals)" if nz else ""), marker=dict(color="#9aa5b1", size=8),
                             text=hover(rest), hoverinfo="text+x+y", **_error_bars(rest, nz, "#9aa5b1")), 1, 1)
    front = rep["front"]
    fig.add_trace(go.Scatter(x=[r["latency_ms"] for r in front], y=[r["accuracy"] for r in front],
                             mode="lines+markers", line_shape="hv", name="Pareto front (point estimates)",
                             marker=dict(color="#d62728", size=11), text=hover(front), hoverinfo="text+x+y",
                             **_error_bars(front, nz, "#d62728")), 1, 1)
    if nz:
        at = {r["trial"]: r for r in rep["all"]}
        nf = [at[n] for n in nz["noise_front"] if n in at]
        fig.add_trace(go.Scatter(x=[r["latency_ms"] for r in nf], y=[r["accuracy"] for r in nf], mode="markers",
                                 name="noise-aware front: not dominated beyond noise",
                                 marker=dict(symbol="circle-open", size=18, color="#1f77b4", line=dict(width=2)),
                                 text=hover(nf), hoverinfo="text+x+y"), 1, 1)
    fp = rep["fixed_point"]
    if fp:
        fig.add_trace(go.Scatter(x=[fp["latency_ms"]], y=[fp["accuracy"]], mode="markers+text", name="HoViT-B",
                                 text=["HoViT-B"], textposition="top center",
                                 marker=dict(symbol="star", size=18, color="#ff7f0e",
                                             line=dict(color="black", width=1))), 1, 1)
    if bench:
        for row in bench["rows"]:
            if row["kind"] != "baseline":
                continue
            acc = row.get("val_top1") if row.get("val_top1") is not None else row.get("top1")  # the y axis is val
            if acc is not None:
                fig.add_trace(go.Scatter(x=[row["latency_ms"]], y=[acc], mode="markers+text",
                                         name=row["model"], text=[row["model"]], textposition="bottom center",
                                         marker=dict(symbol="diamond", size=11)), 1, 1)
            else:
                fig.add_vline(x=row["latency_ms"], line_dash="dot", line_color="#1f77b4", row=1, col=1,
                              annotation_text=f"{row['model']} (accuracy unknown)", annotation_textangle=-90)
    conf = rep["confirmed"]
    if conf:
        at = {r["trial"]: r for r in rep["all"]}
        shown = [c for n, c in sorted(conf.items()) if n in at]
        if rep.get("supernet"):  # each finalist's estimate joined to its stand-alone result
            xs, ys = [], []
            for c in shown:
                xs += [at[c.trial]["latency_ms"]] * 2 + [None]
                ys += [at[c.trial]["accuracy"], c.mean("val"), None]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="supernet estimate → stand-alone",
                                     line=dict(color="#2ca02c", dash="dot", width=1), hoverinfo="skip"), 1, 1)
        fig.add_trace(go.Scatter(
            x=[at[c.trial]["latency_ms"] for c in shown], y=[c.mean("val") for c in shown], mode="markers",
            name=f"confirmed{' stand-alone' if rep.get('supernet') else ''}: mean ± sd over "
                 f"{max(c.n for c in shown)} seeds",
            error_y=dict(type="data", array=[c.sd("val") for c in shown], visible=True, color="#2ca02c"),
            marker=dict(symbol="line-ew-open", size=18, color="#2ca02c", line=dict(width=3)),
            text=[f"trial {c.trial} confirmed<br>val {c.mean('val'):.4f} ± {c.sd('val'):.4f}<br>"
                  + (f"supernet estimate {c.estimate:.4f}<br>" if c.estimate is not None else "") +
                  f"test {c.mean('test'):.4f} ± {c.sd('test'):.4f}" for c in shown], hoverinfo="text"), 1, 1)
    hist = rep["hypervolume_history"]
    fig.add_trace(go.Scatter(x=[h["trial"] for h in hist], y=[h["hypervolume"] for h in hist], mode="lines+markers",
                             name="hypervolume", line_shape="hv"), 1, 2)
    fig.update_xaxes(title_text=f"latency (ms) on {rep['target']} ({rep['device']})",
                     row=1, col=1)
    int8 = rep.get("precision") == "int8"
    fig.update_yaxes(title_text=f"validation {rep['metric']}{' (int8 model)' if int8 else ''}{_estimated(rep)}",
                     row=1, col=1)
    fig.update_xaxes(title_text="trial number", row=1, col=2)
    fig.update_yaxes(title_text="hypervolume", row=1, col=2)
    fig.update_layout(title=f"hovit-nas study {rep['study']} ({rep['data']})", height=600, autosize=True,
                      template="plotly_white", margin=dict(b=110))
    fig.add_annotation(text=format_fidelity(rep), xref="paper", yref="paper", x=0, y=-0.2, showarrow=False,
                       xanchor="left", font=dict(size=11))
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(p, include_plotlyjs=True)  # self-contained: opens offline
    return p


def pick(rep: dict, max_latency: Optional[float] = None, knee: bool = False) -> dict:
    """One front trial: the most accurate under ``max_latency``, or the knee (closest to the ideal
    point after scaling both objectives to [0, 1] over the front)."""
    front = rep["front"]
    if max_latency is not None:
        ok = [r for r in front if r["latency_ms"] <= max_latency]
        if not ok:
            raise HovitError(f"no front trial has latency <= {max_latency} ms (fastest: "
                             f"{min(r['latency_ms'] for r in front):.2f} ms)")
        return max(ok, key=lambda r: (r["accuracy"], -r["latency_ms"]))
    accs, lats = [r["accuracy"] for r in front], [r["latency_ms"] for r in front]
    span_a, span_l = (max(accs) - min(accs)) or 1.0, (max(lats) - min(lats)) or 1.0
    return min(front, key=lambda r: ((max(accs) - r["accuracy"]) / span_a) ** 2 + ((r["latency_ms"] - min(lats)) / span_l) ** 2)


def _confirmed_front(conf: dict) -> list[dict]:
    """The confirmed candidates no other one dominates on (mean val score, mean latency ms)."""
    rows = [{"trial": n, "accuracy": c.mean("val"), "latency_ms": c.mean("latency_ms")} for n, c in conf.items()]
    return non_dominated(rows, key=lambda r: (r["accuracy"], r["latency_ms"]))


# ------------------------------------------------------------------- the commands it prints

def confirm_command(study: optuna.Study, storage: str) -> str:
    """``hovit-nas confirm`` of ``study``, with the data and split options its search recorded."""
    return st.command("hovit-nas", "confirm", "--study", study.study_name, storage=st.absolute_url(storage),
                      data=study.user_attrs)


def pin_command(study_name: str, storage: str) -> str:
    return st.command("hovit-nas", "pin", "--study", study_name, storage=st.absolute_url(storage))


def next_steps(study: optuna.Study, storage: str) -> list[str]:
    """What ``pareto`` prints last: confirm, then pin; or pin alone once the front is confirmed."""
    pin_line = pin_command(study.study_name, storage)
    if confirmed(study):
        return [f"next: {pin_line}"]
    return [f"next: {confirm_command(study, storage)}", f"then: {pin_line}"]


def run_dir(doc: dict) -> str:
    """Where the reproduce line trains a pinned config (``doc``: what ``pin`` wrote)."""
    return f"runs/{doc['config']['name']}"


def reproduce_command(study: optuna.Study, path: str | Path, doc: dict) -> str:
    """``hovit-nas train`` of the pinned config at ``path`` on the study's data, into ``run_dir``."""
    return st.command("hovit-nas", "train", "--config", path, "--out", run_dir(doc), data=study.user_attrs)


def int8_command(study: optuna.Study, doc: dict) -> Optional[str]:
    """For a study whose deployed model is int8: the same quantization of the reproduced run."""
    q = doc.get("quantization")
    if not q:
        return None
    return st.command("hovit-nas", "export", run_dir(doc), "--format", "onnx", "--precision", "int8", "--runtime",
                      q["runtime"], "--calibration-images", str(q["calibration_images"]), data=study.user_attrs)


def deploy_steps(study: optuna.Study, storage: str, path: str | Path, doc: dict) -> list[str]:
    """What ``pin`` prints for deployment: the one command, then the same as three steps for the
    study's deployment target (retrain; export for its runtime and precision; eval of that file)."""
    from . import runtimes

    rd = run_dir(doc)
    t = doc.get("target") or {}
    rt, precision = t.get("runtime", "torch"), t.get("precision", "fp32")
    suffix = runtimes.CAPS[rt].suffix if rt in runtimes.CAPS else ".safetensors"
    lines = [f"deploy: {st.command('hovit-nas', 'deploy', '--study', study.study_name, '--best', path, storage=st.absolute_url(storage))}",
             f"or step by step, for {doc.get('deployment_target', 'the study target')}:",
             f"step 1: {reproduce_command(study, path, doc)}"]
    if precision == "int8":
        lines.append(f"step 2: {int8_command(study, doc)}")
        model = f"{rd}/model.int8.{rt}.onnx"
    elif suffix == ".onnx":
        lines.append(f"step 2: {st.command('hovit-nas', 'export', rd, '--format', 'onnx')}")
        model = f"{rd}/model.onnx"
    else:
        model = rd  # the run directory's model.safetensors
    extra = ["--runtime", rt] if suffix == ".onnx" else []
    lines.append(f"step {len(lines) - 1}: {st.command('hovit-nas', 'eval', model, *extra, data=study.user_attrs)}")
    return lines


def pin(study: optuna.Study, storage: str, out: str | Path, max_latency: Optional[float] = None,
        knee: bool = False, trial: Optional[int] = None, non_inferior_to: Optional[str] = None,
        margin: Optional[float] = None, one_se: bool = False) -> tuple[Path, dict]:
    """Write one trial as a reproducible config: a given completed ``trial``, or the pick by a
    rule -- over the confirmed candidates when ``hovit-nas confirm`` has run, else over the
    search's trials:

    - ``max_latency``: the most accurate under it; ``knee``: the knee of the front (the default
      of this function, as before);
    - ``non_inferior_to`` (``hovit_b``/``fixed_point`` or a trial number) with ``margin`` (default
      the space's ``noise.margin``): the fastest candidate non-inferior to it (decide.non_inferior);
    - ``one_se``: the one-standard-error rule (decide.one_se; ``hovit-nas pin``'s default).

    ``best.yaml`` records the rule and its evidence. Raises HovitError when nothing qualifies
    (nothing is written)."""
    from .confirm.figures import check_same_splits, confirm_name

    try:  # a confirmation of other splits is refused here (the report only ignores it)
        check_same_splits(optuna.load_study(study_name=confirm_name(study.study_name), storage=st.storage_of(study)),
                          study)
    except KeyError:
        pass
    rep = summarise(study)
    conf = rep["confirmed"]
    if rep.get("supernet") and not conf:
        raise HovitError(f"study {study.study_name!r} holds supernet estimates (inherited weights, not trained); run "
                         f"`{confirm_command(study, storage)}` "
                         "first, so the pin rests on stand-alone figures")
    rule = f"max accuracy with latency <= {max_latency} ms" if max_latency is not None else "knee of the front"
    evidence = None
    if trial is not None:
        if not any(r["trial"] == trial for r in rep["all"]):
            raise HovitError(f"trial {trial} is not a completed trial of study {study.study_name!r}")
        row, chosen_by = {"trial": trial}, f"trial {trial} by number"
    elif non_inferior_to is not None or one_se:
        choice = _decide(study, rep, non_inferior_to, margin)
        row, chosen_by, evidence = {"trial": choice.trial}, choice.rule, choice.evidence
    elif conf:
        row = pick({"front": _confirmed_front(conf)}, max_latency, knee)
        chosen_by = f"{rule}, on the mean validation score over {conf[row['trial']].n} confirmation seeds"
    else:
        row, chosen_by = pick(rep, max_latency, knee), f"{rule}, on one seed's validation score (unconfirmed)"
    t = study.trials[row["trial"]]
    a = t.user_attrs
    c = conf.get(t.number)
    doc = {
        "study": study.study_name, "storage": st.shown(storage), "trial": t.number, "chosen_by": chosen_by,
        "confirmed": c is not None,
        "pinned_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "objectives": {f"val_{rep['metric']}": t.values[0], "latency_ms": t.values[1]},
        **({"evidence": evidence} if evidence is not None else {}),
        **({"objectives_are": f"supernet {rep['supernet']['id']} estimates (the confirmation is stand-alone)"}
           if rep.get("supernet") else {}),
        "confirmation": c.to_dict() if c else (
            "none: this pick rests on one seed's validation score; run `hovit-nas confirm` to retrain the front's "
            "candidates and HoViT-B over more seeds"),
        "deployment_target": rep["target"], "target": study.user_attrs.get("deployment_target"),
        "params": a.get("params"), "device": (a.get("latency") or {}).get("device_name"),
        "latency": a.get("latency"), "data": a.get("data"),
        "val": {k: v for k, v in (a.get("val") or {}).items() if k != "confusion"},
        "test": {k: v for k, v in (a.get("test") or {}).items() if k != "confusion"},
        **{k: {m: v for m, v in a[k].items() if m != "confusion"} for k in ("val_fp32", "test_fp32") if k in a},
        **({"quantization": a["quantization"]} if "quantization" in a else {}),
        "fixed_point": rep["fixed_point"], "classes": rep.get("classes"),
        "provenance": (lambda p: None if p is None else p.to_dict(sketch=False))(pv.of_study(study.user_attrs)),
        "config": a["config"],
    }
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"# Pinned from study {study.study_name!r}, trial {t.number}"
                 f"{'' if c else ' (UNCONFIRMED: one seed)'}. "
                 f"Reproduce: {reproduce_command(study, p, doc)}\n" + yaml.safe_dump(doc, sort_keys=False))
    return p, doc


def _decide(study: optuna.Study, rep: dict, non_inferior_to: Optional[str], margin: Optional[float]):
    """The non-inferiority or one-SE choice (decide.py) over the confirmed candidates, else the
    search's trials (the fixed point's replicates as its seeds)."""
    from . import decide

    rec = StudyRecord.read(study)
    every = record.trials(study)
    conf = rep["confirmed"]
    nz = noise_mod.measure(rec, every, {"val": [list(c.val.values()) for c in conf.values()],
                                        "latency_ms": [list(c.latency_ms.values()) for c in conf.values()]})
    rows = noise_mod.rows_of(every, nz)
    if non_inferior_to is None:
        return decide.one_se(rows, conf or None)
    fixed = next((r for r in rows if r.members[0].fixed_point), None)
    if str(non_inferior_to) in ("hovit_b", "fixed_point", rec.space_def.get("fixed_point", "hovit_b")):
        if fixed is None:
            raise HovitError(f"study {study.study_name!r} has no completed fixed point to compare with")
        ref = fixed.trial
    else:
        try:
            ref = int(non_inferior_to)
        except ValueError:
            raise HovitError(f"`non_inferior_to` {non_inferior_to!r}: give hovit_b (the fixed point) or a trial "
                             "number") from None
    m = margin if margin is not None else rec.noise.margin
    if conf:
        if ref not in conf:
            raise HovitError(f"trial {ref} was not confirmed; confirm it (it is confirmed when it is the fixed point or "
                             "on the front), or compare with the fixed point")
        cands = {n: dict(c.runs) for n, c in conf.items()}
        lat = {n: c.mean("latency_ms") for n, c in conf.items()}
        return decide.non_inferior(cands, ref, m, nz, True, lat)
    by_trial = {r.trial: r for r in rows}
    if ref not in by_trial:
        raise HovitError(f"trial {ref} is not a completed trial of study {study.study_name!r}")
    cands = {r.trial: {k: mem for k, mem in enumerate(r.members)} for r in rows}
    return decide.non_inferior(cands, ref, m, nz, False, {r.trial: r.latency_ms for r in rows})

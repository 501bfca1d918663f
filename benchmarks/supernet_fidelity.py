"""Rank fidelity of the supernet against stand-alone training (issue 21, a first figure).

Setting: the committed multifidelity benchmark's (results/multifidelity): its space file
(``hovit-cpu`` at 64 px, 4 + 2 epochs), pcam-subset with 300 images per split, 1 thread. The
stand-alone figures are that benchmark's full-budget trials -- methods (a) NSGA-II and (d)
random search, 3 seeds each, every trial trained stand-alone for 6 epochs -- read from its
committed studies. This script trains one supernet over the same space and data for the same
6 epochs (sandwich rule, k = 2), estimates every one of those architectures with inherited
weights (BatchNorm recalibrated), and reports Kendall τ and Spearman's ρ between estimate and
stand-alone validation top-1, plus τ within latency-matched thirds, the compute, and a plotly
scatter (estimate against stand-alone, one point per trial).

    PYTHONPATH=. taskset -c 1 python benchmarks/supernet_fidelity.py --out results/supernet-fidelity
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
MF = ROOT / "results" / "multifidelity" / "studies"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "pcam-subset"))
    ap.add_argument("--max-per-split", type=int, default=300)
    ap.add_argument("--sandwich-k", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="supernet epochs (default: a full trial's, 6)")
    ap.add_argument("--out", default="results/supernet-fidelity")
    a = ap.parse_args()

    from scipy.stats import kendalltau, spearmanr

    from hovit_nas.config import DataOptions, DataSpec, run_config_from_dict, with_num_classes
    from hovit_nas.data import load_data
    from hovit_nas.latency import device_name
    from hovit_nas.space import load_space
    from hovit_nas import supernet as S

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    space = load_space(str(MF / "mf.yaml"))
    splits = load_data(DataSpec.of(a.data, space.base.model.img_size, space.base.train.seed,
                                   DataOptions(max_per_split=a.max_per_split)))
    space = replace(space, base=with_num_classes(space.base, splits.num_classes))
    t = space.base.train
    epochs = a.epochs or (t.epochs_dense + t.epochs_prune)
    t0 = time.time()
    net, subnets, history = S.train_supernet(space, splits, torch.device("cpu"),
                                             S.SupernetConfig(epochs=epochs, sandwich_k=a.sandwich_k))
    train_s = time.time() - t0
    steps = min(max(len(splits.train) // t.batch_size, 1), t.max_steps_per_epoch or 10 ** 9)

    rows = []
    calib = S.bn_images(splits.train, S.BN_IMAGES, t.seed, torch.device("cpu"))
    for method in ("a", "d"):
        for db in sorted(MF.glob(f"{method}-s*.db")):
            study = optuna.load_study(study_name=db.stem, storage=f"sqlite:///{db}")
            for tr in study.get_trials(states=(TrialState.COMPLETE,)):
                cfg = run_config_from_dict(tr.user_attrs["config"], f"{db.stem} trial {tr.number}")
                _, val = S.score_subnet(net, cfg, calib, splits.val, splits.num_classes, torch.device("cpu"))
                rows.append({"study": db.stem, "trial": tr.number, "standalone": tr.values[0],
                             "latency_ms": tr.values[1], "estimate": val["top1"],
                             "blocks": [f"{s['blocks']}:{s.get('keep') or s['blocks']}" for s in
                                        tr.user_attrs["config"]["model"]["stages"]]})
    est = np.array([r["estimate"] for r in rows])
    sa = np.array([r["standalone"] for r in rows])
    lat = np.array([r["latency_ms"] for r in rows])
    tau, rho = kendalltau(est, sa).statistic, spearmanr(est, sa).statistic
    thirds = np.array_split(np.argsort(lat), 3)
    matched = [float(kendalltau(est[i], sa[i]).statistic) for i in thirds]
    # the stand-alone figures' own noise: the HoViT-B fixed point, trained once per study
    fp = [r["standalone"] for r in rows if r["trial"] == 0]
    res = {"n": len(rows), "kendall_tau": float(tau), "spearman": float(rho), "tau_latency_thirds": matched,
           "supernet_train_s": round(train_s, 1), "supernet_epochs": epochs, "sandwich_k": a.sandwich_k,
           "subnet_passes_per_step": 2 + a.sandwich_k, "steps_per_epoch": steps,
           "standalone_epochs_per_trial": t.epochs_dense + t.epochs_prune, "fixed_point_standalone": fp, "history": history, "rows": rows,
           "cpu": device_name(torch.device("cpu"))}
    (out / "fidelity.json").write_text(json.dumps(res, indent=1))
    lines = [f"supernet over {space.name} ({space.base.model.img_size} px), pcam-subset {a.max_per_split}/split, "
             f"{epochs} epochs, sandwich k={a.sandwich_k}: {train_s:.0f} s on 1 thread ({res['cpu']})",
             f"architectures: {len(rows)} stand-alone trials (multifidelity (a) and (d), 3 seeds each, 6 epochs)",
             f"Kendall tau {tau:.3f}, Spearman {rho:.3f} (estimate vs stand-alone val top1)",
             "tau within latency thirds (fast, middle, slow): " + ", ".join(f"{m:.3f}" for m in matched),
             f"HoViT-B stand-alone over {len(fp)} studies: {min(fp):.3f} .. {max(fp):.3f} (the stand-alone noise)",
             f"estimates range {est.min():.3f} .. {est.max():.3f}; stand-alone range {sa.min():.3f} .. {sa.max():.3f}"]
    (out / "fidelity.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=sa, y=est, mode="markers", marker=dict(color=lat, colorscale="Viridis",
                                                                      colorbar=dict(title="latency ms")),
                               text=[f"{r['study']} #{r['trial']} {r['blocks']}" for r in rows]))
    fig.update_layout(title=f"supernet estimate vs stand-alone val top1 (Kendall τ {tau:.2f}, n={len(rows)})",
                      xaxis_title="stand-alone val top1 (6 epochs)", yaxis_title="supernet estimate (inherited, BN "
                      "recalibrated)", height=600)
    fig.write_html(out / "fidelity.html", include_plotlyjs=True)  # self-contained: opens offline


if __name__ == "__main__":
    main()

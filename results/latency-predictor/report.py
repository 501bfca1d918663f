"""The latency predictor's held-out figures per deployment target, from the profiles run.sh wrote.

For each target: the predictor (predictor.LatencyPredictor, 5-fold), two simpler models for
comparison (log latency linear in log FLOPs alone; scikit-learn's gradient boosting on the same
features), and the noise floor (one round's measurement as a prediction of the other's).
Usage: .venv/bin/python results/latency-predictor/report.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hovit_nas import predictor as P

HERE = Path(__file__).resolve().parent


def _cv(model_fn, X, y, folds=5, seed=0):
    from sklearn.model_selection import KFold

    pred = np.empty_like(y)
    for tr, te in KFold(folds, shuffle=True, random_state=seed).split(X):
        pred[te] = np.exp(model_fn().fit(X[tr], np.log(y[tr])).predict(X[te]))
    return P.score(y, pred)


def main() -> None:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    rows = []
    for path in sorted(HERE.glob("hovit-wide-cpu-*.json")):
        prof = P.load_profile(path)
        feats, y = prof.feature_rows(), np.array([pt.latency_ms for pt in prof.points])
        names = sorted(feats[0])
        X = np.array([[f[k] for k in names] for f in feats])
        flops = np.array([[f["log_flops"]] for f in feats])
        ours = P.cross_validate(feats, y)
        rows.append((prof.target["name"], len(y), y.min(), y.max(), ours, _cv(LinearRegression, flops, y),
                     _cv(lambda: GradientBoostingRegressor(random_state=0), X, y), P.Fit(**prof.repeat)))
    print(f"# Latency predictor, held out (5-fold), on {rows[0][0] if rows else '?'} and the other targets\n")
    print(f"CPU: {P.load_profile(next(HERE.glob('hovit-wide-cpu-*.json'))).cpu}\n")
    print("| target | n | latency range ms | predictor: ±10 % / τ / mean err / p05 ratio | log-FLOPs only: ±10 % / τ "
          "| gradient boosting: ±10 % / τ | repeat (round 1 vs 2): ±10 % / τ / mean err |")
    print("|---|---|---|---|---|---|---|")
    for name, n, lo, hi, o, f, g, r in rows:
        print(f"| {name} | {n} | {lo:.3f}–{hi:.3f} | {o.within_10pct:.1%} / {o.kendall_tau:.3f} / "
              f"{o.mean_abs_rel_err:.1%} / {o.ratio_p05:.2f} | {f.within_10pct:.1%} / {f.kendall_tau:.3f} | "
              f"{g.within_10pct:.1%} / {g.kendall_tau:.3f} | {r.within_10pct:.1%} / {r.kendall_tau:.3f} / "
              f"{r.mean_abs_rel_err:.1%} |")


if __name__ == "__main__":
    main()

"""Re-measure a study's HoViT-B fixed point and Pareto front in isolation, interleaved, with the
search's own latency protocol (batch, threads, resolution), and compare with the latencies the
trials recorded during the search.

    python benchmarks/remeasure_study.py --study pcam-cpu [--storage URL] [--rounds 5] [--out FILE]
"""
import argparse
import json

import optuna

from hovit_nas import study as st
from hovit_nas.config import run_config_from_dict
from hovit_nas.latency import measure_latency
from hovit_nas.models import create_hovit, export

ap = argparse.ArgumentParser()
ap.add_argument("--study", required=True)
ap.add_argument("--storage", default=None)
ap.add_argument("--rounds", type=int, default=5)
ap.add_argument("--out", default=None)
a = ap.parse_args()
optuna.logging.set_verbosity(optuna.logging.WARNING)
name, url = st.resolve_study(a.study, a.storage)
study = st.load(name, url)
trials = {t.number: t for t in study.best_trials}
for t in st.fixed_point_trials(study):
    if t.state == optuna.trial.TrialState.COMPLETE:
        trials[t.number] = t
models = {}
for n, t in sorted(trials.items()):
    cfg = run_config_from_dict(t.user_attrs["config"], f"trial {n}")
    models[n] = (export(create_hovit(cfg)), cfg.model.img_size, t.user_attrs["latency"])
lat = {}
for _ in range(a.rounds):
    for n, (m, size, rec) in models.items():
        r = measure_latency(m, size, batch=rec["batch"], threads=rec["threads"], runs=rec["runs"] // a.rounds + 1,
                            warmup=5, min_time_s=0.5)
        lat[n] = lat[n].merged(r) if n in lat else r
rows = []
for n, t in sorted(trials.items()):
    rec = t.values[1]
    iso = lat[n].median_ms
    rows.append({"trial": n, "fixed_point": st.FIXED_POINT_ATTR in t.user_attrs, "accuracy": t.values[0],
                 "search_ms": round(rec, 3), "isolated_ms": round(iso, 3), "ratio": round(rec / iso, 3)})
    print(f"trial {n:>3}{' (HoViT-B)' if rows[-1]['fixed_point'] else '          '}  acc {t.values[0]:.4f}  "
          f"search {rec:7.3f} ms  isolated {iso:7.3f} ms  ratio {rec / iso:.3f}")
if a.out:
    with open(a.out, "w") as f:
        json.dump({"study": name, "rows": rows}, f, indent=2)

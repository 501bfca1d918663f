"""Re-measure a study's HoViT-B fixed point and Pareto front in isolation, interleaved, with the
search's own latency protocol (batch, threads, resolution, the study's anchor), and compare with
the latencies the trials recorded during the search. A study timed raw (made before anchoring, or
with --no-latency-anchor) is re-measured anchored to its own HoViT-B trial's config, calibrated
now, so the re-measured figures are comparable with each other; --raw re-measures it raw.

    python benchmarks/remeasure_study.py --study pcam-cpu [--storage URL] [--rounds 4] [--raw] [--out FILE]
"""
import argparse
import json
from functools import reduce

import optuna

from hovit_nas import study as st
from hovit_nas.config import run_config_from_dict
from hovit_nas.config import LatencyConfig
from hovit_nas.trial import TrialSpec, calibrate_anchor, remeasure

ap = argparse.ArgumentParser()
ap.add_argument("--study", required=True)
ap.add_argument("--storage", default=None)
ap.add_argument("--rounds", type=int, default=4)
ap.add_argument("--raw", action="store_true")
ap.add_argument("--out", default=None)
a = ap.parse_args()
optuna.logging.set_verbosity(optuna.logging.WARNING)
name, url = st.resolve_study(a.study, a.storage)
study = st.load(name, url)
trials = {t.number: t for t in study.best_trials}
for t in st.fixed_point_trials(study):
    if t.state == optuna.trial.TrialState.COMPLETE:
        trials[t.number] = t
anchor = study.user_attrs.get(st.ANCHOR_ATTR)
fixed = [t for t in trials.values() if st.FIXED_POINT_ATTR in t.user_attrs]
if anchor is None and not a.raw and fixed:
    rec, cfg = fixed[0].user_attrs["latency"], run_config_from_dict(fixed[0].user_attrs["config"], "HoViT-B trial")
    anchor = calibrate_anchor(fixed[0].user_attrs[st.FIXED_POINT_ATTR], cfg, TrialSpec(
        config=cfg, device=rec["device"], threads=rec["threads"],
        latency=LatencyConfig(batch=rec["batch"], runs=10, warmup=rec["warmup"], threads=rec["threads"],
                              runtime=rec.get("runtime", "torch")))).to_dict()
    anchor["calibrated_now"] = True
lat = remeasure({n: t.user_attrs for n, t in trials.items()}, anchor, rounds=a.rounds)
how = "raw timing" if anchor is None else f"anchored to {anchor['name']} at {anchor['ms']:.3f} ms" + (
    " (the study was timed raw; anchor calibrated now)" if anchor.get("calibrated_now") else " (the study's anchor)")
print(f"study {name}: re-measured with {how}")
rows = []
for n, t in sorted(trials.items()):
    rec = t.values[1]
    iso = reduce(lambda x, y: x.merged(y), lat[n]).median_ms
    rows.append({"trial": n, "fixed_point": st.FIXED_POINT_ATTR in t.user_attrs, "accuracy": t.values[0],
                 "search_ms": round(rec, 3), "isolated_ms": round(iso, 3), "ratio": round(rec / iso, 3)})
    print(f"trial {n:>3}{' (HoViT-B)' if rows[-1]['fixed_point'] else '          '}  acc {t.values[0]:.4f}  "
          f"search {rec:7.3f} ms  isolated {iso:7.3f} ms  ratio {rec / iso:.3f}")
if a.out:
    with open(a.out, "w") as f:
        json.dump({"study": name, "remeasured_with": how, "rows": rows}, f, indent=2)

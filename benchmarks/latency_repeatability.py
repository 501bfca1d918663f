"""Latency protocol check: the same model measured twice in one process must agree within 5 %
(median). Each pair is measured back to back, raw and anchored (latency.py: timed alternately
with an exported HoViT-B calibrated once at the start), for several models, so the two modes
see the same machine. Prints every pair, the worst disagreement per mode, and the machine's
drift over the run (the spread of the raw medians of one model).

    python benchmarks/latency_repeatability.py [--img-size 224] [--threads 2] [--pairs 5]
        [--models hovit_b,hovit_s,hovit_b_dense,efficientnet_b0] [--out FILE]
"""
import argparse
import json

from hovit_nas.latency import calibrate, measure_latency
from hovit_nas.models import PRESETS, create_baseline, create_hovit, export, hovit_b

ap = argparse.ArgumentParser()
ap.add_argument("--img-size", type=int, default=224)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--pairs", type=int, default=5)
ap.add_argument("--runs", type=int, default=50)
ap.add_argument("--models", default="hovit_b,hovit_s,hovit_b_dense,efficientnet_b0")
ap.add_argument("--out", default=None)
a = ap.parse_args()


def build(name):
    if name in PRESETS:
        return export(create_hovit(PRESETS[name](img_size=a.img_size)))
    return create_baseline(name, num_classes=9, img_size=a.img_size)


models = {n: build(n) for n in a.models.split(",")}
kw = dict(runs=a.runs, threads=a.threads)
anchor = calibrate("hovit_b", export(create_hovit(hovit_b(img_size=a.img_size))), a.img_size, **kw)
print(f"anchor: exported HoViT-B (its own instance) calibrated at {anchor.ms:.3f} ms", flush=True)
pairs = []
for i in range(a.pairs):
    for name, model in models.items():
        row = {"pair": i + 1, "model": name}
        for mode, extra in (("raw", {}), ("anchored", {"anchor": anchor})):
            m1 = measure_latency(model, a.img_size, **kw, **extra).median_ms
            m2 = measure_latency(model, a.img_size, **kw, **extra).median_ms
            row[mode] = {"first_ms": round(m1, 3), "second_ms": round(m2, 3),
                         "diff_pct": round(100 * abs(m1 - m2) / min(m1, m2), 2)}
        pairs.append(row)
        print(f"pair {i + 1} {name:>16}: raw {row['raw']['first_ms']:7.3f} vs {row['raw']['second_ms']:7.3f} ms "
              f"({row['raw']['diff_pct']:5.2f} %)   anchored {row['anchored']['first_ms']:7.3f} vs "
              f"{row['anchored']['second_ms']:7.3f} ms ({row['anchored']['diff_pct']:5.2f} %)", flush=True)
worst = {mode: max(p[mode]["diff_pct"] for p in pairs) for mode in ("raw", "anchored")}
drift = {}
for name in models:
    raw = [v for p in pairs if p["model"] == name for v in (p["raw"]["first_ms"], p["raw"]["second_ms"])]
    drift[name] = round(100 * (max(raw) / min(raw) - 1), 1)
print(f"{a.img_size} px, batch 1, {a.threads} threads, >= {a.runs} runs and >= 1 s per measurement, "
      f"{a.pairs} pairs x {len(models)} models")
print("machine drift over the run (raw medians of one model, max/min - 1): "
      + ", ".join(f"{n} {d} %" for n, d in drift.items()))
per_model = {n: {mode: max(p[mode]["diff_pct"] for p in pairs if p["model"] == n) for mode in ("raw", "anchored")}
             for n in models}
for n, w in per_model.items():
    print(f"{n:>16}: worst pair disagreement raw {w['raw']:5.2f} %, anchored {w['anchored']:5.2f} %")
for mode in ("raw", "anchored"):
    print(f"{mode:>8}: worst pair disagreement over all models {worst[mode]:.2f} % (target <= 5 %): "
          f"{'PASS' if worst[mode] <= 5 else 'MISS'}")
if a.out:
    with open(a.out, "w") as f:
        json.dump({"img_size": a.img_size, "threads": a.threads, "runs": a.runs, "anchor_ms": anchor.ms,
                   "pairs": pairs, "worst_pct": worst, "worst_pct_per_model": per_model,
                   "drift_pct": drift}, f, indent=2)

"""Latency protocol check: the same exported model measured twice in one process must agree
within 5 % (median). Prints each pair and the worst disagreement.

    python benchmarks/latency_repeatability.py [--img-size 224] [--threads 2] [--pairs 5] [--runs 50]
"""
import argparse
import json

from hovit_nas.latency import measure_latency
from hovit_nas.models import create_hovit, export, hovit_b

ap = argparse.ArgumentParser()
ap.add_argument("--img-size", type=int, default=224)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--pairs", type=int, default=5)
ap.add_argument("--runs", type=int, default=50)
ap.add_argument("--out", default=None)
a = ap.parse_args()
model = export(create_hovit(hovit_b(img_size=a.img_size)))
pairs = []
for i in range(a.pairs):
    m1 = measure_latency(model, a.img_size, runs=a.runs, threads=a.threads).median_ms
    m2 = measure_latency(model, a.img_size, runs=a.runs, threads=a.threads).median_ms
    diff = abs(m1 - m2) / min(m1, m2)
    pairs.append({"first_ms": round(m1, 3), "second_ms": round(m2, 3), "diff_pct": round(100 * diff, 2)})
    print(f"pair {i + 1}: {m1:.3f} ms vs {m2:.3f} ms  ({100 * diff:.2f} %)", flush=True)
worst = max(p["diff_pct"] for p in pairs)
print(f"HoViT-B exported, {a.img_size} px, batch 1, {a.threads} threads, median of {a.runs}: "
      f"worst pair disagreement {worst:.2f} % (target <= 5 %): {'PASS' if worst <= 5 else 'MISS'}")
if a.out:
    with open(a.out, "w") as f:
        json.dump({"img_size": a.img_size, "threads": a.threads, "runs": a.runs, "pairs": pairs, "worst_pct": worst}, f,
                  indent=2)

"""Summarise results/optimizer/trained: val and test top-1 per model, rule and seed; the paired
difference (timm - all) per seed, its mean and sample standard deviation.

    python results/optimizer/summarise.py results/optimizer/trained > results/optimizer/summary.txt
"""
import json
import statistics
import sys
from pathlib import Path

runs = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("trained"))
res = {}
for f in sorted(runs.glob("*/result.json")):
    rule, cfg, seed = f.parent.name.split("-")
    d = json.loads(f.read_text())
    res[(cfg, rule, int(seed[1:]))] = (d["val"]["top1"], d["test"]["top1"])

print("| model | split | seed | all (decay on every parameter) | timm (no decay on 1-D, biases, attention biases) | timm - all |")
print("|---|---|---|---|---|---|")
for cfg in sorted({k[0] for k in res}):
    for i, split in enumerate(("val", "test")):
        diffs = []
        for seed in sorted({k[2] for k in res if k[0] == cfg}):
            a, t = res.get((cfg, "all", seed)), res.get((cfg, "timm", seed))
            if a is None or t is None:
                continue
            diffs.append(t[i] - a[i])
            print(f"| {cfg} | {split} | {seed} | {a[i]:.4f} | {t[i]:.4f} | {t[i] - a[i]:+.4f} |")
        if len(diffs) > 1:
            print(f"| {cfg} | {split} | mean of {len(diffs)} | | | {statistics.mean(diffs):+.4f} "
                  f"(sd {statistics.stdev(diffs):.4f}) |")

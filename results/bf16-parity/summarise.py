"""Summarise results/bf16-parity/trained: val and test top-1 per model, arm and seed, the paired
difference bf16 - fp32 per seed, and its mean with the sample SD and a t interval over seeds; with
the mean training time per epoch of each arm (the runs' own epoch records).

    python results/bf16-parity/summarise.py results/bf16-parity/trained > results/bf16-parity/summary.txt
"""
import json
import statistics
import sys
from pathlib import Path

from scipy import stats

runs = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("trained"))
res, secs = {}, {}
for f in sorted(runs.glob("*/result.json")):
    arm, cfg, seed = f.parent.name.split("-")
    d = json.loads(f.read_text())
    precisions = {h["precision"] for h in d["history"]}
    assert precisions == {"fp32" if arm == "fp32" else "bf16-autocast"}, (f, precisions)
    res[(cfg, arm, int(seed[1:]))] = (d["val"]["top1"], d["test"]["top1"], d["val"]["n"], d["test"]["n"])
    secs.setdefault((cfg, arm), []).extend(h["s"] for h in d["history"])

print("bf16: train under bf16 autocast (--amp); fp32: --no-amp. Same commit, CPU, data and seeds.\n")
print("| model | split | seed | fp32 | bf16 | bf16 - fp32 |")
print("|---|---|---|---|---|---|")
for cfg in sorted({k[0] for k in res}):
    for i, split in enumerate(("val", "test")):
        diffs = []
        for seed in sorted({k[2] for k in res if k[0] == cfg}):
            a, b = res.get((cfg, "fp32", seed)), res.get((cfg, "bf16", seed))
            d = f"{b[i] - a[i]:+.4f}" if a and b else ""
            if a and b:
                diffs.append(b[i] - a[i])
            print(f"| {cfg} | {split} | {seed} | {a[i]:.4f} | {b[i]:.4f} | {d} |" if a and b else
                  f"| {cfg} | {split} | {seed} | {a[i] if a else ''} | {b[i] if b else ''} | |")
        if len(diffs) > 1:
            m, sd = statistics.mean(diffs), statistics.stdev(diffs)
            half = stats.t.ppf(0.975, len(diffs) - 1) * sd / len(diffs) ** 0.5
            n = res[(cfg, "fp32", 0)][2 + i] if (cfg, "fp32", 0) in res else "?"
            print(f"| {cfg} | {split} | mean of {len(diffs)} seeds | | | {m:+.4f} (sd {sd:.4f}; 95 % t interval "
                  f"[{m - half:+.4f}, {m + half:+.4f}]; n = {n} images) |")
print("\nmean seconds per training epoch (1 thread):")
for cfg in sorted({k[0] for k in secs}):
    f, b = (statistics.mean(secs.get((cfg, arm), [float("nan")])) for arm in ("fp32", "bf16"))
    print(f"  {cfg}: fp32 {f:.1f} s, bf16 {b:.1f} s, bf16 / fp32 {b / f:.2f}")

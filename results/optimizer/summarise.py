"""Summarise results/optimizer/trained: val and test top-1 per model, arm and seed, and the paired
differences per seed with their mean and sample standard deviation:
``after - all`` (issue 20 item 6 as a whole: timm's optimizer rule and schedule against the code
before) and ``after - timm`` (timm's schedule alone).

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

print("all: decay on every parameter, our LambdaLR cosine (before). timm: timm's weight-decay rule, our LambdaLR.\n"
      "after: timm's weight-decay rule and timm's CosineLRScheduler.\n")
print("| model | split | seed | all | timm | after | timm - all | after - all | after - timm |")
print("|---|---|---|---|---|---|---|---|---|")
for cfg in sorted({k[0] for k in res}):
    for i, split in enumerate(("val", "test")):
        diffs = {"timm-all": [], "after-all": [], "after-timm": []}
        for seed in sorted({k[2] for k in res if k[0] == cfg}):
            v = {r: res.get((cfg, r, seed)) for r in ("all", "timm", "after")}
            cells = [f"{v[r][i]:.4f}" if v[r] else "" for r in ("all", "timm", "after")]
            ds = []
            for name in diffs:
                b, a = name.split("-")
                if v[a] and v[b]:
                    diffs[name].append(v[b][i] - v[a][i])
                    ds.append(f"{v[b][i] - v[a][i]:+.4f}")
                else:
                    ds.append("")
            print(f"| {cfg} | {split} | {seed} | {' | '.join(cells)} | {' | '.join(ds)} |")
        means = [f"{statistics.mean(d):+.4f} (sd {statistics.stdev(d):.4f})" if len(d) > 1 else ""
                 for d in diffs.values()]
        print(f"| {cfg} | {split} | mean of seeds | | | | {' | '.join(means)} |")

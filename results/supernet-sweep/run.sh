#!/usr/bin/env bash
# Subnets at search speed (issue 33, item 7): `supernet sweep` of 1,000 subnets of hovit-wide-cpu at
# 64 px on pcam-subset, timed on ONNX Runtime fp32 (1 thread, batch 1), on this machine.
#   1. a short supernet (3 epochs: the sweep's speed, not the supernet's quality, is measured here;
#      its weights are not committed, its supernet.json is);
#   2. a profile of the target here (60 architectures, 2 rounds);
#   3. the sweep with the fast screening settings (250 val images, 128 BatchNorm images);
#   4. the first 200 of the same subnets (same seed, same draws) at the defaults (all 1,000 val
#      images, 512 BatchNorm images): the fidelity reference, and the time the defaults take;
#   5. report.py: both runs' times by phase, timed counts, and how far the fast estimates agree with
#      the default ones (Kendall tau over the same subnets) and the fronts with each other.
# Run alone: the figures are timings. Needs ../shared/data/pcam-subset.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=results/supernet-sweep
DATA=${PCAM:-../shared/data/pcam-subset}
W=${WORK:-$(mktemp -d)}
lscpu | grep -E 'Model name|^CPU\(s\)' > $OUT/machine.txt
$PY -m hovit_nas supernet train --space hovit-wide-cpu --data "$DATA" --epochs 3 --out "$W/sn" 2>&1 | tee $OUT/train.log
cp "$W/sn/supernet.json" $OUT/supernet.json
$PY -m hovit_nas profile-target --space hovit-wide-cpu --n 60 --out $OUT/profile-onnxruntime-fp32.json 2>&1 \
  | grep --line-buffered -v '^measured' | tee $OUT/profile.log
$PY -m hovit_nas supernet sweep --supernet "$W/sn" --profile $OUT/profile-onnxruntime-fp32.json --data "$DATA" \
  --subnets 1000 --val-images 250 --bn-images 128 --out $OUT/fast 2>&1 | grep --line-buffered -v '^estimated\|^timed' | tee $OUT/fast.log
$PY -m hovit_nas supernet sweep --supernet "$W/sn" --profile $OUT/profile-onnxruntime-fp32.json --data "$DATA" \
  --subnets 200 --out $OUT/default 2>&1 | grep --line-buffered -v '^estimated\|^timed' | tee $OUT/default.log
PYTHONPATH=. $PY $OUT/report.py | tee $OUT/report.md

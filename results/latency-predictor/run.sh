#!/usr/bin/env bash
# The latency predictor's held-out figures (issue 23, item 3): one profile-target sweep per
# deployment target on this machine, hovit-wide-cpu at 64 px, architectures stratified by FLOPs,
# 2 interleaved rounds each, 1 thread, batch 1, anchored to HoViT-B. ONNX Runtime fp32 (the
# default target) with 120 architectures, the other targets with 60 (the session's time).
# Run alone: the figures are timings.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=results/latency-predictor
lscpu | grep -E 'Model name|^CPU\(s\)' > $OUT/machine.txt
for t in onnxruntime:fp32:120 openvino:fp32:60 onnxruntime:int8:60 openvino:int8:60 torch:fp32:60; do
  IFS=: read -r rt pr n <<< "$t"
  $PY -m hovit_nas profile-target --space hovit-wide-cpu --n "$n" --runtime "$rt" --precision "$pr" \
      --out $OUT/hovit-wide-cpu-$rt-$pr.json 2>&1 | grep --line-buffered -v '^measured' > $OUT/profile-$rt-$pr.log
done
PYTHONPATH=. $PY $OUT/report.py | tee $OUT/report.md

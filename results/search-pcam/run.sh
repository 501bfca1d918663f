#!/usr/bin/env bash
# The committed real search: hovit-cpu space (64 px) on ../shared/data/pcam-subset, CPU, 24 trials
# including the HoViT-B fixed point; then the Pareto report, plot and the pinned best config.
# The committed study was made before latency anchoring existed: --no-latency-anchor reproduces it.
set -euo pipefail
cd "$(dirname "$0")/../.."
hovit-nas search --space hovit-cpu --data ../shared/data/pcam-subset --study pcam-cpu \
  --trials 24 --threads 2 --device cpu --seed 0 --no-latency-anchor 2>&1 | tee results/search-pcam/search.log
hovit-nas pareto --study pcam-cpu --out results/search-pcam/pareto.html | tee results/search-pcam/pareto.txt
hovit-nas pin --study pcam-cpu --knee --out studies/pcam-cpu/best.yaml | tee results/search-pcam/pin.txt

#!/usr/bin/env bash
# Confirmation of the committed pcam-cpu search (issue: trustworthy picks): the top-4 front trials
# and HoViT-B retrained with seeds 1, 2, 3 at the search's budget, into the linked study
# pcam-cpu-confirm in studies/pcam-cpu/study.db; then the Pareto report and the confirmed pin.
set -euo pipefail
cd "$(dirname "$0")/../.."
hovit-nas confirm --study pcam-cpu --data ../shared/data/pcam-subset --top-k 4 --seeds 3 --threads 2 \
  --device cpu 2>&1 | tee results/confirm-pcam/confirm.log
hovit-nas pareto --study pcam-cpu --out results/confirm-pcam/pareto.html \
  --bench results/bench-64px-1t/bench.json | tee results/confirm-pcam/pareto.txt
hovit-nas pin --study pcam-cpu --knee --out studies/pcam-cpu/best.yaml | tee results/confirm-pcam/pin.txt

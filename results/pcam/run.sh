#!/usr/bin/env bash
# Short real training runs of HoViT-B and HoViT-S on ../shared/data/pcam-subset (96 px), CPU, 2 threads.
set -euo pipefail
cd "$(dirname "$0")/../.."
for cfg in hovit_b hovit_s; do
  hovit-nas train --config "$cfg" --data ../shared/data/pcam-subset --img-size 96 \
    --epochs-dense 3 --epochs-prune 2 --batch-size 64 --threads 2 --device cpu \
    --out "results/pcam/$cfg" 2>&1 | tee "results/pcam/$cfg.log"
done

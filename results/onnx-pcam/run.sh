#!/usr/bin/env bash
# Issue "latency on the runtime people deploy with": the wider space searched on pcam-subset with
# ONNX Runtime latency (batch 1, 1 thread, 64 px, the hovit-cpu budget), EfficientNet-B0 trained
# with the same budget, the front plotted with EfficientNet-B0 overlaid, a pinned config, and one
# interleaved latency run of the pinned model, HoViT-B and EfficientNet-B0 on both runtimes.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/onnx-pcam
DATA=../shared/data/pcam-subset
# 1. EfficientNet-B0 at the search's budget (2+1 epochs of 30 steps, batch 64), on both runtimes
hovit-nas bench --data $DATA --img-size 64 --num-classes 2 --threads 1 --models efficientnet_b0 \
  --epochs 2 --max-steps 30 --runs 20 --rounds 3 --out $OUT/bench-effnet 2>&1 | tee $OUT/bench-effnet.log
# 2. the search: 30 trials of the hovit-wide-cpu space, latency on onnxruntime
hovit-nas search --space hovit-wide-cpu --data $DATA --study pcam-wide-ort --trials 30 --threads 1 \
  --device cpu --seed 0 --runtime onnxruntime 2>&1 | tee $OUT/search.log
# 3. the front with EfficientNet-B0 overlaid; pin the most accurate front model under half its latency
hovit-nas pareto --study pcam-wide-ort --out $OUT/pareto.html --bench $OUT/bench-effnet/bench.json | tee $OUT/pareto.txt
HALF=$(python3 -c "import json; r=[x for x in json.load(open('$OUT/bench-effnet/bench.json'))['rows'] if x['runtime']=='onnxruntime' and x['model']=='efficientnet_b0'][0]; print(r['latency_ms']/2)")
hovit-nas pin --study pcam-wide-ort --max-latency "$HALF" --out studies/pcam-wide-ort/best.yaml | tee $OUT/pin.txt || hovit-nas pin --study pcam-wide-ort --knee --out studies/pcam-wide-ort/best.yaml | tee $OUT/pin.txt
# 4. one interleaved latency run: the pinned model, HoViT-B and EfficientNet-B0, torch and onnxruntime
hovit-nas bench --img-size 64 --num-classes 2 --threads 1 --runs 30 --rounds 5 \
  --models studies/pcam-wide-ort/best.yaml,hovit_b,efficientnet_b0 --out $OUT/bench-pinned 2>&1 | tee $OUT/bench-pinned.log

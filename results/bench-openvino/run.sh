#!/usr/bin/env bash
# Table 1 rows on PyTorch eager, ONNX Runtime and OpenVINO in one interleaved run (issue 22):
# 224 px, batch 1, 2 threads, 3 interleaved rounds, anchored to HoViT-B on each runtime.
#   bash results/bench-openvino/run.sh      # about 3 minutes on a quiet 2-core CPU
set -euo pipefail
cd "$(dirname "$0")/../.."
HOVIT=${HOVIT:-$([ -x .venv/bin/hovit-nas ] && echo .venv/bin/hovit-nas || echo hovit-nas)}
"$HOVIT" bench --device cpu --batch 1 --img-size 224 --threads 2 --runs 20 --rounds 3 \
  --runtimes torch,onnxruntime,openvino --models hovit_b,hovit_s,levit_128s,efficientnet_b0 \
  --out results/bench-openvino 2>&1 | tee results/bench-openvino/bench.log

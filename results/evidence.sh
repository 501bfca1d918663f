#!/usr/bin/env bash
# Every committed figure, produced in one quiet sequence on this machine (nothing else running).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:/work/venv/bin:$PATH"
hovit-nas bench --device cpu --batch 1 --img-size 224 --out results/bench 2>&1 | tee results/bench/bench.log
hovit-nas bench --device cpu --batch 32 --img-size 224 --runs 3 --rounds 3 --warmup 2 --out results/bench-b32 2>&1 | tee results/bench-b32/bench.log
python benchmarks/latency_repeatability.py --out results/bench/latency_repeatability.json 2>&1 | tee results/bench/latency_repeatability.log
rm -rf studies/pcam-cpu && results/search-pcam/run.sh
python benchmarks/ray_vs_local.py 2>&1 | tee results/ray/ray_vs_local.log
python benchmarks/ray_vs_local.py --raw 2>&1 | tee results/ray/ray_vs_local_raw.log
hovit-nas bench --device cpu --batch 1 --img-size 224 --runs 20 --rounds 3 --runtimes torch,onnxruntime \
  --out results/bench-runtimes 2>&1 | tee results/bench-runtimes/bench.log
results/confirm-pcam/run.sh
rm -rf studies/pcam-wide-ort && results/onnx-pcam/run.sh
python benchmarks/ray_vs_local.py --trials 6 --executors ray_1,ray_2 --tag _60s 2>&1 | tee results/ray/ray_vs_local_60s.log
python benchmarks/chaos.py --code HEAD --out results/chaos 2>&1 | tee results/chaos/chaos.log
taskset -c 0 python benchmarks/input_pipeline.py --folder /tmp/nct-shaped-20000 --out results/input-pipeline --steps 10 --rounds 3 2>&1 | tee results/input-pipeline/input_pipeline.log
taskset -c 1 python benchmarks/multifidelity.py 2>&1 | tee results/multifidelity/multifidelity.log

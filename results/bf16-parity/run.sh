#!/usr/bin/env bash
# Does bf16 autocast change accuracy on a CPU with native bf16? (issue 33, item 2)
#
# Two arms of the same commit: "fp32" (hovit-nas train --no-amp) and "bf16" (--amp, the default
# where the CPU has AVX512-BF16 or AMX). HoViT-B and HoViT-S, seeds 0 1 2, at the budget of
# results/pcam/run.sh and results/optimizer/run.sh (pcam-subset, 96 px, 3 dense + 2 prune epochs,
# batch 64, CPU), 1 thread, interleaved (fp32, bf16) per model and seed. A run whose result.json
# exists is skipped. Refuses to run on a CPU without native bf16 (there the "bf16" arm would be fp32).
#
#   bash results/bf16-parity/run.sh          # writes results/bf16-parity/trained/ and summary.txt
#   TRAINED=trained-contiguous MODELS=hovit_b ARMS=fp32 bash results/bf16-parity/run.sh   # a subset, elsewhere
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD OUT=$PWD/results/bf16-parity
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}
DATA=$(cd "${HOVIT_NAS_SHARED:-$ROOT/../shared}/data/pcam-subset" && pwd)
"$PY" -c "from hovit_nas.device import native_bf16; import sys; sys.exit(0 if native_bf16('cpu') else 1)" \
  || { echo "this CPU has no native bf16 (AVX512-BF16 or AMX): the bf16 arm would run fp32" >&2; exit 1; }
TRAINED=${TRAINED:-trained} MODELS=${MODELS:-hovit_b hovit_s} ARMS=${ARMS:-fp32 bf16}
mkdir -p "$OUT/$TRAINED"
echo "commit $(git rev-parse --short HEAD); cpu: $(lscpu | sed -n 's/^Model name: *//p'); $(grep -o -m1 -E 'avx512_bf16|amx_bf16' /proc/cpuinfo | sort -u | tr '\n' ' ')" > "$OUT/$TRAINED/machine.txt"
for seed in 0 1 2; do
  for cfg in $MODELS; do
    for arm in $ARMS; do
      run="$OUT/$TRAINED/$arm-$cfg-s$seed"
      [ -f "$run/result.json" ] && continue
      flag=$([ "$arm" = bf16 ] && echo --amp || echo --no-amp)
      "$PY" -m hovit_nas train --config "$cfg" --data "$DATA" --img-size 96 --epochs-dense 3 --epochs-prune 2 \
        --batch-size 64 --threads 1 --device cpu --seed "$seed" $flag --out "$run" > "$run.log" 2>&1
      rm -f "$run"/*.safetensors "$run"/*.pt "$run"/*.onnx  # keep result.json and the log
    done
  done
done
"$PY" "$OUT/summarise.py" "$OUT/$TRAINED" | tee "$OUT/$TRAINED/summary.txt"

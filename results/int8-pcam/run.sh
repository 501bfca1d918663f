#!/usr/bin/env bash
# Issue 22, item 5: a 30-trial search of hovit-wide-cpu at pcam-subset's native 96 px, targeting
# OpenVINO int8 on 1 thread (hovit-wide-cpu-96.yaml), then the report on three deployment targets
# (evidence.py: ONNX Runtime fp32, OpenVINO fp32, OpenVINO int8; EfficientNet-B0 and LeViT-128S
# trained with the trials' budget and quantized the same way). Training uses 2 threads.
#   bash results/int8-pcam/run.sh     # about 45 minutes on a quiet 2-core CPU; resumes if interrupted
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/int8-pcam
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
DATA=$(cd "${HOVIT_NAS_SHARED:-../shared}/data/pcam-subset" && pwd)
STORAGE="sqlite:///$PWD/$OUT/study.db"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's hovit_nas, for evidence.py too
lscpu | sed -n 's/^Model name: *//p' > "$OUT/machine.txt"
"$PY" -m hovit_nas search --space "$OUT/hovit-wide-cpu-96.yaml" --data "$DATA" --study pcam-ov-int8 \
  --storage "$STORAGE" --trials 30 --threads 2 --device cpu --seed 0 2>&1 | tee -a "$OUT/search.log"
"$PY" -m hovit_nas pareto --study pcam-ov-int8 --storage "$STORAGE" --out "$OUT/pareto.html" | tee "$OUT/pareto.txt"
"$PY" "$OUT/evidence.py" pcam-ov-int8 "$STORAGE" "$DATA" > "$OUT/evidence.md" 2> "$OUT/evidence.log"
cat "$OUT/evidence.md"

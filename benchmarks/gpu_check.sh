#!/usr/bin/env bash
# Every CUDA path of hovit-nas in one command (about 8 minutes on one H100/H200):
#
#   bash benchmarks/gpu_check.sh OUT_DIR                 # on a GPU machine
#   bash benchmarks/gpu_check.sh OUT_DIR --device cpu --tiny   # the CPU dry run the tests run
#
# 1. env: nvidia-smi, torch/CUDA versions
# 2. bench on the device: eager and --cuda-graph, batch 1 and 32 (HoViT-B, HoViT-S, EfficientNet-B0)
# 3. one hovit_b epoch (bf16 autocast) on an NCT-shaped cache
# 4. the input pipeline benchmark on the device
# 5. a 2-trial Ray search with --gpus-per-trial 0.5
# 6. SIGKILL a search as its second trial starts training, resume it, check nothing is left RUNNING
# 7. the supernet mode: `supernet train` on the device, then a 4-subnet search on the Ray executor
#    (2 at a time, --gpus-per-trial 0.5; --tiny: 2 subnets, local executor, to keep the suite's
#    time); every trial COMPLETE with a supernet estimate
# Everything lands under OUT_DIR: one log per step and summary.txt (step, ok/FAIL, seconds).
# A failing step does not stop the others; the exit status is non-zero if any failed.
set -uo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR [--device cpu] [--tiny]}
shift
DEVICE=cuda
TINY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$([ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/summary.txt"
export HOVIT_NAS_CACHE_DIR="$OUT/cache" HOVIT_NAS_HEARTBEAT=2,10 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# the command that runs hovit-nas: `$PY -m hovit_nas`, or HOVIT_NAS_CLI (a command line without
# quoting; the test suite passes its warm interpreter, tests/forkserver.py)
if [ -n "${HOVIT_NAS_CLI:-}" ]; then read -ra HOVIT <<< "$HOVIT_NAS_CLI"; else HOVIT=("$PY" -m hovit_nas); fi

if [ "$TINY" = 1 ]; then
  TILES=270; SIZE=32; BATCHES="8"; RUNS="--runs 3 --rounds 1 --warmup 1 --min-time 0.25 --no-anchor"; STEPS=5; PIPE="--steps 3 --rounds 1 --opens 1 --delivery-s 1"; SUBNETS=2; SN_EXEC="--executor local"
  GPUS=0; LIMIT=300; LAT_S=0.25
else
  TILES=20000; SIZE=224; BATCHES="1 32"; RUNS="--runs 20 --rounds 3"; STEPS=200; PIPE="--steps 20 --rounds 2"; SUBNETS=4
  SN_EXEC="--executor ray --max-concurrent 2 --cpus-per-trial 1 --gpus-per-trial 0.5"
  GPUS=0.5; LIMIT=240; LAT_S=1
fi
FOLDER="$OUT/nct-shaped-$TILES"

step() {  # step NAME COMMAND...: run with a time limit, log to OUT/NAME.log, record the outcome
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name" >&2
  if timeout "$LIMIT" "$@" > "$OUT/$name.log" 2>&1; then
    echo "$name ok $((SECONDS - t0))s" | tee -a "$OUT/summary.txt" >&2
  else
    echo "$name FAIL(rc=$?) $((SECONDS - t0))s: see $name.log" | tee -a "$OUT/summary.txt" >&2
    tail -5 "$OUT/$name.log" >&2
  fi
}

step env bash -c "(nvidia-smi || echo 'no nvidia-smi'); '$PY' -c 'import torch, hovit_nas; print(torch.__version__, torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"\")'"

for b in $BATCHES; do
  step "bench-eager-b$b" "${HOVIT[@]}" bench --device "$DEVICE" --batch "$b" --img-size "$SIZE" \
    --models hovit_b,hovit_s,efficientnet_b0 --runtimes torch $RUNS --out "$OUT/bench-eager-b$b"
  if [ "$DEVICE" = cuda ]; then
    step "bench-graph-b$b" "${HOVIT[@]}" bench --device cuda --cuda-graph --batch "$b" --img-size "$SIZE" \
      --models hovit_b,hovit_s,efficientnet_b0 --runtimes torch $RUNS --out "$OUT/bench-graph-b$b"
  fi
done

step make-tiles "$PY" -c "import sys; sys.path.insert(0, '$ROOT/benchmarks'); from pathlib import Path; \
import input_pipeline as ip; ip.make_folder(Path('$FOLDER'), $TILES)"

step train-bf16 "${HOVIT[@]}" train --config hovit_b --data "$FOLDER" --img-size "$SIZE" --epochs-dense 1 \
  --epochs-prune 0 --batch-size 64 --device "$DEVICE" --out "$OUT/train-hovit_b"

step input-pipeline "$PY" "$ROOT/benchmarks/input_pipeline.py" --folder "$FOLDER" --img-size "$SIZE" \
  --device "$DEVICE" $PIPE --out "$OUT/input-pipeline"

# a short space: the hovit space at this size with a capped budget
SPACE="$OUT/space.yaml"
"$PY" - "$ROOT/hovit_nas/spaces/hovit.yaml" "$SPACE" "$SIZE" "$STEPS" "$LAT_S" <<'EOF'
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
d["name"] = "gpu-check"
d["base"]["model"]["img_size"] = int(sys.argv[3])
d["base"]["train"].update(epochs_dense=1, epochs_prune=1, max_steps_per_epoch=int(sys.argv[4]))
d["latency"].update(runs=10, warmup=3, min_time_s=float(sys.argv[5]), anchor_time_s=3 * float(sys.argv[5]))
d["noise"] = {"seeds": 1}  # the fixed point once: the kill-and-resume step counts its trials
yaml.safe_dump(d, open(sys.argv[2], "w"))
EOF

step ray-search "${HOVIT[@]}" search --space "$SPACE" --data "$FOLDER" --trials 2 --executor ray \
  --cpus-per-trial 1 --gpus-per-trial "$GPUS" --device "$DEVICE" --storage "sqlite:///$OUT/ray.db"

KILL=("${HOVIT[@]}" search --space "$SPACE" --data "$FOLDER" --trials 2 --device "$DEVICE" --storage "sqlite:///$OUT/kill.db")
step kill-and-resume bash -c "
  HOVIT_NAS_FAULT=training:2 $(printf '%q ' "${KILL[@]}"); rc=\$?
  echo \"killed run exited \$rc\"; [ \$rc -eq 137 ] || exit 1
  $(printf '%q ' "${KILL[@]}") || exit 1
  '$PY' -c \"
import optuna, sys
s = optuna.load_study(study_name='gpu-check', storage='sqlite:///$OUT/kill.db')
states = [t.state.name for t in s.trials]
print('trials after resume:', states)
sys.exit(0 if 'RUNNING' not in states and states.count('COMPLETE') >= 2 else 1)
\""

SN=("${HOVIT[@]}" search --space "$SPACE" --data "$FOLDER" --evaluator supernet --supernet "$OUT/supernet" --trials "$SUBNETS"
    $SN_EXEC --device "$DEVICE" --storage "sqlite:///$OUT/supernet.db")
step supernet bash -c "
  $(printf '%q ' "${HOVIT[@]}") supernet train --space '$SPACE' --data '$FOLDER' --epochs 1 --max-steps $STEPS \
    --device '$DEVICE' --out '$OUT/supernet' || exit 1
  $(printf '%q ' "${SN[@]}") || exit 1
  '$PY' -c \"
import optuna, sys
s = optuna.load_study(study_name='gpu-check', storage='sqlite:///$OUT/supernet.db')
ok = [t for t in s.trials if t.state.name == 'COMPLETE' and t.user_attrs.get('estimate')]
print('supernet trials complete with an estimate:', len(ok), 'ray nodes (None: local):', sorted({str(t.user_attrs.get('ray_node')) for t in ok}))
sys.exit(0 if len(ok) == $SUBNETS else 1)
\""

echo "--- $OUT/summary.txt" >&2
cat "$OUT/summary.txt" >&2
! grep -q FAIL "$OUT/summary.txt"

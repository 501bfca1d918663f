#!/usr/bin/env bash
# Does timm's weight-decay rule change accuracy? (issue 20)
#
# "timm": this commit, AdamW with timm's param_groups_weight_decay: no decay on 1-D parameters
#         (BatchNorm, biases, gate logits) nor on LeViT's attention biases (HoViT.no_weight_decay).
# "all":  this commit with decay-all.patch, the rule before: decay on every trainable parameter.
# Everything else is the same code. HoViT-B and HoViT-S, seeds 0 1 2, at the budget of
# results/pcam/run.sh (pcam-subset, 96 px, 3 dense + 2 prune epochs, batch 64, 2 threads, CPU),
# interleaved (all, timm) per model and seed. About 4 minutes a run on a quiet 2-core CPU (12 runs).
#
#   bash results/optimizer/run.sh          # writes results/optimizer/trained/ and summary.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD OUT=$PWD/results/optimizer
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}
DATA=$(cd "${HOVIT_NAS_SHARED:-$ROOT/../shared}/data/pcam-subset" && pwd)
WT=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WT/timm" 2>/dev/null; git -C "$ROOT" worktree remove --force "$WT/all" 2>/dev/null; rm -rf "$WT"' EXIT
git worktree add -q --detach "$WT/timm" HEAD
git worktree add -q --detach "$WT/all" HEAD
git -C "$WT/all" apply "$OUT/decay-all.patch"
for rule in all timm; do  # each rule's runs import that worktree's code, not an installed hovit_nas
  used=$(cd "$WT/$rule" && "$PY" -c "import hovit_nas.train as t; print(t.__file__)")
  [ "$used" = "$WT/$rule/hovit_nas/train.py" ] || { echo "$rule would run $used" >&2; exit 1; }
done
mkdir -p "$OUT/trained"
echo "commit $(git rev-parse --short HEAD); cpu: $(lscpu | sed -n 's/^Model name: *//p')" > "$OUT/machine.txt"
for seed in 0 1 2; do
  for cfg in hovit_b hovit_s; do
    for rule in all timm; do
      run="$OUT/trained/$rule-$cfg-s$seed"
      [ -f "$run/result.json" ] && continue
      # from inside the worktree: python -m puts the working directory first on sys.path
      (cd "$WT/$rule" && "$PY" -m hovit_nas train --config "$cfg" --data "$DATA" --img-size 96 \
        --epochs-dense 3 --epochs-prune 2 --batch-size 64 --threads 2 --device cpu --seed "$seed" \
        --out "$run" > "$run.log" 2>&1)
      rm -f "$run"/*.safetensors "$run"/*.pt  # keep result.json and the log
    done
  done
done
"$PY" "$OUT/summarise.py" "$OUT/trained" | tee "$OUT/summary.txt"

#!/usr/bin/env bash
# Do timm's optimizer rule and LR schedule change accuracy? (issue 20)
#
# "all":   commit 333cc0c with decay-all.patch: the optimizer before (decay on every trainable
#          parameter) and our warm-up + cosine LambdaLR: the code before issue 20's item 6.
# "timm":  commit 333cc0c: AdamW with timm's param_groups_weight_decay -- no decay on 1-D parameters
#          (BatchNorm, biases, gate logits) nor on LeViT's attention biases (HoViT.no_weight_decay) --
#          and still our LambdaLR.
# "after": this commit (AFTER, default HEAD): timm's optimizer rule and timm's CosineLRScheduler.
# Everything else is the same code. HoViT-B and HoViT-S, seeds 0 1 2, at the budget of
# results/pcam/run.sh (pcam-subset, 96 px, 3 dense + 2 prune epochs, batch 64, 2 threads, CPU),
# interleaved (all, timm, after) per model and seed. About 4 minutes a run on a quiet 2-core CPU (18 runs);
# a run whose result.json exists is skipped.
#
#   bash results/optimizer/run.sh          # writes results/optimizer/trained/ and summary.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD OUT=$PWD/results/optimizer
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3)}
DATA=$(cd "${HOVIT_NAS_SHARED:-$ROOT/../shared}/data/pcam-subset" && pwd)
WT=$(mktemp -d)
RULES="all timm after"
trap 'for r in $RULES; do git -C "$ROOT" worktree remove --force "$WT/$r" 2>/dev/null; done; rm -rf "$WT"' EXIT
git worktree add -q --detach "$WT/all" 333cc0c
git worktree add -q --detach "$WT/timm" 333cc0c
git worktree add -q --detach "$WT/after" "${AFTER:-HEAD}"
git -C "$WT/all" apply "$OUT/decay-all.patch"
for rule in $RULES; do  # each rule's runs import that worktree's code, not an installed hovit_nas
  used=$(cd "$WT/$rule" && "$PY" -c "import hovit_nas.train as t; print(t.__file__)")
  [ "$used" = "$WT/$rule/hovit_nas/train.py" ] || { echo "$rule would run $used" >&2; exit 1; }
done
mkdir -p "$OUT/trained"
echo "after: commit $(git -C "$WT/after" rev-parse --short HEAD); all, timm: 333cc0c; cpu: $(lscpu | sed -n 's/^Model name: *//p')" > "$OUT/machine.txt"
for seed in 0 1 2; do
  for cfg in hovit_b hovit_s; do
    for rule in $RULES; do
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

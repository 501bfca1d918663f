#!/usr/bin/env bash
# Issue 32, item 6: can the committed pcam setting's budget tell architectures apart? The
# hovit-cpu space (64 px, 2 dense + 1 pruning epoch of 30 steps) on the shared pcam-subset: its
# smallest architecture, HoViT-B and its largest, 2 seeds each, 1 thread. Writes
# check-budget.json (every figure) and check-budget.txt (what the command prints).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=results/check-budget
.venv/bin/hovit-nas check-budget --space hovit-cpu --data ../shared/data/pcam-subset --threads 1 --json \
  > "$OUT/check-budget.json" 2> "$OUT/check-budget.log"
.venv/bin/python -c "
import json; from hovit_nas.budget import BudgetCheck, Pair, format_check
d = json.load(open('$OUT/check-budget.json')); d['pairs'] = [Pair(**{k: v for k, v in p.items() if k != 'z'}) for p in d['pairs']]
print(format_check(BudgetCheck(**d)))" > "$OUT/check-budget.txt"
lscpu | grep 'Model name' > "$OUT/machine.txt"

#!/bin/bash
# What the robustness audit adds to `unmem demo`: the robustness family alone, at the demo's budget
# (src/unmem/configs/demo.yaml), on the demo's 13 rows: the nine demo methods' seed-0 runs of
# configs/world-robustness.yaml (the world recipe, as the demo runs it), the target and the three
# retain models, against retain90 with one shared retain cache. Run from the repository root after
# `unmem run configs/world-robustness.yaml --out runs/world-robustness`; prints start and end times.
#   bash benchmarks/demo_audit_cost.sh
set -u
OUT=runs/demo-audit; rm -rf "$OUT"; mkdir -p "$OUT"
R=runs/world-robustness
echo "start $(date +%s) $(uptime)"
for row in retain retain-2 retain-3 target ga-s0 grad_diff-s0 npo-s0 simnpo-s0 idk_dpo-s0 di-s0 eul-s0 chen-s0 flat-s0; do
  case $row in retain) M=runs/models/retain90;; retain-2) M=runs/models/retain90-seed1;; retain-3) M=runs/models/retain90-seed2;; target) M=runs/models/target;; *) M=$R/runs/$row;; esac
  unmem eval --model $M --data runs/world --split forget10 --retain-model runs/models/retain90 --retain-cache $OUT/rc \
    --metrics robustness --attacks relearn_forget,relearn_retain,quant_int4,prompt_paraphrase --threads 1 --out $OUT/$row > $OUT/$row.log 2>&1 || echo "FAILED $row"
done
echo "end $(date +%s) $(uptime)"

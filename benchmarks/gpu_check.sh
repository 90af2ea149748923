#!/usr/bin/env bash
# Issue 12's GPU check, about 6 minutes on one H200 (bf16 autocast, MFU against 989 TFLOP/s dense bf16):
#   1. unlearning throughput of every method on SmolLM2-135M, full and LoRA, batch 16 (+16 retain),
#      and GradDiff's step today vs the two-pass step of a79c1f6 (same loss and gradients);
#   2. the same for a 1.07B Llama (random weights from a config);
#   3. evaluation throughput on SmolLM2: teacher-forced scoring and greedy generation.
# Usage (repository root, unmem importable):
#   bash benchmarks/gpu_check.sh OUT [SMOLLM2]
# SMOLLM2: an imported SmolLM2 directory (`unmem model import-gguf`, docs/real-models.md; default
# runs/smollm2), or a folder holding only its config and tokenizer: then its weights are random,
# which changes no timing (and makes greedy answers run to their budget).
set -uo pipefail  # a failed step is reported and the next one still runs
OUT=${1:?usage: gpu_check.sh OUT [SMOLLM2]}
SMOL=${2:-runs/smollm2}
mkdir -p "$OUT"
COMMON=(--device cuda --precision bf16 --peak-tflops 989 --config-tokenizer "$SMOL" --min-seconds 1.5)
METHODS=chen,di,eul,flat,ga,grad_diff,idk_dpo,idk_nll,kl,npo,npo:live,rmu,simnpo,wga
if [ -f "$SMOL/model.safetensors" ]; then
    SMOL_ARGS=(--models "$SMOL")
    SMOL_WEIGHTS=$SMOL
else
    SMOL_ARGS=(--models --config-model "$SMOL")
    SMOL_WEIGHTS=${TMPDIR:-/tmp}/smollm2-random
    python3 - "$SMOL" "$SMOL_WEIGHTS" <<'PY'
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
source, target = sys.argv[1:]
torch.manual_seed(0)
AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
AutoTokenizer.from_pretrained(source).save_pretrained(target)
PY
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
start=$SECONDS
python3 benchmarks/unlearn_throughput.py "${COMMON[@]}" "${SMOL_ARGS[@]}" --lora --two-pass \
    --methods $METHODS --batch-size 16 --out "$OUT/unlearn_smollm2.json" || echo "FAILED: SmolLM2 unlearning"
echo "SmolLM2 unlearning: $((SECONDS - start)) s"; start=$SECONDS
python3 benchmarks/unlearn_throughput.py "${COMMON[@]}" --models --config-model llama-1b --lora \
    --methods $METHODS --batch-size 16 --out "$OUT/unlearn_llama1b.json" \
    || echo "FAILED: 1B unlearning"
echo "1B unlearning: $((SECONDS - start)) s"; start=$SECONDS
python3 benchmarks/eval_throughput.py --device cuda --dtype bfloat16 --model "$SMOL_WEIGHTS" \
    --samples 256 --batch-size 64 --out "$OUT/eval_smollm2.json" || echo "FAILED: SmolLM2 evaluation"
echo "SmolLM2 evaluation: $((SECONDS - start)) s"

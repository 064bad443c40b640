#!/usr/bin/env bash
# The exact pipeline that produced resources/weights/kdsam_default.safetensors (CPU, 2 cores).
# Run from the repository root:  nohup bash training/run_shipped.sh > runs/shipped.log 2>&1 &
# Every stage resumes from its last checkpoint when the script is started again.
set -euo pipefail
. .venv/bin/activate
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }

stamp cache;    kdsam-train cache    --config training/configs/cache_lite_medsam.yaml
stamp distill;  kdsam-train distill  --config training/configs/distill_kdsam256.yaml
stamp finetune; kdsam-train finetune --config training/configs/finetune_kdsam256.yaml
stamp eval-test
kdsam-train evaluate --config training/configs/eval_test.yaml
stamp eval-val
kdsam-train evaluate --config training/configs/eval_test.yaml --split val --out training/results/val
stamp done

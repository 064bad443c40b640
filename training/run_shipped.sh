#!/usr/bin/env bash
# The pipeline that produced resources/weights/kdsam_default.safetensors (CPU, 2 shared cores).
# Run from the repository root, e.g.
#   nohup bash training/run_shipped.sh cache > runs/shipped_cache.log 2>&1 &
#   nohup bash training/run_shipped.sh distill finetune eval > runs/shipped.log 2>&1 &
# Every stage resumes from its last checkpoint when started again.
set -euo pipefail
. .venv/bin/activate
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }

for stage in "$@"; do
  stamp "$stage start"
  case "$stage" in
    cache)    kdsam-train cache    --config training/configs/cache_lite_medsam.yaml ;;
    distill)  kdsam-train distill  --config training/configs/distill_kdsam256.yaml ;;
    finetune) kdsam-train finetune --config training/configs/finetune_kdsam256.yaml ;;
    eval)     kdsam-train evaluate --config training/configs/eval_test.yaml
              stamp "eval-val start"
              kdsam-train evaluate --config training/configs/eval_test.yaml --split val --max-per-dataset 15 \
                  --out training/results/val ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  stamp "$stage end"
done

#!/usr/bin/env bash
# The pipeline that produced resources/weights/kdsam_default.safetensors (CPU, 2 shared cores).
# Run from the repository root, e.g.
#   nohup bash training/run_shipped.sh cache > runs/shipped_cache.log 2>&1 &
#   nohup bash training/run_shipped.sh distill finetune eval > runs/shipped.log 2>&1 &
# Every stage resumes from its last checkpoint when started again.
# Stages: v1 (restore the v1 weights from git), cache, distill, finetune (v1, session 1: collapsed phase 1, see training/README.md);
# distill-v2, finetune-v2 (v2, the shipped weights if the model card says so), diagnose and
# eval-val (v1 vs v2 vs teacher on val), eval (v1 on test), eval-v2 (v2 on test, the model card);
# coupled, eval-coupled (the coupled baseline, from the step-300 v1 phase-1 encoder kept in
# runs/distill_kdsam256_step300);
# v2 (restore the v2 weights from git), distill-v3, finetune-v3 (v2's phase 1 trained on from its
# weights, a fresh phase 2), diagnose-v3, eval-val-v3 (v2 vs v3 vs teacher on val), eval-v3 (test);
# coupled-v3, eval-coupled-v3 (the coupled baseline from the v3 phase-1 encoder);
# v3 (restore the v3 weights from git), cache-trainval (the teacher cache of the train and val
# splits only: all that v4 needs), distill-v4, finetune-v4 (v3's phase 1 trained on at a fresh
# lr 2e-4, a fresh phase 2), diagnose-v4, eval-val-v4 (v3 vs v4 vs teacher on val), eval-v4 (test),
# targets-v4 (the model card's targets table: v4 on test vs the teacher of eval-v3's run, same images);
# v4 (restore the v4 weights from git), finetune-v5a, eval-val-v5a (a phase-2 probe on v4's encoder:
# half the box prompts tight), cache-x2 (teacher cache of train + one augmented copy), distill-v5,
# finetune-v5 (v4's phase 1 trained on augmented copies, a fresh phase 2), eval-val-v5, eval-v5,
# cache-val, diagnose-v5, compare-val-v5 (v5 / v5a vs v4 and the teacher on val, paired), targets-v5;
# v5 (restore the v5 weights from git), finetune-v6a, eval-val-v6a, compare-val-v6a (a phase-2 probe
# on v5's encoder: two augmented embedding copies per training image); distill-v6 (v5's encoder
# trained on with the decoder perceptual term; needs cache-trainval), finetune-v6, eval-val-v6,
# diagnose-v6, compare-val-v6 (v6 vs v5 and the teacher on val; v6 was not shipped, so no test run);
# finetune-v5s1, eval-val-v5s1, compare-val-v5s1 (v5's phase 2 repeated with seed 1: run-to-run noise);
# coupled-v7 (v5 refined with encoder and decoder trained together), finetune-v7c (its control: v5's
# decoder trained on alone), eval-val-v7, compare-val-v7 (v7 and v7c vs v5 and the teacher on val),
# eval-v7, targets-v7 (test), cache-val, diagnose-v7; coupled-v7s1, eval-val-v7s1, compare-val-v7s1
# (v7's coupled refinement repeated with seed 1); v7 (restore the v7 weights from git);
# v7 eval-train-v7 (v7 and the teacher on 60 training images per dataset: a fit check);
# v7 coupled-v8 eval-val-v8 compare-val-v8 (v7 refined further: tight boxes, a larger encoder lr).
# v7 probe-fit probe-fit-val (session 11: v7 refined on 120 Kvasir-SEG and BUSI training images
# alone, scored on them and on val).
# v5 cache-x2 distill-v9 finetune-v9 coupled-v9 eval-val-v9 compare-val-v9 (session 13: v7's recipe
# with 1500 more phase-1 steps in bf16 on v5's encoder; the coupled stage in bf16 too); eval-v9,
# targets-v9 (test), cache-val, diagnose-v9; v9 (restore the v9 weights from git).
# v5 cache-x2 distill-v10 cache-val diagnose-v10 finetune-v10 coupled-v10 eval-val-v10 compare-val-v10
# (session 14: v9's recipe with phase 1 at a peak lr of 3e-4 instead of 1e-4); eval-v10, targets-v10.
# v10p1 (session 15: restore v10's phase-1 encoder, committed in training/checkpoints/ because this
# session's machine could not run the whole chain), then finetune-v10 eval-val-v10d compare-val-v10d (v10's
# decoupled stage vs v5's on val: the same phase-2 recipe on two phase-1 encoders) coupled-v10 eval-val-v10
# compare-val-v10; then (session 16) eval-v10 targets-v10; v10 (restore the full v10 student, not shipped,
# from training/checkpoints/).
# v9 v10 soup-v11 eval-val-v11 compare-val-v11 (session 17: v11, the uniform weight average of v9 and
# v10, `kdsam-train average`), then eval-v11 targets-v11 (test).
# v10p1 distill512-v12 cache-val diagnose-v12 (session 17: v12's phase 1, the student at 512 px warm-started
# from v10's phase-1 encoder; v12p1 restores it from training/checkpoints/); then, by the rules in training/README.md, finetune512-v12 eval-val-v12d
# compare-val-v12d (its decoupled stage vs v10d), coupled512-v12 eval-val-v12 compare-val-v12, eval-v12
# targets-v12.
set -euo pipefail
. .venv/bin/activate
export MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=68719476736
stamp() { echo "=== $(date -u +%FT%TZ) $*"; }
# pair_val RESULT STUDENT OTHER OTHER_RESULT: model STUDENT of training/results/RESULT.json against
# model OTHER of OTHER_RESULT.json, paired per image (same images and prompts, checked) ->
# training/results/val_STUDENT_vs_OTHER.md
pair_val() {
  python -m kdsam_train.report "training/results/$1.json" --student "$2" --teacher "$3" --names "$2" "$3" \
      --teacher-result "training/results/$4.json" -o "training/results/val_$2_vs_$3.md"
}

# targets NEW OLD: model "student" of training/results/test_NEW.json against the teacher of test_v3.json
# (-> targets_test_NEW.md, the model card's table) and against model "student" of test_OLD.json
# (-> test_NEW_vs_OLD.md), paired per image; OLD empty: the first table only
targets() {
  python -m kdsam_train.report "training/results/test_$1.json" \
      --teacher-result training/results/test_v3.json -o "training/results/targets_test_$1.md"
  if [ -n "${2:-}" ]; then
    python -m kdsam_train.report "training/results/test_$1.json" --teacher student --names "$1" "$2" \
        --teacher-result "training/results/test_$2.json" -o "training/results/test_$1_vs_$2.md"
  fi
}

# unpack FILE RUN NAME: training/checkpoints/FILE (a committed, unshipped checkpoint) -> runs/RUN/NAME
unpack() {
  mkdir -p "runs/$2"
  cp "training/checkpoints/$1" "runs/$2/$3"
}

# restore COMMIT RUN: the shipped weights as committed in COMMIT -> runs/RUN/student_final.safetensors
restore() {
  mkdir -p "runs/$2"
  git show "$1:resources/weights/kdsam_default.safetensors" > "runs/$2/student_final.safetensors"
}

for stage in "$@"; do
  stamp "$stage start"
  case "$stage" in
    v1)       # the first shipped weights (v1), as committed in 67d18f4, for the v1-vs-v2 comparisons
              restore 67d18f4 finetune_kdsam256_v1 ;;
    v2)       # the v2 weights as shipped in 6025644 (session 4), the warm start of v3
              restore 6025644 finetune_kdsam256_v2 ;;
    v3)       # the v3 weights as shipped in 6454aa3 (session 5), the warm start of v4
              restore 6454aa3 finetune_kdsam256_v3 ;;
    v4)       # the v4 weights as shipped in f0de0dc (session 6), whose frozen encoder v5 keeps
              restore f0de0dc finetune_kdsam256_v4 ;;
    v5)       # the v5 weights as shipped in 1e20483 (session 7)
              restore 1e20483 finetune_kdsam256_v5 ;;
    v7)       # the v7 weights as shipped in 222e827 (session 9)
              restore 222e827 finetune_coupled_kdsam256_v7 ;;
    v9)       # the v9 weights as shipped in 804dc56 (session 13)
              restore 804dc56 finetune_coupled_kdsam256_v9 ;;
    v10p1)    # v10's phase-1 encoder (session 15), as distill-v10 wrote it
              unpack distill_kdsam256_v10_phase1.safetensors distill_kdsam256_v10 student_phase1.safetensors ;;
    v12p1)    # v12's 512 px phase-1 encoder (session 17), as distill512-v12 wrote it (all 600 steps)
              unpack distill_kdsam512_v12_phase1.safetensors distill_kdsam512_v12 student_phase1.safetensors ;;
    v10)      # the full v10 student (session 16; not shipped: training/checkpoints/README.md)
              unpack finetune_coupled_kdsam256_v10.safetensors finetune_coupled_kdsam256_v10 student_final.safetensors ;;
    v12)      # the full v12 student (session 18; its test run decides: training/checkpoints/README.md)
              unpack finetune_coupled_kdsam512_v12.safetensors finetune_coupled_kdsam512_v12 student_final.safetensors ;;
    cache-trainval) kdsam-train cache --config training/configs/cache_lite_medsam.yaml --splits train val ;;
    cache)    kdsam-train cache    --config training/configs/cache_lite_medsam.yaml ;;
    cache-val) kdsam-train cache   --config training/configs/cache_lite_medsam.yaml --splits val ;;  # for diagnose
    cache-x2) kdsam-train cache    --config training/configs/cache_lite_medsam_x2.yaml ;;  # train + 1 augmented copy
    distill)  kdsam-train distill  --config training/configs/distill_kdsam256.yaml ;;
    finetune) kdsam-train finetune --config training/configs/finetune_kdsam256.yaml ;;
    # versioned stages: the config file is named by the version (v2, v3, v4)
    distill512-v12) kdsam-train distill --config training/configs/distill_kdsam512_v12.yaml ;;
    diagnose-v12) kdsam-train diagnose --split val --out training/results/diagnose_val_v12 --threads 2 --students \
                  v10p1=runs/distill_kdsam256_v10/student_phase1.safetensors \
                  v12p1=runs/distill_kdsam512_v12/student_phase1.safetensors ;;
    finetune512-v12) kdsam-train finetune --config training/configs/finetune_kdsam512_v12.yaml ;;
    coupled512-v12) kdsam-train finetune --config training/configs/finetune_coupled_kdsam512_v12.yaml ;;
    compare-val-v12d) pair_val val_v12d v12d v10d val_v10d ;;
    compare-val-v12) pair_val val_v12 v12 v9 val_v9
                pair_val val_v12 v12 teacher val_v3_v4_teacher ;;
    targets-v12) targets v12 v9 ;;
    distill-v*)  kdsam-train distill  --config "training/configs/distill_kdsam256_${stage#distill-}.yaml" ;;
    finetune-v*) kdsam-train finetune --config "training/configs/finetune_kdsam256_${stage#finetune-}.yaml" ;;
    probe-fit) python training/probes/fit_subset.py   # needs v7 restored (stage v7) and train_v7.json
               kdsam-train finetune --config training/configs/finetune_coupled_probe_fit.yaml
               cp runs/finetune_coupled_probe_fit/log.csv training/results/probes/fit_kvasir_busi_log.csv
               kdsam-train evaluate --config training/configs/eval_probe_fit.yaml ;;
    probe-fit-val) kdsam-train evaluate --config training/configs/eval_val_probe_fit.yaml
                   pair_val val_probe_fit fit v7 val_v7 ;;
    eval-train-v*) kdsam-train evaluate --config "training/configs/eval_train_${stage#eval-train-}.yaml" ;;  # train-split fit check
    eval-val-v*) kdsam-train evaluate --config "training/configs/eval_val_${stage#eval-val-}.yaml" ;;  # v3, v4 (v2: eval-val)
    diagnose) kdsam-train diagnose --split val --out training/results/diagnose_val --threads 2 --students \
                  v1=runs/finetune_kdsam256_v1/student_final.safetensors \
                  v2=runs/distill_kdsam256_v2/student_phase1.safetensors ;;   # phase 2 keeps this encoder
    eval-val) kdsam-train evaluate --config training/configs/eval_val_v2.yaml ;;
    eval)     kdsam-train evaluate --config training/configs/eval_test.yaml      # v1: test, then val
              stamp "eval-val-v1 start"
              kdsam-train evaluate --config training/configs/eval_test.yaml --split val --max-per-dataset 15 \
                  --out training/results/val ;;
    eval-v*)  kdsam-train evaluate --config "training/configs/eval_test_${stage#eval-}.yaml" ;;   # test, with blank control
    diagnose-v3) kdsam-train diagnose --split val --out training/results/diagnose_val_v3 --threads 2 --students \
                  v2=runs/finetune_kdsam256_v2/student_final.safetensors \
                  v3=runs/distill_kdsam256_v3/student_phase1.safetensors ;;
    coupled-v3)      kdsam-train finetune --config training/configs/finetune_coupled_kdsam256_v3.yaml ;;
    eval-coupled-v3) kdsam-train evaluate --config training/configs/eval_coupled_v3.yaml ;;
    diagnose-v4) kdsam-train diagnose --split val --out training/results/diagnose_val_v4 --threads 2 --students \
                  v3=runs/finetune_kdsam256_v3/student_final.safetensors \
                  v4=runs/distill_kdsam256_v4/student_phase1.safetensors ;;
    targets-v4) targets v4 ;;
    finetune-v5a) kdsam-train finetune --config training/configs/finetune_kdsam256_v5a.yaml ;;  # exact-box probe
    eval-val-v5a) kdsam-train evaluate --config training/configs/eval_val_v5a.yaml ;;
    diagnose-v5) kdsam-train diagnose --split val --out training/results/diagnose_val_v5 --threads 2 --students \
                  v4=runs/finetune_kdsam256_v4/student_final.safetensors \
                  v5=runs/distill_kdsam256_v5/student_phase1.safetensors ;;
    compare-val-v5) pair_val val_v5 v5 v4 val_v3_v4_teacher    # v5 vs v4 and vs the teacher on val
                pair_val val_v5 v5 teacher val_v3_v4_teacher
                pair_val val_v5a v5a v4 val_v3_v4_teacher ;;
    targets-v5) targets v5 v4 ;;
    compare-val-v6a) pair_val val_v6a v6a v5 val_v5 ;;
    diagnose-v6) kdsam-train diagnose --split val --out training/results/diagnose_val_v6 --threads 2 --students \
                  v5=runs/finetune_kdsam256_v5/student_final.safetensors \
                  v6=runs/distill_kdsam256_v6/student_phase1.safetensors ;;
    compare-val-v6) pair_val val_v6 v6 v5 val_v5
                pair_val val_v6 v6 teacher val_v3_v4_teacher ;;
    compare-val-v5s1) pair_val val_v5s1 v5s1 v5 val_v5 ;;
    coupled-v[789]*|coupled-v1[0-9]*) kdsam-train finetune --config "training/configs/finetune_coupled_kdsam256_${stage#coupled-}.yaml" ;;
    diagnose-v7) kdsam-train diagnose --split val --out training/results/diagnose_val_v7 --threads 2 --students \
                  v5=runs/finetune_kdsam256_v5/student_final.safetensors \
                  v7=runs/finetune_coupled_kdsam256_v7/student_final.safetensors ;;
    targets-v7) targets v7 v5 ;;
    compare-val-v7s1) pair_val val_v7s1 v7s1 v7 val_v7 ;;
    compare-val-v8) pair_val val_v8 v8 v7 val_v7
                pair_val val_v8 v8 teacher val_v3_v4_teacher ;;
    compare-val-v7) pair_val val_v7 v7 v5 val_v5
                pair_val val_v7 v7c v5 val_v5
                pair_val val_v7 v7 teacher val_v3_v4_teacher ;;
    compare-val-v9) pair_val val_v9 v9 v7 val_v7
                pair_val val_v9 v9 teacher val_v3_v4_teacher ;;
    targets-v9) targets v9 v7 ;;
    diagnose-v9) kdsam-train diagnose --split val --out training/results/diagnose_val_v9 --threads 2 --students \
                  v5=runs/finetune_kdsam256_v5/student_final.safetensors \
                  v9p1=runs/distill_kdsam256_v9/student_phase1.safetensors \
                  v9=runs/finetune_coupled_kdsam256_v9/student_final.safetensors ;;
    diagnose-v10) kdsam-train diagnose --split val --out training/results/diagnose_val_v10 --threads 2 --students \
                  v5=runs/finetune_kdsam256_v5/student_final.safetensors \
                  v10p1=runs/distill_kdsam256_v10/student_phase1.safetensors ;;  # v9p1: diagnose_val_v9.md
    compare-val-v10d) pair_val val_v10d v10d v5 val_v5 ;;
    compare-val-v10) pair_val val_v10 v10 v9 val_v9
                pair_val val_v10 v10 teacher val_v3_v4_teacher ;;
    targets-v10) targets v10 v9 ;;
    soup-v11) kdsam-train average --out runs/soup_v11/student_final.safetensors --models \
                  runs/finetune_coupled_kdsam256_v9/student_final.safetensors \
                  runs/finetune_coupled_kdsam256_v10/student_final.safetensors ;;
    compare-val-v11) pair_val val_v11 v11 v9 val_v9
                pair_val val_v11 v11 v10 val_v10
                pair_val val_v11 v11 teacher val_v3_v4_teacher ;;
    targets-v11) targets v11 v9 ;;
    coupled)  kdsam-train finetune --config training/configs/finetune_coupled_kdsam256.yaml ;;
    eval-coupled) kdsam-train evaluate --config training/configs/eval_coupled.yaml ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  stamp "$stage end"
done

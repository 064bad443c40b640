"""Is the student's box-prompt mask biased in size? Dice over mask-logit thresholds, both models.

Usage (repository root, venv active; needs the teacher's weights, not the cache):
    python training/probes/threshold.py STUDENT SPLIT > training/results/probes/<name>.log
For every image of SPLIT with a non-empty mask (evaluate's order, seed 0) and the tight
ground-truth box, the single-mask output of the student and of LiteMedSAM is cut at each
logit threshold below (0 is SAM's and the predictor's) and scored at the original resolution;
it prints mean Dice per dataset and threshold, and the mean predicted/true area ratio at 0.
A one-off research probe, not part of the package.
"""
import sys
from collections import defaultdict

import numpy as np
import torch

torch.set_num_threads(2)
from box_prompts import tight_boxes
from kdsam_core.transforms import postprocess_masks
from kdsam_train.metrics import dice

THRESHOLDS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
student_file, split = sys.argv[1], sys.argv[2]
rows = defaultdict(lambda: defaultdict(list))

with torch.inference_mode():
    for m, s, gt, emb, box in tight_boxes(student_file, split):
        hw, size = gt.shape, m.model.img_size
        low, _ = m.model.decode(emb, boxes=box, multimask_output=False)
        logits = postprocess_masks(low, hw, size)[0, 0].cpu().numpy()
        r = rows[m.label]
        r["dataset"].append(s.dataset)
        r["area"].append((logits > 0).sum() / gt.sum())
        for t in THRESHOLDS:
            r[t].append(dice(logits > t, gt))
print(f"student {student_file}, split {split}, {len(rows['student']['area'])} images, tight box")
for label, r in rows.items():
    ds = np.array(r["dataset"])
    names = ["all"] + sorted(set(ds))
    print(f"{label}: predicted/true area at 0: " + "  ".join(
        f"{d} {np.mean(np.array(r['area'])[(ds == d) | (d == 'all')]):.3f}" for d in names))
    for t in THRESHOLDS:
        x = np.array(r[t])
        print(f"{label:8s} t={t:+.1f} " + "  ".join(f"{d} {x[(ds == d) | (d == 'all')].mean():.4f}" for d in names))

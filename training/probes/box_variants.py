"""Box-prompt inference variants for the student and the teacher, on the same images.

Usage (repository root, venv active; needs the teacher's weights, not the cache):
    python training/probes/box_variants.py STUDENT SPLIT > training/results/probes/<name>.log
For every image of SPLIT with a non-empty mask (evaluate's SHA-1 order, seed 0) and the tight
ground-truth box, it prints the mean Dice per dataset of the student and of LiteMedSAM under:
``single`` (evaluate's box protocol: one mask), ``multi`` (SAM's three masks, the highest
predicted IoU kept), ``refine`` (a second decoder pass with the box and the first pass's
low-res logits as mask prompt), ``post`` (single, then the largest component, holes filled).
A one-off research probe, not part of the package.
"""
import sys
from collections import defaultdict

import numpy as np
import torch
from scipy import ndimage

torch.set_num_threads(2)
from box_prompts import tight_boxes
from kdsam_core.prompts import largest_component
from kdsam_core.transforms import postprocess_masks
from kdsam_train.metrics import dice

student_file, split = sys.argv[1], sys.argv[2]
rows = defaultdict(lambda: defaultdict(list))


def to_mask(low, k, hw, s):
    return (postprocess_masks(low[:, k:k + 1], hw, s)[0, 0] > 0).cpu().numpy()


with torch.inference_mode():
    for m, s, gt, emb, box in tight_boxes(student_file, split):
        hw, size = gt.shape, m.model.img_size
        low1, _ = m.model.decode(emb, boxes=box, multimask_output=False)
        low3, iou3 = m.model.decode(emb, boxes=box, multimask_output=True)
        low2, _ = m.model.decode(emb, boxes=box, mask_input=low1, multimask_output=False)
        single = to_mask(low1, 0, hw, size)
        post = ndimage.binary_fill_holes(largest_component(single)) if single.any() else single
        r = rows[m.label]
        r["dataset"].append(s.dataset)
        r["single"].append(dice(single, gt))
        r["multi"].append(dice(to_mask(low3, int(torch.argmax(iou3[0])), hw, size), gt))
        r["refine"].append(dice(to_mask(low2, 0, hw, size), gt))
        r["post"].append(dice(post, gt))
print(f"student {student_file}, split {split}, {len(rows['student']['single'])} images, tight box")
for label, r in rows.items():
    ds = np.array(r["dataset"])
    for v in ("single", "multi", "refine", "post"):
        x = np.array(r[v])
        per = "  ".join(f"{d} {x[ds == d].mean():.4f}" for d in sorted(set(ds)))
        print(f"{label:8s} {v:7s} all {x.mean():.4f}  {per}")

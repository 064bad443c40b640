"""Does averaging the student's embedding over flipped inputs bring it closer to the teacher's?

Usage (repository root, venv active; needs the teacher's weights, not the cache):
    python training/probes/flip_tta.py STUDENT SPLIT N > training/results/probes/<name>.log
For the first N images of SPLIT with a non-empty mask (evaluate's SHA-1 order, seed 0) it
computes the teacher's embedding and the STUDENT's embedding of the image, averaged with the
embedding of the horizontally flipped image flipped back ("h"), and with vertical flips too
("hv": the four flips of the dihedral group's reflections). Per variant it prints the embedding
MSE against the teacher and the STUDENT's Dice with a tight ground-truth box and one centre click
(evaluate's prompts) on those embeddings. The flip is applied to the model input (the padded
square), so the flipped-back embedding is aligned with the unflipped one.
A one-off research probe, not part of the package.
"""
import sys
from collections import defaultdict

import numpy as np
import torch

torch.set_num_threads(2)
from kdsam_core.model.build import build_model
from kdsam_core.transforms import preprocess
from kdsam_train.config import DEFAULT_SPLIT_FILE, EvalConfig
from kdsam_train.data import SkipLog, discover
from kdsam_train.evaluate import EvalModel, eval_samples
from kdsam_train.metrics import dice
from kdsam_train.prompts import box_from_mask, center_click
from kdsam_train.splits import read_splits, select

student_file, split, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
teacher = build_model("lite_medsam", "../shared/weights/lite_medsam.pth").eval()
m = EvalModel(f"student={student_file}", torch.device("cpu"))
samples = select(discover("../shared/data"), read_splits(DEFAULT_SPLIT_FILE)[split])
FLIPS = {"plain": [()], "h": [(), (3,)], "hv": [(), (3,), (2,), (2, 3)]}
rows = defaultdict(lambda: defaultdict(list))
with torch.inference_mode():
    for i, (s, image, gt) in enumerate(eval_samples(samples, EvalConfig(max_per_dataset=0), SkipLog())):
        if i >= n:
            break
        t = teacher.image_encoder(preprocess(image, teacher.preprocess))
        x = preprocess(image, m.model.preprocess)
        for name, flips in FLIPS.items():
            e = torch.stack([m.model.encode(x.flip(f)).flip(f) if f else m.model.encode(x) for f in flips]).mean(0)
            r = rows[name]
            r["mse"].append(float(((e - t) ** 2).mean()))
            r["box"].append(dice(m.predict(e, gt.shape, box=box_from_mask(gt)), gt))
            r["click"].append(dice(m.predict(e, gt.shape, points=([center_click(gt)], [1])), gt))
            r["dataset"].append(s.dataset)
print(f"student {student_file}, split {split}, {len(rows['plain']['mse'])} images")
for name, r in rows.items():
    ds = np.array(r["dataset"])
    per = "  ".join(f"{d} box {np.mean(np.array(r['box'])[ds == d]):.4f}" for d in sorted(set(ds)))
    print(f"{name:5s} mse {np.mean(r['mse']):.6f}  box {np.mean(r['box']):.4f}  click {np.mean(r['click']):.4f}  {per}")

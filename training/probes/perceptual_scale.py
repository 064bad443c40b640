"""Gradient scale of phase 1's two terms at the student's embedding.

Usage (repository root, venv active; needs the teacher's weights, not the cache):
    python training/probes/perceptual_scale.py STUDENT N SEED > training/results/probes/<name>.log
For N training images (drawn with SEED) it computes the teacher's and the STUDENT's embeddings,
a jittered ground-truth box per image (as phase 1 draws them), and prints the embedding MSE, the
decoder perceptual term (kdsam_train.losses.DecoderPerceptual: BCE of the student's box mask
against the teacher's, through the frozen teacher decoder), that term's floor (the teacher against
itself: the entropy of its own mask), the norm of each term's gradient with respect to the student
embedding, their ratio and the cosine between the two gradients. The ratio is the lambda at which
the two terms pull equally hard. One thread; about a minute for N = 8.
A one-off research probe, not part of the package.
"""
import sys

import numpy as np
import torch

torch.set_num_threads(1)
from kdsam_core.model.build import build_model, load_model
from kdsam_core.transforms import boxes_to_model, preprocess
from kdsam_train.config import DEFAULT_SPLIT_FILE
from kdsam_train.data import discover
from kdsam_train.losses import DecoderPerceptual, embedding_mse
from kdsam_train.prompts import box_from_mask, jitter_box
from kdsam_train.splits import read_splits, select
from kdsam_train.teacher_cache import sample_view

student_file, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
teacher = build_model("lite_medsam", "../shared/weights/lite_medsam.pth").eval()
student = load_model(student_file).eval()
train = select(discover("../shared/data"), read_splits(DEFAULT_SPLIT_FILE)["train"])
rng = np.random.default_rng(seed)
xs, xt, boxes = [], [], []
for i in rng.choice(len(train), n, replace=False):
    image, mask = sample_view(train[i], 0, 0)
    h, w = image.shape[:2]
    xs.append(preprocess(image, student.preprocess))
    xt.append(preprocess(image, teacher.preprocess))
    boxes.append(boxes_to_model(jitter_box(box_from_mask(mask), (h, w), 0.1, rng), (h, w), teacher.img_size))
with torch.no_grad():
    t_emb = teacher.image_encoder(torch.cat(xt))
    s_emb = student.image_encoder(torch.cat(xs))
s_emb.requires_grad_(True)
boxes = torch.from_numpy(np.stack(boxes))
term = DecoderPerceptual(teacher)
mse = embedding_mse(s_emb, t_emb)
g_mse, = torch.autograd.grad(mse, s_emb)
per = term(s_emb, t_emb, boxes)
g_per, = torch.autograd.grad(per, s_emb)
with torch.no_grad():
    floor = term(t_emb, t_emb, boxes)
cos = torch.nn.functional.cosine_similarity(g_mse.flatten(), g_per.flatten(), 0)
print(f"student {student_file}, {n} training images, seed {seed}")
print(f"mse {mse.item():.6f}  perceptual {per.item():.4f}  perceptual floor (teacher vs itself) {floor.item():.4f}")
print(f"|grad mse| {g_mse.norm().item():.3e}  |grad perceptual| {g_per.norm().item():.3e}  "
      f"ratio mse/perceptual {g_mse.norm().item() / g_per.norm().item():.2e}  cosine {cos.item():.4f}")

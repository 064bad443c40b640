"""Overfitting probe for phase 1: can the student fit the teacher's embeddings of n images?

Usage (repository root, venv active, teacher cache filled):
    python training/probes/overfit.py LR STEPS N VARIANT > training/results/probes/<name>.log
VARIANT: base (the v1 set-up: output affine from the teacher's statistics), freeze (that affine
frozen), meanbuf (the mean embedding of the n images added as a fixed prior, as
--embed-prior does), corr / meanbuf_corr (plus a per-element correlation term).
Every 10 steps it prints the eval-mode MSE, the MSE of the n images' mean embedding
(mean-mse), the cosine between student and teacher residuals (cos; 0 = the student ignores
the image) and the student's across-image variance (var-across). One thread; ~6 s a step.
A one-off research probe, not part of the package.
"""
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1); torch.manual_seed(0)
from kdsam_core.model.build import build_model
from kdsam_train import distill as D
from kdsam_train.config import DEFAULT_SPLIT_FILE
from kdsam_train.data import SkipLog, discover
from kdsam_train.splits import read_splits, select
from kdsam_train.teacher_cache import cache_key

lr = float(sys.argv[1]); steps = int(sys.argv[2]); n = int(sys.argv[3]); variant = sys.argv[4] if len(sys.argv) > 4 else 'base'
cache = D.load_teacher_cache('runs/cache_lite_medsam')
st = build_model('kdsam', img_size=256, neck='fpn'); enc = st.image_encoder
tr = select(discover('../shared/data'), read_splits(DEFAULT_SPLIT_FILE)['train'])
data = D.DistillBatches(tr, cache, st.preprocess, 256, 0, SkipLog())
rng = np.random.default_rng(1); idx = rng.choice(len(data), n, replace=False)
D.init_output_affine(enc, cache, [cache_key(s.id, c) for s, c in data.items[:64]])
X, T = [], []
for b in range(0, n, 8):
    x, t, _ = data.get([int(i) for i in idx[b:b+8]], 0); X.append(x); T.append(t)
X, T = torch.cat(X), torch.cat(T)
mean = T.mean(0, keepdim=True)
prior = mean if variant.startswith('meanbuf') else 0
if variant.startswith('meanbuf'):
    from segment_anything.modeling.common import LayerNorm2d as _L
    _last = [m for m in enc.modules() if isinstance(m, _L)][-1]
    with torch.no_grad():
        _last.weight.copy_((T - mean).std(dim=(0, 2, 3))); _last.bias.zero_()
from segment_anything.modeling.common import LayerNorm2d

last = [m for m in enc.modules() if isinstance(m, LayerNorm2d)][-1]
if variant in ('freeze', 'freeze_corr'):
    last.weight.requires_grad_(False); last.bias.requires_grad_(False)
print('last LN weight mean', last.weight.abs().mean().item())
opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
enc.train(); t0 = time.time()
with torch.no_grad():
    S0 = prior + torch.cat([enc(X[k:k+8]) for k in range(0, n, 8)])
    print('init train-mode mse', ((S0-T)**2).mean().item(), flush=True)
for step in range(steps):
    j = torch.from_numpy(np.random.default_rng(step).choice(n, 8, replace=False))
    s = prior + enc(X[j]); loss = ((s - T[j]) ** 2).mean()
    if variant in ('corr', 'freeze_corr', 'meanbuf_corr'):  # reward per-(channel, position) correlation across the batch
        sc, tc = s - s.mean(0, keepdim=True), T[j] - T[j].mean(0, keepdim=True)
        corr = (sc * tc).sum(0) / (sc.norm(dim=0) * tc.norm(dim=0) + 1e-6)
        loss = loss + (0.01 if variant != 'meanbuf_corr' else 0.005) * (1 - corr.mean())
    opt.zero_grad(); loss.backward(); opt.step()
    if step % 10 == 9 or step == steps - 1:
        with torch.no_grad():
            enc.eval(); S = prior + torch.cat([enc(X[k:k+8]) for k in range(0, n, 8)]); enc.train()
        dt, ds = T - mean, S - mean
        print(f'{variant} lr {lr} step {step+1} train-mode loss {loss.item():.5f} eval mse {((S-T)**2).mean().item():.5f} '
              f'mean-mse {((mean-T)**2).mean().item():.5f} cos {(dt*ds).sum().item()/(dt.norm()*ds.norm()).item():.3f} '
              f'var-across {S.var(0).mean().item():.5f} lnw {last.weight.abs().mean().item():.4f} ({time.time()-t0:.0f}s)', flush=True)

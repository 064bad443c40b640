"""Seconds per phase-1 training step of the shipped student architecture, fp32 vs ``amp: bf16``.

Usage (repository root, venv active):
    python training/probes/amp_speed.py [BATCH] [REPEATS] [IMG_SIZE] > training/results/probes/amp_speed.log
Builds the student of the shipped weights (``kdsam``, FPN neck, prior; IMG_SIZE px, default 256, the
shipped size; random weights:
speed does not depend on them), and times full AdamW steps (forward under
``kdsam_train.runtime.autocast``, fp32 MSE against a random target, backward, step) on a random
batch, the two modes interleaved, 2 threads; prints the median of each, their ratio, and the
relative difference of the two modes' embeddings on one batch. A one-off probe, not part of the
package.
"""
import statistics
import sys
import time

import torch

from kdsam_core.model.build import build_model
from kdsam_train import runtime as R

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
size = int(sys.argv[3]) if len(sys.argv) > 3 else 256
torch.set_num_threads(2)
torch.manual_seed(0)
cpu = torch.device("cpu")
print(f"torch {torch.__version__}, native bf16: {R._cpu_has_bf16()}, batch {batch}, {size} px, 2 threads")
enc = build_model("kdsam", img_size=size, neck="fpn", prior=True).image_encoder.train()
opt = torch.optim.AdamW(enc.parameters(), lr=1e-6)
x, t = torch.randn(batch, 3, size, size), torch.randn(batch, 256, 64, 64) * 0.05


def step(amp: str) -> float:
    t0 = time.perf_counter()
    with R.autocast(cpu, amp):
        y = enc(x)
    loss = ((y.float() - t) ** 2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


times = {"none": [], "bf16": []}
for mode in times:  # warm-up
    step(mode)
for _ in range(repeats):
    for mode in times:
        times[mode].append(step(mode))
med = {m: statistics.median(v) for m, v in times.items()}
for m, v in times.items():
    print(f"amp {m:4s}: median {med[m]:.3f} s/step  ({' '.join(f'{s:.2f}' for s in v)})")
print(f"speed-up: {med['none'] / med['bf16']:.2f}x")
enc.eval()
with torch.no_grad():
    y32 = enc(x)
    with R.autocast(cpu, "bf16"):
        y16 = enc(x).float()
print(f"embedding difference bf16 vs fp32 (eval mode): relative RMS "
      f"{float((y16 - y32).pow(2).mean().sqrt() / y32.pow(2).mean().sqrt()):.4f}")

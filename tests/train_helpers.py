"""Synthetic data and tiny models for the training tests (no dependence on shared/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_dataset(root: Path, name: str = "synth", n: int = 12, size=(48, 40), seed: int = 0, empty: int = 0) -> Path:
    """``root/name/images|masks`` with n image/mask pairs: a bright ellipse on noise."""
    rng = np.random.default_rng(seed)
    (root / name / "images").mkdir(parents=True, exist_ok=True)
    (root / name / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        if i < empty:
            mask[:] = False
        img = rng.normal(60, 20, (h, w)) + 120 * mask
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / "images" / f"img{i:03d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(root / name / "masks" / f"img{i:03d}.png")
    return root


def tiny_teacher(path: Path, seed: int = 123) -> Path:
    """A fixed-seed kdsam_tiny saved as a checkpoint: the stand-in teacher."""
    from kdsam_core.checkpoint import save_checkpoint
    from kdsam_core.model.build import build_model, checkpoint_metadata

    torch.manual_seed(seed)
    m = build_model("kdsam_tiny")
    save_checkpoint(m.state_dict(), path, checkpoint_metadata(m), overwrite=True)
    return path

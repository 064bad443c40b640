"""Shared fixtures: a tiny model and synthetic images. No test reads ../shared."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
torch.set_num_threads(2)


@pytest.fixture()
def tiny_model():
    from kdsam_core.model import build_model

    torch.manual_seed(0)
    return build_model("kdsam_tiny")


@pytest.fixture()
def disk_image():
    """A 96 x 128 grey uint8 image with a bright disk (centre x=70, y=40, r=15) and its mask."""
    yy, xx = np.mgrid[:96, :128]
    mask = (xx - 70) ** 2 + (yy - 40) ** 2 <= 15**2
    img = np.full((96, 128), 40, np.uint8)
    img[mask] = 200
    rng = np.random.default_rng(0)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    return img, mask

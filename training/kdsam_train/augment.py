"""Seeded augmentation suited to each imaging modality.

``augment(image, mask, modality, rng)`` returns new arrays; geometric changes are applied
to image and mask alike. The same ``rng`` seed gives the same result, so a teacher
embedding cached for an augmented copy can be replayed for the student
(see :func:`copy_seed`).
"""

from __future__ import annotations

import hashlib

import numpy as np

# dataset name -> modality; unknown datasets get "generic"
MODALITY = {"kvasir_seg": "endoscopy", "isic2017": "dermoscopy", "busi": "ultrasound", "hc18": "ultrasound"}


def modality_of(dataset: str) -> str:
    return MODALITY.get(dataset, "generic")


def copy_seed(seed: int, sample_id: str, copy: int) -> int:
    """Seed of augmented copy ``copy`` of ``sample_id`` (copy 0 is never augmented)."""
    return int(hashlib.sha1(f"{seed}:{sample_id}:{copy}".encode()).hexdigest()[:8], 16)


def augment(image: np.ndarray, mask: np.ndarray | None, modality: str,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment an (H, W, 3) uint8 image and its (H, W) bool mask (or None)."""
    img = image.astype(np.float32)
    m = mask
    # geometry: flips everywhere; 90-degree turns where there is no canonical orientation
    if rng.random() < 0.5:
        img, m = img[:, ::-1], (m[:, ::-1] if m is not None else None)
    if modality in ("endoscopy", "dermoscopy", "generic"):
        if rng.random() < 0.5:
            img, m = img[::-1], (m[::-1] if m is not None else None)
        k = int(rng.integers(0, 4))
        img, m = np.rot90(img, k), (np.rot90(m, k) if m is not None else None)
    # intensity
    if modality in ("endoscopy", "dermoscopy"):
        img = img * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)  # colour balance, brightness
    elif modality == "ultrasound":
        img = (img - img.mean()) * rng.uniform(0.75, 1.25) + img.mean() + rng.uniform(-15, 15)
        gamma = rng.uniform(0.7, 1.4)
        img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** gamma
        img = img * rng.gamma(8.0, 1 / 8.0, size=img.shape[:2])[..., None]  # multiplicative speckle
    else:
        img = img * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10)
    out = np.ascontiguousarray(np.clip(img + 0.5, 0, 255).astype(np.uint8))
    return out, (np.ascontiguousarray(m) if m is not None else None)

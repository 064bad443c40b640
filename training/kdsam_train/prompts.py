"""Simulated prompts from ground-truth masks: boxes with jitter, clicks, correction clicks.

All functions work on 2D bool arrays indexed ``[y, x]`` and return prompts in that
array's pixel frame as (x, y) / (x0, y0, x1, y1); callers map them to the model's input
frame (``kdsam_core.transforms.coords_to_model`` / ``boxes_to_model``, or a plain scale
when the array already is the padded model frame).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def box_from_mask(mask: np.ndarray) -> np.ndarray:
    """Tight (x0, y0, x1, y1) box of all foreground pixels (x1, y1 inclusive)."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("empty mask: no box")
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float32)


def jitter_box(box: np.ndarray, shape: tuple[int, int], frac: float, rng: np.random.Generator) -> np.ndarray:
    """Move each side by up to ``frac`` of the box's width/height, clipped to the image."""
    x0, y0, x1, y1 = box
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    d = rng.uniform(-frac, frac, size=4) * np.array([w, h, w, h])
    b = np.array([x0, y0, x1, y1], dtype=np.float32) + d
    b[[0, 2]] = np.clip(b[[0, 2]], 0, shape[1] - 1)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, shape[0] - 1)
    if b[2] < b[0]:
        b[[0, 2]] = b[[2, 0]]
    if b[3] < b[1]:
        b[[1, 3]] = b[[3, 1]]
    return b


def _innermost(region: np.ndarray) -> np.ndarray:
    """(x, y) of the pixel farthest from the region's border (ties: first in raster order)."""
    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], dtype=np.float32)


def center_click(mask: np.ndarray) -> np.ndarray:
    """The 'one centre click' of evaluation: the innermost pixel of the largest component."""
    from .data import largest_component

    if not mask.any():
        raise ValueError("empty mask: no click")
    return _innermost(largest_component(mask))


def random_click(region: np.ndarray, rng: np.random.Generator, *, interior: bool = True) -> np.ndarray:
    """A random (x, y) inside ``region``; with ``interior`` drawn with weight ~ distance to the
    border (users click inside objects, rarely on their edge)."""
    if not region.any():
        raise ValueError("empty region: no click")
    if interior:
        w = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1].ravel() ** 2
    else:
        w = region.ravel().astype(np.float64)
    i = rng.choice(w.size, p=w / w.sum())
    y, x = np.unravel_index(i, region.shape)
    return np.array([x, y], dtype=np.float32)


def correction_click(pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator | None = None
                     ) -> tuple[np.ndarray, int] | None:
    """The next click a user makes: in the largest error region (missed foreground -> a
    positive click, label 1; false foreground -> a negative click, label 0), at its innermost
    pixel (deterministic, as in evaluation) or, with ``rng``, at a random interior pixel.
    None when the prediction is perfect."""
    fn, fp = gt & ~pred, pred & ~gt
    best = None
    for region, label in ((fn, 1), (fp, 0)):
        if not region.any():
            continue
        lab, n = ndimage.label(region)
        sizes = ndimage.sum_labels(region, lab, index=np.arange(1, n + 1))
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (sizes[k], lab == k + 1, label)
    if best is None:
        return None
    _, region, label = best
    xy = _innermost(region) if rng is None else random_click(region, rng)
    return xy, label

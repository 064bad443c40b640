"""Prompts derived from masks: bounding boxes and innermost points.

Shared by 3D propagation and the training package's prompt simulation.
Coordinates are (x, y) pixels of the mask's 2D grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def mask_to_box(mask: np.ndarray, margin: float = 0.0) -> np.ndarray | None:
    """(x0, y0, x1, y1) of a 2D mask's foreground, grown by ``margin`` pixels and clipped; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    h, w = mask.shape
    return np.array([max(xs.min() - margin, 0), max(ys.min() - margin, 0),
                     min(xs.max() + margin, w - 1), min(ys.max() + margin, h - 1)], dtype=np.float32)


def innermost_point(mask: np.ndarray) -> np.ndarray | None:
    """(x, y) of the foreground pixel farthest from the background; None if empty."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    dist = ndimage.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], dtype=np.float32)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2D mask (the mask itself if empty)."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return np.asarray(mask, dtype=bool)
    sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def auto_multimask(n_points: int, has_box: bool) -> bool:
    """SAM's advice: ask for 3 candidates only when the prompt is ambiguous, one click alone.

    With a box or several clicks a single mask is better; the IoU head that ranks the 3
    candidates was trained (by SAM, LiteMedSAM and our phase 2) for the ambiguous case.
    """
    return n_points == 1 and not has_box

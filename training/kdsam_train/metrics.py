"""Segmentation metrics on 2D bool masks: Dice, IoU, NSD, HD95 (distances in pixels).

Conventions for degenerate cases: both masks empty -> Dice = IoU = NSD = 1, HD95 = 0;
exactly one empty -> Dice = IoU = NSD = 0, HD95 = the image diagonal (a finite worst case,
so means stay defined).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    p, g = pred.astype(bool), gt.astype(bool)
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else float(2 * (p & g).sum() / s)


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    p, g = pred.astype(bool), gt.astype(bool)
    u = (p | g).sum()
    return 1.0 if u == 0 else float((p & g).sum() / u)


def _border(m: np.ndarray) -> np.ndarray:
    return m & ~ndimage.binary_erosion(m, structure=np.ones((3, 3)), border_value=0)


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each border pixel of a to b's border, and of b to a's."""
    ba, bb = _border(a), _border(b)
    dt_b = ndimage.distance_transform_edt(~bb, sampling=spacing)
    dt_a = ndimage.distance_transform_edt(~ba, sampling=spacing)
    return dt_b[ba], dt_a[bb]


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """95th percentile of the symmetric surface distances."""
    p, g = pred.astype(bool), gt.astype(bool)
    if not p.any() and not g.any():
        return 0.0
    if not p.any() or not g.any():
        return float(np.hypot(p.shape[0] * spacing[0], p.shape[1] * spacing[1]))
    d1, d2 = _surface_distances(p, g, spacing)
    return float(np.percentile(np.concatenate([d1, d2]), 95))


def nsd(pred: np.ndarray, gt: np.ndarray, tolerance: float = 2.0, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """Normalised surface Dice: the fraction of both borders within ``tolerance`` of the other."""
    p, g = pred.astype(bool), gt.astype(bool)
    if not p.any() and not g.any():
        return 1.0
    if not p.any() or not g.any():
        return 0.0
    d1, d2 = _surface_distances(p, g, spacing)
    return float(((d1 <= tolerance).sum() + (d2 <= tolerance).sum()) / (d1.size + d2.size))


def all_metrics(pred: np.ndarray, gt: np.ndarray, *, nsd_tolerance: float = 2.0) -> dict[str, float]:
    return {"dice": dice(pred, gt), "iou": iou(pred, gt), "nsd": nsd(pred, gt, nsd_tolerance), "hd95": hd95(pred, gt)}

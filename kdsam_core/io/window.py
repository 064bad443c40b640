"""Intensity windowing: any slice to the (H, W, 3) uint8 RGB a model takes."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def window_to_uint8(image: np.ndarray, window: tuple[float, float] | None = None,
                    percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Map a 2D slice to (H, W, 3) uint8.

    Grey data uses ``window`` = (centre, width) when given (DICOM's Window Centre/Width),
    else the ``percentiles`` of its finite values. uint8 RGB passes through unchanged; RGB
    of other types is scaled by its own range. NaN/inf pixels become black.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 3:
        if a.dtype == np.uint8:
            return np.ascontiguousarray(a)
        lo, hi = _finite_range(a, (0.0, 100.0))
        return _scale(a, lo, hi)
    if a.ndim != 2:
        raise InputError(f"expected a 2D slice, got shape {a.shape}")
    if window is not None:
        centre, width = float(window[0]), float(window[1])
        if not (np.isfinite(centre) and np.isfinite(width)) or width <= 0:
            raise InputError(f"window width must be positive, got centre={centre}, width={width}")
        lo, hi = centre - width / 2.0, centre + width / 2.0
    else:
        lo, hi = _finite_range(a, percentiles)
    g = _scale(a, lo, hi)
    return np.repeat(g[..., None], 3, axis=-1)


def _finite_range(a: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    f = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a.ravel()
    if f.size == 0:
        raise InputError("the slice has no finite pixel values (all NaN or inf)")
    lo, hi = np.percentile(f, percentiles)
    if hi <= lo:
        lo, hi = float(f.min()), float(f.max())
    return float(lo), float(hi)


def _scale(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    x = a.astype(np.float32)
    x = np.nan_to_num(x, nan=lo, posinf=hi, neginf=lo)
    if hi > lo:
        x = (x - lo) * (255.0 / (hi - lo))
    else:
        x = np.zeros_like(x)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)

"""Pixels for the screen and for the model: windowing, label overlays, numpy -> QImage.

The model always sees a slice through the volume's own window (DICOM window, else the
slice's percentiles), exactly as ``kdsam_core.propagate.propagate_volume`` does, so an
embedding stays valid while the user changes the display window/level.
"""

from __future__ import annotations

import numpy as np
from PyQt5.QtGui import QImage

from kdsam_core.io import Volume, window_to_uint8

AXIS_NAMES = ("z", "y", "x")  # the volume array's (z, y, x) axes


def model_slice(volume: Volume, index: int, axis: int = 0) -> np.ndarray:
    """Slice ``index`` along ``axis`` as the (H, W, 3) uint8 the model is given."""
    return window_to_uint8(volume.slice(index, axis), volume.window)


def pixel_aspect(volume: Volume, axis: int) -> float:
    """Height / width of one pixel of a slice along ``axis``, from the voxel spacing, so the
    view shows anatomy unstretched (a 5 mm CT slice is 5x taller than wide on a y or x slice)."""
    sx, sy, sz = (float(v) for v in volume.spacing)
    rows, cols = {0: (sy, sx), 1: (sz, sx), 2: (sz, sy)}[axis]
    return rows / cols if rows > 0 and cols > 0 else 1.0


def can_change_axis(volume: Volume) -> bool:
    """A volume can be sliced along y and x too when it is 3D (not RGB, more than one slice each way)."""
    return not volume.is_rgb and min(volume.shape_zyx) > 1


def default_window(volume: Volume) -> tuple[float, float]:
    """(level, width) to start the display with: the DICOM window, else the volume's 0.5-99.5 %."""
    if volume.is_rgb:
        return 127.5, 255.0
    if volume.window is not None:
        return float(volume.window[0]), float(volume.window[1])
    a = volume.array
    step = max(1, a.size // 2_000_000)
    sample = a.reshape(-1)[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, (0.5, 99.5))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    return (lo + hi) / 2.0, max(hi - lo, 1e-6)


def window_range(volume: Volume) -> tuple[float, float]:
    """(min, max) of the volume's values: the range of the window/level controls."""
    if volume.is_rgb:
        return 0.0, 255.0
    a = volume.array
    finite = a[np.isfinite(a)] if np.issubdtype(a.dtype, np.floating) else a
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def display_rgb(slice2d: np.ndarray, level: float, width: float) -> np.ndarray:
    """A slice through the display window/level as (H, W, 3) uint8."""
    width = max(float(width), 1e-6)
    if slice2d.ndim == 2:
        return window_to_uint8(slice2d, (level, width))
    lo = level - width / 2.0
    x = (slice2d.astype(np.float32) - lo) * (255.0 / width)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def overlay_rgba(label_slice: np.ndarray, colors: dict[int, tuple[int, int, int]], alpha: int = 100) -> np.ndarray:
    """(H, W, 4) uint8: each label's colour, translucent inside and opaque on its outline,
    transparent where the label is 0."""
    lut = np.zeros((256, 4), np.uint8)
    for value, color in colors.items():
        lut[value] = (*color, alpha)
    out = lut[label_slice]
    s = label_slice
    edge = np.zeros(s.shape, bool)  # a pixel whose 4-neighbour has another label
    edge[1:, :] |= s[1:, :] != s[:-1, :]
    edge[:-1, :] |= s[:-1, :] != s[1:, :]
    edge[:, 1:] |= s[:, 1:] != s[:, :-1]
    edge[:, :-1] |= s[:, :-1] != s[:, 1:]
    out[edge & (s > 0), 3] = 255
    return out


def to_qimage(arr: np.ndarray) -> QImage:
    """A QImage copy of an (H, W, 3) RGB or (H, W, 4) RGBA uint8 array."""
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w, c = a.shape
    fmt = QImage.Format_RGB888 if c == 3 else QImage.Format_RGBA8888
    return QImage(a.data, w, h, c * w, fmt).copy()

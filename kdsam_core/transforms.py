"""Image and prompt transforms between the original pixel grid and a model's input frame.

Coordinate convention (as segment-anything): 2D arrays are indexed ``[row, col]`` =
``[y, x]``; prompts are ``(x, y)`` in pixels of the original slice; boxes are
``(x0, y0, x1, y1)``. A model sees the slice resized so its longest side is
``img_size`` and padded at the bottom/right to a square; ``scale = img_size / max(h, w)``
maps original pixels to that frame.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .model.promptable import Preprocess


def resized_shape(h: int, w: int, img_size: int) -> tuple[int, int]:
    """(h', w') of an h x w image whose longest side is resized to ``img_size``."""
    scale = img_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An (H, W) or (H, W, 3) array of any dtype as (H, W, 3) uint8.

    Non-uint8 data is mapped min..max -> 0..255 (callers that know a window apply it first,
    see :func:`kdsam_core.io.window.window_to_uint8`). NaN and inf count as the minimum.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 3)):
        from .errors import InputError

        raise InputError(f"expected a 2D slice (H, W) or (H, W, 3), got an array of shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float32)
        finite = np.isfinite(a)
        if not finite.all():
            a = np.where(finite, a, np.nan)
        lo = np.nanmin(a) if finite.any() else 0.0
        hi = np.nanmax(a) if finite.any() else 0.0
        a = np.nan_to_num(a, nan=lo)
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        a = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    return np.ascontiguousarray(a)


def preprocess(image: np.ndarray, pre: Preprocess) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, S, S) float tensor in the model's input convention."""
    x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)[None].float()
    h, w = resized_shape(image.shape[0], image.shape[1], pre.img_size)
    x = F.interpolate(x, size=(h, w), mode=pre.interpolation, align_corners=False, antialias=True)
    if pre.scaling == "minmax":
        lo, hi = x.amin(), x.amax()
        x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    else:
        x = x / 255.0
    x = x.clamp(0, 1)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, pre.img_size - w, 0, pre.img_size - h))


def coords_to_model(coords: np.ndarray, original_hw: tuple[int, int], img_size: int) -> np.ndarray:
    """(..., 2) (x, y) original pixel coordinates -> the model's input frame."""
    h, w = original_hw
    nh, nw = resized_shape(h, w, img_size)
    c = np.asarray(coords, dtype=np.float32).copy()
    c[..., 0] *= nw / w
    c[..., 1] *= nh / h
    return c


def boxes_to_model(boxes: np.ndarray, original_hw: tuple[int, int], img_size: int) -> np.ndarray:
    """(..., 4) (x0, y0, x1, y1) boxes -> the model's input frame."""
    b = np.asarray(boxes, dtype=np.float32)
    return coords_to_model(b.reshape(-1, 2, 2), original_hw, img_size).reshape(b.shape)


def postprocess_masks(low_res: torch.Tensor, original_hw: tuple[int, int], img_size: int) -> torch.Tensor:
    """(B, M, h, w) low-res logits -> (B, M, H, W) logits on the original pixel grid."""
    x = F.interpolate(low_res, size=(img_size, img_size), mode="bilinear", align_corners=False)
    nh, nw = resized_shape(original_hw[0], original_hw[1], img_size)
    x = x[..., :nh, :nw]
    return F.interpolate(x, size=original_hw, mode="bilinear", align_corners=False)

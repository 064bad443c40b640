"""3D propagation: from a mask on one slice, segment the neighbouring slices one by one.

Each slice is prompted from the previous slice's mask (its bounding box and its innermost
point as a positive click), and propagation in a direction stops where the object ends:
the new mask is smaller than ``min_area`` pixels, shrinks below ``min_ratio`` of the
previous one, or overlaps it less than ``min_overlap`` (IoU), i.e. it jumped elsewhere.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from .errors import InputError
from .prompts import innermost_point, largest_component, mask_to_box

log = logging.getLogger(__name__)


def propagate_mask(
    predictor,
    get_slice: Callable[[int], np.ndarray],
    num_slices: int,
    start_index: int,
    start_mask: np.ndarray,
    *,
    key_prefix=None,
    direction: str = "both",
    prompt: str = "box+point",
    min_area: int = 10,
    min_ratio: float = 0.2,
    min_overlap: float = 0.1,
    max_slices: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[int, np.ndarray]:
    """Masks of the slices around ``start_index``, not including it.

    Arguments:
        predictor: a :class:`~kdsam_core.predictor.KDSAMPredictor`.
        get_slice: index -> 2D slice (H, W) or (H, W, 3) as given to ``set_image``.
        num_slices: slices along the propagation axis.
        start_mask: (H, W) mask on ``start_index``; must not be empty.
        key_prefix: embedding-cache keys are ``(key_prefix, index)``; None hashes pixels.
        direction: 'both', 'forward' (increasing index) or 'backward'.
        prompt: 'box+point', 'box' or 'point'.
        max_slices: at most this many slices in each direction (None: to the volume's end).
        progress: called with (slices done, slices at most) after each slice.
        should_stop: polled before each slice; True cancels (the masks so far are returned).
    Returns:
        {index: (H, W) bool mask} for every slice where the object was found.
    """
    if direction not in ("both", "forward", "backward"):
        raise InputError(f"direction must be both, forward or backward, not {direction!r}")
    if prompt not in ("box+point", "box", "point"):
        raise InputError(f"prompt must be box+point, box or point, not {prompt!r}")
    if not 0 <= start_index < num_slices:
        raise InputError(f"start slice {start_index} is outside 0..{num_slices - 1}")
    start = np.asarray(start_mask, dtype=bool)
    if not start.any():
        raise InputError("the start mask is empty: segment the start slice first")
    steps = {"both": (1, -1), "forward": (1,), "backward": (-1,)}[direction]
    limits = {s: _count(start_index, s, num_slices, max_slices) for s in steps}
    total = sum(limits.values())
    done = 0
    out: dict[int, np.ndarray] = {}
    for step in steps:
        prev = start
        for i in range(1, limits[step] + 1):
            if should_stop is not None and should_stop():
                log.info("propagation cancelled after %d slices", done)
                return out
            k = start_index + step * i
            key = None if key_prefix is None else (key_prefix, k)
            predictor.set_image(get_slice(k), key=key)
            mask = _segment_like(predictor, prev, prompt)
            done += 1
            area, prev_area = int(mask.sum()), int(prev.sum())
            inter = int((mask & prev).sum())
            iou = inter / max(area + prev_area - inter, 1)
            if area < min_area or area < min_ratio * prev_area or iou < min_overlap:
                log.info("object ends before slice %d (area %d, previous %d, IoU %.2f)", k, area, prev_area, iou)
                total -= limits[step] - i  # the rest of this direction will not be visited
                break
            out[k] = mask
            prev = mask
            if progress is not None:
                progress(done, total)
        if progress is not None:
            progress(done, total)
    return out


def _count(start: int, step: int, n: int, max_slices: int | None) -> int:
    room = (n - 1 - start) if step > 0 else start
    return room if max_slices is None else min(room, max_slices)


def _segment_like(predictor, prev: np.ndarray, prompt: str) -> np.ndarray:
    box = mask_to_box(prev) if "box" in prompt else None
    coords = labels = None
    if "point" in prompt:
        coords = innermost_point(prev)[None]
        labels = np.ones(1, dtype=np.int64)
    pred = predictor.predict(point_coords=coords, point_labels=labels, box=box, multimask_output=False)
    return largest_component(pred.masks[0])


def propagate_volume(predictor, volume, start_index: int, start_mask: np.ndarray, *, axis: int = 0,
                     label: int = 1, **kwargs) -> np.ndarray:
    """Propagate through a :class:`~kdsam_core.io.Volume`; returns its (z, y, x) uint8 label array."""
    from .io import window_to_uint8

    def get_slice(k: int) -> np.ndarray:
        return window_to_uint8(volume.slice(k, axis), volume.window)

    kwargs.setdefault("key_prefix", (id(volume), volume.source, axis))
    masks = propagate_mask(predictor, get_slice, volume.num_slices(axis), start_index, start_mask, **kwargs)
    out = volume.empty_mask()
    volume.set_mask_slice(out, start_index, axis, np.asarray(start_mask, bool), label)
    for k, m in masks.items():
        volume.set_mask_slice(out, k, axis, m, label)
    return out

"""Image/mask pairs on disk, as 2D samples.

Layout (as ``shared/data``): ``<root>/<dataset>/images/<stem>.<ext>`` and
``<root>/<dataset>/masks/<stem>.<ext>``, paired by stem. 2D files (PNG, JPEG, TIFF, BMP)
are one sample each; volumes (NIfTI, NRRD, MHA) with a label volume of the same stem are
sampled as 2D slices along z (slices whose label is non-empty). A sample id is
``<dataset>/<stem>`` or ``<dataset>/<stem>#z<k>`` and is what splits and caches key on.

Loading returns an (H, W, 3) uint8 image and an (H, W) bool mask; any unusable pair raises
:class:`kdsam_core.errors.InputError`, which the loaders count as a skip (:class:`SkipLog`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsam_core.errors import InputError
from kdsam_core.transforms import to_rgb_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


@dataclass(frozen=True)
class Sample:
    """One 2D training/eval item: an image file (or a volume slice) and its mask."""

    id: str
    dataset: str
    image: str
    mask: str
    slice_index: int | None = None

    @property
    def group(self) -> str:
        """Samples of one group (one volume) always land in the same split."""
        return self.id.split("#", 1)[0]


class SkipLog:
    """Counts samples skipped for a reason, so a run reports them instead of crashing."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()
        self.examples: dict[str, str] = {}

    def add(self, sample_id: str, error: Exception) -> None:
        reason = _reason(error)
        self.counts[reason] += 1
        self.examples.setdefault(reason, f"{sample_id}: {error}")
        log.debug("skipped %s: %s", sample_id, error)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> dict:
        return {"skipped": self.total, "by_reason": dict(self.counts), "examples": dict(self.examples)}


def _reason(error: Exception) -> str:
    msg = str(error)
    for key in ("size mismatch", "empty mask", "unreadable", "missing"):
        if key in msg:
            return key
    return type(error).__name__


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if name.endswith(s):
            return s
    return ""


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))]


def discover(root: str | os.PathLike, datasets: list[str] | None = None) -> list[Sample]:
    """All image/mask pairs under ``root`` (sorted by id). Images without a mask are ignored.

    Volumes are opened once here to list their non-empty label slices.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data root {root} is not a folder")
    names = datasets or sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
    samples: list[Sample] = []
    for ds in names:
        img_dir, mask_dir = root / ds / "images", root / ds / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise InputError(f"{root / ds} needs images/ and masks/ folders")
        masks = {_stem(p): p for p in mask_dir.iterdir() if _suffix(p)}
        unpaired = 0
        for p in sorted(img_dir.iterdir()):
            suf = _suffix(p)
            if not suf:
                continue
            stem = _stem(p)
            if stem not in masks:
                unpaired += 1
                continue
            if suf in VOLUME_SUFFIXES:
                for z in _label_slices(masks[stem]):
                    samples.append(Sample(f"{ds}/{stem}#z{z}", ds, str(p), str(masks[stem]), z))
            else:
                samples.append(Sample(f"{ds}/{stem}", ds, str(p), str(masks[stem])))
        if unpaired:
            log.warning("%s: %d images have no mask and are ignored", ds, unpaired)
    samples.sort(key=lambda s: s.id)
    return samples


def _read_volume_array(path: str) -> np.ndarray:
    import SimpleITK as sitk

    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(path))
    except RuntimeError as e:
        raise InputError(f"unreadable volume {path}: {str(e).splitlines()[0]}") from None


def _label_slices(mask_path: Path) -> list[int]:
    try:
        lab = _read_volume_array(str(mask_path))
    except InputError as e:
        log.warning("%s", e)
        return []
    if lab.ndim == 2:
        lab = lab[None]
    return [int(z) for z in np.flatnonzero(lab.reshape(lab.shape[0], -1).any(axis=1))]


def _read_2d(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB") if im.mode in ("RGBA", "P", "CMYK", "LA") else im
            return np.asarray(im)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise InputError(f"unreadable image {path}: {e}") from None


def load_pair(sample: Sample, *, require_mask: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 image and (H, W) bool mask of ``sample``.

    Raises InputError ('unreadable', 'size mismatch', 'empty mask' in the message) for a
    pair that cannot be used; an empty mask only when ``require_mask``.
    """
    if not os.path.exists(sample.image) or not os.path.exists(sample.mask):
        raise InputError(f"missing file for {sample.id}")
    if sample.slice_index is None:
        image, mask = _read_2d(sample.image), _read_2d(sample.mask)
    else:
        image = _read_volume_array(sample.image)
        mask = _read_volume_array(sample.mask)
        if image.shape[: mask.ndim] != mask.shape:
            raise InputError(f"size mismatch: volume {image.shape} vs label {mask.shape} ({sample.id})")
        image, mask = image[sample.slice_index], mask[sample.slice_index]
    if mask.ndim == 3:
        mask = mask[..., 0]
    if image.shape[:2] != mask.shape:
        raise InputError(f"size mismatch: image {image.shape[:2]} vs mask {mask.shape} ({sample.id})")
    mask = mask > 0
    if require_mask and not mask.any():
        raise InputError(f"empty mask ({sample.id})")
    return to_rgb_uint8(image), mask


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (the mask itself if it has one)."""
    from scipy import ndimage

    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    sizes = ndimage.sum_labels(mask, lab, index=np.arange(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))

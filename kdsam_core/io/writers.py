"""Writing masks: NIfTI / NRRD / MHA with the source geometry, PNG, and DICOM SEG.

Masks are (z, y, x) label arrays on a :class:`Volume`'s grid (or (y, x) for a 2D image).
No file is overwritten unless ``overwrite=True``; files are written to a temporary name
in the same folder and renamed, so an interrupted write never leaves half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError
from .readers import ITK_SUFFIXES, _suffix
from .volume import Volume

MASK_SUFFIXES = ITK_SUFFIXES + (".png", ".dcm")


def save_mask(mask: np.ndarray, path: str | os.PathLike, reference: Volume | None = None, *,
              overwrite: bool = False) -> Path:
    """Write ``mask`` to ``path``; the format follows the suffix.

    ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``: the reference volume's spacing,
    origin and direction. ``.png``: one 2D slice, 0/255 for a binary mask, labels otherwise.
    ``.dcm``: a DICOM SEG (highdicom) referencing the source DICOM files of ``reference``.
    """
    path = Path(path)
    sfx = _suffix(path)
    if sfx not in MASK_SUFFIXES:
        raise InputError(f"cannot write a mask as {sfx or '(no suffix)'}; use one of {', '.join(MASK_SUFFIXES)}")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another name or pass --overwrite")
    m = np.asarray(mask)
    if m.dtype == bool:
        m = m.astype(np.uint8)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise InputError(f"a mask must be 2D or 3D, got shape {np.asarray(mask).shape}")
    if reference is not None and m.shape != reference.shape_zyx:
        raise InputError(f"mask shape {m.shape} does not match the image grid {reference.shape_zyx}")
    if m.max(initial=0) > 255 or m.min(initial=0) < 0:
        raise InputError("mask labels must lie in 0..255")
    m = m.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if sfx == ".png":
        return _atomic(path, lambda tmp: _write_png(m, tmp))
    if sfx == ".dcm":
        return _atomic(path, lambda tmp: _write_seg(m, tmp, reference))
    return _atomic(path, lambda tmp: _write_itk(m, tmp, reference))


def mask_to_sitk(mask: np.ndarray, reference: Volume | None):
    """A SimpleITK uint8 image of a (z, y, x) mask carrying the reference geometry."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(mask))
    if reference is not None:
        img.SetSpacing([float(s) for s in reference.spacing])
        img.SetOrigin([float(o) for o in reference.origin])
        img.SetDirection([float(d) for d in reference.direction])
    return img


def _write_itk(m: np.ndarray, tmp: str, reference: Volume | None) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(mask_to_sitk(m, reference), tmp, useCompression=True)


def _write_png(m: np.ndarray, tmp: str) -> None:
    from PIL import Image

    if m.shape[0] != 1:
        raise InputError(f"a PNG holds one slice; this mask has {m.shape[0]}: write .nii.gz or .nrrd instead")
    s = m[0]
    if s.max(initial=0) <= 1:
        s = s * 255
    Image.fromarray(s.astype(np.uint8)).save(tmp, format="PNG")


def _write_seg(m: np.ndarray, tmp: str, reference: Volume | None) -> None:
    if reference is None or not reference.dicom_files:
        raise InputError("a DICOM SEG needs a DICOM source image; write .nii.gz or .nrrd instead")
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError:
        raise InputError("DICOM SEG output needs the highdicom package (pip install highdicom)") from None
    sources = [pydicom.dcmread(f) for f in reference.dicom_files]
    labels = [int(v) for v in np.unique(m) if v]
    if not labels:
        raise InputError("the mask is empty: nothing to write as DICOM SEG")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=f"KD SAM label {lab}",
            segmented_property_category=codes.SCT.Tissue, segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="KD SAM", version=_version(), family=codes.DCM.ArtificialIntelligence),
        )
        for i, lab in enumerate(labels)
    ]
    pixels = np.stack([(m == lab) for lab in labels], axis=-1).astype(bool)
    # a series gives one frame per source file (in the files' order), a multi-frame file one per frame
    try:
        seg = _segmentation(hd, sources, pixels, descriptions)
    except ValueError as e:  # highdicom names what the sources lack (e.g. a Frame of Reference UID)
        raise InputError(f"cannot write a DICOM SEG for {reference.source}: {e}; "
                         "write .nii.gz or .nrrd instead") from None
    seg.save_as(tmp)


def _segmentation(hd, sources, pixels, descriptions):
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="KD SAM",
        manufacturer_model_name="kdsam", software_versions=_version(), device_serial_number="0",
    )


def _version() -> str:
    from .. import __version__

    return __version__


def _atomic(path: Path, write) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path

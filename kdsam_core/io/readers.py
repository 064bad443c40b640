"""Reading images and volumes: DICOM (series folders, single and multi-frame files,
ultrasound RGB / YBR / palette colour), NIfTI, NRRD, MHA, PNG / JPEG / TIFF.

Everything returns a :class:`~kdsam_core.io.volume.Volume`; every failure a user can cause
is an :class:`~kdsam_core.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError, SeriesChoiceError
from .volume import Volume

log = logging.getLogger(__name__)

ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def load_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read ``path`` (a file, or a folder holding one DICOM series) as a Volume.

    Arguments:
        series_uid: for a folder with several DICOM series, the one to read
            (:func:`list_dicom_series` lists them).
    Raises:
        SeriesChoiceError: a folder holds several series and ``series_uid`` is not given.
        InputError: anything else unreadable or unsupported.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist")
    if path.is_dir():
        return _read_dicom_folder(path, series_uid)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is an empty file")
    sfx = _suffix(path)
    if sfx in ITK_SUFFIXES or sfx in TIFF_SUFFIXES:
        return _read_itk(path)
    if sfx in PLAIN_SUFFIXES:
        return _read_plain(path)
    if sfx in DICOM_SUFFIXES or _looks_like_dicom(path):
        return _read_dicom_file(path)
    raise InputError(f"{path}: unsupported file type {sfx or '(no suffix)'}; supported: DICOM, "
                     "NIfTI, NRRD, MHA, PNG, JPEG, TIFF, or a folder of DICOM files")


def _looks_like_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


# ------------------------------------------------------------------ ITK formats
def _read_itk(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise InputError(f"{path} could not be read ({_first_line(e)})") from None
    return volume_from_sitk(img, source=str(path))


def volume_from_sitk(img, *, source: str = "") -> Volume:
    """A Volume from a SimpleITK image (2D or 3D, scalar or RGB/RGBA vector pixels)."""
    import SimpleITK as sitk

    dim = img.GetDimension()
    if dim > 3:
        raise InputError(f"{source or 'the image'} is {dim}D (size {img.GetSize()}): only 2D images and 3D "
                         "volumes are supported; extract one 3D volume first")
    arr = sitk.GetArrayFromImage(img)
    ncomp = img.GetNumberOfComponentsPerPixel()
    if ncomp not in (1, 3, 4):
        raise InputError(f"{source or 'the image'} has {ncomp} components per pixel; only grey, RGB or RGBA")
    if dim == 2:
        arr = arr[None]
        spacing = tuple(img.GetSpacing()) + (1.0,)
        origin = tuple(img.GetOrigin()) + (0.0,)
        d = img.GetDirection()
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    else:
        spacing, origin, direction = img.GetSpacing(), img.GetOrigin(), img.GetDirection()
    if ncomp == 4:
        arr = arr[..., :3]
    return Volume(array=arr, spacing=tuple(spacing), origin=tuple(origin), direction=tuple(direction),
                  source=source)


def _read_plain(path: Path) -> Volume:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA", "RGBA", "LA", "CMYK", "YCbCr"):
                im = im.convert("RGB" if im.mode != "LA" else "L")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable image ({_first_line(e)})") from None
    if arr.ndim == 3:
        arr = arr[None]
    return Volume(array=arr, source=str(path))


# ------------------------------------------------------------------ DICOM
def list_dicom_series(folder: str | os.PathLike) -> list[tuple[str, str, int]]:
    """``(series_uid, description, number_of_files)`` of each DICOM series in ``folder``."""
    import SimpleITK as sitk

    folder = Path(folder)
    out = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ():
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
        out.append((uid, _series_description(files[0]) if files else "", len(files)))
    return out


def _series_description(file: str) -> str:
    import pydicom

    try:
        ds = pydicom.dcmread(file, stop_before_pixels=True)
    except Exception:
        return ""
    parts = [str(ds.get(k, "")) for k in ("Modality", "SeriesDescription")]
    return " ".join(p for p in parts if p)


def _read_dicom_folder(folder: Path, series_uid: str | None) -> Volume:
    import SimpleITK as sitk

    series = list_dicom_series(folder)
    if not series:
        files = [p for p in folder.iterdir() if p.is_file()]
        if len(files) == 1:
            return _read_dicom_file(files[0])
        raise InputError(f"{folder} holds no DICOM series ({len(files)} files, none readable as DICOM images)")
    if series_uid is None:
        if len(series) > 1:
            listing = "\n".join(f"  {uid}  {desc}  ({n} files)" for uid, desc, n in series)
            raise SeriesChoiceError(f"{folder} holds {len(series)} DICOM series; pick one with --series UID:\n"
                                    + listing, series)
        series_uid = series[0][0]
    if series_uid not in [s[0] for s in series]:
        raise InputError(f"series {series_uid} is not in {folder}; found: {', '.join(s[0] for s in series)}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid)
    if len(files) == 1:  # one (possibly multi-frame) file: pydicom handles colour and frames
        return _read_dicom_file(Path(files[0]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"DICOM series {series_uid} in {folder} could not be read ({_first_line(e)})") from None
    vol = volume_from_sitk(img, source=str(folder))
    ds = _header(files[0])
    vol.window = _dicom_window(ds)
    vol.modality = str(ds.get("Modality", "")) if ds is not None else ""
    vol.series_uid = series_uid
    vol.description = _series_description(files[0])
    vol.dicom_files = list(files)
    return vol


def _header(file: str):
    import pydicom

    try:
        return pydicom.dcmread(file, stop_before_pixels=True)
    except Exception:
        return None


def _dicom_window(ds) -> tuple[float, float] | None:
    if ds is None or "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None

    def first(v):
        try:
            return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
        except (TypeError, ValueError, IndexError):
            return None

    c, w = first(ds.WindowCenter), first(ds.WindowWidth)
    return (c, w) if c is not None and w is not None and w > 0 else None


def _read_dicom_file(path: Path) -> Volume:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise InputError(f"{path} is not a readable DICOM file ({_first_line(e)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path} is a DICOM file without an image (SOP class {ds.get('SOPClassUID', '?')})")
    try:
        arr = ds.pixel_array  # pydicom converts YBR_* to RGB
    except Exception as e:  # missing codec, truncated pixel data ...
        raise InputError(f"{path}: the DICOM pixel data could not be decoded ({_first_line(e)}); "
                         "a compressed transfer syntax may need pylibjpeg or gdcm") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:  # 16-bit LUT entries -> 8 bit
            arr = (arr.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif photometric.startswith("MONOCHROME"):
        from pydicom.pixels import apply_modality_lut

        arr = apply_modality_lut(arr, ds)
        if photometric == "MONOCHROME1":
            arr = arr.max() - arr
    rgb = arr.shape[-1] == 3 and photometric != "MONOCHROME2" and photometric != "MONOCHROME1"
    if frames == 1:
        arr = arr[None]
    elif not rgb and arr.ndim == 2:
        arr = arr[None]
    sx, sy, sz = _dicom_spacing(ds)
    origin = tuple(float(v) for v in ds.get("ImagePositionPatient", (0.0, 0.0, 0.0)))
    iop = ds.get("ImageOrientationPatient")
    if iop is not None and len(iop) == 6:
        r, c = np.array(iop[:3], float), np.array(iop[3:], float)
        n = np.cross(r, c)
        direction = tuple(np.stack([r, c, n], axis=1).ravel().tolist())
    else:
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return Volume(array=np.ascontiguousarray(arr), spacing=(sx, sy, sz), origin=origin, direction=direction,
                  window=_dicom_window(ds), source=str(path), modality=str(ds.get("Modality", "")),
                  series_uid=str(ds.get("SeriesInstanceUID", "")),
                  description=str(ds.get("SeriesDescription", "")), dicom_files=[str(path)])


def _dicom_spacing(ds) -> tuple[float, float, float]:
    """(x, y, z) spacing in mm: PixelSpacing, the shared functional groups, or ultrasound regions."""
    ps = ds.get("PixelSpacing")
    thick = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    shared = ds.get("SharedFunctionalGroupsSequence")
    if ps is None and shared:
        measures = shared[0].get("PixelMeasuresSequence")
        if measures:
            ps = measures[0].get("PixelSpacing")
            thick = thick or measures[0].get("SpacingBetweenSlices") or measures[0].get("SliceThickness")
    if ps is None and ds.get("SequenceOfUltrasoundRegions"):
        reg = ds.SequenceOfUltrasoundRegions[0]
        dx, dy = reg.get("PhysicalDeltaX"), reg.get("PhysicalDeltaY")
        if dx and dy and reg.get("PhysicalUnitsXDirection") == 3:  # 3 = cm
            ps = (abs(float(dy)) * 10.0, abs(float(dx)) * 10.0)
    row, col = (float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else (1.0, 1.0)
    try:
        z = float(thick) if thick else 1.0
    except (TypeError, ValueError):
        z = 1.0
    return (col, row, z if z > 0 else 1.0)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

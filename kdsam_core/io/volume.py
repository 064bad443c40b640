"""The Volume: pixels plus the geometry that places them in the patient.

Array convention (SimpleITK's ``GetArrayFromImage``): ``array[z, y, x]`` for grey
volumes, ``array[z, y, x, c]`` (c = 3, RGB) for colour ones; a 2D image is a volume with
one slice. ``spacing``, ``origin`` are (x, y, z) in mm; ``direction`` is the 3x3 cosine
matrix, row-major, as SimpleITK gives it.

Slicing along ``axis`` (0: z, 1: y, 2: x) gives 2D arrays indexed ``[row, col]``:
axis 0 -> ``[y, x]``, axis 1 -> ``[z, x]``, axis 2 -> ``[z, y]``. Prompts on a slice are
(x, y) = (col, row) in that 2D array, as in SAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass
class Volume:
    array: np.ndarray
    spacing: tuple = (1.0, 1.0, 1.0)
    origin: tuple = (0.0, 0.0, 0.0)
    direction: tuple = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    window: tuple | None = None  # (centre, width) from DICOM, in stored-value units after rescale
    source: str = ""
    modality: str = ""
    series_uid: str = ""
    description: str = ""
    dicom_files: list = field(default_factory=list)  # source files, for DICOM SEG output

    def __post_init__(self) -> None:
        a = self.array
        if a.ndim == 2:  # a 2D grey image; a 2D RGB image is passed as (1, y, x, 3)
            a = a[None]
        if a.ndim == 4 and a.shape[-1] == 4:
            a = a[..., :3]
        if not (a.ndim == 3 or (a.ndim == 4 and a.shape[-1] == 3)):
            raise InputError(f"{self.source or 'the image'} has shape {self.array.shape}: only 2D images and 3D "
                             "volumes (grey or RGB) are supported, not 4D or more")
        if 0 in a.shape:
            raise InputError(f"{self.source or 'the image'} is empty (shape {self.array.shape})")
        self.array = a

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == 4

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(self.array.shape[:3])

    def num_slices(self, axis: int = 0) -> int:
        _check_axis(axis)
        return self.array.shape[axis]

    def slice(self, index: int, axis: int = 0) -> np.ndarray:
        """The 2D slice ``index`` along ``axis`` (see the module docstring for the layout)."""
        _check_axis(axis)
        n = self.array.shape[axis]
        if not 0 <= index < n:
            raise InputError(f"slice {index} is outside the volume: axis {axis} has slices 0..{n - 1}")
        return np.take(self.array, index, axis=axis)

    def empty_mask(self) -> np.ndarray:
        """A (z, y, x) uint8 label array of zeros on this volume's grid."""
        return np.zeros(self.shape_zyx, dtype=np.uint8)

    def set_mask_slice(self, mask3d: np.ndarray, index: int, axis: int, mask2d: np.ndarray, label: int = 1) -> None:
        """Write a 2D mask (as returned for ``slice(index, axis)``) into a (z, y, x) label array."""
        view = np.take(mask3d, index, axis=axis)
        if view.shape != mask2d.shape:
            raise InputError(f"mask of shape {mask2d.shape} does not fit slice shape {view.shape}")
        idx = [slice(None)] * 3
        idx[axis] = index
        region = mask3d[tuple(idx)]
        region[region == label] = 0
        region[mask2d.astype(bool)] = label
        mask3d[tuple(idx)] = region


def _check_axis(axis: int) -> None:
    if axis not in (0, 1, 2):
        raise InputError(f"axis must be 0 (z), 1 (y) or 2 (x), not {axis}")

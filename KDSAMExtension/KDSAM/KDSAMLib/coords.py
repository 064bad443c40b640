"""The coordinate chain, one function per step: world RAS -> IJK -> array index -> SAM (x, y).

Conventions:

* RAS: Slicer's world coordinates in millimetres (markups control points are read "world",
  i.e. with the volume's parent transform applied; a non-linear transform is refused).
* IJK: continuous voxel coordinates of the volume; voxel centres are integers.
* array index: ``(k, j, i)``, the order of ``slicer.util.arrayFromVolume``.
* slice axis: the IJK axis the slice is taken across, ``0`` = I, ``1`` = J, ``2`` = K
  (axial acquisitions: K). A single 2D image has only K.
* SAM (x, y): pixels of the 2D slice handed to the predictor; ``x`` is the column, ``y``
  the row. Across K the slice is ``array[k]`` (x = i, y = j); across J ``array[:, j]``
  (x = i, y = k); across I ``array[:, :, i]`` (x = j, y = k).
"""

from __future__ import annotations

import numpy as np

from kdsam_core.errors import InputError

AXIS_NAMES = ("I", "J", "K")
# for each slice axis: which IJK axes are the SAM x and y
_XY_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}


def _vtk_to_numpy_matrix(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def volume_ijk_to_world(volume) -> np.ndarray:
    """4x4 matrix from the volume's IJK to world RAS (parent transforms included)."""
    import vtk

    m = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(m)
    ijk_to_ras = _vtk_to_numpy_matrix(m)
    parent = volume.GetParentTransformNode()
    if parent is not None:
        import slicer

        to_world = vtk.vtkMatrix4x4()
        if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(parent, None, to_world):
            raise InputError(f"volume '{volume.GetName()}' is under a non-linear transform; harden it first")
        ijk_to_ras = _vtk_to_numpy_matrix(to_world) @ ijk_to_ras
    return ijk_to_ras


def ras_to_ijk(volume, ras) -> np.ndarray:
    """World RAS (3,) -> continuous IJK (3,) of ``volume``."""
    p = np.append(np.asarray(ras, dtype=float).reshape(3), 1.0)
    return (np.linalg.inv(volume_ijk_to_world(volume)) @ p)[:3]


def ijk_to_ras(volume, ijk) -> np.ndarray:
    """Continuous IJK (3,) of ``volume`` -> world RAS (3,)."""
    p = np.append(np.asarray(ijk, dtype=float).reshape(3), 1.0)
    return (volume_ijk_to_world(volume) @ p)[:3]


def ijk_to_array_index(ijk) -> tuple[int, int, int]:
    """IJK (3,) -> the nearest voxel's array index ``(k, j, i)``."""
    i, j, k = (int(np.floor(float(v) + 0.5)) for v in np.asarray(ijk).reshape(3))
    return k, j, i


def array_index_to_ijk(index) -> np.ndarray:
    """Array index ``(k, j, i)`` -> IJK (3,) of the voxel centre."""
    k, j, i = index
    return np.array([i, j, k], dtype=float)


def ijk_to_sam(ijk, axis: int) -> tuple[int, tuple[float, float]]:
    """Continuous IJK (3,) -> (slice index along ``axis``, SAM (x, y)) with sub-voxel x, y."""
    _check_axis(axis)
    v = np.asarray(ijk, dtype=float).reshape(3)
    xa, ya = _XY_AXES[axis]
    return int(np.floor(v[axis] + 0.5)), (float(v[xa]), float(v[ya]))


def array_index_to_sam(index, axis: int) -> tuple[int, tuple[float, float]]:
    """Array index ``(k, j, i)`` -> (slice index along ``axis``, SAM (x, y))."""
    return ijk_to_sam(array_index_to_ijk(index), axis)


def sam_to_array_index(slice_index: int, xy, axis: int) -> tuple[int, int, int]:
    """(slice index along ``axis``, SAM (x, y)) -> array index ``(k, j, i)`` (rounded)."""
    _check_axis(axis)
    ijk = np.zeros(3)
    xa, ya = _XY_AXES[axis]
    ijk[axis], ijk[xa], ijk[ya] = slice_index, xy[0], xy[1]
    return ijk_to_array_index(ijk)


def slice_of(array: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice (rows = SAM y, columns = SAM x) of a ``(k, j, i[, c])`` array."""
    _check_axis(axis)
    if axis == 2:
        return array[index]
    if axis == 1:
        return array[:, index]
    return array[:, :, index]


def num_slices(shape, axis: int) -> int:
    """Number of slices across ``axis`` of an array of ``shape`` ``(k, j, i[, c])``."""
    _check_axis(axis)
    return int(shape[2 - axis])


def slice_extent(dims_ijk, axis: int, index: int) -> tuple[int, int, int, int, int, int]:
    """VTK extent ``(i0, i1, j0, j1, k0, k1)`` of one slice of a volume of IJK ``dims_ijk``."""
    ext = [0, dims_ijk[0] - 1, 0, dims_ijk[1] - 1, 0, dims_ijk[2] - 1]
    ext[2 * axis] = ext[2 * axis + 1] = int(index)
    return tuple(ext)


def axis_for_normal(volume, normal_ras) -> int:
    """The IJK axis most parallel to a slice view's normal (RAS), e.g. K for an axial view of an axial scan."""
    n = np.asarray(normal_ras, dtype=float).reshape(3)
    m = volume_ijk_to_world(volume)[:3, :3]
    dirs = m / np.linalg.norm(m, axis=0, keepdims=True)
    return int(np.argmax(np.abs(dirs.T @ n)))


def _check_axis(axis: int) -> None:
    if axis not in (0, 1, 2):
        raise InputError(f"slice axis must be 0 (I), 1 (J) or 2 (K), not {axis!r}")

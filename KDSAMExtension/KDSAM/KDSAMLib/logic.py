"""KDSAMLogic: prompts in the scene -> masks in a segment, without Qt.

The one module that touches MRML and numpy together. It reads a volume's voxels
(scalar, RGB ultrasound vector volume, a single 2D image), turns markups point lists and a
markups ROI into SAM prompts on one slice, asks a ``kdsam_core`` predictor for masks and writes
the chosen one into one slice of a segment, keeping an undo/redo stack of slice edits. It never
replaces a segment and never touches slices outside the edit, so the user's work survives
errors. Every user mistake raises :class:`kdsam_core.errors.KDSAMError` with a message for the
panel.

Threads: the encoder can run off the main thread (``encode_job`` hands a pure function of
numpy arrays to :class:`~KDSAMLib.jobs.BackgroundJob`); everything that reads or writes MRML
runs on the caller's thread, which in Slicer is the main thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kdsam_core.errors import CheckpointError, InputError, KDSAMError
from kdsam_core.prompts import auto_multimask

from . import coords

log = logging.getLogger(__name__)

MODEL_CHOICES = {  # id -> (label, needs a file)
    "default": ("KD SAM (shipped weights)", False),
    "checkpoint": ("KD SAM checkpoint (.safetensors)", True),
    "sam_vit_b": ("SAM ViT-B (your .pth)", True),
    "sam_vit_l": ("SAM ViT-L (your .pth)", True),
    "sam_vit_h": ("SAM ViT-H (your .pth)", True),
    "lite_medsam": ("LiteMedSAM", False),
    "kdsam_tiny": ("Tiny test model (untrained)", False),
}
NEGATIVE_PREFIXES = ("-", "neg")
MAX_UNDO = 50


@dataclass
class Prompts:
    """SAM prompts on one slice: points (N, 2) (x, y) pixels, labels (N,) 1/0, box (4,) or None."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None

    @property
    def empty(self) -> bool:
        return len(self.points) == 0 and self.box is None


@dataclass
class SliceEdit:
    """One undo step: slices of one segment before and after (bit-packed bool masks)."""

    segmentation_id: str
    segment_id: str
    volume_id: str
    axis: int
    shape: tuple[int, int]
    slices: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    label: str = "edit"

    def put(self, index: int, before: np.ndarray, after: np.ndarray) -> None:
        old = self.slices.get(index)
        packed_before = old[0] if old is not None else np.packbits(before.astype(bool), axis=None)
        self.slices[index] = (packed_before, np.packbits(after.astype(bool), axis=None))

    def mask(self, index: int, which: int) -> np.ndarray:
        n = self.shape[0] * self.shape[1]
        return np.unpackbits(self.slices[index][which], count=n).reshape(self.shape).astype(bool)


@dataclass
class SegmentResult:
    """What one prompt produced: the slice written, candidate scores, the chosen mask's index and area."""

    segment_id: str
    slice_index: int
    scores: np.ndarray
    chosen: int
    area: int
    encoded: bool


class KDSAMLogic:
    """Scene glue for KD SAM. ``scene`` defaults to ``slicer.mrmlScene`` (set in the Slicer app)."""

    def __init__(self, scene=None) -> None:
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene
        self.predictor = None
        self.model_description = ""
        self.lock = threading.RLock()  # the predictor is used by one thread at a time
        self.undo_stack: list[SliceEdit] = []
        self.redo_stack: list[SliceEdit] = []
        self._session: dict | None = None

    # ------------------------------------------------------------------ model
    def load_model(self, choice: str = "default", checkpoint: str | None = None, *, device: str = "auto",
                   threads: int | None = None, module_dir: str | None = None) -> str:
        """Load a model and make it current; returns a one-line description (name, file, device, metrics).

        ``device`` is auto / cpu / cuda, or ``cpu-onnx`` / ``cpu-onnx-int8`` for the fast CPU path
        (kdsam_core.fast: onnxruntime, fp32 or int8; graphs exported on first use).
        """
        model = build_choice(choice, checkpoint, module_dir=module_dir)
        from kdsam_core.predictor import KDSAMPredictor

        backend = "torch"
        if device.startswith("cpu-onnx"):
            device, backend = "cpu", device[len("cpu-"):]
        try:
            predictor = KDSAMPredictor(model, device=device, threads=threads, backend=backend)
        except ValueError as e:  # an unavailable device
            raise KDSAMError(str(e)) from None
        with self.lock:
            self.predictor = predictor
        self._session = None
        self.model_description = describe_model(model, predictor.device)
        log.info("KD SAM model: %s", self.model_description)
        return self.model_description

    def _require_model(self):
        if self.predictor is None:
            raise KDSAMError("No model is loaded: choose one under Model and press Load.")
        return self.predictor

    # ----------------------------------------------------------------- volume
    def volume_array(self, volume) -> np.ndarray:
        """The voxels ``(k, j, i)`` or ``(k, j, i, 3)`` of a usable volume (a view, not a copy)."""
        if volume is None:
            raise InputError("Select a volume first.")
        if not volume.IsA("vtkMRMLVolumeNode"):
            raise InputError(f"'{volume.GetName()}' is not a volume.")
        if volume.GetAttribute("MultiVolume.NumberOfFrames") or volume.IsA("vtkMRMLMultiVolumeNode"):
            raise InputError(f"'{volume.GetName()}' is a 4D (multi-frame) volume; pick one frame in the "
                             "Sequences module or export a frame as a volume first.")
        image = volume.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0:
            raise InputError(f"Volume '{volume.GetName()}' has no image data.")
        comps = image.GetNumberOfScalarComponents()
        if comps not in (1, 3, 4):
            raise InputError(f"Volume '{volume.GetName()}' has {comps} values per voxel (a 4D or tensor "
                             "volume?); KD SAM segments scalar and RGB volumes. Pick one frame first.")
        from vtk.util.numpy_support import vtk_to_numpy

        dims = image.GetDimensions()
        arr = vtk_to_numpy(image.GetPointData().GetScalars())
        arr = arr.reshape((dims[2], dims[1], dims[0]) + ((comps,) if comps > 1 else ()))
        return arr[..., :3] if comps == 4 else arr

    def window(self, volume) -> tuple[float, float] | None:
        """The display window (centre, width) of a scalar volume, or None (min..max scaling)."""
        disp = volume.GetDisplayNode() if volume is not None else None
        if disp is None or not hasattr(disp, "GetWindow") or volume.IsA("vtkMRMLVectorVolumeNode"):
            return None
        width = float(disp.GetWindow())
        return (float(disp.GetLevel()), width) if width > 0 else None

    def slice_count(self, volume, axis: int) -> int:
        return coords.num_slices(self.volume_array(volume).shape, axis)

    def slice_image(self, volume, axis: int, index: int) -> tuple[np.ndarray, tuple]:
        """(RGB uint8 slice (H, W, 3) for the model, its embedding-cache key)."""
        from kdsam_core.io import window_to_uint8

        arr = self.volume_array(volume)
        n = coords.num_slices(arr.shape, axis)
        if not 0 <= index < n:
            raise InputError(f"Slice {index} is outside volume '{volume.GetName()}' (0..{n - 1} along "
                             f"{coords.AXIS_NAMES[axis]}).")
        window = self.window(volume)
        image = window_to_uint8(np.array(coords.slice_of(arr, axis, index)), window)
        key = (volume.GetID(), volume.GetImageData().GetMTime(), axis, int(index),
               None if window is None else tuple(round(w, 3) for w in window))
        return image, key

    def needs_encoding(self, volume, axis: int, index: int) -> bool:
        """True when the slice's embedding is not cached (the widget then encodes it in a thread)."""
        _, key = self.slice_image(volume, axis, index)
        return not self._require_model().has_embedding(key)

    def encode_job(self, volume, axis: int, index: int) -> Callable[..., bool]:
        """A function of no MRML that encodes the slice; run it in a BackgroundJob (main thread prepares)."""
        image, key = self.slice_image(volume, axis, index)
        predictor = self._require_model()

        def run(**_callbacks) -> bool:
            with self.lock:
                return predictor.set_image(image, key=key)

        return run

    # ------------------------------------------------------------ coordinates
    def slice_index_at(self, volume, axis: int, ras, *, in_plane: bool = True) -> int:
        """The slice across ``axis`` through world point ``ras``; InputError if it is outside the volume.

        ``in_plane=False`` checks only the coordinate across the slices (a slice view's centre may lie
        beside the volume while its plane cuts through it)."""
        if in_plane:
            ijk = self._ijk_inside(volume, ras, "The point")
        else:
            ijk = coords.ras_to_ijk(volume, ras)
            n = coords.num_slices(self.volume_array(volume).shape, axis)
            if not -0.5 <= ijk[axis] <= n - 0.5:
                raise InputError(f"The slice view shows no slice of volume '{volume.GetName()}': move it onto "
                                 "the volume.")
        return coords.ijk_to_sam(ijk, axis)[0]

    def _ijk_inside(self, volume, ras, what: str) -> np.ndarray:
        arr = self.volume_array(volume)
        ijk = coords.ras_to_ijk(volume, ras)
        dims = np.array(arr.shape[:3][::-1])
        if np.any(ijk < -0.5) or np.any(ijk > dims - 0.5):
            r = ", ".join(f"{v:.1f}" for v in ras)
            raise InputError(f"{what} at RAS ({r}) is outside volume '{volume.GetName()}'.")
        return np.clip(ijk, 0, dims - 1)

    # ---------------------------------------------------------------- prompts
    def collect_prompts(self, volume, axis: int, index: int, positive=None, negative=None, roi=None) -> Prompts:
        """Points of the two lists lying on slice ``index`` (a label starting with '-' or 'neg' is
        negative in either list) and the ROI's extent on that slice as a box."""
        pts, labels = [], []
        for node, default in ((positive, 1), (negative, 0)):
            if node is None:
                continue
            for n in range(node.GetNumberOfControlPoints()):
                if not _defined(node, n):
                    continue
                ras = [0.0, 0.0, 0.0]
                node.GetNthControlPointPositionWorld(n, ras)
                ijk = self._ijk_inside(volume, ras, f"Point '{node.GetNthControlPointLabel(n)}'")
                k, xy = coords.ijk_to_sam(ijk, axis)
                if k != index:
                    continue
                neg = node.GetNthControlPointLabel(n).strip().lower().startswith(NEGATIVE_PREFIXES)
                pts.append(xy)
                labels.append(0 if neg else default)
        box = self._roi_box(volume, axis, index, roi) if roi is not None else None
        return Prompts(np.array(pts, dtype=np.float32).reshape(-1, 2), np.array(labels, dtype=np.int64), box)

    def _roi_box(self, volume, axis: int, index: int, roi) -> np.ndarray | None:
        if roi.GetNumberOfControlPoints() == 0 or not _defined(roi, 0):
            return None
        b = [0.0] * 6
        roi.GetRASBounds(b)
        corners = np.array([[x, y, z] for x in b[0:2] for y in b[2:4] for z in b[4:6]])
        ijk = np.array([coords.ras_to_ijk(volume, c) for c in corners])
        if not ijk[:, axis].min() - 0.5 <= index <= ijk[:, axis].max() + 0.5:
            return None  # the box does not cross this slice
        shape = self.volume_array(volume).shape
        xa, ya = coords._XY_AXES[axis]
        w, h = shape[2 - xa], shape[2 - ya]
        x0, x1 = np.clip([ijk[:, xa].min(), ijk[:, xa].max()], 0, w - 1)
        y0, y1 = np.clip([ijk[:, ya].min(), ijk[:, ya].max()], 0, h - 1)
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise InputError(f"The box '{roi.GetName()}' lies outside volume '{volume.GetName()}'.")
        return np.array([x0, y0, x1, y1], dtype=np.float32)

    # ----------------------------------------------------------- segmentation
    def ensure_segment(self, segmentation, volume, segment_id: str | None = None, name: str = "KD SAM"):
        """(segmentation node, segment id): a new node and/or segment where none is given. Existing
        segments are used as they are, never replaced."""
        import slicer

        if segmentation is None:
            segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                         f"{volume.GetName()} KD SAM")
            segmentation.CreateDefaultDisplayNodes()
        seg = segmentation.GetSegmentation()
        source = (seg.GetSourceRepresentationName() if hasattr(seg, "GetSourceRepresentationName")
                  else seg.GetMasterRepresentationName())
        labelmap = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
        if source != labelmap and seg.GetNumberOfSegments() > 0:
            raise InputError(f"Segmentation '{segmentation.GetName()}' is stored as '{source}'; KD SAM writes "
                             "binary labelmaps. Pick another segmentation or change its source representation "
                             "in the Segmentations module.")
        if seg.GetNumberOfSegments() == 0:
            seg.SetSourceRepresentationName(labelmap) if hasattr(seg, "SetSourceRepresentationName") else \
                seg.SetMasterRepresentationName(labelmap)
        ref_role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        if segmentation.GetNodeReference(ref_role) is None and seg.GetNumberOfSegments() == 0:
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        if not segment_id or seg.GetSegment(segment_id) is None:
            segment_id = seg.AddEmptySegment("", name)
        return segmentation, segment_id

    def _slice_geometry(self, volume, segmentation, axis: int, index: int):
        """A vtkOrientedImageData of one slice of ``volume``, placed in ``segmentation``'s coordinates."""
        import slicer
        import vtk

        m = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(m)
        vp, sp = volume.GetParentTransformNode(), segmentation.GetParentTransformNode()
        if vp is not sp:
            t = vtk.vtkMatrix4x4()
            if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(vp, sp, t):
                raise InputError("The volume and the segmentation are under different non-linear transforms; "
                                 "harden the transforms first.")
            vtk.vtkMatrix4x4.Multiply4x4(t, m, m)
        dims = volume.GetImageData().GetDimensions()
        img = slicer.vtkOrientedImageData()
        img.SetExtent(*coords.slice_extent(dims, axis, index))
        img.SetImageToWorldMatrix(m)
        return img

    def read_slice_mask(self, segmentation, segment_id: str, volume, axis: int, index: int) -> np.ndarray:
        """Slice ``index`` of a segment on the volume's grid, (H, W) bool."""
        import slicer
        from vtk.util.numpy_support import vtk_to_numpy

        ref = self._slice_geometry(volume, segmentation, axis, index)
        shape = _extent_shape(ref.GetExtent())
        rep = slicer.vtkOrientedImageData()
        segmentation.GetBinaryLabelmapRepresentation(segment_id, rep)
        e = rep.GetExtent()
        if e[0] > e[1] or e[2] > e[3] or e[4] > e[5] or rep.GetPointData().GetScalars() is None:
            return np.zeros(_2d(shape, axis), dtype=bool)
        out = slicer.vtkOrientedImageData()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
                rep, ref, out, False, False):
            raise KDSAMError(f"could not read segment {segment_id} on slice {index}")
        a = vtk_to_numpy(out.GetPointData().GetScalars()).reshape(shape)
        return coords.slice_of(a, axis, _local(axis)) > 0

    def write_slice_mask(self, segmentation, segment_id: str, volume, axis: int, index: int,
                         mask: np.ndarray) -> None:
        """Replace slice ``index`` of a segment with ``mask`` (H, W); other slices stay as they are."""
        import slicer
        import vtk
        from vtk.util.numpy_support import vtk_to_numpy

        img = self._slice_geometry(volume, segmentation, axis, index)
        img.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        shape = _extent_shape(img.GetExtent())
        a = vtk_to_numpy(img.GetPointData().GetScalars()).reshape(shape)
        target = coords.slice_of(a, axis, _local(axis))
        if target.shape != mask.shape:
            raise InputError(f"mask of shape {mask.shape} does not fit slice shape {target.shape}")
        target[...] = mask.astype(np.uint8)
        # MODE_REPLACE would empty the segment outside the slice; max then min within the slice's
        # extent makes the slice equal to the mask and leaves every other voxel alone
        seg_logic = slicer.vtkSlicerSegmentationsModuleLogic
        for mode in (seg_logic.MODE_MERGE_MAX, seg_logic.MODE_MERGE_MIN):
            if not seg_logic.SetBinaryLabelmapToSegment(img, segmentation, segment_id, mode, img.GetExtent()):
                raise KDSAMError(f"could not write slice {index} of segment {segment_id}")

    # ------------------------------------------------------------ interaction
    def segment(self, volume, segmentation, segment_id: str | None, axis: int, index: int, *,
                positive=None, negative=None, roi=None, multimask: bool = True, mode: str = "replace",
                segment_name: str = "KD SAM"):
        """Prompts on slice ``index`` -> the best mask into the segment (one undo step).

        ``mode`` 'replace' puts the mask in place of what the slice held before this interaction;
        'add' unites them. Returns ``(segmentation node, SegmentResult)``.
        """
        if mode not in ("replace", "add"):
            raise InputError(f"mode must be replace or add, not {mode!r}")
        self.volume_array(volume)  # a usable volume first: its message is the most useful
        predictor = self._require_model()
        prompts = self.collect_prompts(volume, axis, index, positive, negative, roi)
        if prompts.empty:
            raise InputError(f"Place a positive point or a box on slice {index} first.")
        image, key = self.slice_image(volume, axis, index)
        segmentation, segment_id = self.ensure_segment(segmentation, volume, segment_id, segment_name)
        skey = (segmentation.GetID(), segment_id, volume.GetID(), axis, int(index))
        if self._session is None or self._session["key"] != skey or self._session["edit"] is not self._top():
            base = self.read_slice_mask(segmentation, segment_id, volume, axis, index)
            self._session = {"key": skey, "base": base, "logits": None, "edit": None, "mode": mode}
        s = self._session
        with self.lock:
            encoded = predictor.set_image(image, key=key)
            # candidates only for an ambiguous prompt (kdsam_core.predictor.auto_multimask); no
            # mask_input: the shipped decoder was not trained with it, and feeding the previous
            # logits back lowered Dice on the HC18 sample (0.71 -> 0.58 with a second click)
            pred = predictor.predict(prompts.points if len(prompts.points) else None,
                                     prompts.labels if len(prompts.points) else None, prompts.box,
                                     multimask_output=multimask and auto_multimask(len(prompts.points),
                                                                                   prompts.box is not None))
        chosen = int(np.argmax(pred.scores))
        s.update(prediction=pred, logits=pred.low_res_logits[chosen], mode=mode)
        edit = SliceEdit(segmentation.GetID(), segment_id, volume.GetID(), axis, s["base"].shape,
                         label=f"KD SAM prompt on slice {index}")
        before = self.read_slice_mask(segmentation, segment_id, volume, axis, index)
        after = self._compose(s["base"], pred.masks[chosen], mode)
        edit.put(index, before, after)
        self.write_slice_mask(segmentation, segment_id, volume, axis, index, after)
        self._push(edit)
        s["edit"] = edit
        return segmentation, SegmentResult(segment_id, int(index), pred.scores, chosen, int(after.sum()), encoded)

    def choose_mask(self, which: int) -> int:
        """Show candidate ``which`` of the last prompt instead (amends its undo step); returns its area."""
        s = self._session
        if s is None or s.get("edit") is None or s["edit"] is not self._top():
            raise InputError("There is no prompt result to choose from: click on the image first.")
        pred = s["prediction"]
        if not 0 <= which < len(pred.masks):
            raise InputError(f"choose a mask between 1 and {len(pred.masks)}")
        seg_id, segment_id, vol_id, axis, index = s["key"]
        segmentation, volume = self.scene.GetNodeByID(seg_id), self.scene.GetNodeByID(vol_id)
        after = self._compose(s["base"], pred.masks[which], s["mode"])
        self.write_slice_mask(segmentation, segment_id, volume, axis, index, after)
        s["edit"].put(index, None, after)
        s["logits"] = pred.low_res_logits[which]
        return int(after.sum())

    @staticmethod
    def _compose(base: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
        return (base | mask) if mode == "add" else mask.copy()

    def end_interaction(self) -> None:
        """Forget the current prompt session (the next prompt starts from the slice as it is)."""
        self._session = None

    def clear_slice(self, segmentation, segment_id: str, volume, axis: int, index: int) -> None:
        """Empty one slice of the segment (one undo step)."""
        if segmentation is None or not segment_id:
            raise InputError("Select a segmentation and a segment to clear.")
        before = self.read_slice_mask(segmentation, segment_id, volume, axis, index)
        edit = SliceEdit(segmentation.GetID(), segment_id, volume.GetID(), axis, before.shape,
                         label=f"clear slice {index}")
        edit.put(index, before, np.zeros_like(before))
        self.write_slice_mask(segmentation, segment_id, volume, axis, index, np.zeros_like(before))
        self._push(edit)
        self._session = None

    # -------------------------------------------------------------- undo/redo
    def _top(self) -> SliceEdit | None:
        return self.undo_stack[-1] if self.undo_stack else None

    def _push(self, edit: SliceEdit) -> None:
        self.undo_stack.append(edit)
        del self.undo_stack[:-MAX_UNDO]
        self.redo_stack.clear()

    def undo(self) -> str | None:
        """Undo the last KD SAM edit; returns its label, None when there is nothing to undo."""
        return self._replay(self.undo_stack, self.redo_stack, 0)

    def redo(self) -> str | None:
        return self._replay(self.redo_stack, self.undo_stack, 1)

    def _replay(self, source: list, target: list, which: int) -> str | None:
        if not source:
            return None
        edit = source.pop()
        segmentation = self.scene.GetNodeByID(edit.segmentation_id)
        volume = self.scene.GetNodeByID(edit.volume_id)
        if segmentation is None or volume is None or segmentation.GetSegmentation().GetSegment(edit.segment_id) is None:
            raise InputError("The segment or volume of this step was deleted; it cannot be undone.")
        for index in edit.slices:
            self.write_slice_mask(segmentation, edit.segment_id, volume, edit.axis, index, edit.mask(index, which))
        target.append(edit)
        self._session = None
        return edit.label

    # ------------------------------------------------------------ propagation
    def propagation_job(self, volume, segmentation, segment_id: str, axis: int, start_index: int, *,
                        first: int | None = None, last: int | None = None, direction: str = "both",
                        **options) -> Callable[..., dict]:
        """Prepare (main thread) a function ``run(progress, should_stop) -> {index: mask}`` that propagates
        the segment's mask on ``start_index`` through slices ``first..last`` (default: the whole volume,
        stopping where the object ends). Apply its result with :meth:`apply_propagation`."""
        from kdsam_core.io import window_to_uint8
        from kdsam_core.propagate import propagate_mask

        predictor = self._require_model()
        if segmentation is None or not segment_id:
            raise InputError("Select the segment to propagate.")
        arr = self.volume_array(volume)
        n = coords.num_slices(arr.shape, axis)
        first = 0 if first is None else max(int(first), 0)
        last = n - 1 if last is None else min(int(last), n - 1)
        if not first <= start_index <= last:
            raise InputError(f"The start slice {start_index} is outside the range {first}..{last}.")
        start = self.read_slice_mask(segmentation, segment_id, volume, axis, start_index)
        if not start.any():
            raise InputError(f"Slice {start_index} of the segment is empty: segment it first, then propagate.")
        snapshot = np.array(arr)  # the worker never reads MRML
        window = self.window(volume)
        prefix = (volume.GetID(), volume.GetImageData().GetMTime(), axis,
                  None if window is None else tuple(round(w, 3) for w in window))

        def get_slice(i: int) -> np.ndarray:
            return window_to_uint8(np.array(coords.slice_of(snapshot, axis, first + i)), window)

        def run(progress=None, should_stop=None) -> dict[int, np.ndarray]:
            with self.lock:
                out = propagate_mask(predictor, get_slice, last - first + 1, start_index - first, start,
                                     key_prefix=(prefix, first), direction=direction, progress=progress,
                                     should_stop=should_stop, **options)
            return {first + i: m for i, m in out.items()}

        run.target = (segmentation.GetID(), segment_id, volume.GetID(), axis, int(start_index))
        return run

    def apply_propagation(self, job: Callable, masks: dict[int, np.ndarray], *, mode: str = "replace") -> int:
        """Write propagated masks (one undo step); returns the number of slices written."""
        seg_id, segment_id, vol_id, axis, start = job.target
        segmentation, volume = self.scene.GetNodeByID(seg_id), self.scene.GetNodeByID(vol_id)
        if segmentation is None or volume is None or segmentation.GetSegmentation().GetSegment(segment_id) is None:
            raise InputError("The segment or volume was deleted while propagating; nothing was written.")
        if not masks:
            return 0
        shape = next(iter(masks.values())).shape
        edit = SliceEdit(seg_id, segment_id, vol_id, axis, shape,
                         label=f"propagate from slice {start} ({len(masks)} slices)")
        for index, m in sorted(masks.items()):
            before = self.read_slice_mask(segmentation, segment_id, volume, axis, index)
            after = self._compose(before, m, mode)
            edit.put(index, before, after)
            self.write_slice_mask(segmentation, segment_id, volume, axis, index, after)
        self._push(edit)
        self._session = None
        return len(masks)

    def propagate(self, volume, segmentation, segment_id: str, axis: int, start_index: int, *,
                  progress=None, should_stop=None, mode: str = "replace", **kwargs) -> int:
        """Propagate on this thread (scripts, tests); the widget runs ``propagation_job`` in a thread."""
        job = self.propagation_job(volume, segmentation, segment_id, axis, start_index, **kwargs)
        return self.apply_propagation(job, job(progress=progress, should_stop=should_stop), mode=mode)

    # ----------------------------------------------------------- training data
    def export_training_data(self, out_dir: str, segmentations=None, *, axis: int = 2) -> int:
        """Write every non-empty slice of every segment as ``images/<name>.png`` + ``masks/<name>.png``.

        ``segmentations`` defaults to all segmentation nodes of the scene that have a reference volume.
        Returns the number of image/mask pairs written.
        """
        from .retrain import write_training_pair

        import slicer

        if segmentations is None:
            segmentations = [self.scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                             for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"))]
        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        count = 0
        for seg_node in segmentations:
            volume = seg_node.GetNodeReference(role)
            if volume is None or not volume.IsA("vtkMRMLVolumeNode"):
                log.warning("segmentation %s has no reference volume; skipped", seg_node.GetName())
                continue
            ids = seg_node.GetSegmentation().GetSegmentIDs()
            for n in range(self.slice_count(volume, axis)):
                image = None
                for sid in ids:
                    mask = self.read_slice_mask(seg_node, sid, volume, axis, n)
                    if not mask.any():
                        continue
                    if image is None:
                        image, _ = self.slice_image(volume, axis, n)
                    name = _safe(f"{volume.GetName()}_{seg_node.GetSegmentation().GetSegment(sid).GetName()}_{n:04d}")
                    write_training_pair(image, mask, out_dir, name)
                    count += 1
        if count == 0:
            raise InputError("No segment in the scene has any voxels to export.")
        return count


# ---------------------------------------------------------------------- helpers
def build_choice(choice: str, checkpoint: str | None = None, *, module_dir: str | None = None):
    """The model behind a model-picker choice (see :data:`MODEL_CHOICES`)."""
    from kdsam_core.model import build_model, load_model

    if choice not in MODEL_CHOICES:
        raise KDSAMError(f"unknown model choice {choice!r}; known: {', '.join(MODEL_CHOICES)}")
    needs_file = MODEL_CHOICES[choice][1]
    if needs_file and not checkpoint:
        raise KDSAMError(f"{MODEL_CHOICES[choice][0]} needs a weights file: pick it with the file button.")
    if checkpoint and not Path(checkpoint).is_file():
        raise CheckpointError(f"The weights file {checkpoint} does not exist.")
    if choice == "default":
        return load_model(default_weights(module_dir))
    if choice == "checkpoint":
        if Path(checkpoint).suffix != ".safetensors":
            raise CheckpointError(f"{Path(checkpoint).name} is not a KD SAM .safetensors checkpoint; official SAM "
                                  ".pth files go under 'SAM ViT-B/L/H'.")
        return load_model(checkpoint)
    return build_model(choice, checkpoint or None)


def default_weights(module_dir: str | None = None) -> Path:
    """The shipped KD SAM weights: the extension's ``Resources/Weights`` first, then kdsam_core's default."""
    from kdsam_core.checkpoint import DEFAULT_WEIGHTS_NAME, default_checkpoint

    if module_dir:
        bundled = Path(module_dir) / "Resources" / "Weights" / DEFAULT_WEIGHTS_NAME
        if bundled.is_file():
            return bundled
    return default_checkpoint()


def describe_model(model, device) -> str:
    name = getattr(model, "name", "model")
    ckpt = getattr(model, "checkpoint_path", None)
    text = f"{name} on {device}" + (f" from {Path(ckpt).name}" if ckpt else " (untrained weights)")
    metrics = (getattr(model, "metadata", None) or {}).get("metrics")
    if isinstance(metrics, dict) and metrics:
        text += "; " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                 for k, v in list(metrics.items())[:4])
    return text


def _defined(node, n: int) -> bool:
    status = getattr(node, "GetNthControlPointPositionStatus", None)
    if status is None:
        return True
    import slicer

    return status(n) == slicer.vtkMRMLMarkupsNode.PositionDefined


def _extent_shape(e) -> tuple[int, int, int]:
    return (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)


def _2d(shape3, axis: int) -> tuple[int, int]:
    return coords.slice_of(np.empty(shape3, dtype=bool), axis, 0).shape


def _local(axis: int) -> int:
    return 0  # a one-slice image: the slice is index 0 of its own array


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

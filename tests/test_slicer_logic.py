"""The Slicer module's Logic against Slicer's real data layer (PyPI slicer-core), without the app.

The scene is set up as the Slicer application does it: a vtkMRMLScene, a
vtkSlicerApplicationLogic with the scene, and the volumes, markups, segmentations and subject
hierarchy logics given the scene and the application logic and registered with
SetModuleLogic. The model is ``kdsam_tiny`` with random weights: these tests check plumbing
(geometry, segments, undo/redo, coordinates, messages), not segmentation quality.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("PyPI slicer-core is not installed", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "KDSAMExtension" / "KDSAM"))

import vtk  # noqa: E402
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

from kdsam_core.errors import InputError, KDSAMError  # noqa: E402
from KDSAMLib import coords  # noqa: E402
from KDSAMLib.logic import KDSAMLogic, build_choice  # noqa: E402

SHAPE = (6, 24, 32)  # (k, j, i)
SPACING = (0.5, 0.8, 2.0)
ORIGIN = (10.0, -20.0, 30.0)
KNOWN = (3, 7, 11)  # a voxel (k, j, i)


def make_app():
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    logics = {}
    for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic), ("Markups", slicer.vtkSlicerMarkupsLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
    return scene, app, logics


@pytest.fixture(scope="module")
def env():
    scene, app, logics = make_app()
    logic = KDSAMLogic(scene)
    logic.load_model("kdsam_tiny", device="cpu", threads=1)
    return {"scene": scene, "app": app, "logics": logics, "logic": logic}


def add_volume(scene, array, *, name="vol", cls="vtkMRMLScalarVolumeNode", rotate=True):
    node = scene.AddNewNodeByClass(cls, name)
    comps = array.shape[3] if array.ndim == 4 else 1
    img = vtk.vtkImageData()
    img.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    vtype = vtk.VTK_UNSIGNED_CHAR if array.dtype == np.uint8 else vtk.VTK_SHORT
    img.AllocateScalars(vtype, comps)
    vtk_to_numpy(img.GetPointData().GetScalars()).reshape(array.shape)[...] = array
    node.SetAndObserveImageData(img)
    node.SetSpacing(*SPACING)
    node.SetOrigin(*ORIGIN)
    if rotate:  # LPS-like directions, as DICOM gives them
        m = vtk.vtkMatrix4x4()
        m.SetElement(0, 0, -1)
        m.SetElement(1, 1, -1)
        node.SetIJKToRASDirectionMatrix(m)
    node.CreateDefaultDisplayNodes()
    return node


def phantom():
    a = np.zeros(SHAPE, np.int16)
    a[1:5, 6:16, 8:20] = 1000
    return a


def points(scene, ras_list, name="pos"):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for ras in ras_list:
        node.AddControlPoint(*ras)
    return node


def export(scene, logics, seg, sid, volume):
    lab = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(sid)
    assert logics["Segmentations"].ExportSegmentsToLabelmapNode(seg, ids, lab, volume)
    out = slicer.util.arrayFromVolume(lab).copy()
    scene.RemoveNode(lab)
    return out


# ------------------------------------------------------------------ coordinates
def test_known_voxel_round_trips_through_the_chain(env):
    vol = add_volume(env["scene"], phantom())
    ijk = coords.array_index_to_ijk(KNOWN)
    ras = coords.ijk_to_ras(vol, ijk)
    # by hand: origin + direction * spacing * ijk
    expected = np.array(ORIGIN) + np.array([-1, -1, 1]) * np.array(SPACING) * np.array([11, 7, 3])
    np.testing.assert_allclose(ras, expected)
    np.testing.assert_allclose(coords.ras_to_ijk(vol, ras), ijk, atol=1e-9)
    assert coords.ijk_to_array_index(coords.ras_to_ijk(vol, ras)) == KNOWN
    assert coords.array_index_to_sam(KNOWN, 2) == (3, (11.0, 7.0))
    assert coords.array_index_to_sam(KNOWN, 1) == (7, (11.0, 3.0))
    assert coords.array_index_to_sam(KNOWN, 0) == (11, (7.0, 3.0))
    for axis in (0, 1, 2):
        index, xy = coords.array_index_to_sam(KNOWN, axis)
        assert coords.sam_to_array_index(index, xy, axis) == KNOWN
        arr = np.arange(np.prod(SHAPE)).reshape(SHAPE)
        assert coords.slice_of(arr, axis, index)[int(xy[1]), int(xy[0])] == arr[KNOWN]


def test_clicking_a_known_voxel_prompts_that_pixel(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    ras = coords.ijk_to_ras(vol, coords.array_index_to_ijk(KNOWN))
    node = points(scene, [ras])
    for axis in (0, 1, 2):
        index = logic.slice_index_at(vol, axis, ras)
        p = logic.collect_prompts(vol, axis, index, positive=node)
        assert (index, tuple(p.points[0])) == coords.array_index_to_sam(KNOWN, axis)
        assert p.labels.tolist() == [1]
        assert len(logic.collect_prompts(vol, axis, index + 1, positive=node).points) == 0  # other slice


def test_view_plane_beside_the_volume_still_picks_its_slice(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    beside = coords.ijk_to_ras(vol, (500, -300, 4))
    assert logic.slice_index_at(vol, 2, beside, in_plane=False) == 4
    with pytest.raises(KDSAMError, match="outside volume"):
        logic.slice_index_at(vol, 2, beside)
    with pytest.raises(KDSAMError, match="shows no slice"):
        logic.slice_index_at(vol, 2, coords.ijk_to_ras(vol, (0, 0, 40)), in_plane=False)


def test_parent_transform_is_applied(env):
    scene = env["scene"]
    vol = add_volume(scene, phantom())
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 5.0)  # 5 mm to the right
    t.SetMatrixTransformToParent(m)
    vol.SetAndObserveTransformNodeID(t.GetID())
    ijk = coords.array_index_to_ijk(KNOWN)
    ras = coords.ijk_to_ras(vol, ijk)
    assert coords.ijk_to_array_index(coords.ras_to_ijk(vol, ras)) == KNOWN
    assert coords.ijk_to_ras(vol, ijk)[0] == pytest.approx(ORIGIN[0] - 11 * SPACING[0] + 5.0)


def test_axis_for_normal(env):
    vol = add_volume(env["scene"], phantom())
    assert coords.axis_for_normal(vol, (0, 0, 1)) == 2
    assert coords.axis_for_normal(vol, (0, 1, 0)) == 1
    assert coords.axis_for_normal(vol, (1, 0, 0)) == 0


# ------------------------------------------------------------------ segments
def test_written_slice_lands_on_the_right_voxels(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    seg, sid = logic.ensure_segment(None, vol)
    for axis in (2, 1, 0):
        index, (x, y) = coords.array_index_to_sam(KNOWN, axis)
        shape2d = coords.slice_of(np.zeros(SHAPE), axis, index).shape
        mask = np.zeros(shape2d, bool)
        mask[int(y), int(x)] = True
        logic.write_slice_mask(seg, sid, vol, axis, index, mask)
        out = export(scene, env["logics"], seg, sid, vol)
        assert out.shape == SHAPE and out[KNOWN] == 1 and out.sum() == 1
        np.testing.assert_array_equal(logic.read_slice_mask(seg, sid, vol, axis, index), mask)
        logic.write_slice_mask(seg, sid, vol, axis, index, np.zeros(shape2d, bool))
    # geometry of the segmentation is the volume's
    assert seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is vol


def test_prompt_creates_segment_and_undo_redo(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    # the user's own segment, which must survive everything below
    seg, own = logic.ensure_segment(None, vol, name="mine")
    user_mask = np.zeros(SHAPE[1:], bool)
    user_mask[2:5, 2:5] = True
    logic.write_slice_mask(seg, own, vol, 2, 3, user_mask)

    ras = coords.ijk_to_ras(vol, coords.array_index_to_ijk(KNOWN))
    pos = points(scene, [ras])
    seg2, result = logic.segment(vol, seg, None, 2, 3, positive=pos)
    assert seg2 is seg and result.segment_id != own and result.slice_index == 3
    assert seg.GetSegmentation().GetNumberOfSegments() == 2
    assert len(result.scores) == 3 and 0 <= result.chosen < 3  # one click alone: three candidates
    depth = len(logic.undo_stack)
    area = logic.choose_mask((result.chosen + 1) % 3)  # choosing another candidate amends the step
    assert len(logic.undo_stack) == depth
    first = logic.read_slice_mask(seg, result.segment_id, vol, 2, 3)
    assert first.sum() == area

    # a second click refines: a new undo step, one mask (the prompt is no longer ambiguous)
    neg = points(scene, [coords.ijk_to_ras(vol, (2, 2, 3))], name="neg")
    _, r2 = logic.segment(vol, seg, result.segment_id, 2, 3, positive=pos, negative=neg)
    assert len(logic.undo_stack) == depth + 1 and len(r2.scores) == 1
    assert logic.read_slice_mask(seg, r2.segment_id, vol, 2, 3).sum() == r2.area
    with pytest.raises(InputError, match="between 1 and 1"):
        logic.choose_mask(2)

    assert logic.undo() is not None
    np.testing.assert_array_equal(logic.read_slice_mask(seg, result.segment_id, vol, 2, 3), first)
    assert logic.undo() is not None
    assert not logic.read_slice_mask(seg, result.segment_id, vol, 2, 3).any()
    assert logic.redo() is not None
    np.testing.assert_array_equal(logic.read_slice_mask(seg, result.segment_id, vol, 2, 3), first)
    # the user's segment is untouched
    np.testing.assert_array_equal(logic.read_slice_mask(seg, own, vol, 2, 3), user_mask)

    logic.clear_slice(seg, result.segment_id, vol, 2, 3)
    assert not logic.read_slice_mask(seg, result.segment_id, vol, 2, 3).any()
    logic.undo()
    np.testing.assert_array_equal(logic.read_slice_mask(seg, result.segment_id, vol, 2, 3), first)


def test_add_mode_keeps_what_was_there(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    seg, sid = logic.ensure_segment(None, vol)
    old = np.zeros(SHAPE[1:], bool)
    old[0:2, 0:2] = True
    logic.write_slice_mask(seg, sid, vol, 2, 2, old)
    pos = points(scene, [coords.ijk_to_ras(vol, (12, 10, 2))])
    logic.end_interaction()
    logic.segment(vol, seg, sid, 2, 2, positive=pos, mode="add")
    assert logic.read_slice_mask(seg, sid, vol, 2, 2)[old].all()


def test_box_prompt_from_roi(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    a = coords.ijk_to_ras(vol, (8, 6, 3))
    b = coords.ijk_to_ras(vol, (19, 15, 3))
    roi.SetCenter(*((a + b) / 2))
    roi.SetSize(*(np.abs(b - a) + [0, 0, 1.0]))
    p = logic.collect_prompts(vol, 2, 3, roi=roi)
    np.testing.assert_allclose(p.box, [8, 6, 19, 15], atol=1e-4)
    assert logic.collect_prompts(vol, 2, 0, roi=roi).box is None  # does not cross slice 0
    _, r = logic.segment(vol, None, None, 2, 3, roi=roi)
    assert r.slice_index == 3


def test_rgb_and_single_image(env):
    scene, logic = env["scene"], env["logic"]
    rgb = np.zeros(SHAPE + (3,), np.uint8)
    rgb[:, 5:15, 5:15] = (200, 50, 50)
    vol = add_volume(scene, rgb, cls="vtkMRMLVectorVolumeNode")
    image, key = logic.slice_image(vol, 2, 1)
    assert image.shape == (24, 32, 3) and image.dtype == np.uint8 and tuple(image[10, 10]) == (200, 50, 50)
    pos = points(scene, [coords.ijk_to_ras(vol, (10, 10, 1))])
    seg, r = logic.segment(vol, None, None, 2, 1, positive=pos)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1

    flat = add_volume(scene, phantom()[2:3], name="image2d", rotate=False)
    assert logic.slice_count(flat, 2) == 1
    pos2 = points(scene, [coords.ijk_to_ras(flat, (12, 10, 0))])
    assert logic.slice_index_at(flat, 2, coords.ijk_to_ras(flat, (12, 10, 0))) == 0
    seg2, r2 = logic.segment(flat, None, None, 2, 0, positive=pos2)
    assert r2.slice_index == 0


def test_embedding_is_cached_per_slice(env):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    assert logic.needs_encoding(vol, 2, 4)
    assert logic.encode_job(vol, 2, 4)() is True
    assert not logic.needs_encoding(vol, 2, 4)
    pos = points(scene, [coords.ijk_to_ras(vol, (12, 10, 4))])
    _, r = logic.segment(vol, None, None, 2, 4, positive=pos)
    assert r.encoded is False


class BoxPredictor:
    """A stand-in predictor whose mask is its box prompt: propagation then has a known answer."""

    def __init__(self):
        self.encoded = []

    def has_embedding(self, key):
        return False

    def set_image(self, image, key=None):
        self.shape = image.shape[:2]
        self.encoded.append(key)
        return True

    def predict(self, point_coords=None, point_labels=None, box=None, mask_input=None, multimask_output=True):
        from kdsam_core.predictor import Prediction

        m = np.zeros(self.shape, bool)
        x0, y0, x1, y1 = np.round(box).astype(int)
        m[y0:y1 + 1, x0:x1 + 1] = True
        return Prediction(m[None], np.ones(1, np.float32), np.zeros((1, 64, 64), np.float32))


def test_propagate_writes_one_undo_step(env):
    scene = env["scene"]
    logic = KDSAMLogic(scene)
    logic.predictor = BoxPredictor()
    vol = add_volume(scene, phantom())
    seg, sid = logic.ensure_segment(None, vol)
    start = np.zeros(SHAPE[1:], bool)
    start[6:16, 8:20] = True
    logic.write_slice_mask(seg, sid, vol, 2, 2, start)
    seen = []
    job = logic.propagation_job(vol, seg, sid, 2, 2)
    masks = job(progress=lambda d, t: seen.append((d, t)), should_stop=lambda: False)
    assert set(masks) == {0, 1, 3, 4, 5} and seen and seen[-1][0] == 5
    assert all((m == start).all() for m in masks.values())
    assert [k[1] for k in logic.predictor.encoded] == [3, 4, 5, 1, 0]  # (prefix, absolute slice)
    depth = len(logic.undo_stack)
    assert logic.apply_propagation(job, masks) == 5
    assert len(logic.undo_stack) == depth + 1
    for k, m in masks.items():
        np.testing.assert_array_equal(logic.read_slice_mask(seg, sid, vol, 2, k), m)
    logic.undo()
    for k in masks:
        assert not logic.read_slice_mask(seg, sid, vol, 2, k).any()
    np.testing.assert_array_equal(logic.read_slice_mask(seg, sid, vol, 2, 2), start)
    # a range and a cancel
    n = logic.propagate(vol, seg, sid, 2, 2, first=1, last=3)
    assert n == 2 and not logic.read_slice_mask(seg, sid, vol, 2, 0).any()
    job = logic.propagation_job(vol, seg, sid, 2, 2)
    assert job(should_stop=lambda: True) == {}


# ------------------------------------------------------------------ bad input
def test_bad_input_messages(env, tmp_path, monkeypatch):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom())
    with pytest.raises(KDSAMError, match="Select a volume"):
        logic.segment(None, None, None, 2, 0)
    outside = points(scene, [coords.ijk_to_ras(vol, (100, 5, 2))], name="far")
    with pytest.raises(KDSAMError, match="outside volume"):
        logic.segment(vol, None, None, 2, 2, positive=outside)
    with pytest.raises(KDSAMError, match="Place a positive point"):
        logic.segment(vol, None, None, 2, 2)
    with pytest.raises(KDSAMError, match="outside volume"):
        logic.slice_image(vol, 2, 99)

    four_d = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "cine")
    img = vtk.vtkImageData()
    img.SetDimensions(8, 8, 4)
    img.AllocateScalars(vtk.VTK_SHORT, 7)
    four_d.SetAndObserveImageData(img)
    with pytest.raises(KDSAMError, match="4D"):
        logic.slice_image(four_d, 2, 0)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(KDSAMError, match="no image data"):
        logic.slice_image(empty, 2, 0)

    fresh = KDSAMLogic(scene)
    with pytest.raises(KDSAMError, match="No model is loaded"):
        fresh.segment(vol, None, None, 2, 2, positive=points(scene, [coords.ijk_to_ras(vol, (5, 5, 2))]))
    monkeypatch.setenv("KDSAM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(KDSAMError, match="No trained KD SAM weights"):
        fresh.load_model("default")
    with pytest.raises(KDSAMError, match="needs a weights file"):
        build_choice("sam_vit_b")
    with pytest.raises(KDSAMError, match="does not exist"):
        build_choice("checkpoint", str(tmp_path / "nope.safetensors"))
    with pytest.raises(KDSAMError, match="no CUDA|not available|unknown device"):
        fresh.load_model("kdsam_tiny", device="cuda:7" if not _has_cuda() else "nonsense")
    # nothing was created by the failures
    segs_before = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    with pytest.raises(KDSAMError):
        logic.segment(vol, None, None, 2, 2, positive=outside)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == segs_before
    with pytest.raises(KDSAMError, match="empty"):
        seg, sid = logic.ensure_segment(None, vol)
        logic.propagation_job(vol, seg, sid, 2, 2)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_trained_checkpoint_loads_with_its_metrics(env, tmp_path):
    from kdsam_core.checkpoint import save_checkpoint
    from kdsam_core.model import build_model, checkpoint_metadata

    model = build_model("kdsam_tiny")
    path = save_checkpoint(model.state_dict(), tmp_path / "tiny.safetensors",
                           checkpoint_metadata(model, metrics={"dice": 0.875}))
    logic = KDSAMLogic(env["scene"])
    text = logic.load_model("checkpoint", str(path), device="cpu")
    assert "tiny.safetensors" in text and "dice 0.875" in text
    with pytest.raises(KDSAMError, match="not a KD SAM .safetensors"):
        logic.load_model("checkpoint", str(Path(__file__)))


def test_export_training_data(env, tmp_path):
    scene, logic = env["scene"], env["logic"]
    vol = add_volume(scene, phantom(), name="exp vol")
    seg, sid = logic.ensure_segment(None, vol, name="liver")
    m = np.zeros(SHAPE[1:], bool)
    m[6:16, 8:20] = True
    logic.write_slice_mask(seg, sid, vol, 2, 1, m)
    logic.write_slice_mask(seg, sid, vol, 2, 4, m)
    n = logic.export_training_data(str(tmp_path), [seg])
    assert n == 2
    from PIL import Image

    images = sorted((tmp_path / "slicer_export" / "images").glob("*.png"))
    masks = sorted((tmp_path / "slicer_export" / "masks").glob("*.png"))
    assert [p.name for p in images] == [p.name for p in masks] == ["exp_vol_liver_0001.png", "exp_vol_liver_0004.png"]
    assert (np.array(Image.open(masks[0])) > 0).sum() == m.sum()


def test_fast_cpu_path_is_one_device_choice(env, tmp_path, monkeypatch):
    monkeypatch.setenv("KDSAM_ONNX_DIR", str(tmp_path))
    fresh = KDSAMLogic(env["scene"])
    fresh.load_model("kdsam_tiny", device="cpu-onnx", threads=1)
    assert fresh.predictor.backend == "onnx" and fresh.predictor.device.type == "cpu"
    assert any(tmp_path.rglob("*.onnx"))

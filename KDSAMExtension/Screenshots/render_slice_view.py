"""Render the README's screenshot offscreen: a KD SAM mask in a Slicer slice view, without the app.

Uses PyPI slicer-core: a scene, the module logics, KDSAMLogic to segment the HC18 sample from a
click and a box, then a slice view (vtkMRMLSliceLogic + the segmentation and markups displayable
managers) rendered into an offscreen render window. Weights: the shipped KD SAM default when
installed, else LiteMedSAM (``--model``)::

    python KDSAMExtension/Screenshots/render_slice_view.py [-o kdsam_slice_view.png] [--model lite_medsam]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "KDSAM"))
SAMPLE = ROOT / "resources" / "samples" / "hc18_010_HC.png"
CLICK, BOX = (200, 200), (125, 60, 320, 262)  # pixels (x, y) of the sample, from its README


def scene_with_logics():
    import slicer

    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(__import__("vtk").vtkCollection())
    app.SetViewLogics(__import__("vtk").vtkCollection())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    keep = [app]
    for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic), ("Markups", slicer.vtkSlicerMarkupsLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic)):
        logic = cls()
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app)
        app.SetModuleLogic(name, logic)
        keep.append(logic)
    return scene, app, keep


def add_image(scene, path: Path):
    import vtk
    from PIL import Image
    from vtk.util.numpy_support import vtk_to_numpy

    a = np.array(Image.open(path).convert("L"))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.stem)
    img = vtk.vtkImageData()
    img.SetDimensions(a.shape[1], a.shape[0], 1)
    img.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    vtk_to_numpy(img.GetPointData().GetScalars())[:] = a.ravel()
    node.SetAndObserveImageData(img)
    directions = vtk.vtkMatrix4x4()  # LPS, as DICOM: the image shows upright in an axial view
    directions.SetElement(0, 0, -1)
    directions.SetElement(1, 1, -1)
    node.SetIJKToRASDirectionMatrix(directions)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAutoWindowLevel(False)
    node.GetDisplayNode().SetWindowLevel(255, 127.5)
    return node, a.shape


def render(scene, app, volume, out: Path, size=(768, 520)) -> None:
    import slicer
    import vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.SetNumberOfLayers(2)
    window.SetAlphaBitPlanes(1)
    renderer = vtk.vtkRenderer()
    renderer.GetActiveCamera().ParallelProjectionOn()
    overlay = vtk.vtkRenderer()
    overlay.SetLayer(1)
    overlay.GetActiveCamera().ParallelProjectionOn()
    window.AddRenderer(renderer)
    window.AddRenderer(overlay)
    interactor = vtk.vtkRenderWindowInteractor()
    interactor.SetRenderWindow(window)

    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(app)
    app.GetSliceLogics().AddItem(logic)
    logic.SetMRMLScene(scene)
    slice_node = logic.AddSliceNode("Red")
    slice_node.SetOrientation("Axial")
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())

    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(app)
    for name in ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager"):
        if not factory.IsDisplayableManagerRegistered(name):
            factory.RegisterDisplayableManager(name)
    group = factory.InstantiateDisplayableManagers(overlay)  # masks and markups over the image layer
    group.SetMRMLDisplayableNode(slice_node)

    logic.ResizeSliceNode(*size)
    logic.FitSliceToAll()
    logic.SnapSliceOffsetToIJK()
    mapper = vtk.vtkImageMapper()
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    mapper.SetInputConnection(logic.GetImageDataConnection())
    actor = vtk.vtkActor2D()
    actor.SetMapper(mapper)
    actor.GetProperty().SetDisplayLocationToBackground()
    renderer.AddViewProp(actor)
    group.RequestRender()
    window.Render()
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(out))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", default=str(HERE / "kdsam_slice_view.png"))
    p.add_argument("--model", default=None, help="a model choice of KDSAMLib.logic.MODEL_CHOICES")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    import vtk

    from kdsam_core.errors import NoWeightsError
    from KDSAMLib import coords
    from KDSAMLib.logic import KDSAMLogic

    scene, app, _keep = scene_with_logics()
    volume, shape = add_image(scene, SAMPLE)
    logic = KDSAMLogic(scene)
    choice = args.model
    if choice is None:
        try:
            logic.load_model("default", device="cpu")
            choice = "default"
        except NoWeightsError:
            choice = "lite_medsam"
    if choice != "default":
        logic.load_model(choice, device="cpu")
    logging.info("model: %s", logic.model_description)

    to_ras = lambda x, y: coords.ijk_to_ras(volume, (x, y, 0))  # noqa: E731 (SAM x, y = I, J on axis K)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    points.AddControlPoint(*to_ras(*CLICK))
    points.CreateDefaultDisplayNodes()
    points.GetDisplayNode().SetPointLabelsVisibility(False)
    points.GetDisplayNode().SetSelectedColor(1, 1, 1)
    points.GetDisplayNode().SetGlyphScale(3)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    a, b = to_ras(BOX[0], BOX[1]), to_ras(BOX[2], BOX[3])
    roi.SetCenter(*((a + b) / 2))
    roi.SetSize(*(np.abs(b - a) + [0, 0, 1.0]))
    roi.CreateDefaultDisplayNodes()
    roi.GetDisplayNode().SetSelectedColor(0.95, 0.8, 0.2)
    roi.GetDisplayNode().SetFillOpacity(0.0)
    roi.GetDisplayNode().SetHandlesInteractive(False)
    roi.GetDisplayNode().SetPropertiesLabelVisibility(False)
    roi.GetDisplayNode().SetPointLabelsVisibility(False)
    segmentation, result = logic.segment(volume, None, None, 2, 0, positive=points, roi=roi)
    segmentation.GetSegmentation().GetSegment(result.segment_id).SetColor(0.2, 0.85, 0.4)
    segmentation.GetDisplayNode().SetOpacity2DFill(0.35)
    logging.info("segment: %d pixels, score %.2f", result.area, result.scores[result.chosen])
    render(scene, app, volume, Path(args.out))
    logging.info("wrote %s", args.out)
    del vtk
    return 0


if __name__ == "__main__":
    sys.exit(main())

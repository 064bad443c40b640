"""KD SAM: click and box prompts to segments in 3D Slicer, refine, propagate, retrain.

UI and scene glue only: the Logic lives in ``KDSAMLib/logic.py`` (Qt-free, tested with PyPI
slicer-core), the model in ``kdsam_core``. Heavy work never runs on the main thread: slice
encoding, model loading and propagation run in a thread (``KDSAMLib.jobs.BackgroundJob``),
retraining in a ``PythonSlicer`` child process; a QTimer polls them.
"""

from __future__ import annotations

import logging
import os

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:  # Slicer >= 5.2
    from slicer.parameterNodeWrapper import parameterNodeWrapper
except ImportError:  # pragma: no cover - older Slicer
    parameterNodeWrapper = None

from KDSAMLib import deps

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
deps.ensure_code_on_path(MODULE_DIR)  # source checkouts; the packaged extension bundles kdsam_core

log = logging.getLogger("KDSAM")
POLL_MS = 50
POSITIVE, NEGATIVE, BOX = "KD SAM include", "KD SAM exclude", "KD SAM box"


class KDSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "KD SAM"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Markups", "Segmentations"]
        self.parent.contributors = ["KD SAM contributors"]
        self.parent.helpText = (
            "Segment with clicks and boxes using KD SAM, a distilled Segment Anything that runs on the CPU. "
            "Pick a volume, load a model, then place include/exclude points or a box on a slice; the mask goes "
            "into a segment. Refine with more points, choose among candidate masks, undo/redo, propagate to "
            "neighbouring slices, and retrain the model on your own segmentations. "
            "See <a href='https://github.com/kdsam/kdsam/tree/main/KDSAMExtension'>the documentation</a>.")
        self.parent.acknowledgementText = (
            "Builds on Segment Anything (Meta AI, Apache-2.0) and LiteMedSAM (MedSAM, Apache-2.0).")


if parameterNodeWrapper is not None:
    @parameterNodeWrapper
    class KDSAMParameterNode:
        inputVolume: slicer.vtkMRMLScalarVolumeNode
        multimask: bool = True
        addMode: bool = False
        useRange: bool = False
        firstSlice: int = 0
        lastSlice: int = 0
        distillSteps: int = 500
        finetuneSteps: int = 500


class KDSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin: reads the panel, calls KDSAMLogic, shows messages. Never blocks on model work."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._job = None  # the one BackgroundJob at a time: encode, load or propagate
        self._jobKind = ""
        self._pending = None  # a prompt waiting for its slice's embedding
        self._training = None
        self._observedSliceNode = None
        self._lists = {}
        self._parameterNodeGuiTag = None

    # ------------------------------------------------------------------ setup
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KDSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        try:
            from KDSAMLib.logic import MODEL_CHOICES
        except ImportError:  # kdsam_core missing: say so instead of failing to open the panel
            MODEL_CHOICES = {}
        for key, (label, _) in MODEL_CHOICES.items():
            self.ui.modelComboBox.addItem(label, key)
        for device in ("auto", "cpu", "cuda", "cpu-onnx", "cpu-onnx-int8"):  # cpu-onnx*: kdsam_core.fast
            self.ui.deviceComboBox.addItem(device)
        for direction in ("both", "forward", "backward"):
            self.ui.directionComboBox.addItem(direction)
        for w in (self.ui.positivePlaceWidget, self.ui.negativePlaceWidget, self.ui.boxPlaceWidget):
            w.buttonsVisible = False
            w.placeButton().show()
        self.ui.positivePlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.negativePlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups

        self.ui.loadModelButton.connect("clicked()", self.onLoadModel)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.updateButtons)
        self.ui.volumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onVolumeChanged)
        self.ui.sliceViewComboBox.connect("currentIndexChanged(int)", self.onVolumeChanged)
        self.ui.undoButton.connect("clicked()", lambda: self._edit("undo"))
        self.ui.redoButton.connect("clicked()", lambda: self._edit("redo"))
        self.ui.clearPointsButton.connect("clicked()", self.onClearPrompts)
        self.ui.clearSliceButton.connect("clicked()", self.onClearSlice)
        for i, b in enumerate((self.ui.mask1Button, self.ui.mask2Button, self.ui.mask3Button)):
            b.connect("clicked()", lambda i=i: self.onChooseMask(i))
        self.ui.propagateButton.connect("clicked()", self.onPropagate)
        self.ui.cancelPropagateButton.connect("clicked()", self.onCancelJob)
        self.ui.exportButton.connect("clicked()", self.onExport)
        self.ui.retrainButton.connect("clicked()", self.onRetrain)
        self.ui.cancelRetrainButton.connect("clicked()", self.onCancelRetrain)

        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(POLL_MS)
        self.pollTimer.connect("timeout()", self.onPoll)
        self.encodeTimer = qt.QTimer()  # debounce: encode the shown slice once scrolling pauses
        self.encodeTimer.setSingleShot(True)
        self.encodeTimer.setInterval(250)
        self.encodeTimer.connect("timeout()", self.preEncode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateButtons()

    def _createLogic(self) -> bool:
        """The Logic needs kdsam_core; offer to install what is missing the first time."""
        if self.logic is not None:
            return True
        if not self.ensureDependencies():
            return False
        # torch's first import must happen on the main thread: importing it first inside a worker
        # thread crashed the process in the annotator (triton's loader); model loading runs in one.
        import kdsam_core.model  # noqa: F401  (imports torch and segment-anything)
        import kdsam_core.predictor  # noqa: F401
        from KDSAMLib.logic import KDSAMLogic

        self.logic = KDSAMLogic(slicer.mrmlScene)
        return True

    def ensureDependencies(self) -> bool:
        """First-use install (main thread, progress dialog); says what failed."""
        missing = deps.missing_packages()
        text = deps.describe_missing(missing)
        if not text:
            return True
        if missing.get("code"):
            self.showStatus("KD SAM's code is missing: " + text, error=True)
            return False
        if not slicer.util.confirmOkCancelDisplay(
                f"KD SAM needs {text}. Install now? This downloads several hundred MB and takes a few minutes.",
                "KD SAM: install dependencies"):
            self.showStatus("Dependencies not installed; KD SAM cannot run without them.", error=True)
            return False
        failed = []
        steps = (["torch"] if missing["torch"] else []) + missing["pip"]
        progress = slicer.util.createProgressDialog(labelText="Installing KD SAM dependencies...",
                                                    maximum=len(steps))
        try:
            for n, step in enumerate(steps):
                progress.labelText = f"Installing {step} ({n + 1}/{len(steps)})..."
                progress.value = n
                slicer.app.processEvents()
                try:
                    if step == "torch":
                        self._installTorch()
                    elif hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):
                        slicer.packaging.pip_ensure([step])
                    else:
                        slicer.util.pip_install(step)
                except Exception as e:  # each failure is reported, the rest still installs
                    log.exception("installing %s failed", step)
                    failed.append(f"{step}: {e}")
        finally:
            progress.close()
        if failed:
            slicer.util.errorDisplay("Some dependencies could not be installed:\n" + "\n".join(failed),
                                     windowTitle="KD SAM")
            self.showStatus("Install failed: " + "; ".join(failed), error=True)
            return False
        return not deps.describe_missing(deps.missing_packages())

    @staticmethod
    def _installTorch():
        try:
            import PyTorchUtils
        except ImportError:
            raise RuntimeError("the PyTorch extension is not installed: install 'PyTorch' from the "
                               "Extensions Manager and restart Slicer") from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=">=2.1") is None:
                raise RuntimeError("PyTorch installation did not complete")

    def cleanup(self):
        self.removeObservers()
        self.pollTimer.stop()
        if self._job is not None:
            self._job.cancel()
        if self._training is not None:
            self._training.cancel()

    def enter(self):
        self.initializeParameterNode()
        self._observeSliceNode()
        self._prompts()  # the place widgets need their lists before the first click

    def exit(self):
        if self._parameterNode is not None and hasattr(self._parameterNode, "disconnectGui"):
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        if self._job is not None:
            self._job.cancel()
        self._lists = {}
        self._parameterNodeGuiTag = None
        self._parameterNode = None
        if self.logic is not None:
            self.logic.undo_stack.clear()
            self.logic.redo_stack.clear()
            self.logic.end_interaction()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
            self._prompts()

    def initializeParameterNode(self):
        if parameterNodeWrapper is None:
            return
        node = KDSAMParameterNode(ScriptedLoadableModuleLogic().getParameterNode())
        if not node.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                node.inputVolume = first
        if self._parameterNode is not None and getattr(self, "_parameterNodeGuiTag", None):
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = node
        self._parameterNodeGuiTag = node.connectGui(self.ui)

    # ------------------------------------------------------------- markups
    def _pointList(self, name, cls, color, placeWidget):
        node = self._lists.get(name)
        if node is None or slicer.mrmlScene.GetNodeByID(node.GetID()) is None:
            node = slicer.mrmlScene.GetFirstNodeByName(name)
            if node is None:
                node = slicer.mrmlScene.AddNewNodeByClass(cls, name)
                node.CreateDefaultDisplayNodes()
                node.GetDisplayNode().SetSelectedColor(*color)
                node.GetDisplayNode().SetColor(*color)
                if cls == "vtkMRMLMarkupsFiducialNode":
                    node.GetDisplayNode().SetPointLabelsVisibility(False)
            self._lists[name] = node
            placeWidget.setCurrentNode(node)
            self.addObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPointDefined)
            for event in (slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent,
                          slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
                self.addObserver(node, event, self.onPromptsChanged)
        return node

    def _prompts(self):
        return (self._pointList(POSITIVE, "vtkMRMLMarkupsFiducialNode", (0.2, 0.9, 0.2), self.ui.positivePlaceWidget),
                self._pointList(NEGATIVE, "vtkMRMLMarkupsFiducialNode", (0.95, 0.2, 0.2), self.ui.negativePlaceWidget),
                self._pointList(BOX, "vtkMRMLMarkupsROINode", (0.95, 0.8, 0.2), self.ui.boxPlaceWidget))

    # -------------------------------------------------------------- slices
    def _sliceNode(self):
        name = self.ui.sliceViewComboBox.currentText
        widget = slicer.app.layoutManager().sliceWidget(name) if slicer.app.layoutManager() else None
        return widget.mrmlSliceNode() if widget else None

    def _observeSliceNode(self):
        node = self._sliceNode()
        if node is self._observedSliceNode:
            return
        if self._observedSliceNode is not None:
            self.removeObserver(self._observedSliceNode, vtk.vtkCommand.ModifiedEvent, self.onSliceMoved)
        self._observedSliceNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onSliceMoved)

    def _currentSlice(self, ras=None):
        """(axis, index) of the slice shown in the chosen view, or through ``ras``."""
        volume = self.ui.volumeSelector.currentNode()
        self.logic.volume_array(volume)  # "Select a volume first." and friends
        node = self._sliceNode()
        if node is None:
            raise RuntimeError("no slice view named " + self.ui.sliceViewComboBox.currentText)
        m = node.GetSliceToRAS()
        normal = [m.GetElement(r, 2) for r in range(3)]
        from KDSAMLib import coords

        axis = coords.axis_for_normal(volume, normal)
        if ras is None:  # the view's plane, wherever its centre is
            return axis, self.logic.slice_index_at(volume, axis, [m.GetElement(r, 3) for r in range(3)],
                                                   in_plane=False)
        return axis, self.logic.slice_index_at(volume, axis, ras)

    def onSliceMoved(self, caller=None, event=None):
        self.encodeTimer.start()

    def onVolumeChanged(self, *args):
        self._observeSliceNode()
        if self.logic is not None:
            self.logic.end_interaction()
        self.updateButtons()
        self.encodeTimer.start()

    def preEncode(self):
        """Encode the shown slice in the background so the first click on it is instant."""
        if self.logic is None or self.logic.predictor is None or self._job is not None:
            return
        volume = self.ui.volumeSelector.currentNode()
        if volume is None:
            return
        try:
            axis, index = self._currentSlice()
            if self.logic.needs_encoding(volume, axis, index):
                self._startJob("encode", self.logic.encode_job(volume, axis, index), f"Encoding slice {index}...")
        except Exception:  # a view outside the volume is no error while scrolling
            log.debug("pre-encoding skipped", exc_info=True)

    # -------------------------------------------------------------- jobs
    def _startJob(self, kind, fn, message, **kwargs):
        from KDSAMLib.jobs import BackgroundJob

        self._job = BackgroundJob(fn, name=kind, **kwargs).start()
        self._jobKind = kind
        self.showStatus(message)
        self.pollTimer.start()
        self.updateButtons()

    def onPoll(self):
        self._pollTraining()
        job = self._job
        if job is None:
            if self._training is None:
                self.pollTimer.stop()
            return
        if self._jobKind == "propagate" and job.fraction is not None:
            self.ui.propagateProgressBar.value = int(100 * job.fraction)
        if not job.done:
            return
        self._job = None
        kind = self._jobKind
        try:
            if job.error is not None:
                raise job.error
            if kind == "load":
                self.ui.modelStatusLabel.text = job.result
                self.showStatus("Model loaded. Place points or a box on the image.")
                self.encodeTimer.start()
            elif kind == "encode":
                self.showStatus(f"Slice encoded in {self.logic.predictor.last_encode_seconds or 0:.2f} s.")
            elif kind == "propagate":
                self.ui.propagateProgressBar.value = 100
                n = self.logic.apply_propagation(job.fn, job.result, mode=self._mode())
                what = "cancelled; kept" if job.cancelled else "wrote"
                self.showStatus(f"Propagation {what} {n} slices (one undo step).")
        except Exception as e:
            self._report(e)
        finally:
            self.updateButtons()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._requestSegmentation(*pending)

    def onCancelJob(self):
        if self._job is not None:
            self._job.cancel()
            self.showStatus("Cancelling...")

    # -------------------------------------------------------------- model
    def onLoadModel(self):
        if self._job is not None or not self._createLogic():
            return
        choice = self.ui.modelComboBox.currentData
        checkpoint = self.ui.checkpointPathLineEdit.currentPath or None
        device = self.ui.deviceComboBox.currentText
        logic = self.logic
        self._startJob("load", lambda: logic.load_model(choice, checkpoint, device=device, module_dir=MODULE_DIR),
                       "Loading the model...", with_callbacks=False)

    # -------------------------------------------------------------- prompts
    def onPointDefined(self, caller, event):
        """A new point: segment the slice it lies on (the newest point is the list's last)."""
        ras = None
        n = caller.GetNumberOfControlPoints()
        if n and caller.IsA("vtkMRMLMarkupsFiducialNode"):
            ras = [0.0, 0.0, 0.0]
            caller.GetNthControlPointPositionWorld(n - 1, ras)
        self.onPromptsChanged(caller, event, ras)

    def onPromptsChanged(self, caller=None, event=None, ras=None):
        if self.logic is None or self.logic.predictor is None:
            self.showStatus("Load a model first (Model section).", error=True)
            return
        try:
            axis, index = self._currentSlice(ras)
        except Exception as e:
            self._report(e)
            return
        self._requestSegmentation(axis, index)

    def _requestSegmentation(self, axis, index):
        """Segment now when the slice is encoded; else encode it in the background first."""
        volume = self.ui.volumeSelector.currentNode()
        try:
            if self._job is not None or self.logic.needs_encoding(volume, axis, index):
                self._pending = (axis, index)
                if self._job is None:
                    self._startJob("encode", self.logic.encode_job(volume, axis, index),
                                   f"Encoding slice {index}...")
                return
        except Exception as e:
            self._report(e)
            return
        self.segmentNow(axis, index)

    def segmentNow(self, axis, index):
        volume = self.ui.volumeSelector.currentNode()
        positive, negative, box = self._prompts()
        segmentation = self.ui.segmentSelector.currentNode()
        segmentId = self.ui.segmentSelector.currentSegmentID() or None
        try:
            segmentation, result = self.logic.segment(
                volume, segmentation, segmentId, axis, index, positive=positive, negative=negative, roi=box,
                multimask=self.ui.multimaskCheckBox.checked, mode=self._mode())
        except Exception as e:
            self._report(e)
            return
        if self.ui.segmentSelector.currentNode() is not segmentation:
            self.ui.segmentSelector.setCurrentNode(segmentation)
        self.ui.segmentSelector.setCurrentSegmentID(result.segment_id)
        decode = self.logic.predictor.last_decode_seconds or 0.0
        self.showStatus(f"Slice {index}: {result.area} voxels, score {result.scores[result.chosen]:.2f} "
                        f"({1000 * decode:.0f} ms).")
        self._showCandidates(result.scores, result.chosen)
        self.updateButtons()

    def _mode(self):
        return "add" if self.ui.addModeCheckBox.checked else "replace"

    def _showCandidates(self, scores=None, chosen=-1):
        buttons = (self.ui.mask1Button, self.ui.mask2Button, self.ui.mask3Button)
        for i, b in enumerate(buttons):
            ok = scores is not None and i < len(scores)
            b.enabled = ok
            b.checked = ok and i == chosen
            b.text = f"{i + 1} ({scores[i]:.2f})" if ok else str(i + 1)

    def onChooseMask(self, which):
        if self.logic is None:
            return
        try:
            area = self.logic.choose_mask(which)
            self.showStatus(f"Mask {which + 1}: {area} voxels.")
            for i, b in enumerate((self.ui.mask1Button, self.ui.mask2Button, self.ui.mask3Button)):
                b.checked = i == which
        except Exception as e:
            self._report(e)

    def _edit(self, what):
        if self.logic is None:
            return
        try:
            label = getattr(self.logic, what)()
            self.showStatus(f"{what.capitalize()}: {label}." if label else f"Nothing to {what}.")
        except Exception as e:
            self._report(e)
        self._showCandidates()
        self.updateButtons()

    def onClearPrompts(self):
        for node in self._lists.values():
            if slicer.mrmlScene.GetNodeByID(node.GetID()) is not None:
                with slicer.util.NodeModify(node):
                    node.RemoveAllControlPoints()
        if self.logic is not None:
            self.logic.end_interaction()
        self._showCandidates()

    def onClearSlice(self):
        if not self._createLogic():
            return
        try:
            axis, index = self._currentSlice()
            self.logic.clear_slice(self.ui.segmentSelector.currentNode(), self.ui.segmentSelector.currentSegmentID(),
                                   self.ui.volumeSelector.currentNode(), axis, index)
            self.showStatus(f"Slice {index} cleared (undoable).")
        except Exception as e:
            self._report(e)
        self.updateButtons()

    # ----------------------------------------------------------- propagate
    def onPropagate(self):
        if self._job is not None or not self._createLogic():
            return
        try:
            axis, index = self._currentSlice()
            kwargs = {"direction": self.ui.directionComboBox.currentText}
            if self.ui.rangeCheckBox.checked:
                kwargs.update(first=self.ui.firstSliceSpinBox.value, last=self.ui.lastSliceSpinBox.value)
            fn = self.logic.propagation_job(self.ui.volumeSelector.currentNode(), self.ui.segmentSelector.currentNode(),
                                            self.ui.segmentSelector.currentSegmentID(), axis, index, **kwargs)
        except Exception as e:
            self._report(e)
            return
        self.ui.propagateProgressBar.value = 0
        self._startJob("propagate", fn, f"Propagating from slice {index}...")
        self._job.fn = fn

    # ------------------------------------------------------------- retrain
    def onExport(self):
        folder = self.ui.dataFolderPathLineEdit.currentPath
        if not folder:
            self.showStatus("Pick a training data folder first.", error=True)
            return
        if not self._createLogic():
            return
        try:
            n = self.logic.export_training_data(folder)
            self.showStatus(f"Exported {n} image/mask pairs to {folder}.")
        except Exception as e:
            self._report(e)

    def onRetrain(self):
        if self._training is not None or not self._createLogic():
            return
        from KDSAMLib import retrain

        data, run = self.ui.dataFolderPathLineEdit.currentPath, self.ui.runFolderPathLineEdit.currentPath
        if not data or not run:
            self.showStatus("Pick the training data folder and a run folder.", error=True)
            return
        try:
            plan = retrain.TrainingPlan(data_root=data, run_dir=run, device=self.ui.deviceComboBox.currentText,
                                        distill_steps=self.ui.distillStepsSpinBox.value,
                                        finetune_steps=self.ui.finetuneStepsSpinBox.value,
                                        backbone_weights=self.ui.backbonePathLineEdit.currentPath)
            stages = retrain.training_stages(plan)
            self._trainingPlan = plan
            self._training = retrain.TrainingPipeline(
                stages, cwd=run, env=retrain.training_env(deps.code_dirs()),
                log_path=os.path.join(run, "retrain.log")).start()
        except Exception as e:
            self._report(e)
            return
        self.ui.retrainLogTextEdit.appendPlainText(f"Retraining in {run}: {', '.join(s for s, _ in stages) or 'all stages done'}")
        self.ui.metricsLabel.text = ""
        self.pollTimer.start()
        self.updateButtons()

    def _pollTraining(self):
        t = self._training
        if t is None:
            return
        for line in t.poll():
            self.ui.retrainLogTextEdit.appendPlainText(line)
        self.ui.retrainProgressBar.value = int(100 * t.progress)
        if not t.done:
            return
        self._training = None
        self.updateButtons()
        if t.succeeded:
            from KDSAMLib import retrain

            self.ui.retrainProgressBar.value = 100
            metrics = retrain.find_metrics(self._trainingPlan.run_dir)
            self.ui.metricsLabel.text = "Validation:\n" + retrain.format_metrics(metrics)
            ckpt = str(self._trainingPlan.final_checkpoint)
            self.ui.modelComboBox.currentIndex = self.ui.modelComboBox.findData("checkpoint")
            self.ui.checkpointPathLineEdit.currentPath = ckpt
            self.onLoadModel()
        elif t.failed:
            self.showStatus("Retraining failed: " + t.failed, error=True)
        else:
            self.showStatus("Retraining cancelled; press Retrain with the same run folder to resume.")

    def onCancelRetrain(self):
        if self._training is not None:
            self._training.cancel()

    # -------------------------------------------------------------- status
    def updateButtons(self, *args):
        busy = self._job is not None
        hasModel = self.logic is not None and self.logic.predictor is not None
        hasVolume = self.ui.volumeSelector.currentNode() is not None
        self.ui.loadModelButton.enabled = not busy
        self.ui.propagateButton.enabled = hasModel and hasVolume and not busy
        self.ui.cancelPropagateButton.enabled = busy and self._jobKind == "propagate"
        self.ui.undoButton.enabled = bool(self.logic and self.logic.undo_stack) and not busy
        self.ui.redoButton.enabled = bool(self.logic and self.logic.redo_stack) and not busy
        self.ui.clearSliceButton.enabled = hasVolume and not busy
        self.ui.retrainButton.enabled = self._training is None
        self.ui.cancelRetrainButton.enabled = self._training is not None
        choice = self.ui.modelComboBox.currentData
        self.ui.checkpointPathLineEdit.enabled = choice not in (None, "default", "kdsam_tiny")

    def showStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #d03030" if error else "")
        slicer.util.showStatusMessage(text, 5000)

    def _report(self, e):
        """User mistakes (KDSAMError) as a panel message; anything else is logged with its traceback."""
        from kdsam_core.errors import KDSAMError

        if isinstance(e, KDSAMError):
            self.showStatus(str(e), error=True)
        else:
            log.error("KD SAM internal error", exc_info=(type(e), e, e.__traceback__))
            self.showStatus(f"Internal error ({type(e).__name__}: {e}); details in the Python console.", error=True)


class KDSAMTest(ScriptedLoadableModuleTest):
    """Slicer's self test: a phantom, the tiny test model, a click, undo, propagation."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_ClickUndoPropagate()

    def test_ClickUndoPropagate(self):
        import numpy as np

        from KDSAMLib import coords
        from KDSAMLib.logic import KDSAMLogic

        self.delayDisplay("Phantom and tiny model")
        a = np.zeros((8, 48, 64), np.int16)
        a[2:6, 10:30, 15:40] = 800
        volume = slicer.util.addVolumeFromArray(a, np.diag([0.7, 0.7, 2.0, 1.0]), name="KDSAMPhantom")
        logic = KDSAMLogic(slicer.mrmlScene)
        logic.load_model("kdsam_tiny", device="cpu")

        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "p")
        points.AddControlPoint(*coords.ijk_to_ras(volume, (25, 20, 3)))
        segmentation, result = logic.segment(volume, None, None, 2, 3, positive=points)
        self.assertEqual(result.slice_index, 3)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 1)
        logic.undo()
        self.assertFalse(logic.read_slice_mask(segmentation, result.segment_id, volume, 2, 3).any())
        logic.redo()

        mask = np.zeros((48, 64), bool)
        mask[10:30, 15:40] = True
        logic.write_slice_mask(segmentation, result.segment_id, volume, 2, 3, mask)
        logic.propagate(volume, segmentation, result.segment_id, 2, 3, first=2, last=4)
        self.delayDisplay("Test passed")

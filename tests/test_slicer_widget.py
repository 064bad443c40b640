"""The module's Widget driven without the Slicer app: real MRML (slicer-core), stand-in Qt widgets.

Slicer's Qt layer (PythonQt, ctk, qMRML widgets) cannot be had outside Slicer, so ``qt``,
``slicer.ScriptedLoadableModule`` and the panel's widgets are replaced by small fakes with the
same attribute-style API (``combo.currentData``, ``checkBox.checked``, ``connect(signal, slot)``);
the scene, markups, segmentations and the Logic are real. The QTimer is driven by hand, so this
checks the widget's flow: model loading and slice encoding in a background thread, a click
segmenting once the slice is encoded, candidate masks, undo, propagation with progress, and
messages in the panel instead of exceptions.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("PyPI slicer-core is not installed", allow_module_level=True)

MODULE = Path(__file__).resolve().parents[1] / "KDSAMExtension" / "KDSAM"
sys.path.insert(0, str(MODULE))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# ------------------------------------------------------------------ fakes
class Signal:
    def __init__(self):
        self.slots = {}

    def connect(self, signal, slot):
        self.slots.setdefault(signal, []).append(slot)

    def emit(self, signal, *args):
        for slot in self.slots.get(signal, []):
            slot(*args)


class FakeWidget(Signal):
    def __init__(self, name=""):
        super().__init__()
        self.objectName, self.enabled, self.checked, self.text, self.value = name, True, False, "", 0
        self.currentPath, self.style, self.lines = "", "", []

    def setMRMLScene(self, scene):
        self.scene = scene

    def setStyleSheet(self, style):
        self.style = style

    def appendPlainText(self, line):
        self.lines.append(line)

    def click(self):
        self.emit("clicked()")

    def show(self):
        self.visible = True


class FakeCombo(FakeWidget):
    def __init__(self, name=""):
        super().__init__(name)
        self.items, self.currentIndex = [], 0

    def addItem(self, text, data=None):
        self.items.append((text, data))

    def findData(self, data):
        return next((i for i, (_, d) in enumerate(self.items) if d == data), -1)

    def findText(self, text):
        return next((i for i, (t, _) in enumerate(self.items) if t == text), -1)

    @property
    def currentText(self):
        return self.items[self.currentIndex][0] if self.items else ""

    @property
    def currentData(self):
        return self.items[self.currentIndex][1] if self.items else None


class FakeNodeCombo(FakeWidget):
    node = None

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node):
        self.node = node


class FakeSegmentSelector(FakeNodeCombo):
    segment = None

    def currentSegmentID(self):
        return self.segment

    def setCurrentSegmentID(self, sid):
        self.segment = sid


class FakePlaceWidget(FakeWidget):
    buttonsVisible = True
    placeMultipleMarkups = 0
    current = None

    def placeButton(self):
        return FakeWidget()

    def setCurrentNode(self, node):
        self.current = node


FAKES = {"QComboBox": FakeCombo, "qMRMLNodeComboBox": FakeNodeCombo,
         "qMRMLSegmentSelectorWidget": FakeSegmentSelector, "qSlicerMarkupsPlaceWidget": FakePlaceWidget}


def fake_ui():
    ns = types.SimpleNamespace()
    for w in ET.parse(MODULE / "Resources" / "UI" / "KDSAM.ui").iter("widget"):
        fake = FAKES.get(w.get("class"), FakeWidget)(w.get("name"))
        for item in w.findall("item/property/string"):
            fake.addItem(item.text)
        for prop in w.findall("property"):
            if prop.get("name") in ("checked", "enabled"):
                setattr(fake, prop.get("name"), prop.find("bool").text == "true")
            elif prop.get("name") == "text" and prop.find("string") is not None:
                fake.text = prop.find("string").text or ""
            elif prop.get("name") in ("value", "maximum"):
                setattr(fake, prop.get("name"), int(prop.find("number").text))
        setattr(ns, w.get("name"), fake)
    return ns


class FakeTimer(Signal):
    def __init__(self):
        super().__init__()
        self.active = False

    def setInterval(self, ms):
        pass

    def setSingleShot(self, single):
        pass

    def start(self):
        self.active = True

    def stop(self):
        self.active = False

    def fire(self):
        self.emit("timeout()")


class FakeSliceWidget:
    def __init__(self, node):
        self.node = node

    def mrmlSliceNode(self):
        return self.node


class FakeLayoutManager:
    def __init__(self, nodes):
        self.nodes = nodes

    def sliceWidget(self, name):
        return FakeSliceWidget(self.nodes[name]) if name in self.nodes else None


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent or types.SimpleNamespace(isEntered=True)
        self.layout = types.SimpleNamespace(addWidget=lambda w: None)

    def setup(self):
        pass

    def resourcePath(self, name):
        return str(MODULE / "Resources" / name)


# ------------------------------------------------------------------ the harness
@pytest.fixture()
def panel(monkeypatch):
    from test_slicer_logic import add_volume, make_app, phantom

    scene, app, logics = make_app()
    red = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    red.SetLayoutName("Red")
    red.SetOrientationToAxial()
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = object
    slm.ScriptedLoadableModuleLogic = object
    slm.ScriptedLoadableModuleTest = object
    slm.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", slm)
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", None)  # the pre-5.2 path
    ui = fake_ui()
    messages = []
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(layoutManager=lambda: FakeLayoutManager({"Red": red}),
                                                             processEvents=lambda: None), raising=False)
    monkeypatch.setattr(slicer, "qSlicerMarkupsPlaceWidget",
                        types.SimpleNamespace(ForcePlaceMultipleMarkups=2), raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: FakeWidget("KDSAM"))
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda w: ui)
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda text, ms=0: messages.append(text))
    sys.modules.pop("KDSAM", None)
    KDSAM = importlib.import_module("KDSAM")
    widget = KDSAM.KDSAMWidget()
    widget.setup()
    volume = add_volume(scene, phantom())
    ui.volumeSelector.setCurrentNode(volume)
    ui.volumeSelector.emit("currentNodeChanged(vtkMRMLNode*)", volume)
    h = types.SimpleNamespace(widget=widget, ui=ui, scene=scene, volume=volume, red=red, messages=messages,
                              module=KDSAM)
    yield h
    widget.cleanup()
    sys.modules.pop("KDSAM", None)


def drain(h, timeout=30.0):
    """Fire the poll timer until no background job is left."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        h.widget.pollTimer.fire()
        if h.widget._job is None and h.widget._training is None:
            return
        time.sleep(0.01)
    raise AssertionError("background job did not finish")


def show_slice(h, k):
    from KDSAMLib import coords

    ras = coords.ijk_to_ras(h.volume, (0, 0, k))
    m = h.red.GetSliceToRAS()
    m.SetElement(2, 3, ras[2])
    h.red.UpdateMatrices()


def load_tiny(h):
    h.ui.modelComboBox.currentIndex = h.ui.modelComboBox.findData("kdsam_tiny")
    h.ui.deviceComboBox.currentIndex = h.ui.deviceComboBox.findText("cpu")
    h.ui.loadModelButton.click()
    assert h.widget._jobKind == "load"
    drain(h)
    assert "kdsam_tiny on cpu" in h.ui.modelStatusLabel.text


# ------------------------------------------------------------------ tests
def test_click_segments_after_background_encoding_then_undo(panel):
    h = panel
    from KDSAMLib import coords

    assert "Pick a volume" in h.ui.statusLabel.text
    load_tiny(h)
    h.widget.enter()
    positive = h.ui.positivePlaceWidget.current
    assert positive is not None and positive.GetName() == h.module.POSITIVE
    show_slice(h, 3)
    positive.AddControlPoint(*coords.ijk_to_ras(h.volume, (12, 10, 3)))  # PointPositionDefinedEvent
    assert h.widget._jobKind == "encode" and h.widget._pending == (2, 3)  # encoded off the main thread
    drain(h)
    seg = h.ui.segmentSelector.currentNode()
    assert seg is not None and h.ui.segmentSelector.currentSegmentID()
    assert h.ui.statusLabel.text.startswith("Slice 3:"), h.ui.statusLabel.text
    assert h.ui.mask1Button.enabled and h.ui.undoButton.enabled  # one click: three candidates
    h.ui.mask2Button.click()
    assert h.ui.mask2Button.checked and h.ui.statusLabel.text.startswith("Mask 2:")
    # a second click on the same slice decodes at once, no encoding job; one mask, no candidates
    positive.AddControlPoint(*coords.ijk_to_ras(h.volume, (14, 11, 3)))
    assert h.widget._job is None and h.ui.statusLabel.text.startswith("Slice 3:")
    assert h.ui.mask1Button.enabled and not h.ui.mask2Button.enabled
    h.ui.undoButton.click()
    assert h.ui.statusLabel.text.startswith("Undo:") and h.ui.redoButton.enabled
    h.ui.clearPointsButton.click()
    assert positive.GetNumberOfControlPoints() == 0


def test_propagation_runs_in_the_background_with_progress(panel):
    h = panel
    load_tiny(h)
    h.widget.enter()
    logic = h.widget.logic
    seg, sid = logic.ensure_segment(None, h.volume)
    mask = np.zeros((24, 32), bool)
    mask[6:16, 8:20] = True
    logic.write_slice_mask(seg, sid, h.volume, 2, 2, mask)
    h.ui.segmentSelector.setCurrentNode(seg)
    h.ui.segmentSelector.setCurrentSegmentID(sid)
    show_slice(h, 2)
    h.ui.rangeCheckBox.checked = True
    h.ui.firstSliceSpinBox.value, h.ui.lastSliceSpinBox.value = 1, 3
    h.ui.propagateButton.click()
    assert h.widget._jobKind == "propagate" and h.ui.cancelPropagateButton.enabled
    drain(h)
    assert h.ui.statusLabel.text.startswith("Propagation"), h.ui.statusLabel.text
    assert h.ui.propagateProgressBar.value == 100


def test_mistakes_become_panel_messages(panel):
    h = panel
    from KDSAMLib import coords

    h.widget.enter()
    positive = h.ui.positivePlaceWidget.current
    positive.AddControlPoint(*coords.ijk_to_ras(h.volume, (12, 10, 3)))
    assert "Load a model first" in h.ui.statusLabel.text and h.ui.statusLabel.style
    h.ui.modelComboBox.currentIndex = h.ui.modelComboBox.findData("sam_vit_b")
    h.ui.loadModelButton.click()
    drain(h)
    assert "needs a weights file" in h.ui.statusLabel.text
    load_tiny(h)
    h.ui.volumeSelector.setCurrentNode(None)
    h.ui.propagateButton.click()
    assert "Select a volume first" in h.ui.statusLabel.text
    h.ui.volumeSelector.setCurrentNode(h.volume)
    show_slice(h, 2)
    h.ui.propagateButton.click()
    assert "Select the segment" in h.ui.statusLabel.text
    positive.AddControlPoint(*coords.ijk_to_ras(h.volume, (500, 10, 3)))
    assert "outside volume" in h.ui.statusLabel.text
    h.ui.retrainButton.click()
    assert "Pick the training data folder" in h.ui.statusLabel.text


def test_retrain_from_the_panel_streams_and_cancels(panel, tmp_path, monkeypatch):
    h = panel
    from KDSAMLib import retrain
    from test_slicer_retrain import make_data

    data = make_data(tmp_path / "data")
    slow = [sys.executable, "-c", "import time\nfor i in range(100):\n    print(f'step {i}/100', flush=True)\n"
                                  "    time.sleep(0.05)"]
    plans = []
    monkeypatch.setattr(retrain, "training_stages", lambda plan: plans.append(plan) or [("distill", slow)])
    h.ui.dataFolderPathLineEdit.currentPath = str(data)
    h.ui.runFolderPathLineEdit.currentPath = str(tmp_path / "run")
    h.ui.backbonePathLineEdit.currentPath = str(tmp_path / "resnet50.pth")
    h.ui.retrainButton.click()
    assert h.widget._training is not None and h.ui.cancelRetrainButton.enabled
    assert plans[0].backbone_weights == str(tmp_path / "resnet50.pth")  # the panel's field reaches the plan
    end = time.monotonic() + 10
    while time.monotonic() < end and not any("step 3/100" in line for line in h.ui.retrainLogTextEdit.lines):
        h.widget.pollTimer.fire()
        time.sleep(0.02)
    assert h.ui.retrainProgressBar.value > 0
    h.ui.cancelRetrainButton.click()
    drain(h)
    assert "resume" in h.ui.statusLabel.text
    assert (tmp_path / "run" / "retrain.log").is_file()

"""Smoke tests of the Slicer panel without Slicer: the .ui, its bindings, the module file's seams.

Slicer's own Qt widgets (ctk, qMRML, qSlicer) do not exist outside Slicer, so the .ui is loaded
with PyQt5 after mapping each of them to the Qt class it extends; what this checks is that the
file is valid, that every widget the module code uses is there, and that every parameter-node
binding names a parameter.
"""

from __future__ import annotations

import ast
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[1] / "KDSAMExtension" / "KDSAM"
UI = MODULE / "Resources" / "UI" / "KDSAM.ui"
SOURCE = MODULE / "KDSAM.py"
# Slicer widget -> the Qt class standing in for it, and the properties that class has
STAND_INS = {
    "ctkCollapsibleButton": "QGroupBox",
    "ctkPathLineEdit": "QLineEdit",
    "qMRMLNodeComboBox": "QComboBox",
    "qMRMLSegmentSelectorWidget": "QComboBox",
    "qMRMLWidget": "QWidget",
    "qSlicerWidget": "QWidget",
    "qSlicerMarkupsPlaceWidget": "QWidget",
}
KEEP = {"text", "title", "toolTip", "enabled", "geometry"}


def ui_tree() -> ET.ElementTree:
    return ET.parse(UI)


def widget_names() -> set[str]:
    return {w.get("name") for w in ui_tree().iter("widget")}


def test_ui_loads_with_pyqt5(tmp_path):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtWidgets = pytest.importorskip("PyQt5.QtWidgets")
    uic = pytest.importorskip("PyQt5.uic")
    tree = ui_tree()
    root = tree.getroot()
    for w in root.iter("widget"):
        cls = w.get("class")
        if cls in STAND_INS:
            w.set("class", STAND_INS[cls])
            if STAND_INS[cls] == "QGroupBox":  # a collapsible button's text is a group box's title
                for prop in w.findall("property[@name='text']"):
                    prop.set("name", "title")
            for prop in list(w.findall("property")):
                if prop.get("stdset") != "0" and prop.get("name") not in KEEP:
                    w.remove(prop)
    for tag in ("customwidgets", "connections"):
        for el in root.findall(tag):
            root.remove(el)
    plain = tmp_path / "KDSAM_plain.ui"
    tree.write(plain)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    panel = uic.loadUi(str(plain))
    panel.resize(380, 900)
    panel.show()
    app.processEvents()
    assert panel.findChild(QtWidgets.QPushButton, "propagateButton").text() == "Propagate"
    assert panel.findChild(QtWidgets.QGroupBox, "retrainCollapsibleButton").title() == "Retrain"
    assert panel.findChild(QtWidgets.QCheckBox, "multimaskCheckBox").isChecked()
    assert not panel.findChild(QtWidgets.QPushButton, "undoButton").isEnabled()
    assert panel.findChild(QtWidgets.QComboBox, "sliceViewComboBox").count() == 3
    assert panel.findChild(QtWidgets.QLineEdit, "volumeSelector") is None  # stand-in is a combo box
    assert panel.findChild(QtWidgets.QComboBox, "volumeSelector").property("SlicerParameterName") == "inputVolume"
    panel.close()


def test_every_widget_the_module_uses_is_in_the_ui():
    used = set(re.findall(r"self\.ui\.(\w+)", SOURCE.read_text()))
    missing = used - widget_names()
    assert not missing, f"KDSAM.py uses widgets the .ui lacks: {sorted(missing)}"


def test_parameter_bindings_name_parameters():
    tree = ast.parse(SOURCE.read_text())
    fields = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "KDSAMParameterNode":
            fields = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    assert fields
    bound = {p.find("string").text for p in ui_tree().iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound and bound <= fields, sorted(bound - fields)


def test_module_has_slicer_classes_and_lazy_imports():
    tree = ast.parse(SOURCE.read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    bases = {name: {getattr(b, "id", getattr(b, "attr", "")) for b in c.bases} for name, c in classes.items()}
    assert "ScriptedLoadableModule" in bases["KDSAM"]
    assert "ScriptedLoadableModuleWidget" in bases["KDSAMWidget"]
    assert "ScriptedLoadableModuleTest" in bases["KDSAMTest"]
    top = set()
    for n in tree.body:
        if isinstance(n, ast.Import):
            top |= {a.name.split(".")[0] for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            top.add((n.module or "").split(".")[0])
    assert not top & {"torch", "kdsam_core", "numpy", "segment_anything"}, top


@pytest.mark.parametrize("path", sorted((MODULE / "KDSAMLib").glob("*.py")), ids=lambda p: p.name)
def test_logic_package_is_free_of_qt(path):
    tree = ast.parse(path.read_text())
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom):
            names.add(n.module or "")
            names |= {f"{n.module}.{a.name}" for a in n.names}
    bad = {x for x in names if x.split(".")[0] in ("qt", "ctk", "PyQt5", "PythonQt") or "ScriptedLoadableModule" in x}
    assert not bad, bad


def test_cmake_lists_every_script_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", "KDSAM")
    for path in (MODULE / "KDSAMLib").glob("*.py"):
        assert f"KDSAMLib/{path.name}" in cmake
    assert "Resources/UI/KDSAM.ui" in cmake and "Resources/Icons/KDSAM.png" in cmake
    assert "slicerMacroBuildScriptedModule" in cmake
    root = (MODULE.parents[1] / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS", "EXTENSION_CONTRIBUTORS", "EXTENSION_DEPENDS \"PyTorch\"",
                "add_subdirectory(KDSAMExtension)"):
        assert key in root


def test_icon_is_128_pixels():
    PIL = pytest.importorskip("PIL.Image")
    with PIL.open(MODULE / "Resources" / "Icons" / "KDSAM.png") as im:
        assert im.size == (128, 128)

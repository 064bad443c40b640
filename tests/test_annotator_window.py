"""The annotator window driven offscreen: clicks become prompts at the clicked pixel, the mask shown
is the predictor's answer, candidates, labels, undo/redo by keyboard, propagation, help."""

import numpy as np
from annotator_util import (OraclePredictor, Spy, click, drag, key, messages, overlay_mask, qapp,  # noqa: F401
                             wait_encoded, window)
from kdsam_annotate.actions import ACTIONS, help_dialog
from PIL import Image
from PyQt5.QtCore import QEvent, QPoint, QPointF, Qt
from PyQt5.QtGui import QMouseEvent, QWheelEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication

from kdsam_core.errors import InputError


def _png(tmp_path, disk_image):
    path = tmp_path / "disk.png"
    Image.fromarray(disk_image[0]).save(path)
    return str(path)


def _nifti(tmp_path, n=6):
    import SimpleITK as sitk

    arr = np.zeros((n, 40, 50), np.int16)
    arr[:, 10:30, 15:35] = 300
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.6, 2.5))
    img.SetOrigin((-10.0, 5.0, 30.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, 1))
    path = tmp_path / "vol.nii.gz"
    sitk.WriteImage(img, str(path))
    return str(path)


def test_clicks_and_box_reach_the_predictor_at_the_clicked_pixel(window, tmp_path, disk_image, messages):
    assert window.open_path(_png(tmp_path, disk_image))
    spy = Spy(window.worker.predictor)
    click(window, 70, 40)
    kw = spy.calls[-1]
    np.testing.assert_array_equal(kw["point_coords"], [[70, 40]])
    np.testing.assert_array_equal(kw["point_labels"], [1])
    assert kw["box"] is None and kw["multimask_output"] is True
    best = spy.results[-1].best()
    np.testing.assert_array_equal(window.session.mask[0] == 1, best)  # the mask kept is the model's answer
    np.testing.assert_array_equal(overlay_mask(window), best)  # ... and the one on screen
    click(window, 10, 90, Qt.RightButton)
    kw = spy.calls[-1]
    np.testing.assert_array_equal(kw["point_coords"], [[70, 40], [10, 90]])
    np.testing.assert_array_equal(kw["point_labels"], [1, 0])
    assert kw["multimask_output"] is False
    drag(window, 50, 20, 90, 60)
    np.testing.assert_array_equal(spy.calls[-1]["box"], [50, 20, 90, 60])
    assert "click→mask" in window.latency_label.text() and "cpu" in window.device_label.text()
    assert not messages["critical"]


def test_candidates_labels_and_undo_redo_by_keyboard(window, tmp_path, disk_image, messages):
    window.open_path(_png(tmp_path, disk_image))
    window.activateWindow()
    spy = Spy(window.worker.predictor)
    click(window, 70, 40)
    pred = spy.results[-1]
    order = [int(np.argmax(pred.scores))]
    order += [(order[0] + i) % len(pred.masks) for i in (1, 2)]
    key(window, "M")
    np.testing.assert_array_equal(window.session.mask[0] == 1, pred.masks[order[1]])
    np.testing.assert_array_equal(overlay_mask(window), pred.masks[order[1]])
    key(window, "N")  # a second label, then a click paints it
    assert window.session.current_label == 2
    click(window, 20, 20)
    second = spy.results[-1].best()
    assert (window.session.mask[0] == 2).sum() == second.sum()
    np.testing.assert_array_equal(window.session.mask[0] == 1, pred.masks[order[1]] & ~second)
    before = window.session.mask.copy()
    key(window, "Ctrl+Z")
    assert not (window.session.mask == 2).any()
    key(window, "Ctrl+Shift+Z")
    np.testing.assert_array_equal(window.session.mask, before)
    key(window, "1")
    assert window.session.current_label == 1
    key(window, "Delete")
    assert not (window.session.mask == 1).any()
    key(window, "Ctrl+Z")
    assert (window.session.mask == 1).any()
    assert not messages["critical"]


def test_slices_wheel_window_level_and_zoom(window, tmp_path):
    window.open_path(_nifti(tmp_path))
    assert window.slider.maximum() == 5 and window.index == 3
    vp = window.canvas.viewport()
    QTest.keyClick(window.canvas, Qt.Key_Up)
    assert window.index == 4
    QApplication.sendEvent(vp, QWheelEvent(QPointF(50, 50), QPointF(50, 50), QPoint(0, 0), QPoint(0, -120),
                                           Qt.NoButton, Qt.NoModifier, Qt.NoScrollPhase, False))
    assert window.index == 3  # a wheel notch down: the previous slice
    window.slider.setValue(1)
    assert window.index == 1 and window.slice_label.text() == "z 2 / 6"
    window.width_box.setValue(100.0)
    assert window.width == 100.0
    window.reset_window()
    assert window.width != 100.0
    level, width = window.level, window.width
    a = window.canvas.pixel_to_view(10, 10)
    QTest.mousePress(vp, Qt.LeftButton, Qt.ShiftModifier, a)  # Shift+drag: window right, level down
    QApplication.sendEvent(vp, QMouseEvent(QEvent.MouseMove, QPointF(a + QPoint(40, 30)), Qt.NoButton, Qt.LeftButton,
                                           Qt.ShiftModifier))  # QTest.mouseMove moves the cursor only
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.ShiftModifier, a + QPoint(40, 30))
    assert window.width > width and window.level < level and not window.session.mask.any()
    scale = window.canvas.transform().m11()
    window.zoom_in()
    assert window.canvas.transform().m11() > scale
    window.fit_view()
    assert vp.isVisible()


def test_propagation_with_progress_and_cancel(window, tmp_path, messages):
    window.open_path(_nifti(tmp_path, n=8))
    gt = np.zeros((8, 40, 50), bool)
    gt[1:7, 12:28, 18:32] = True
    window.worker.worker.predictor = OraclePredictor(gt)
    window.show_slice(3)
    click(window, 25, 20)
    assert (window.session.mask[3] == 1).sum() == gt[3].sum()
    seen = []
    window.worker.signals.progress.connect(lambda d, t: seen.append((d, t)))
    key(window, "P")
    assert window.session.touched_slices() == [1, 2, 3, 4, 5, 6]
    assert seen and seen[-1][0] == seen[-1][1]
    key(window, "Ctrl+Z")  # the whole propagation is one edit
    assert window.session.touched_slices() == [3]
    # cancel while slice 5 is segmented: it and the slices before it are kept, no more
    window.worker.worker.predictor = OraclePredictor(gt, on_predict=lambda k: k == 5 and window.worker.cancel())
    window.propagate()
    assert window.worker.wait_idle(30)
    assert window.session.touched_slices() == [3, 4, 5] and "cancelled" in window.statusBar().currentMessage()
    assert not messages["critical"]

    def fail(k):
        raise InputError("the model refused slice 4")

    window.worker.worker.predictor = OraclePredictor(gt, on_predict=fail)
    window.propagate()
    assert window.worker.wait_idle(30)
    assert messages["critical"][-1] == ("Could not propagate", "the model refused slice 4")
    assert window.progress_dialog is None and not window._propagating  # the window is usable again


def test_device_can_be_changed(window, monkeypatch):
    from PyQt5.QtWidgets import QInputDialog

    monkeypatch.setattr(QInputDialog, "getItem", staticmethod(lambda *a, **k: ("cpu · torch", True)))
    old = window.worker.predictor
    key(window, "Ctrl+Shift+D")
    assert window.worker.predictor is not old and str(window.worker.predictor.device) == "cpu"
    assert window.device_label.text().endswith("· cpu")


def test_help_lists_every_action_with_a_shortcut(window):
    assert all(spec.shortcuts for spec in ACTIONS)
    assert set(window.actions_by_name) == {spec.name for spec in ACTIONS}
    seqs = [s for spec in ACTIONS for s in spec.shortcuts]
    assert len(seqs) == len(set(seqs))  # no shortcut does two things
    table = help_dialog(window).findChild(object, "shortcut_table")
    keys = [table.item(r, 0).text() for r in range(table.rowCount())]
    for spec in ACTIONS:
        assert " or ".join(spec.shortcuts) in keys


def test_slicing_along_y_and_x_with_true_aspect(window, tmp_path, messages, disk_image):
    window.open_path(_nifti(tmp_path, n=8))  # (z, y, x) = (8, 40, 50), spacing (x, y, z) = (0.8, 0.6, 2.5)
    assert window.axis_combo.isEnabled() and window.axis == 0
    gt = np.zeros((8, 40, 50), bool)
    gt[1:7, 12:28, 18:32] = True
    key(window, "X")  # slice along y: images of (z, x)
    assert window.axis == 1 and window.slider.maximum() == 39 and window.index == 20
    assert window.slice_label.text() == "y 21 / 40" and abs(window.canvas._aspect - 2.5 / 0.8) < 1e-6
    t = window.canvas.transform()
    assert abs(t.m22() / t.m11() - 2.5 / 0.8) < 1e-6  # z pixels shown 3.1x taller than x pixels
    window.worker.worker.predictor = OraclePredictor(gt, axis=1)
    click(window, 25, 3)  # x = 25, z = 3 on the y = 20 slice
    np.testing.assert_array_equal(window.session.mask[:, 20, :] == 1, gt[:, 20, :])
    assert window.session.touched_slices(axis=1) == [20]
    np.testing.assert_array_equal(overlay_mask(window), gt[:, 20, :])
    key(window, "P")  # propagation runs along y
    assert window.session.touched_slices(axis=1) == list(range(12, 28))
    np.testing.assert_array_equal(window.session.mask == 1, gt)
    assert window.save_mask_to(str(tmp_path / "y20.png"))
    assert np.asarray(Image.open(tmp_path / "y20.png")).shape == (8, 50)  # the y slice shown
    key(window, "X")
    assert window.axis == 2 and window.slider.maximum() == 49 and abs(window.canvas._aspect - 2.5 / 0.6) < 1e-6
    np.testing.assert_array_equal(overlay_mask(window), gt[:, :, 25])
    window.axis_combo.activated.emit(0)  # back to z through the toolbar
    assert window.axis == 0 and window.index == 4 and abs(window.canvas._aspect - 0.75) < 1e-6
    np.testing.assert_array_equal(overlay_mask(window), gt[4])
    key(window, "Ctrl+Z")  # undo the propagation made along y while z is shown
    assert window.session.touched_slices(axis=1) == [20]
    assert not messages["critical"]
    window.session.mark_saved()
    window.open_path(_png(tmp_path, disk_image))  # a 2D image has one axis
    wait_encoded(window)  # its "Slice encoded" message first, not over the one checked below
    assert not window.axis_combo.isEnabled()
    key(window, "X")
    assert window.axis == 0 and "2D" in window.statusBar().currentMessage()

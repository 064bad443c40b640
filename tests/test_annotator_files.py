"""The annotator window with files: formats, drag-and-drop, saving with geometry, autosave and
recovery after a crash, the question on quit, and bad input shown in a message box."""

import numpy as np
import pytest
import SimpleITK as sitk
from annotator_util import click, make_window, messages, qapp, window  # noqa: F401
from kdsam_annotate.app import build_parser
from kdsam_annotate.worker import ModelSpec
from PIL import Image
from PyQt5.QtCore import QMimeData, QPoint, Qt, QUrl
from PyQt5.QtGui import QDragEnterEvent, QDropEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication, QMessageBox


def _volume(tmp_path, name="vol.nrrd"):
    arr = np.zeros((5, 40, 50), np.int16)
    arr[:, 10:30, 15:35] = 300
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.6, 2.5))
    img.SetOrigin((-10.0, 5.0, 30.0))
    img.SetDirection((0, 1, 0, 1, 0, 0, 0, 0, -1))
    path = tmp_path / name
    sitk.WriteImage(img, str(path))
    return str(path), img


def test_save_nifti_nrrd_png_with_the_source_geometry(window, tmp_path, messages):
    src, img = _volume(tmp_path)
    assert window.open_path(src)
    click(window, 25, 20)
    shown = window.session.mask.copy()
    assert shown[window.index].any()
    for name in ("out.nii.gz", "out.nrrd"):
        assert window.save_mask_to(str(tmp_path / name))
        out = sitk.ReadImage(str(tmp_path / name))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(out), shown)
        np.testing.assert_allclose(out.GetSpacing(), img.GetSpacing())
        np.testing.assert_allclose(out.GetOrigin(), img.GetOrigin())
        np.testing.assert_allclose(out.GetDirection(), img.GetDirection())
    assert window.save_mask_to(str(tmp_path / "slice.png"))  # a PNG holds the current slice
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "slice.png")) > 0, shown[window.index] > 0)
    assert not window.session.dirty and not messages["critical"]
    assert not window.save_mask_to(str(tmp_path / "out.nrrd"))  # never over an existing file unasked
    assert "already exists" in messages["critical"][-1][1]


def test_dicom_files_ultrasound_cine_and_seg(window, tmp_path, messages):
    pydicom_data = pytest.importorskip("pydicom.data")
    assert window.open_path(pydicom_data.get_testdata_file("examples_ybr_color.dcm"))  # 30-frame US cine
    assert window.slider.maximum() == 29 and window.volume.is_rgb and window.index == 0
    window.slider.setValue(12)
    click(window, 160, 120)
    assert window.session.touched_slices() == [12]
    assert window.open_path(pydicom_data.get_testdata_file("emri_small.dcm"))  # 10-frame MR
    assert window.slider.maximum() == 9
    assert window.open_path(pydicom_data.get_testdata_file("US1_UNCR.dcm"))  # colour ultrasound
    assert window.volume.is_rgb and window.session.mask.shape == (1, 480, 640)
    assert window.open_path(pydicom_data.get_testdata_file("CT_small.dcm"))
    click(window, 64, 64)
    pytest.importorskip("highdicom")
    assert window.save_mask_to(str(tmp_path / "seg.dcm")), messages["critical"]
    import pydicom

    assert pydicom.dcmread(tmp_path / "seg.dcm").Modality == "SEG"


def _series(folder, n, desc):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID, ds.SeriesDescription, ds.InstanceNumber = uid, desc, k + 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5.0 * k]
        ds.save_as(folder / f"{desc}_{k}.dcm")
    return uid


def test_dicom_folder_with_two_series_asks_which(window, tmp_path, monkeypatch, messages):
    from PyQt5.QtWidgets import QInputDialog

    _series(tmp_path / "study", 2, "first")
    _series(tmp_path / "study", 3, "second")
    offered = []

    def pick(parent, title, label, items, *a, **k):
        offered.extend(items)
        return next(i for i in items if "second" in i), True

    monkeypatch.setattr(QInputDialog, "getItem", staticmethod(pick))
    assert window.open_path(str(tmp_path / "study"))
    assert len(offered) == 2 and window.volume.num_slices(0) == 3 and window.slider.maximum() == 2
    assert not messages["critical"]


def test_drag_and_drop_opens_the_file(window, tmp_path, disk_image):
    path = tmp_path / "dropped.jpg"
    Image.fromarray(disk_image[0]).save(path)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    enter = QDragEnterEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(window, QDropEvent(QPoint(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier))
    assert window.source == str(path) and window.volume.shape_zyx == (1, 96, 128)


def test_bad_input_shows_a_message_box_and_keeps_the_work(window, tmp_path, disk_image, messages):
    good = tmp_path / "good.png"
    Image.fromarray(disk_image[0]).save(good)
    window.open_path(str(good))
    click(window, 70, 40)
    kept = window.session.mask.copy()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "notes.xyz").write_text("hello")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    for bad in ("broken.png", "notes.xyz", "empty.nii.gz", "missing.nrrd"):
        assert not window.open_path(str(tmp_path / bad))
    assert len(messages["critical"]) == 4 and not messages["question"]
    assert "unsupported" in messages["critical"][1][1] and "does not exist" in messages["critical"][3][1]
    np.testing.assert_array_equal(window.session.mask, kept)
    assert window.source == str(good)


def test_autosave_and_recovery_after_a_crash(qapp, tmp_path, disk_image, tiny_model, messages):
    src = tmp_path / "case.png"
    Image.fromarray(disk_image[0]).save(src)
    w = make_window(tiny_model)
    w.open_path(str(src))
    click(w, 70, 40)
    click(w, 5, 5, Qt.RightButton)
    assert w.autosave_timer.isActive()  # an edit schedules the autosave
    w.autosave_timer.setInterval(1)
    w.autosave_timer.start()
    for _ in range(500):  # the timer fires, the write runs in the autosave thread
        if (tmp_path / "case.png.kdsam-autosave" / "state.json").exists():
            break
        QTest.qWait(10)
    w.autosave.wait()
    edited, prompts = w.session.mask.copy(), dict(w.session.prompts)
    w.worker.stop()  # the crash: no closeEvent, nothing cleaned up
    w.deleteLater()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.png", "case.png.kdsam-autosave"]

    messages["answers"][:] = [QMessageBox.Yes]  # recover? yes
    w2 = make_window(tiny_model)
    w2.open_path(str(src))
    assert "Recover" in messages["question"][-1][0]
    np.testing.assert_array_equal(w2.session.mask, edited)
    assert w2.session.prompts == prompts and w2.session.dirty
    messages["answers"][:] = [QMessageBox.Cancel]  # quit with unsaved edits: cancel keeps the window
    assert not w2.close() and w2.isVisible()
    messages["answers"][:] = [QMessageBox.Discard]
    assert w2.close()
    assert not (tmp_path / "case.png.kdsam-autosave").exists()  # discarded on purpose: gone
    assert (tmp_path / "case.png").exists()


def test_missing_default_weights_are_explained(qapp, tmp_path, messages, monkeypatch):
    monkeypatch.setenv("KDSAM_WEIGHTS_DIR", str(tmp_path))
    w = make_window(spec=ModelSpec(device="cpu"))
    assert w.worker.predictor is None
    _title, text = messages["critical"][-1]
    assert "No trained KD SAM weights" in text and "Load checkpoint" in text
    w.close()


def test_main_opens_the_image_given_on_the_command_line(qapp, tmp_path, disk_image, messages, monkeypatch):
    import sys

    from kdsam_annotate.app import main
    from kdsam_annotate.window import MainWindow
    from PyQt5.QtCore import QTimer

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # main installs its own; restored after
    path = tmp_path / "cli.png"
    Image.fromarray(disk_image[0]).save(path)
    QTimer.singleShot(200, qapp.quit)
    assert main([str(path), "--no-model"]) == 0
    wins = [w for w in qapp.topLevelWidgets() if isinstance(w, MainWindow) and w.source == str(path)]
    assert len(wins) == 1 and wins[0].device_label.text() == "no model"
    assert wins[0].close() and not messages["critical"]


def test_command_line():
    a = build_parser().parse_args(["scan.nii.gz", "--model", "lite_medsam", "--device", "cpu", "--threads", "2"])
    assert (a.image, a.model, a.device, a.threads, a.backend) == ("scan.nii.gz", "lite_medsam", "cpu", 2, "torch")


def test_model_choice_from_the_checkpoint_name():
    from kdsam_annotate.worker import build_predictor, guess_model

    from kdsam_core.errors import KDSAMError

    assert guess_model("kdsam_default.safetensors") is None  # read from the file's metadata
    assert guess_model("/w/lite_medsam.pth") == "lite_medsam"
    assert guess_model("sam_vit_b_01ec64.pth") == "sam_vit_b"
    with pytest.raises(KDSAMError, match="needs its weights"):
        build_predictor(ModelSpec(name="sam_vit_b"))
    with pytest.raises(KDSAMError, match="backend"):
        build_predictor(ModelSpec(name="kdsam_tiny", backend="tensorrt"))

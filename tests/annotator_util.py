"""Helpers of the annotator tests: an offscreen window with the tiny model, message capture, clicks."""

from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np
import pytest
from PyQt5.QtCore import QEvent, QPointF, Qt
from PyQt5.QtGui import QImage, QMouseEvent
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication, QMessageBox

from kdsam_core.predictor import Prediction


@pytest.fixture(scope="session")
def qapp():
    return QApplication.instance() or QApplication([])


@pytest.fixture()
def messages(monkeypatch):
    """Captures message boxes instead of showing them; ``answers`` feeds QMessageBox.question."""
    box = {"critical": [], "question": [], "answers": []}

    def critical(parent, title, text, *a, **k):
        box["critical"].append((title, text))
        return QMessageBox.Ok

    def question(parent, title, text, *a, **k):
        box["question"].append((title, text))
        return box["answers"].pop(0) if box["answers"] else QMessageBox.Discard

    monkeypatch.setattr(QMessageBox, "critical", staticmethod(critical))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(question))
    return box


def make_window(model=None, spec=None):
    from kdsam_annotate.window import MainWindow
    from kdsam_annotate.worker import ModelSpec

    w = MainWindow(spec or ModelSpec(model=model, device="cpu"))
    w.resize(900, 700)
    w.show()
    QTest.qWaitForWindowExposed(w)
    assert w.worker.wait_idle(60)
    return w


@pytest.fixture()
def window(qapp, messages, tiny_model):
    w = make_window(tiny_model)
    yield w
    messages["answers"][:] = []
    w.close()  # question answered Discard
    w.deleteLater()


class Spy:
    """Wraps predictor.predict (called in the model thread) and records its arguments and answers."""

    def __init__(self, predictor) -> None:
        self.calls, self.results = [], []
        self._orig = predictor.predict
        predictor.predict = self

    def __call__(self, **kw):
        pred = self._orig(**kw)
        self.calls.append(kw)
        self.results.append(pred)
        return pred


def click(w, x: int, y: int, button=Qt.LeftButton) -> None:
    """Click image pixel (x, y) on the canvas and wait for the model thread."""
    QTest.mouseClick(w.canvas.viewport(), button, Qt.NoModifier, w.canvas.pixel_to_view(x, y))
    assert w.worker.wait_idle(60)


def drag(w, x0: int, y0: int, x1: int, y1: int) -> None:
    vp, a, b = w.canvas.viewport(), w.canvas.pixel_to_view(x0, y0), w.canvas.pixel_to_view(x1, y1)
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, a)
    QApplication.sendEvent(vp, QMouseEvent(QEvent.MouseMove, QPointF((a + b) / 2), Qt.NoButton, Qt.LeftButton,
                                           Qt.NoModifier))  # the rubber band follows
    assert w.canvas._rubber.isVisible()
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, b)
    assert w.worker.wait_idle(60)


def key(w, sequence: str) -> None:
    """Press a shortcut the way a user would (through the window's QAction shortcuts)."""
    from PyQt5.QtGui import QKeySequence

    w.activateWindow()
    QTest.qWaitForWindowActive(w, 1000)
    seq = QKeySequence(sequence)
    code = seq[0]
    QTest.keyClick(w.canvas, Qt.Key(code & ~int(Qt.KeyboardModifierMask)),
                   Qt.KeyboardModifiers(code & int(Qt.KeyboardModifierMask)))
    assert w.worker.wait_idle(60)


def wait_encoded(w, timeout_s: float = 60.0) -> None:
    """Wait for the shown slice's background encode (an uncounted prefetch, which wait_idle does
    not wait for) and deliver its "Slice encoded" status message."""
    end = time.monotonic() + timeout_s
    while not w.worker.predictor.has_embedding(w.slice_key(w.index)):
        assert time.monotonic() < end, "the shown slice was never encoded"
        QApplication.processEvents()
        time.sleep(0.005)
    QTest.qWait(100)


def overlay_mask(w) -> np.ndarray:
    """Pixels the canvas overlay paints (alpha > 0), (H, W) bool."""
    img = w.canvas._overlay.pixmap().toImage().convertToFormat(QImage.Format_RGBA8888)
    h, wd = img.height(), img.width()
    ptr = img.constBits()
    ptr.setsize(img.byteCount())
    a = np.frombuffer(ptr, np.uint8).reshape(h, img.bytesPerLine() // 4, 4)[:, :wd]
    return a[..., 3] > 0


class OraclePredictor:
    """A stand-in predictor answering every prompt with a known mask per slice (propagation tests)."""

    device = "cpu"
    last_decode_seconds = last_encode_seconds = 0.001

    def __init__(self, gt: np.ndarray, on_predict=None, axis: int = 0) -> None:
        self.gt, self.k, self.on_predict, self.keys, self.axis = gt, None, on_predict, set(), axis

    def has_embedding(self, key) -> bool:
        return key in self.keys

    def set_image(self, image, key=None) -> bool:
        self.keys.add(key)
        self.k = key[1]
        return True

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True, **_):
        if self.on_predict is not None:
            self.on_predict(self.k)
        m = np.take(self.gt, self.k, axis=self.axis)
        return Prediction(masks=m[None].copy(), scores=np.ones(1, np.float32),
                          low_res_logits=np.zeros((1, 4, 4), np.float32))


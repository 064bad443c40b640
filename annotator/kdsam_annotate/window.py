"""The main window: layout, menus and shortcuts, the model, the slice slider, window/level,
zoom, labels list and the status bar.

Files (open, save, autosave, quit) live in :mod:`kdsam_annotate.files`, the click-to-mask
workflow in :mod:`kdsam_annotate.annotate`; the model runs in the thread of
:mod:`kdsam_annotate.worker`; no model code is here.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QKeySequence, QPixmap
from PyQt5.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QShortcut,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from .actions import help_dialog, make_actions
from .annotate import AnnotateMixin
from .autosave import Autosave
from .canvas import SliceCanvas
from .display import AXIS_NAMES, can_change_axis, default_window, display_rgb, model_slice, pixel_aspect, window_range
from .files import FilesMixin
from .session import Session
from .worker import BACKENDS, ModelSpec, ModelThread, guess_model

log = logging.getLogger(__name__)

AUTOSAVE_DELAY_MS = 1500


class MainWindow(FilesMixin, AnnotateMixin, QMainWindow):
    autosaved = pyqtSignal(str, str)  # error ('' if none), folder; emitted from the autosave thread

    def __init__(self, spec: ModelSpec | None = None) -> None:
        super().__init__()
        self.volume = None
        self.source: str | None = None
        self.session: Session | None = None
        self.autosave: Autosave | None = None
        self.vol_token = 0
        self.index = 0
        self.level, self.width = 0.0, 1.0
        self.overlay_visible = True
        self.last_latency_ms: float | None = None
        self.progress_dialog = None
        self._propagating = 0  # the vol_token of the image being propagated, 0 when none
        self._propagating_axis = 0
        self._pending: dict = {}
        self._pending_prompts: dict = {}
        self._help = None
        self.spec = spec or ModelSpec()
        self._build()
        self.autosaved.connect(self.on_autosaved)
        self.worker = ModelThread(self)
        sig = self.worker.signals
        sig.loaded.connect(self.on_loaded)
        sig.busy.connect(self.on_busy)
        sig.decoded.connect(self.on_decoded)
        sig.encoded.connect(self.on_encoded)  # bound methods only: they disconnect when the window goes
        sig.failed.connect(self.on_failed)
        sig.progress.connect(self.on_progress)
        sig.propagated.connect(self.on_propagated)
        self.update_title()
        if spec is not None:
            self.load_model(spec)

    # ------------------------------------------------------------ layout
    def _build(self) -> None:
        self.canvas = SliceCanvas()
        self.canvas.setAcceptDrops(False)
        self.canvas.viewport().setAcceptDrops(False)
        self.canvas.point_clicked.connect(self.on_point)
        self.canvas.box_drawn.connect(self.on_box)
        self.canvas.slice_step.connect(lambda step: self.show_slice(self.index + step))
        self.canvas.window_drag.connect(self.on_window_drag)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setObjectName("slice_slider")
        self.slider.valueChanged.connect(self.show_slice)
        self.slice_label = QLabel("no image")
        row = QHBoxLayout()
        row.addWidget(QLabel("Slice"))
        row.addWidget(self.slider, 1)
        row.addWidget(self.slice_label)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.addWidget(self.canvas, 1)
        lay.addLayout(row)
        self.setCentralWidget(central)
        self.actions_by_name = make_actions(self)
        for n in range(1, 10):
            QShortcut(QKeySequence(str(n)), self, activated=lambda v=n: self.select_label(v))
        bar = self.addToolBar("Display and labels")
        bar.setObjectName("toolbar")
        self.level_box, self.width_box = QDoubleSpinBox(), QDoubleSpinBox()
        for box, name in ((self.level_box, "Level"), (self.width_box, "Width")):
            box.setDecimals(1)
            box.setRange(-1e6, 1e6)
            box.setKeyboardTracking(False)
            box.valueChanged.connect(self._on_window_boxes)
            bar.addWidget(QLabel(f" {name} "))
            bar.addWidget(box)
        bar.addSeparator()
        bar.addWidget(QLabel(" Slice along "))
        self.axis_combo = QComboBox()
        self.axis_combo.setObjectName("axis_combo")
        for a, name in enumerate(AXIS_NAMES):
            self.axis_combo.addItem(f"{name} (axis {a})", a)
        self.axis_combo.setEnabled(False)
        self.axis_combo.activated.connect(lambda i: self.set_axis(self.axis_combo.itemData(i)))
        bar.addWidget(self.axis_combo)
        bar.addSeparator()
        bar.addWidget(QLabel(" Label "))
        self.label_combo = QComboBox()
        self.label_combo.setSizeAdjustPolicy(QComboBox.AdjustToContents)
        self.label_combo.activated.connect(lambda i: self.select_label(self.label_combo.itemData(i)))
        bar.addWidget(self.label_combo)
        bar.addAction(self.actions_by_name["new_label"])
        bar.addAction(self.actions_by_name["propagate"])
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setMaximumWidth(120)
        self.busy_bar.hide()
        self.busy_label = QLabel("")
        self.latency_label = QLabel("")
        self.device_label = QLabel("no model")
        for w in (self.busy_label, self.busy_bar, self.latency_label, self.device_label):
            self.statusBar().addPermanentWidget(w)
        self.autosave_timer = QTimer(self)
        self.autosave_timer.setSingleShot(True)
        self.autosave_timer.setInterval(AUTOSAVE_DELAY_MS)
        self.autosave_timer.timeout.connect(self.autosave_now)
        self.setAcceptDrops(True)
        self.resize(1100, 800)

    # ------------------------------------------------------------ model
    def load_model(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.device_label.setText(f"loading {spec.describe()}…")
        self.worker.load(spec)

    def on_loaded(self, description: str, device: str) -> None:
        self.device_label.setText(f"{description} · {device}")
        self.statusBar().showMessage(f"Model {description} ready on {device}", 4000)
        if self.volume is not None:
            self.show_slice(self.index)

    def on_encoded(self, _key, seconds: float) -> None:
        self.statusBar().showMessage(f"Slice encoded in {seconds:.2f} s", 3000)

    def on_busy(self, text: str) -> None:
        self.busy_label.setText(text)
        self.busy_bar.setVisible(bool(text))

    def load_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load a model checkpoint", "",
                                              "Checkpoints (*.safetensors *.pth *.pt);;All files (*)")
        if path:
            self.load_model(ModelSpec(name=guess_model(path), checkpoint=path, device=self.spec.device,
                                      threads=self.spec.threads, backend=self.spec.backend))

    def device_dialog(self) -> None:
        """Reload the current model on another device / backend (auto, cpu, cuda, mps)."""
        choices = [f"{dev} · {backend}" for backend in BACKENDS for dev in ("auto", "cpu", "cuda", "mps")]
        current = f"{self.spec.device} · {self.spec.backend}"
        item, ok = QInputDialog.getItem(self, "Device and backend", "Run the model on:", choices,
                                        choices.index(current) if current in choices else 0, False)
        if ok:
            device, backend = item.split(" · ")
            self.load_model(dataclasses.replace(self.spec, device=device, backend=backend))

    # ------------------------------------------------------------ slices and window/level
    @property
    def axis(self) -> int:
        """The axis the view slices along (0: z, 1: y, 2: x of the volume array)."""
        return self.session.axis if self.session is not None else 0

    def set_axis(self, axis: int) -> None:
        """Slice along another axis of a 3D volume, starting at its middle slice."""
        if self.volume is None or axis == self.axis:
            return
        if not can_change_axis(self.volume):
            self.statusBar().showMessage("This image is 2D: it has one slicing axis", 4000)
            return
        self.session.set_axis(axis)
        self.axis_combo.setCurrentIndex(self.axis_combo.findData(axis))
        n = self.session.num_slices
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.blockSignals(False)
        self.canvas.set_aspect(pixel_aspect(self.volume, axis))
        self.show_slice(n // 2)
        self.canvas.fit()

    def next_axis(self) -> None:
        self.set_axis((self.axis + 1) % 3)

    def show_slice(self, index: int) -> None:
        if self.volume is None:
            return
        n = self.session.num_slices
        index = min(max(int(index), 0), n - 1)
        self.index = index
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.slice_label.setText(f"{AXIS_NAMES[self.axis]} {index + 1} / {n}")
        self._redraw_image()
        self.refresh_overlay()
        vol, axis = self.volume, self.axis
        self.worker.encode(self.slice_key(index), lambda: model_slice(vol, index, axis))

    def _redraw_image(self) -> None:
        if self.volume is not None:
            self.canvas.set_image(display_rgb(self.volume.slice(self.index, self.axis), self.level, self.width))

    def next_slice(self, step: int = 1) -> None:
        self.show_slice(self.index + step)

    def previous_slice(self) -> None:
        self.show_slice(self.index - 1)

    def next_slice_10(self) -> None:
        self.show_slice(self.index + 10)

    def previous_slice_10(self) -> None:
        self.show_slice(self.index - 10)

    def set_window(self, level: float, width: float) -> None:
        self.level, self.width = float(level), max(float(width), 1e-3)
        for box, v in ((self.level_box, self.level), (self.width_box, self.width)):
            box.blockSignals(True)
            box.setValue(v)
            box.blockSignals(False)
        self._redraw_image()

    def _on_window_boxes(self) -> None:
        self.set_window(self.level_box.value(), self.width_box.value())

    def on_window_drag(self, dx: int, dy: int) -> None:
        if self.volume is not None:
            lo, hi = window_range(self.volume)
            step = max(hi - lo, 1e-3) / 500
            self.set_window(self.level - dy * step, self.width + dx * step)

    def reset_window(self) -> None:
        if self.volume is not None:
            self.set_window(*default_window(self.volume))

    def zoom_in(self) -> None:
        self.canvas.zoom_by(1.25)

    def zoom_out(self) -> None:
        self.canvas.zoom_by(0.8)

    def fit_view(self) -> None:
        self.canvas.fit()

    def refresh_labels(self) -> None:
        if self.session is None:
            return
        self.label_combo.blockSignals(True)
        self.label_combo.clear()
        for lab in self.session.labels:
            pix = QPixmap(12, 12)
            pix.fill(QColor(*lab.color))
            self.label_combo.addItem(QIcon(pix), f"{lab.value}: {lab.name}", lab.value)
        self.label_combo.setCurrentIndex(self.label_combo.findData(self.session.current_label))
        self.label_combo.blockSignals(False)

    def error(self, title: str, message: str) -> None:
        log.warning("%s: %s", title, message)
        QMessageBox.critical(self, title, message)

    def show_help(self) -> None:
        self._help = help_dialog(self)
        self._help.show()

    def update_title(self) -> None:
        name = Path(self.source).name if self.source else "no image"
        dirty = " *" if self.session is not None and self.session.dirty else ""
        self.setWindowTitle(f"KD SAM annotator: {name}{dirty}")

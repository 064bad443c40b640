"""The main window: menus and shortcuts, opening and saving, the slice slider, window/level,
drag-and-drop, the status bar, autosave and the question on quit.

The click-to-mask workflow lives in :mod:`kdsam_annotate.annotate`; the model runs in the
thread of :mod:`kdsam_annotate.worker`; no model code is here.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path

from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QKeySequence, QPixmap
from PyQt5.QtWidgets import (
    QApplication,
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

from kdsam_core.errors import KDSAMError, SeriesChoiceError
from kdsam_core.io import load_volume, save_mask

from .actions import help_dialog, make_actions
from .annotate import AnnotateMixin
from .autosave import Autosave
from .canvas import SliceCanvas
from .display import default_window, display_rgb, model_slice, window_range
from .session import Session
from .worker import BACKENDS, ModelSpec, ModelThread, guess_model

log = logging.getLogger(__name__)

OPEN_FILTER = ("Images (*.dcm *.dicom *.ima *.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.png *.jpg *.jpeg *.bmp "
               "*.tif *.tiff);;All files (*)")
SAVE_FILTERS = {"NIfTI (*.nii.gz)": ".nii.gz", "NRRD (*.nrrd)": ".nrrd", "PNG, this slice (*.png)": ".png",
                "DICOM SEG (*.dcm)": ".dcm", "MetaImage (*.mha)": ".mha"}
AUTOSAVE_DELAY_MS = 1500
_tokens = itertools.count(1)


class MainWindow(AnnotateMixin, QMainWindow):
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

    # ------------------------------------------------------------ opening
    def open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", self._start_dir(), OPEN_FILTER)
        if path:
            self.open_path(path)

    def open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a DICOM folder", self._start_dir())
        if path:
            self.open_path(path)

    def open_path(self, path: str, series_uid: str | None = None, *, asked: bool = False) -> bool:
        """Open an image file or DICOM folder; errors are shown, never raised.

        The current annotation is kept until the new image has been read; then unsaved edits
        are asked about (unless ``asked``).
        """
        try:
            QApplication.setOverrideCursor(Qt.WaitCursor)
            try:
                volume = load_volume(path, series_uid=series_uid)
            finally:
                QApplication.restoreOverrideCursor()
        except SeriesChoiceError as e:
            items = [f"{desc or 'series'} ({n} files) {uid}" for uid, desc, n in e.series]
            item, ok = QInputDialog.getItem(self, "Several DICOM series", "Open which series?", items, 0, False)
            return ok and self.open_path(path, e.series[items.index(item)][0], asked=asked)
        except KDSAMError as e:
            self.error("Cannot open this image", str(e))
            return False
        except Exception as e:
            log.exception("opening %s failed", path)
            self.error("Cannot open this image", f"{path}: {type(e).__name__}: {e}")
            return False
        if not asked and not self.keep_or_drop_edits():
            return False
        self.set_volume(volume, str(path))
        return True

    def set_volume(self, volume, source: str) -> None:
        if self.autosave is not None:
            if self.session is not None and not self.session.dirty:
                self.autosave.discard()
            self.autosave.close()
        self.volume, self.source, self.index = volume, source, 0
        self.vol_token = next(_tokens)
        self._pending.clear()
        self._pending_prompts.clear()
        self.autosave = Autosave(source, volume)
        self.session = Session(volume.shape_zyx)
        found = self.autosave.find()
        if found is not None:
            answer = QMessageBox.question(
                self, "Recover the autosaved session?",
                f"An autosaved annotation of this image from {found.get('saved_at', '?')} was found in\n"
                f"{self.autosave.dir}\n(the annotator was not closed cleanly).\n\nRecover it?",
                QMessageBox.Yes | QMessageBox.No, QMessageBox.Yes)
            if answer == QMessageBox.Yes:
                try:
                    self.session = self.autosave.read()
                    self.session.revision = 1  # recovered edits are not saved yet
                except Exception as e:  # a damaged autosave must not stop the image from opening
                    log.exception("recovering %s failed", self.autosave.dir)
                    self.error("Could not recover", f"{type(e).__name__}: {e}")
            else:
                self.autosave.discard()
        lo, hi = window_range(volume)
        span = hi - lo
        for box in (self.level_box, self.width_box):
            box.setDecimals(1 if span >= 10 else 4)  # float images in 0..1 need finer steps
            box.setSingleStep(max(span, 1e-3) / 100)
        self.set_window(*default_window(volume))
        n = volume.num_slices(0)
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.blockSignals(False)
        self.canvas.set_image(display_rgb(volume.slice(0, 0), self.level, self.width), fit=True)
        self.show_slice(n // 2 if n > 2 and not volume.is_rgb else 0)
        self.refresh_labels()
        self.update_title()
        self.statusBar().showMessage(f"Opened {source}: {n} slice(s) of {volume.shape_zyx[2]} x "
                                     f"{volume.shape_zyx[1]}", 5000)

    def slice_key(self, index: int | None):
        """Embedding-cache key of a slice (or, with None, the prefix propagation adds indices to)."""
        prefix = (self.vol_token, 0)
        return prefix if index is None else (prefix, index)

    # ------------------------------------------------------------ slices and window/level
    def show_slice(self, index: int) -> None:
        if self.volume is None:
            return
        n = self.volume.num_slices(0)
        index = min(max(int(index), 0), n - 1)
        self.index = index
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.slice_label.setText(f"{index + 1} / {n}")
        self._redraw_image()
        self.refresh_overlay()
        vol = self.volume
        self.worker.encode(self.slice_key(index), lambda: model_slice(vol, index))

    def _redraw_image(self) -> None:
        if self.volume is not None:
            self.canvas.set_image(display_rgb(self.volume.slice(self.index, 0), self.level, self.width))

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

    # ------------------------------------------------------------ saving
    def save_dialog(self) -> bool:
        if self.session is None:
            return False
        src = Path(self.source)
        stem = src.name.split(".")[0] if src.is_file() else src.name
        filt = next(iter(SAVE_FILTERS))
        path, filt = QFileDialog.getSaveFileName(self, "Save the mask", str(src.parent / f"{stem}_mask.nii.gz"),
                                                 ";;".join(SAVE_FILTERS), filt)
        if not path:
            return False
        if not any(path.lower().endswith(s) for s in (".nii", ".nii.gz", ".nrrd", ".png", ".dcm", ".mha", ".mhd")):
            path += SAVE_FILTERS.get(filt, ".nii.gz")
        return self.save_mask_to(path, overwrite=True)  # the dialog asked before replacing a file

    def save_mask_to(self, path: str, *, overwrite: bool = False) -> bool:
        """Write the mask (a PNG of a multi-slice image holds the current slice); errors are shown."""
        mask, ref, note = self.session.mask, self.volume, ""
        if path.lower().endswith(".png") and mask.shape[0] > 1:
            mask, ref, note = mask[self.index], None, f" (slice {self.index + 1})"
        try:
            save_mask(mask, path, reference=ref, overwrite=overwrite)
        except KDSAMError as e:
            self.error("Cannot save the mask", str(e))
            return False
        except Exception as e:
            log.exception("saving %s failed", path)
            self.error("Cannot save the mask", f"{path}: {type(e).__name__}: {e}")
            return False
        self.session.mark_saved()
        self.autosave_timer.stop()
        self.autosave.discard()
        self.update_title()
        self.statusBar().showMessage(f"Saved {path}{note}", 6000)
        return True

    def autosave_now(self) -> None:
        """Write the autosave in the background; the status bar reports how it went."""
        if self.session is None or not self.session.dirty:
            return
        where = str(self.autosave.dir)
        self.autosave.write_async(self.session, lambda f: self.autosaved.emit(
            "" if f.exception() is None else str(f.exception()), where))

    def on_autosaved(self, error: str, where: str) -> None:
        if error:
            log.warning("autosave failed: %s", error)
            self.statusBar().showMessage(f"Autosave failed: {error}", 8000)
        else:
            self.statusBar().showMessage(f"Autosaved to {where}", 2000)

    def keep_or_drop_edits(self) -> bool:
        """Ask what to do with unsaved edits; False means: stay (cancelled)."""
        if self.session is None or not self.session.dirty:
            return True
        answer = QMessageBox.question(self, "Unsaved edits", "The mask has unsaved edits. Save them first?",
                                      QMessageBox.Save | QMessageBox.Discard | QMessageBox.Cancel,
                                      QMessageBox.Save)
        if answer == QMessageBox.Save:
            return self.save_dialog()
        if answer == QMessageBox.Discard:
            self.autosave_timer.stop()
            self.autosave.discard()
            self.session.mark_saved()
            return True
        return False

    def closeEvent(self, event) -> None:
        if not self.keep_or_drop_edits():
            event.ignore()
            return
        if self.autosave is not None and self.session is not None and not self.session.dirty:
            self.autosave.discard()
        self.autosave_timer.stop()
        if self.autosave is not None:
            self.autosave.close()
        self.worker.stop()
        event.accept()

    # ------------------------------------------------------------ drag and drop, messages
    def dragEnterEvent(self, event) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_path(paths[0])

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

    def _start_dir(self) -> str:
        return str(Path(self.source).parent) if self.source else ""

"""Files of the main window: opening (menu, command line, drag-and-drop, DICOM series choice),
saving masks, autosave and recovery, and the question about unsaved edits.

A mixin of :class:`~kdsam_annotate.window.MainWindow`. Reading and writing pixels goes through
``kdsam_core.io``; autosave files through :mod:`kdsam_annotate.autosave`.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QApplication, QFileDialog, QInputDialog, QMessageBox

from kdsam_core.errors import KDSAMError, SeriesChoiceError
from kdsam_core.io import load_volume, save_mask

from .autosave import Autosave
from .display import AXIS_NAMES, can_change_axis, default_window, display_rgb, pixel_aspect, window_range
from .session import Session

log = logging.getLogger(__name__)

OPEN_FILTER = ("Images (*.dcm *.dicom *.ima *.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.png *.jpg *.jpeg *.bmp "
               "*.tif *.tiff);;All files (*)")
SAVE_FILTERS = {"NIfTI (*.nii.gz)": ".nii.gz", "NRRD (*.nrrd)": ".nrrd", "PNG, this slice (*.png)": ".png",
                "DICOM SEG (*.dcm)": ".dcm", "MetaImage (*.mha)": ".mha"}
_tokens = itertools.count(1)


class FilesMixin:
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
        if not can_change_axis(volume):
            self.session.set_axis(0)
        axis = self.session.axis  # 0, or the axis of a recovered session
        self.axis_combo.setCurrentIndex(self.axis_combo.findData(axis))
        self.axis_combo.setEnabled(can_change_axis(volume))
        n = self.session.num_slices
        self.slider.blockSignals(True)
        self.slider.setRange(0, n - 1)
        self.slider.blockSignals(False)
        self.canvas.set_aspect(pixel_aspect(volume, axis))
        self.canvas.set_image(display_rgb(volume.slice(0, axis), self.level, self.width), fit=True)
        self.show_slice(n // 2 if n > 2 and not volume.is_rgb else 0)
        self.refresh_labels()
        self.update_title()
        self.statusBar().showMessage(f"Opened {source}: {n} slice(s) of {volume.shape_zyx[2]} x "
                                     f"{volume.shape_zyx[1]}", 5000)

    def slice_key(self, index: int | None):
        """Embedding-cache key of a slice (or, with None, the prefix propagation adds indices to)."""
        prefix = (self.vol_token, self.axis)
        return prefix if index is None else (prefix, index)

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
        """Write the mask (a PNG of a multi-slice image holds the slice shown); errors are shown."""
        mask, ref, note = self.session.mask, self.volume, ""
        if path.lower().endswith(".png") and mask.shape[0] > 1:
            mask, ref = self.session.slice(self.index), None
            note = f" ({AXIS_NAMES[self.axis]} slice {self.index + 1})"
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

    def _start_dir(self) -> str:
        return str(Path(self.source).parent) if self.source else ""

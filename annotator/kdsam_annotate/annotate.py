"""The click-to-mask workflow of the main window: prompts, candidates, labels, undo, propagation.

A mixin of :class:`~kdsam_annotate.window.MainWindow`: it turns canvas clicks into decode
requests for the model thread and model answers into :class:`~kdsam_annotate.session.Session`
edits, then redraws. All model work happens in the model thread through ``kdsam_core``.
"""

from __future__ import annotations

import logging
import time

from PyQt5.QtCore import Qt
from PyQt5.QtWidgets import QProgressDialog

from .display import model_slice, overlay_rgba
from .session import Prompts

log = logging.getLogger(__name__)


class AnnotateMixin:
    # ------------------------------------------------------------ prompts -> model
    def on_point(self, x: int, y: int, positive: bool, t_click: float) -> None:
        if self._ready_for_prompts():
            self._request(self._base_prompts().with_point(x, y, positive), t_click, "point")

    def on_box(self, x0: int, y0: int, x1: int, y1: int, t_click: float) -> None:
        if self._ready_for_prompts():
            self._request(self._base_prompts().with_box(x0, y0, x1, y1), t_click, "box")

    def _ready_for_prompts(self) -> bool:
        if self.volume is None:
            self.statusBar().showMessage("Open an image first (Ctrl+O)", 4000)
            return False
        if self.worker.predictor is None:
            self.statusBar().showMessage("No model is loaded: Model > Load checkpoint (Ctrl+L)", 6000)
            return False
        return not self._propagating

    def _base_prompts(self) -> Prompts:
        key = (self.axis, self.index, self.session.current_label)
        return self._pending_prompts.get(key) or self.session.prompts_for(self.index)

    def _request(self, prompts: Prompts, t_click: float, what: str) -> None:
        axis, index, label, vol = self.axis, self.index, self.session.current_label, self.volume
        req = self.worker.decode(self.slice_key(index), lambda: model_slice(vol, index, axis), prompts)
        self._pending[req] = (self.vol_token, (axis, index, label), prompts, t_click, what)
        self._pending_prompts[(axis, index, label)] = prompts
        self._draw_prompts()

    def on_decoded(self, request: int, pred, decode_s: float) -> None:
        info = self._pending.pop(request, None)
        if info is None or info[0] != self.vol_token:
            return
        _, key, prompts, t_click, what = info
        if self._pending_prompts.get(key) is prompts:
            del self._pending_prompts[key]
        axis, index, label = key  # the slice clicked on, whatever is shown now
        self.session.apply_prediction(index, label, prompts, pred.masks, pred.scores, name=what, axis=axis)
        self.edited()
        latency = (time.perf_counter() - t_click) * 1000
        self.latency_label.setText(f"click→mask {latency:.0f} ms (decoder {decode_s * 1000:.0f} ms)")
        self.last_latency_ms = latency

    def on_failed(self, request: int, what: str, message: str) -> None:
        info = self._pending.pop(request, None)
        if info is not None:
            self._pending_prompts.pop(info[1], None)
            self._draw_prompts()
        if what == "propagate":
            self._end_propagation()
        if what == "load":
            self.device_label.setText("no model")
            message += "\n\nPick a checkpoint with Model > Load checkpoint (Ctrl+L)."
        self.error(f"Could not {what}", message)

    # ------------------------------------------------------------ candidates, undo, labels
    def next_candidate(self) -> None:
        if self.session is None:
            return
        n = self.session.cycle_candidate(self.index)
        if n is None:
            self.statusBar().showMessage("No other candidate mask for this slice and label", 3000)
            return
        total = len(self.session.candidates_for(self.index).masks)
        self.statusBar().showMessage(f"Candidate {n + 1} of {total}", 3000)
        self.edited()

    def undo(self) -> None:
        if self.session is not None and (name := self.session.undo()):
            self._pending_prompts.clear()
            self.statusBar().showMessage(f"Undid {name}", 3000)
            self.edited()

    def redo(self) -> None:
        if self.session is not None and (name := self.session.redo()):
            self._pending_prompts.clear()
            self.statusBar().showMessage(f"Redid {name}", 3000)
            self.edited()

    def clear_slice(self) -> None:
        if self.session is not None and self.session.clear(self.index):
            self._pending_prompts.pop((self.axis, self.index, self.session.current_label), None)
            self.edited()

    def new_label(self) -> None:
        if self.session is not None:
            lab = self.session.add_label()
            self.statusBar().showMessage(f"New label {lab.value}", 3000)
            self.edited()

    def select_label(self, value: int) -> None:
        if self.session is not None and value in [lab.value for lab in self.session.labels]:
            self.session.select_label(value)
            self.refresh_labels()
            self._draw_prompts()

    def next_label(self, step: int = 1) -> None:
        if self.session is not None:
            values = [lab.value for lab in self.session.labels]
            i = values.index(self.session.current_label)
            self.select_label(values[(i + step) % len(values)])

    def previous_label(self) -> None:
        self.next_label(-1)

    # ------------------------------------------------------------ propagation
    def propagate(self) -> None:
        if not self._ready_for_prompts():
            return
        if self.session.num_slices < 2:
            self.statusBar().showMessage("This image has one slice: nothing to propagate to", 4000)
            return
        label = self.session.current_label
        start = self.session.slice(self.index) == label
        if not start.any():
            self.error("Nothing to propagate", f"Label {label} is empty on this slice: segment it here first.")
            return
        vol, axis = self.volume, self.axis
        self._propagating = self.vol_token  # the image the answer belongs to
        self._propagating_axis = axis
        self.progress_dialog = dlg = QProgressDialog("Propagating through slices…", "Cancel", 0, 0, self)
        dlg.setWindowModality(Qt.WindowModal)
        dlg.setAutoClose(False)
        dlg.setAutoReset(False)
        dlg.setMinimumDuration(0)
        dlg.canceled.connect(self.cancel)
        dlg.show()
        self.worker.propagate(lambda k: model_slice(vol, k, axis), vol.num_slices(axis), self.index, start,
                              self.slice_key(None), label)

    def on_progress(self, done: int, total: int) -> None:
        if self.progress_dialog is not None:
            self.progress_dialog.setMaximum(max(total, 1))
            self.progress_dialog.setValue(done)

    def cancel(self) -> None:
        if self._propagating:
            self.worker.cancel()
            self.statusBar().showMessage("Cancelling…", 2000)

    def on_propagated(self, label: int, masks: dict, cancelled: bool) -> None:
        token = self._propagating
        self._end_propagation()
        if token != self.vol_token:
            return  # another image was opened meanwhile
        n = self.session.apply_masks(label, masks, axis=self._propagating_axis)
        self.statusBar().showMessage(f"Propagated label {label} to {n} slices" + (" (cancelled)" if cancelled else ""),
                                     6000)
        self.edited()

    def _end_propagation(self) -> None:
        self._propagating = 0
        if self.progress_dialog is not None:
            self.progress_dialog.canceled.disconnect(self.cancel)
            self.progress_dialog.close()
            self.progress_dialog.deleteLater()
            self.progress_dialog = None
            self.activateWindow()  # keyboard shortcuts go back to the window

    # ------------------------------------------------------------ drawing
    def edited(self) -> None:
        """Redraw after a session change and schedule the autosave."""
        self.refresh_overlay()
        self.refresh_labels()
        self.update_title()
        if self.session is not None and self.session.dirty:
            self.autosave_timer.start()

    def refresh_overlay(self) -> None:
        if self.session is None:
            return
        if self.overlay_visible:
            colors = {lab.value: lab.color for lab in self.session.labels}
            self.canvas.set_overlay(overlay_rgba(self.session.slice(self.index), colors))
        else:
            self.canvas.set_overlay(None)
        self._draw_prompts()

    def _draw_prompts(self) -> None:
        if self.session is None:
            return
        p = self._base_prompts()
        self.canvas.set_prompts(p.points, p.box, self.session.label(self.session.current_label).color)

    def toggle_overlay(self) -> None:
        self.overlay_visible = not self.overlay_visible
        self.refresh_overlay()

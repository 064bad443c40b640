"""The model thread: loading, encoding, decoding and propagation run off the GUI thread.

All predictor calls happen in one ``QThread``, in the order they were asked for, so the
predictor is never used by two threads. The GUI talks to :class:`ModelThread`; it sends
requests as queued signals and gets results back as signals in the GUI thread. Encoding
requests for slices the user has already scrolled past are skipped.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PyQt5.QtCore import QObject, QThread, pyqtSignal, pyqtSlot

from kdsam_core.checkpoint import default_checkpoint
from kdsam_core.errors import KDSAMError

# torch is imported here, in the GUI thread: importing it first in a QThread can crash
from kdsam_core.model import build_model, load_model
from kdsam_core.predictor import KDSAMPredictor
from kdsam_core.propagate import propagate_mask

log = logging.getLogger(__name__)



def available_backends() -> tuple[str, ...]:
    """'torch', and the fast backends of ``kdsam_core.fast`` (ONNX Runtime) where that module exists."""
    try:
        from kdsam_core.fast import BACKENDS as fast_backends
    except ImportError:
        return ("torch",)
    return tuple(dict.fromkeys(("torch", *fast_backends)))


BACKENDS = available_backends()


@dataclass
class ModelSpec:
    """Which model to load: a built model, a checkpoint, a registry name, or the default weights."""

    name: str | None = None  # registry name; None: from the checkpoint, or 'kdsam' default weights
    checkpoint: str | None = None
    device: str = "auto"
    threads: int | None = None
    backend: str = "torch"
    model: object = None  # an already built PromptableSAM (tests)

    def describe(self) -> str:
        if self.model is not None:
            return getattr(self.model, "name", "model")
        if self.checkpoint:
            return f"{self.name or 'kdsam'} ({Path(self.checkpoint).name})"
        return self.name or "kdsam (default weights)"


def build_predictor(spec: ModelSpec):
    """A KDSAMPredictor for ``spec``; raises KDSAMError for missing or unusable weights."""
    if spec.backend not in BACKENDS:
        raise KDSAMError(f"backend {spec.backend!r} is not available; choose one of {', '.join(BACKENDS)}")
    if spec.model is not None:
        model = spec.model
    elif spec.checkpoint and spec.name is None:
        name = guess_model(spec.checkpoint)
        model = load_model(spec.checkpoint) if name is None else build_model(name, spec.checkpoint)
    elif spec.name and spec.name.startswith("sam_") and not spec.checkpoint:
        raise KDSAMError(f"{spec.name} needs its weights: pass --checkpoint with Meta's .pth file")
    elif spec.checkpoint or spec.name not in (None, "kdsam"):
        model = build_model(spec.name or "kdsam", spec.checkpoint)
    else:
        model = load_model(default_checkpoint())  # NoWeightsError names where it looked
    extra = {} if spec.backend == "torch" else {"backend": spec.backend}  # CPU only for ONNX Runtime
    try:
        return KDSAMPredictor(model, device=spec.device, threads=spec.threads, **extra)
    except KDSAMError:
        raise
    except ValueError as e:  # a device that is not there
        raise KDSAMError(str(e)) from None


def guess_model(path: str) -> str | None:
    """The registry name a checkpoint file most likely belongs to (None: read it from the file)."""
    name = Path(path).name.lower()
    if name.endswith(".safetensors"):
        return None
    if "lite" in name or "medsam" in name:
        return "lite_medsam"
    for kind in ("vit_h", "vit_l", "vit_b"):
        if kind in name:
            return f"sam_{kind}"
    return "kdsam"


class _Worker(QObject):
    """Lives in the model thread; every slot runs there."""

    loaded = pyqtSignal(str, str)  # model description, device
    busy = pyqtSignal(str)  # what the thread is doing, '' when idle
    encoded = pyqtSignal(object, float)  # key, encoder seconds
    decoded = pyqtSignal(int, object, float)  # request id, Prediction, decoder seconds
    progress = pyqtSignal(int, int)
    propagated = pyqtSignal(int, object, bool)  # label, {index: mask}, cancelled
    failed = pyqtSignal(int, str, str)  # request id, what failed, message

    def __init__(self) -> None:
        super().__init__()
        self.predictor = None
        self.wanted_key = None  # the slice the user looks at now; older encode requests are skipped
        self.stop_event = threading.Event()

    @pyqtSlot(object)
    def load(self, spec: ModelSpec) -> None:
        self.busy.emit(f"Loading {spec.describe()}…")
        try:
            self.predictor = build_predictor(spec)
        except KDSAMError as e:
            self.failed.emit(-1, "load", str(e))
        except Exception as e:
            log.exception("loading the model failed")
            self.failed.emit(-1, "load", f"{type(e).__name__}: {e}")
        else:
            self.loaded.emit(spec.describe(), str(self.predictor.device))
        self.busy.emit("")

    @pyqtSlot(object, object)
    def encode(self, key, image) -> None:
        if self.predictor is None or key != self.wanted_key or self.predictor.has_embedding(key):
            return
        self._set_image(key, image, -1)

    @pyqtSlot(int, object, object, object)
    def decode(self, request: int, key, image: np.ndarray | Callable[[], np.ndarray], prompts) -> None:
        if self.predictor is None:
            self.failed.emit(request, "segment", "no model is loaded: use Model > Load checkpoint (Ctrl+L)")
            return
        if not self._set_image(key, image, request):
            return
        try:
            pred = self.predictor.predict(**prompts.arrays(), multimask_output=prompts.multimask())
        except KDSAMError as e:
            self.failed.emit(request, "segment", str(e))
            return
        self.decoded.emit(request, pred, float(self.predictor.last_decode_seconds or 0.0))

    @pyqtSlot(object)
    def propagate(self, job: dict) -> None:
        if self.predictor is None:
            self.failed.emit(-1, "propagate", "no model is loaded: use Model > Load checkpoint (Ctrl+L)")
            return
        self.stop_event.clear()
        self.busy.emit("Propagating…")
        try:
            masks = propagate_mask(self.predictor, job["get_slice"], job["num_slices"], job["start_index"],
                                   job["start_mask"], key_prefix=job["key_prefix"],
                                   progress=lambda done, total: self.progress.emit(done, total),
                                   should_stop=self.stop_event.is_set)
        except KDSAMError as e:
            self.failed.emit(-1, "propagate", str(e))
            masks = None
        except Exception as e:
            log.exception("propagation failed")
            self.failed.emit(-1, "propagate", f"{type(e).__name__}: {e}")
            masks = None
        self.busy.emit("")
        if masks is not None:
            self.propagated.emit(job["label"], masks, self.stop_event.is_set())

    def _set_image(self, key, image: np.ndarray | Callable[[], np.ndarray], request: int) -> bool:
        cached = self.predictor.has_embedding(key)
        if not cached:
            self.busy.emit("Encoding slice…")
        try:
            self.predictor.set_image(image() if callable(image) else image, key=key)
        except KDSAMError as e:
            self.failed.emit(request, "encode", str(e))
            return False
        except Exception as e:  # noqa: BLE001
            log.error("encoding failed:\n%s", traceback.format_exc())
            self.failed.emit(request, "encode", f"{type(e).__name__}: {e}")
            return False
        finally:
            if not cached:
                self.busy.emit("")
        if not cached:
            self.encoded.emit(key, float(self.predictor.last_encode_seconds or 0.0))
        return True


class ModelThread(QObject):
    """GUI-side handle of the model thread. Results arrive as this object's signals."""

    _load = pyqtSignal(object)
    _encode = pyqtSignal(object, object)
    _decode = pyqtSignal(int, object, object, object)
    _propagate = pyqtSignal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("kdsam-model")
        self.worker = _Worker()
        self.worker.moveToThread(self._thread)
        self._load.connect(self.worker.load)
        self._encode.connect(self.worker.encode)
        self._decode.connect(self.worker.decode)
        self._propagate.connect(self.worker.propagate)
        for sig in (self.worker.loaded, self.worker.decoded, self.worker.propagated):
            sig.connect(self._done)
        self.worker.failed.connect(self._failed)
        self.pending = 0  # requests not answered yet (tests wait for 0)
        self._next_request = 0
        self._thread.start()

    # signals of the worker, re-exported
    @property
    def signals(self) -> _Worker:
        return self.worker

    @property
    def predictor(self):
        return self.worker.predictor

    def load(self, spec: ModelSpec) -> None:
        self.pending += 1
        self._load.emit(spec)

    def encode(self, key, image: np.ndarray | Callable[[], np.ndarray]) -> None:
        self.worker.wanted_key = key
        if self.worker.predictor is not None and not self.worker.predictor.has_embedding(key):
            self._encode.emit(key, image)

    def decode(self, key, image: np.ndarray | Callable[[], np.ndarray], prompts) -> int:
        self._next_request += 1
        self.pending += 1
        self.worker.wanted_key = key
        self._decode.emit(self._next_request, key, image, prompts)
        return self._next_request

    def propagate(self, get_slice: Callable[[int], np.ndarray], num_slices: int, start_index: int,
                  start_mask: np.ndarray, key_prefix, label: int) -> None:
        self.pending += 1
        self._propagate.emit({"get_slice": get_slice, "num_slices": num_slices, "start_index": start_index,
                              "start_mask": start_mask, "key_prefix": key_prefix, "label": label})

    def cancel(self) -> None:
        self.worker.stop_event.set()

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Process events until every request is answered (for tests and shutdown)."""
        from PyQt5.QtCore import QCoreApplication

        end = time.monotonic() + timeout_s
        while self.pending > 0 and time.monotonic() < end:
            QCoreApplication.processEvents()
            time.sleep(0.005)
        QCoreApplication.processEvents()
        return self.pending == 0

    def stop(self) -> None:
        self.cancel()
        self._thread.quit()
        self._thread.wait(10000)

    def _done(self, *_) -> None:
        self.pending = max(0, self.pending - 1)

    def _failed(self, request: int, what: str, _message: str) -> None:
        if not (what == "encode" and request == -1):  # a prefetch, not a counted request
            self._done()

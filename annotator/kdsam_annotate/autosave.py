"""Autosave and crash recovery: the session is written beside its input, never over a user file.

For ``scan.nii.gz`` the autosave is the folder ``scan.nii.gz.kdsam-autosave/`` holding
``mask.nii.gz`` (through ``kdsam_core.io.save_mask``, with the source geometry) and
``state.json`` (labels, prompts). Where the input's folder is read-only, it goes under
``~/.cache/kdsam-annotate/``. Only these two files are ever written or removed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

from kdsam_core.atomic import write_text
from kdsam_core.io import Volume, load_volume, save_mask

from .session import Session

log = logging.getLogger(__name__)

SUFFIX = ".kdsam-autosave"
STATE_FILE = "state.json"
MASK_FILE = "mask.nii.gz"


def autosave_dir(source: str | os.PathLike) -> Path:
    """The autosave folder of an input file or DICOM folder."""
    src = Path(source).resolve()
    if os.access(src.parent, os.W_OK):
        return src.parent / (src.name + SUFFIX)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(str(src).encode()).hexdigest()[:12]
    return cache / "kdsam-annotate" / f"{src.name}-{digest}{SUFFIX}"


class Autosave:
    """Write, find, read and discard the autosave of one input."""

    def __init__(self, source: str | os.PathLike, reference: Volume) -> None:
        self.source = str(source)
        self.reference = reference
        self.dir = autosave_dir(source)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kdsam-autosave")
        self._pending: Future | None = None

    def write(self, session: Session) -> Path:
        """Write now, in this thread."""
        self.wait()
        return self._write(session.mask, session.state())

    def write_async(self, session: Session, done: Callable[[Future], None] | None = None) -> Future:
        """Write a snapshot of ``session`` in a background thread (compressing a big mask takes a while)."""
        self.wait()
        future = self._pool.submit(self._write, session.mask.copy(), session.state())
        if done is not None:
            future.add_done_callback(done)
        self._pending = future
        return future

    def wait(self) -> None:
        """Let a background write finish (its errors were reported to its callback)."""
        if self._pending is not None:
            wait([self._pending])
            self._pending = None

    def close(self) -> None:
        """Finish a background write and end the writer thread."""
        self.wait()
        self._pool.shutdown(wait=True)

    def _write(self, mask, state: dict) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_mask(mask, self.dir / MASK_FILE, reference=self.reference, overwrite=True)
        state.update(source=self.source, saved_at=_dt.datetime.now().isoformat(timespec="seconds"))
        write_text(self.dir / STATE_FILE, json.dumps(state))
        log.debug("autosaved to %s", self.dir)
        return self.dir

    def find(self) -> dict | None:
        """The saved state if a recoverable autosave of this input exists, else None."""
        state_path, mask_path = self.dir / STATE_FILE, self.dir / MASK_FILE
        if not (state_path.is_file() and mask_path.is_file()):
            return None
        try:
            state = json.loads(state_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("ignoring unreadable autosave %s (%s)", state_path, e)
            return None
        if list(state.get("shape", [])) != list(self.reference.shape_zyx):
            log.warning("ignoring autosave %s: it is for another image grid", self.dir)
            return None
        return state

    def read(self) -> Session:
        self.wait()
        state = self.find()
        if state is None:
            raise FileNotFoundError(f"no autosave in {self.dir}")
        mask = load_volume(self.dir / MASK_FILE).array
        return Session.from_state(state, mask)

    def discard(self) -> None:
        self.wait()  # a write still running would bring the files back
        for name in (STATE_FILE, MASK_FILE):
            (self.dir / name).unlink(missing_ok=True)
        try:
            self.dir.rmdir()  # only when empty: never removes anything we did not write
        except OSError:
            pass

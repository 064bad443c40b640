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
import tempfile
from pathlib import Path

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

    def write(self, session: Session) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_mask(session.mask, self.dir / MASK_FILE, reference=self.reference, overwrite=True)
        state = session.state()
        state.update(source=self.source, saved_at=_dt.datetime.now().isoformat(timespec="seconds"))
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state.", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.dir / STATE_FILE)
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
        state = self.find()
        if state is None:
            raise FileNotFoundError(f"no autosave in {self.dir}")
        mask = load_volume(self.dir / MASK_FILE).array
        return Session.from_state(state, mask)

    def discard(self) -> None:
        for name in (STATE_FILE, MASK_FILE):
            (self.dir / name).unlink(missing_ok=True)
        try:
            self.dir.rmdir()  # only when empty: never removes anything we did not write
        except OSError:
            pass

"""Atomic file writes: a kill or an error never leaves half a file or a lost old one.

Every file the project writes (checkpoints, masks, embedding caches, training state, splits,
autosaves) goes through :func:`atomic_path`: the content is written to a temporary file in
the same folder, which then replaces the target with ``os.replace`` (atomic on POSIX and
Windows). The result gets the permissions a plain ``open()`` would give (``0o666`` minus the
umask), not ``mkstemp``'s private ``0o600``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it; done once, at import, not while threads write files
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on normal exit it replaces ``path``.

    ``suffix`` (default: ``path``'s own, ``.nii.gz`` kept whole) lets writers that pick a
    format from the file name (SimpleITK) see the right one. On an exception the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)

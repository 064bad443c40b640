"""Image embeddings cached on disk, each file signed with what it belongs to.

A file holds one embedding (fp16 or fp32 safetensors) and a signature: the hash of the
slice's pixels, the model's weights hash, the preprocessing and the kdsam_core version. A
file is used only when the whole signature matches, never silently for another image or
model; a mismatch or a damaged file is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path

log = logging.getLogger(__name__)


def model_signature(model) -> str:
    """A hash of a model's weights and preprocessing (stable across processes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(model.preprocess.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class DiskEmbeddingStore:
    """``folder/<hash>.safetensors`` files, one per (image content, model)."""

    def __init__(self, folder: str | os.PathLike, model, *, dtype: torch.dtype = torch.float16) -> None:
        from . import __version__

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = dtype
        self.base = {"model": model_signature(model), "preprocess": model.preprocess.to_dict(),
                     "kdsam_version": __version__}

    def _signature(self, image_hash: str, shape) -> dict:
        return json.loads(json.dumps(dict(self.base, image=image_hash, shape=[int(v) for v in shape])))

    def _path(self, sig: dict) -> Path:
        name = hashlib.blake2b(json.dumps(sig, sort_keys=True).encode(), digest_size=16).hexdigest()
        return self.folder / f"{name}.safetensors"

    def load(self, image_hash: str, shape) -> torch.Tensor | None:
        sig = self._signature(image_hash, shape)
        path = self._path(sig)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                stored = json.loads((f.metadata() or {}).get("signature", "null"))
                if stored != sig:
                    log.warning("%s belongs to another image or model; recomputing", path.name)
                    return None
                return f.get_tensor("embedding").float()
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            log.warning("embedding file %s is unreadable (%s); recomputing", path.name, e)
            return None

    def save(self, image_hash: str, shape, embedding: torch.Tensor) -> Path:
        sig = self._signature(image_hash, shape)
        path = self._path(sig)
        with atomic_path(path) as tmp:
            save_file({"embedding": embedding.detach().to("cpu", self.dtype).contiguous()}, tmp,
                      metadata={"signature": json.dumps(sig)})
        return path

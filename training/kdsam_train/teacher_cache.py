"""Teacher embedding cache: fp16 safetensors shards plus a signature checked on open.

Layout of a cache folder::

    signature.json         teacher identity (name, weights SHA-256), preprocessing,
                           embedding shape, augmentation copies/seed, format version
    shard_00000.safetensors  up to ``shard_size`` embeddings, key "<sample id>|<copy>"
    ...

Shards are written atomically (temporary file + ``os.replace``); the set of cached keys
is read back from the shards, so a killed run resumes where the last shard ended. A cache
opened for another teacher, preprocessing or embedding shape raises
:class:`CacheMismatchError`; it is never silently reused. Any :class:`PromptableSAM` can
fill a cache (phase 2 caches the frozen student's embeddings the same way).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kdsam_core.atomic import atomic_path, write_text
from kdsam_core.errors import KDSAMError
from kdsam_core.model.promptable import PromptableSAM
from kdsam_core.transforms import preprocess

from .augment import augment, copy_seed, modality_of
from .data import Sample, SkipLog, load_pair

log = logging.getLogger(__name__)
FORMAT = 1


class CacheMismatchError(KDSAMError):
    """A cache folder made for another teacher, preprocessing or shape."""


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def signature_for(model: PromptableSAM, name: str, *, part: str = "image_encoder", copies: int = 1,
                  aug_seed: int = 0) -> dict:
    """The identity a cache of ``model``'s embeddings is checked against."""
    sig = {"format": FORMAT, "teacher": name,
            "weights_sha256": weights_sha256(getattr(model, part)),
            "preprocess": model.preprocess.to_dict(), "embedding_shape": list(model.embedding_shape),
            "dtype": "float16", "copies": copies, "aug_seed": aug_seed}
    return json.loads(json.dumps(sig))  # tuples -> lists, as read back from signature.json


def cache_key(sample_id: str, copy: int = 0) -> str:
    return f"{sample_id}|{copy}"


class EmbeddingCache:
    """A folder of fp16 embeddings keyed by ``cache_key``; see the module docstring."""

    def __init__(self, root: str | os.PathLike, signature: dict, *, create: bool = True) -> None:
        self.root = Path(root)
        self.signature = signature
        sig_file = self.root / "signature.json"
        if sig_file.is_file():
            stored = json.loads(sig_file.read_text())
            diff = sorted(k for k in set(stored) | set(signature) if stored.get(k) != signature.get(k))
            if diff:
                raise CacheMismatchError(
                    f"embedding cache {self.root} was made with another "
                    + ", ".join(f"{k} ({stored.get(k)!r} there, {signature.get(k)!r} here)" for k in diff)
                    + "; use another --cache folder or delete this one")
        elif create:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text(sig_file, json.dumps(signature, indent=1) + "\n")
        else:
            raise CacheMismatchError(f"{self.root} is not an embedding cache (no signature.json)")
        self._where: dict[str, Path] = {}
        for shard in sorted(self.root.glob("shard_*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                for k in f.keys():
                    self._where[k] = shard
        self._handles: dict[Path, object] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> set[str]:
        return set(self._where)

    def get(self, key: str) -> torch.Tensor:
        """The (C, H, W) float16 embedding stored under ``key``."""
        shard = self._where.get(key)
        if shard is None:
            raise KeyError(f"{key} is not in the cache {self.root}")
        h = self._handles.get(shard)
        if h is None:
            h = self._handles[shard] = safe_open(str(shard), framework="pt")
        return h.get_tensor(key)

    def write_shard(self, tensors: dict[str, torch.Tensor]) -> Path:
        n = len(list(self.root.glob("shard_*.safetensors")))
        path = self.root / f"shard_{n:05d}.safetensors"
        with atomic_path(path) as tmp:
            save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, tmp)
        for k in tensors:
            self._where[k] = path
        return path


def open_cache(root: str | os.PathLike, model: PromptableSAM, name: str, **sig) -> EmbeddingCache:
    """Open (or create) the cache of ``model`` at ``root``, checking its signature."""
    return EmbeddingCache(root, signature_for(model, name, **sig))


def sample_view(sample: Sample, copy: int, aug_seed: int, *, require_mask: bool = False):
    """Image and mask of copy ``copy`` of ``sample`` (copy 0 unaugmented), as the cache saw it."""
    image, mask = load_pair(sample, require_mask=require_mask)
    if copy:
        image, mask = augment(image, mask, modality_of(sample.dataset),
                              np.random.default_rng(copy_seed(aug_seed, sample.id, copy)))
    return image, mask


@torch.inference_mode()
def fill_cache(model: PromptableSAM, cache: EmbeddingCache, samples: list[Sample], *, batch_size: int = 4,
               shard_size: int = 64, device: str | torch.device = "cpu", skips: SkipLog | None = None,
               progress: Callable[[int, int], None] | None = None) -> SkipLog:
    """Compute the embeddings of ``samples`` not yet in ``cache`` and write them in shards.

    Unreadable pairs are skipped and counted (masks may be empty: distillation needs none).
    ``progress(done, total)`` is called after each batch.
    """
    skips = skips or SkipLog()
    copies, aug_seed = cache.signature["copies"], cache.signature["aug_seed"]
    todo = [(s, c) for s in samples for c in range(copies) if cache_key(s.id, c) not in cache]
    total = len(todo)
    log.info("cache %s: %d of %d embeddings to compute", cache.root, total, len(samples) * copies)
    model = model.to(device).eval()
    pending: dict[str, torch.Tensor] = {}
    done = 0
    for i in range(0, total, batch_size):
        batch, keys = [], []
        for s, c in todo[i:i + batch_size]:
            try:
                image, _ = sample_view(s, c, aug_seed)
            except KDSAMError as e:
                skips.add(s.id, e)
                continue
            batch.append(preprocess(image, model.preprocess))
            keys.append(cache_key(s.id, c))
        if batch:
            emb = model.encode(torch.cat(batch).to(device)).to("cpu", torch.float16)
            pending.update(zip(keys, emb))
        done += len(todo[i:i + batch_size])
        if len(pending) >= shard_size:
            cache.write_shard(pending)
            pending = {}
        if progress:
            progress(done, total)
    if pending:
        cache.write_shard(pending)
    return skips

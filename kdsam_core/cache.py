"""A memory-bounded LRU cache of image embeddings, keyed per (image, slice).

Keys are any hashable, e.g. ``("volume-uid", axis, index)``; :func:`content_key` makes one
from the pixels themselves, so the same slice loaded twice hits the cache.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import torch


def content_key(image: np.ndarray) -> str:
    """A key that belongs to these exact pixels (shape, dtype and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((image.shape, image.dtype.str)).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """LRU over ``key -> (embedding tensor, info)`` holding at most ``max_bytes`` of tensors."""

    def __init__(self, max_bytes: int = 512 * 2**20) -> None:
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key):
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key, embedding: torch.Tensor, info: dict) -> None:
        size = embedding.element_size() * embedding.nelement()
        with self._lock:
            if key in self._items:
                self._bytes -= self._size(self._items.pop(key)[0])
            if size > self.max_bytes:
                return  # larger than the whole cache: keep nothing
            self._items[key] = (embedding, info)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (old, _) = self._items.popitem(last=False)
                self._bytes -= self._size(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @staticmethod
    def _size(t: torch.Tensor) -> int:
        return t.element_size() * t.nelement()

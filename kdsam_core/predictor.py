"""KDSAMPredictor: encode a slice once, answer many prompts from its embedding.

In the spirit of segment-anything's ``SamPredictor``; works with any
:class:`~kdsam_core.model.PromptableSAM` (KD SAM, SAM, LiteMedSAM). Coordinates are in
pixels of the original slice: points ``(N, 2)`` as ``(x, y)``, boxes ``(x0, y0, x1, y1)``.
Masks come back on the original pixel grid ``(H, W)``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from .cache import EmbeddingCache, content_key
from .device import pick_device, set_threads
from .errors import InputError
from .model.promptable import PromptableSAM
from .prompts import auto_multimask
from .transforms import boxes_to_model, coords_to_model, postprocess_masks, preprocess, to_rgb_uint8

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """masks (M, H, W) bool, scores (M,) predicted IoU, low_res_logits (M, h, w) float32."""

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray

    def best(self) -> np.ndarray:
        """The mask with the highest predicted IoU, (H, W) bool."""
        return self.masks[int(np.argmax(self.scores))]

    def __iter__(self):  # masks, scores, logits = predictor.predict(...)
        return iter((self.masks, self.scores, self.low_res_logits))


class KDSAMPredictor:
    """Embedding-cached prompt-to-mask predictor.

    Arguments:
        model: a PromptableSAM (from ``build_model`` / ``load_model``).
        device: 'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'mps'.
        threads: CPU threads for torch (None keeps torch's default).
        cache_mb: memory bound of the embedding cache in MiB.
        disk_cache: a folder where embeddings are also kept across sessions (fp16, each file
            signed with the image's pixel hash and the model's weights hash; see
            :mod:`kdsam_core.embedding_store`). None keeps them in memory only.
        backend: "torch" (default), "onnx" or "onnx-int8": run the encoder and the prompt
            decoder with onnxruntime (see :mod:`kdsam_core.fast`; CPU only, exported on first use).
        onnx_dir: where the ONNX graphs are kept (default: a per-model cache folder).
    """

    def __init__(self, model: PromptableSAM, *, device: str | None = "auto", threads: int | None = None,
                 cache_mb: float = 512, disk_cache: str | None = None, backend: str = "torch",
                 onnx_dir: str | None = None) -> None:
        from .fast import check_backend, make_runner

        set_threads(threads)
        self.backend = check_backend(backend)
        self.device = pick_device(device if backend == "torch" else "cpu")
        self.model = model.to(self.device).eval()
        self.runner = make_runner(self.model, backend, folder=onnx_dir, threads=threads)  # .encode / .decode
        self.cache = EmbeddingCache(int(cache_mb * 2**20))
        self.disk = None
        if disk_cache is not None:
            from .embedding_store import DiskEmbeddingStore

            self.disk = DiskEmbeddingStore(disk_cache, self.model)
            if backend != "torch":  # its embeddings differ from torch's: sign them apart
                self.disk.base["backend"] = backend
        self.last_encode_seconds: float | None = None
        self.last_decode_seconds: float | None = None
        self.reset_image()

    # ---------------------------------------------------------------- image
    def reset_image(self) -> None:
        self._key = None
        self._embedding: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None

    @property
    def is_image_set(self) -> bool:
        return self._embedding is not None

    def has_embedding(self, key) -> bool:
        return key in self.cache

    def set_image(self, image: np.ndarray, *, key=None) -> bool:
        """Make ``image`` the current slice; run the encoder only if its embedding is not cached.

        Arguments:
            image: (H, W) grey or (H, W, 3) RGB, any dtype (non-uint8 is scaled min..max; apply a
                window first with ``kdsam_core.io.window_to_uint8`` when one is known).
            key: a hashable naming this slice, e.g. ``(volume_id, axis, index)``; None uses a
                hash of the pixels.
        Returns:
            True when the encoder ran, False when the embedding came from the cache.
        """
        rgb = self._check_image(image)
        pixels = content_key(rgb) if key is None or self.disk is not None else None
        if key is None:
            key = pixels
        ran = False
        item = self.cache.get(key)
        if item is None or item[1]["shape"] != rgb.shape[:2]:
            emb = self.disk.load(pixels, rgb.shape[:2]) if self.disk is not None else None
            if emb is None:
                emb = self._encode(rgb)
                ran = True
                if self.disk is not None:
                    self.disk.save(pixels, rgb.shape[:2], emb)
            item = (emb.to(self.device), {"shape": rgb.shape[:2]})
            self.cache.put(key, *item)
        self._key = key
        self._embedding = item[0]
        self.original_size = rgb.shape[:2]
        return ran

    @torch.inference_mode()
    def _encode(self, rgb: np.ndarray) -> torch.Tensor:
        t0 = time.perf_counter()
        x = preprocess(rgb, self.model.preprocess).to(self.device)
        emb = self.runner.encode(x)
        self.last_encode_seconds = time.perf_counter() - t0
        return emb

    @staticmethod
    def _check_image(image: np.ndarray) -> np.ndarray:
        a = np.asarray(image)
        if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] == 1:
            a = a[0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
            raise InputError(f"expected a 2D slice (H, W) or (H, W, 3), got an array of shape {a.shape}; "
                             "pick one slice of a volume first")
        if a.shape[0] < 2 or a.shape[1] < 2:
            raise InputError(f"the slice is too small to segment: {a.shape[:2]}")
        if np.issubdtype(a.dtype, np.floating):
            finite = np.isfinite(a)
            if not finite.any():
                raise InputError("the slice has no finite pixel values (all NaN or inf)")
            if not finite.all():
                log.warning("%d NaN/inf pixels set to the slice minimum", int((~finite).sum()))
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"pixel type {a.dtype} is not numeric")
        return to_rgb_uint8(a.astype(np.uint8) if a.dtype == bool else a)

    # ---------------------------------------------------------------- prompts
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool | None = None,
    ) -> Prediction:
        """Masks for prompts on the current slice.

        Arguments:
            point_coords: (N, 2) (x, y) pixels; point_labels: (N,) 1 foreground, 0 background.
            box: (4,) (x0, y0, x1, y1) pixels.
            mask_input: (1, h, w) or (h, w) low-res logits from a previous ``predict``.
            multimask_output: 3 candidate masks or 1; None (default) follows
                :func:`auto_multimask`: 3 for one click alone, else 1.
        Returns:
            :class:`Prediction` with masks (M, H, W) bool, scores (M,), low_res_logits (M, h, w).
        """
        if not self.is_image_set:
            raise InputError("no image is set: call set_image first")
        h, w = self.original_size
        size = self.model.img_size
        points = None
        if point_coords is not None:
            pc = np.asarray(point_coords, dtype=np.float32).reshape(-1, 2)
            if point_labels is None:
                raise InputError("point_labels are required with point_coords")
            pl = np.asarray(point_labels).reshape(-1)
            if len(pl) != len(pc):
                raise InputError(f"{len(pc)} points but {len(pl)} labels")
            if not np.isin(pl, (0, 1)).all():
                raise InputError(f"point labels must be 1 (foreground) or 0 (background), got {sorted(set(pl.tolist()))}")
            self._check_inside(pc, h, w, "point")
            if len(pc):
                coords = torch.as_tensor(coords_to_model(pc, (h, w), size), device=self.device)[None]
                points = (coords, torch.as_tensor(pl, dtype=torch.int, device=self.device)[None])
        boxes = None
        if box is not None:
            b = np.asarray(box, dtype=np.float32).reshape(-1)
            if b.shape != (4,):
                raise InputError(f"a box is 4 numbers x0,y0,x1,y1, got {b.tolist()}")
            if not np.isfinite(b).all():
                raise InputError(f"box {b.tolist()} has non-finite values")
            x0, x1 = sorted(b[[0, 2]])
            y0, y1 = sorted(b[[1, 3]])
            self._check_inside(np.array([[x0, y0], [x1, y1]]), h, w, "box corner")
            boxes = torch.as_tensor(boxes_to_model(np.array([x0, y0, x1, y1]), (h, w), size),
                                    device=self.device)[None]
        masks = None
        if mask_input is not None:
            m = np.asarray(mask_input, dtype=np.float32)
            m = m.reshape((1, 1) + m.shape[-2:])
            expected = tuple(4 * s for s in self.model.embedding_shape[1:])
            if m.shape[-2:] != expected:
                raise InputError(f"mask_input must be low-res logits of shape {expected}, got {m.shape[-2:]}")
            masks = torch.as_tensor(m, device=self.device)
        if points is None and boxes is None and masks is None:
            raise InputError("give at least one prompt: a point, a box or a mask")
        if multimask_output is None:
            multimask_output = auto_multimask(0 if points is None else points[0].shape[1], boxes is not None)
        return self._decode(points, boxes, masks, multimask_output)

    @torch.inference_mode()
    def _decode(self, points, boxes, masks, multimask_output: bool) -> Prediction:
        t0 = time.perf_counter()
        low, iou = self.runner.decode(self._embedding, points=points, boxes=boxes, mask_input=masks,
                                     multimask_output=multimask_output)
        full = postprocess_masks(low, self.original_size, self.model.img_size)
        pred = Prediction(masks=(full[0] > 0).cpu().numpy(), scores=iou[0].float().cpu().numpy(),
                          low_res_logits=low[0].float().cpu().numpy())
        self.last_decode_seconds = time.perf_counter() - t0
        return pred

    @staticmethod
    def _check_inside(pts: np.ndarray, h: int, w: int, what: str) -> None:
        if not np.isfinite(pts).all():
            raise InputError(f"{what} coordinates must be finite numbers")
        bad = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
        if bad.any():
            x, y = pts[np.argmax(bad)]
            raise InputError(f"{what} ({x:g}, {y:g}) is outside the {w} x {h} image "
                             f"(x in 0..{w - 1}, y in 0..{h - 1})")

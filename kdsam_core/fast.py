"""The fast CPU path: a model's encoder and prompt decoder exported to ONNX, run by onnxruntime.

One option picks the engine everywhere (predictor, ``kdsam`` CLI, Slicer module, annotator)::

    KDSAMPredictor(model, backend="onnx-int8")   # "torch" (default) | "onnx" | "onnx-int8"

* ``onnx``: fp32 graphs; the encoder is the model's ``image_encoder``, the decoder is
  segment-anything's ``SamOnnxModel`` prompt embedding (points, box corners as labels 2/3,
  a padding point when there is no box, ``has_mask_input``) feeding ``MaskDecoder.predict_masks``;
  it returns the four low-res masks and IoU scores, and the multimask choice (masks 1..3 or 0) is
  made here as in ``MaskDecoder.forward``.
* ``onnx-int8``: the encoder quantised statically by onnxruntime (its Conv nodes, QDQ, per-channel
  int8 weights, activations calibrated on a few images); the decoder stays the fp32 graph. SAM's
  own ONNX example quantises the decoder dynamically (int8 MatMul/Gemm weights); on the v3
  student that cost 7.1 one-click Dice points on the validation split (`kdsam-bench accuracy`,
  55 images) to save ~10-17 ms a click, so it is not done (benchmarks/README.md). The ResNet
  student's int8 encoder loses ~0.1 Dice points; LiteMedSAM's TinyViT loses ~6 box-Dice points
  (use "onnx" for it).

Exported graphs are kept in ``folder`` (default ``$KDSAM_ONNX_DIR`` or ``~/.cache/kdsam/onnx``)
under the model's weights hash, so each model is exported once. onnxruntime and onnx are
imported only when an ONNX backend is used (``pip install kdsam[fast]``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from segment_anything.utils.onnx import SamOnnxModel
from torch import nn

from .errors import KDSAMError

log = logging.getLogger(__name__)
BACKENDS = ("torch", "onnx", "onnx-int8")
OPSET = 17
INT8_ENCODER_OPS = ("Conv",)  # statically quantised encoder ops (validated on the ResNet student only)


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else ValueError naming the choices."""
    if backend not in BACKENDS:
        raise KDSAMError(f"unknown backend {backend!r}: choose {', '.join(BACKENDS)}")
    return backend


def default_folder() -> Path:
    return Path(os.environ.get("KDSAM_ONNX_DIR") or Path.home() / ".cache" / "kdsam" / "onnx")


class DecoderForOnnx(SamOnnxModel):
    """Prompt encoder + mask decoder as one traceable graph (SamOnnxModel without postprocessing).

    Inputs: image_embeddings (1, C, H, W); point_coords (1, N, 2) (x, y) in the input frame;
    point_labels (1, N) float: 1 fg, 0 bg, 2/3 box corners, -1 padding; mask_input
    (1, 1, 4H, 4W); has_mask_input (1,). Outputs: low_res_masks (1, 4, 4H, 4W), iou (1, 4).
    """

    def __init__(self, model: nn.Module) -> None:
        nn.Module.__init__(self)
        self.model = model
        self.mask_decoder = model.mask_decoder
        self.img_size = model.img_size

    @torch.no_grad()
    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_masks(mask_input, has_mask_input)
        return self.model.mask_decoder.predict_masks(
            image_embeddings=image_embeddings, image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)


def _decoder_inputs(model: nn.Module, n_points: int = 2) -> tuple:
    c, h, w = model.embedding_shape
    return (torch.randn(1, c, h, w), torch.rand(1, n_points, 2) * model.img_size,
            torch.tensor([[1.0] + [-1.0] * (n_points - 1)]), torch.zeros(1, 1, 4 * h, 4 * w), torch.zeros(1))


def export_onnx(model: nn.Module, folder: str | os.PathLike, *, int8: bool = True,
                calibration: Iterable[torch.Tensor] | None = None) -> dict[str, Path]:
    """Write ``encoder.onnx``, ``decoder.onnx`` (and ``encoder.int8.onnx`` with ``int8``) for ``model``.

    Arguments:
        model: a PromptableSAM.
        folder: where the files go (created).
        calibration: preprocessed (1, 3, S, S) encoder inputs for static int8 calibration;
            None uses the bundled sample images and a few synthetic ones.
    Returns:
        {"encoder": path, "decoder": path, ["encoder_int8": path]}.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    s = model.img_size
    paths = {"encoder": folder / "encoder.onnx", "decoder": folder / "decoder.onnx"}
    t0 = time.perf_counter()
    with torch.no_grad(), _quiet():
        torch.onnx.export(model.image_encoder, (torch.randn(1, 3, s, s),), str(paths["encoder"]), dynamo=False,
                          input_names=["image"], output_names=["embedding"], opset_version=OPSET,
                          dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}})
        names = ["image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input"]
        # eval(): the exporter restores the wrapper's mode afterwards, recursively into ``model``
        torch.onnx.export(DecoderForOnnx(model).eval(), _decoder_inputs(model), str(paths["decoder"]), dynamo=False,
                          input_names=names, output_names=["low_res_masks", "iou_predictions"],
                          opset_version=OPSET,
                          dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})
    model.eval()
    log.info("exported %s and %s in %.1f s", paths["encoder"].name, paths["decoder"].name, time.perf_counter() - t0)
    if int8:
        paths["encoder_int8"] = folder / "encoder.int8.onnx"
        quantize_encoder(paths["encoder"], paths["encoder_int8"], calibration or _calibration_inputs(model))
    return paths


class _quiet:
    """Silence the TorchScript exporter's deprecation and tracer warnings."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _calibration_inputs(model: nn.Module, n_synthetic: int = 4) -> list[torch.Tensor]:
    """Preprocessed encoder inputs: the bundled sample slices plus smooth synthetic images."""
    from .transforms import preprocess, to_rgb_uint8

    images = []
    samples = Path(__file__).resolve().parent.parent / "resources" / "samples"
    for p in sorted(samples.glob("*.png")) if samples.is_dir() else []:
        try:
            from PIL import Image

            images.append(to_rgb_uint8(np.asarray(Image.open(p).convert("L"))))
        except Exception as e:  # noqa: BLE001 - calibration works without them
            log.debug("calibration image %s skipped: %s", p, e)
    rng = np.random.default_rng(0)
    for _ in range(n_synthetic):
        yy, xx = np.mgrid[0:256, 0:256] / 256.0
        blob = np.exp(-((xx - rng.uniform(.3, .7)) ** 2 + (yy - rng.uniform(.3, .7)) ** 2) / rng.uniform(.01, .05))
        img = 0.6 * blob + 0.3 * rng.random((256, 256)) * rng.uniform(0.2, 1) + 0.1 * xx
        images.append(to_rgb_uint8(img.astype(np.float32)))
    return [preprocess(im, model.preprocess) for im in images]


def quantize_encoder(src: Path, dst: Path, inputs: Iterable[torch.Tensor]) -> Path:
    """Static QDQ int8 quantisation of the convolutions (per-channel int8 weights, uint8 activations
    MinMax-calibrated on ``inputs``), after onnxruntime's quantisation pre-processing."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"image": x.numpy().astype(np.float32)} for x in inputs])

        def get_next(self):
            return next(self.it, None)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    pre = dst.with_name(dst.stem + ".pre.onnx")
    try:  # shape inference + graph optimisation first: ~3x faster int8 graphs than without
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=list(INT8_ENCODER_OPS))
    finally:
        pre.unlink(missing_ok=True)
    log.info("quantised %s (static int8) in %.1f s", dst.name, time.perf_counter() - t0)
    return dst


def session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session with full graph optimisation and ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise KDSAMError("the ONNX backends need onnxruntime: pip install onnx onnxruntime") from None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def exported_folder(model: nn.Module, folder: str | os.PathLike | None = None, *, int8: bool = True,
                    calibration: Iterable[torch.Tensor] | None = None) -> Path:
    """The folder holding ``model``'s ONNX graphs, exporting them first when they are missing.

    The folder's ``signature.json`` names the model weights hash; graphs of other weights are
    never used. ``calibration``: encoder inputs for the int8 calibration (see :func:`export_onnx`).
    """
    from .embedding_store import model_signature

    sig = model_signature(model)
    where = Path(folder) if folder is not None else default_folder() / f"{getattr(model, 'name', 'model')}-{sig}"
    stamp = where / "signature.json"
    fresh = stamp.exists() and json.loads(stamp.read_text()).get("model") == sig
    have_fp32 = fresh and all((where / n).exists() for n in ("encoder.onnx", "decoder.onnx"))
    have_int8 = fresh and (where / "encoder.int8.onnx").exists()
    if not have_fp32:
        log.info("exporting %s to ONNX in %s", getattr(model, "name", "the model"), where)
        stamp.unlink(missing_ok=True)
        export_onnx(model, where, int8=int8, calibration=calibration)
        stamp.write_text(json.dumps({"model": sig, "img_size": model.img_size, "opset": OPSET}) + "\n")
    elif int8 and not have_int8:
        quantize_encoder(where / "encoder.onnx", where / "encoder.int8.onnx",
                         calibration or _calibration_inputs(model))
    return where


class OnnxModel:
    """``encode`` / ``decode`` with :class:`~kdsam_core.model.PromptableSAM`'s signatures, run by onnxruntime.

    Arguments:
        model: the PromptableSAM that was (or will be) exported; kept for its sizes and for
            mask-only prompts, which the ONNX decoder graph does not express.
        backend: "onnx" (fp32) or "onnx-int8".
        folder: the ONNX files (default: exported on first use into the cache folder).
        threads: onnxruntime intra-op threads (default: torch's thread count).
    """

    def __init__(self, model: nn.Module, *, backend: str = "onnx", folder: str | os.PathLike | None = None,
                 threads: int | None = None) -> None:
        if check_backend(backend) == "torch":
            raise KDSAMError("OnnxModel runs the onnx backends; use the model itself for torch")
        self.model = model.cpu().eval()
        self.backend = backend
        int8 = backend == "onnx-int8"
        where = exported_folder(model, folder, int8=int8)
        # the graphs this backend runs; the decoder is fp32 for both (module docstring)
        self.paths = {"encoder": where / ("encoder.int8.onnx" if int8 else "encoder.onnx"),
                      "decoder": where / "decoder.onnx"}
        self.encoder = session(self.paths["encoder"], threads)
        self.decoder = session(self.paths["decoder"], threads)

    @property
    def img_size(self) -> int:
        return self.model.img_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed pixels -> (B, C, H, W) embeddings."""
        (emb,) = self.encoder.run(None, {"image": x.detach().cpu().float().numpy()})
        return torch.from_numpy(emb)

    def decode(self, embeddings: torch.Tensor, *, points=None, boxes=None, mask_input=None,
               multimask_output: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`PromptableSAM.decode` (input-frame coordinates; low-res logits and IoU)."""
        if points is None and boxes is None:
            with torch.inference_mode():  # mask-only prompt: no sparse tokens, not in the graph
                return self.model.decode(embeddings, mask_input=mask_input, multimask_output=multimask_output)
        coords, labels = self._sparse(points, boxes)
        n = coords.shape[0]
        _, h, w = self.model.embedding_shape
        emb = embeddings.detach().cpu().float().numpy()
        masks = None if mask_input is None else mask_input.detach().cpu().float().numpy()
        lows, ious = [], []
        for i in range(n):
            feed = {"image_embeddings": emb[i:i + 1] if emb.shape[0] == n else emb[:1],
                    "point_coords": coords[i:i + 1], "point_labels": labels[i:i + 1],
                    "mask_input": (np.zeros((1, 1, 4 * h, 4 * w), np.float32) if masks is None
                                   else masks[i:i + 1] if masks.shape[0] == n else masks[:1]),
                    "has_mask_input": np.array([1.0 if masks is not None else 0.0], np.float32)}
            low, iou = self.decoder.run(None, feed)
            lows.append(low)
            ious.append(iou)
        low, iou = np.concatenate(lows), np.concatenate(ious)
        sl = slice(1, None) if multimask_output else slice(0, 1)
        return torch.from_numpy(np.ascontiguousarray(low[:, sl])), torch.from_numpy(np.ascontiguousarray(iou[:, sl]))

    @staticmethod
    def _sparse(points, boxes) -> tuple[np.ndarray, np.ndarray]:
        """Points and box corners as one (B, N, 2) / (B, N) prompt, padded as PromptEncoder pads."""
        parts_c, parts_l = [], []
        if points is not None:
            pc, pl = points
            parts_c.append(pc.detach().cpu().float().numpy())
            parts_l.append(pl.detach().cpu().float().numpy())
        b = parts_c[0].shape[0] if parts_c else boxes.shape[0]
        if boxes is not None:
            parts_c.append(boxes.detach().cpu().float().numpy().reshape(-1, 2, 2))
            parts_l.append(np.tile(np.array([[2.0, 3.0]], np.float32), (b, 1)))
        else:
            parts_c.append(np.zeros((b, 1, 2), np.float32))
            parts_l.append(-np.ones((b, 1), np.float32))
        return np.concatenate(parts_c, axis=1).astype(np.float32), np.concatenate(parts_l, axis=1).astype(np.float32)


def make_runner(model: nn.Module, backend: str = "torch", *, folder=None, threads: int | None = None):
    """The object whose ``encode`` / ``decode`` a predictor calls: the model itself for "torch"."""
    if check_backend(backend) == "torch":
        return model
    return OnnxModel(model, backend=backend, folder=folder, threads=threads)

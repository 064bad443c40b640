"""Measure one row of the benchmark: one model at one input size on one backend.

Run in a fresh process per row (``python -m kdsam_bench.measure SPEC.json OUT.json``) so that
each row's peak memory is its own and one model's allocations cannot slow the next.

What is measured, all on a synthetic 512 x 512 grey slice (a typical CT/MR slice size):

* ``encoder_ms``: ``runner.encode(x)`` on the preprocessed input, ``warmup`` untimed then
  ``repeats`` timed calls (median, min, all values);
* ``decoder_ms``: prompt encoder + mask decoder for one positive click on the cached embedding
  (three candidate masks, low resolution), ``decoder_repeats`` timed calls;
* ``click_ms``: click to full-resolution mask through :class:`KDSAMPredictor` with the embedding
  already cached (``set_image`` once, then ``predict`` per click: prompt checks, coordinate
  mapping, decoder, upsampling to 512 x 512 and thresholding);
* ``encoder_peak_mb``: the largest resident set size seen while encoding (sampled every 2 ms from
  ``/proc/self/statm`` by a thread) minus the resident size just before: the encoder's working
  memory on top of the loaded model; ``rss_mb`` the process's resident size after the model was
  loaded and ``max_rss_mb`` its lifetime peak (``getrusage``);
* ``flops``: ``torch.utils.flop_counter.FlopCounterMode`` over one encoder forward (run on the
  meta device, so a ViT-H costs no minute) and one decoder call; FLOPs here = 2 x MACs.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
SLICE_HW = (512, 512)


@dataclass
class RowSpec:
    """What one row measures."""

    model: str
    img_size: int | None = None  # students only; others have a fixed size
    backend: str = "torch"
    checkpoint: str | None = None
    config: dict = field(default_factory=dict)
    warmup: int = 1
    repeats: int = 5
    decoder_repeats: int = 30
    threads: int | None = None
    onnx_dir: str | None = None
    flops: bool = True

    @property
    def label(self) -> str:
        size = f"@{self.img_size}" if self.img_size else ""
        return f"{self.model}{size}/{self.backend}"


def _page_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_mb() -> float:
    """The resident set size of this process now, MiB (Linux /proc; else the lifetime peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _page_mb()
    except OSError:
        return max_rss_mb()


def max_rss_mb() -> float:
    """The lifetime peak resident set size of this process, MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class PeakRSS:
    """Context manager sampling the resident size every ``interval`` s; ``.delta_mb`` = peak - start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = self.peak = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    @property
    def delta_mb(self) -> float:
        return self.peak - self.start


def timed(fn, warmup: int, repeats: int) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def stats(ms: list[float]) -> dict:
    return {"median": float(np.median(ms)), "min": float(np.min(ms)), "max": float(np.max(ms)), "n": len(ms),
            "values": [round(v, 3) for v in ms]}


def synthetic_slice(hw: tuple[int, int] = SLICE_HW, seed: int = 0) -> np.ndarray:
    """A smooth grey 'organ on background' slice, uint8 (H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]] / max(hw)
    blob = np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) / 0.02)
    img = 160 * blob + 40 * xx + 20 * rng.random(hw)
    return np.clip(img, 0, 255).astype(np.uint8)


def count_flops(model, x: torch.Tensor, emb: torch.Tensor, points) -> dict:
    """FLOPs of one encoder forward (on the meta device) and one one-click decode."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        model.decode(emb, points=points, multimask_output=True)
    out["decoder_flops"] = int(fc.get_total_flops())
    try:
        enc = model.image_encoder.to("meta")  # destroys the weights: call this last
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            enc(x.to("meta"))
        out["encoder_flops"] = int(fc.get_total_flops())
    except Exception as e:  # noqa: BLE001 - an op without a meta kernel: report none
        log.warning("encoder FLOPs not counted: %s", e)
        out["encoder_flops"] = None
    return out


def measure_row(spec: RowSpec) -> dict:
    """All measurements of one row (see the module docstring)."""
    from kdsam_core.model import build_model
    from kdsam_core.predictor import KDSAMPredictor
    from kdsam_core.transforms import coords_to_model, preprocess, to_rgb_uint8

    if spec.threads:
        torch.set_num_threads(spec.threads)
    torch.manual_seed(0)
    rss_start = rss_mb()
    t0 = time.perf_counter()
    config = dict(spec.config)
    if spec.img_size and spec.model.startswith("kdsam") and spec.checkpoint is None:
        config["img_size"] = spec.img_size
    model = build_model(spec.model, spec.checkpoint, **config)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    predictor = KDSAMPredictor(model, device="cpu", threads=spec.threads, backend=spec.backend,
                               onnx_dir=spec.onnx_dir, cache_mb=64)
    runner_s = time.perf_counter() - t0
    runner = predictor.runner
    image = synthetic_slice()
    x = preprocess(to_rgb_uint8(image), model.preprocess)
    rss_loaded = rss_mb()

    with torch.inference_mode(), PeakRSS() as mem:
        enc_ms = timed(lambda: runner.encode(x), spec.warmup, spec.repeats)
    with torch.inference_mode():
        emb = runner.encode(x)
    h, w = SLICE_HW
    click = np.array([[w * 0.5, h * 0.45]], np.float32)
    points = (torch.as_tensor(coords_to_model(click, SLICE_HW, model.img_size))[None], torch.ones(1, 1, dtype=torch.int))
    with torch.inference_mode():
        dec_ms = timed(lambda: runner.decode(emb, points=points, multimask_output=True), 3, spec.decoder_repeats)

    predictor.set_image(image, key="bench")  # embedding now cached: predict() never encodes
    rng = np.random.default_rng(0)
    clicks = [click + rng.normal(0, 10, size=(1, 2)).astype(np.float32) for _ in range(spec.decoder_repeats + 3)]
    it = iter(clicks)
    click_ms = timed(lambda: predictor.predict(np.clip(next(it), 0, 511), np.array([1])), 3, spec.decoder_repeats)

    n_params = model.num_parameters()
    row = {"label": spec.label, "spec": asdict(spec), "model": spec.model, "img_size": model.img_size,
           "backend": spec.backend, "params": n_params, "embedding_shape": list(model.embedding_shape),
           "build_s": round(build_s, 3), "backend_setup_s": round(runner_s, 3),
           "encoder_ms": stats(enc_ms), "decoder_ms": stats(dec_ms), "click_ms": stats(click_ms),
           "encoder_peak_mb": round(mem.delta_mb, 1), "rss_start_mb": round(rss_start, 1),
           "rss_mb": round(rss_loaded, 1), "weights_mb": round(n_params["total"] * 4 / 2**20, 1),
           "torch_threads": torch.get_num_threads()}
    if spec.backend != "torch":
        paths = getattr(runner, "paths", None)
        if paths is not None:
            row["onnx_mb"] = {p: round(os.path.getsize(paths[p]) / 2**20, 2) for p in ("encoder", "decoder")}
    if spec.flops:
        with torch.inference_mode():
            row.update(count_flops(model, x, emb, points))
    row["max_rss_mb"] = round(max_rss_mb(), 1)
    return row


def main(argv: list[str] | None = None) -> int:
    """``python -m kdsam_bench.measure SPEC.json OUT.json``: measure one row, write its JSON."""
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("kdsam_core", "kdsam_bench"):  # the quantiser logs every tensor at INFO on the root
        logging.getLogger(ours).setLevel(logging.INFO)
    spec = RowSpec(**json.loads(Path(argv[0]).read_text()))
    row = measure_row(spec)
    with open(argv[1], "w") as f:
        json.dump(row, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

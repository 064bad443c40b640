"""Dice of one trained student on each backend (torch, onnx, onnx-int8), on the same images and prompts.

Reuses the training package's evaluation (``kdsam_train.evaluate``: sample choice, prompt
protocols, metrics) unchanged; only the model's ``encode`` / ``decode`` are swapped for the
backend's (:func:`kdsam_core.fast.make_runner`). Labels are the benchmark's row labels
(``kdsam@256/onnx-int8``), so ``kdsam-bench run --accuracy FILE`` puts each Dice on its row.
The result adds ``paired_vs_torch``: per protocol, the mean per-image Dice difference of each
backend from torch on the same image, in points (x100), with its standard deviation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


class BackendModel:
    """A PromptableSAM's ``preprocess`` / ``img_size`` with a backend's ``encode`` / ``decode``."""

    def __init__(self, model, runner) -> None:
        self.model, self.runner = model, runner
        self.preprocess = model.preprocess
        self.img_size = model.img_size

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner.encode(x)

    def decode(self, emb: torch.Tensor, **kw):
        return self.runner.decode(emb, **kw)

    def to(self, *_a, **_k) -> BackendModel:
        return self

    def eval(self) -> BackendModel:
        return self


def calibration_inputs(model, samples: list, n: int) -> tuple[list[torch.Tensor], list[str]]:
    """Up to ``n`` preprocessed images of ``samples`` (the first in SHA-1 order of their ids)."""
    from kdsam_core.errors import KDSAMError
    from kdsam_core.transforms import preprocess, to_rgb_uint8
    from kdsam_train.data import load_pair

    out, ids = [], []
    for s in sorted(samples, key=lambda s: hashlib.sha1(s.id.encode()).hexdigest()):
        if len(out) >= n:
            break
        try:
            image, _ = load_pair(s, require_mask=False)
        except KDSAMError:
            continue
        out.append(preprocess(to_rgb_uint8(image), model.preprocess))
        ids.append(s.id)
    return out, ids


def paired_differences(rows: list[dict], reference: str) -> dict:
    """{label: {protocol: {mean_points, std_points, n, worst_points}}} of Dice minus the reference's, per image."""
    ref = {(r["id"], r["protocol"]): r["dice"] for r in rows if r["model"] == reference}
    diffs: dict = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["model"] != reference and (r["id"], r["protocol"]) in ref:
            diffs[r["model"]][r["protocol"]].append(100 * (r["dice"] - ref[(r["id"], r["protocol"])]))
    return {lab: {p: {"mean_points": float(np.mean(v)), "std_points": float(np.std(v)), "n": len(v),
                      "worst_points": float(np.min(v))} for p, v in per.items()} for lab, per in diffs.items()}


def evaluate_backends(checkpoint: str, *, backends=("torch", "onnx", "onnx-int8"), teacher: str | None = None,
                      data_root: str = "../shared/data", split: str = "val", split_file: str | None = None,
                      protocols=("box", "click"), max_per_dataset: int = 0, threads: int | None = None,
                      onnx_dir: str | None = None, out: str | None = None, calibration_split: str = "train",
                      calibration_images: int = 16, progress=None) -> dict:
    """Evaluate ``checkpoint`` on each backend (and ``teacher`` on torch); write ``out`` (.json + .md).

    ``checkpoint``: a KD SAM ``.safetensors`` or a registry name (``lite_medsam``: its bundled weights).

    The int8 encoder is calibrated on ``calibration_images`` images of ``calibration_split``
    (never the evaluated split); graphs go to ``onnx_dir`` (default: a new temporary folder).
    """
    from kdsam_core.atomic import write_text
    from kdsam_core.device import set_threads
    from kdsam_core.errors import KDSAMError
    from kdsam_core.fast import INT8_ENCODER_OPS, exported_folder, make_runner
    from kdsam_core.model import build_model, load_model
    from kdsam_train.config import DEFAULT_SPLIT_FILE, EvalConfig
    from kdsam_train.data import SkipLog, discover
    from kdsam_train.evaluate import (
        EvalModel,
        eval_samples,
        evaluate_sample,
        markdown_table,
        summarise,
    )
    from kdsam_train.splits import read_splits, select, split_record

    set_threads(threads)
    cpu = torch.device("cpu")
    cfg = EvalConfig(data_root=data_root, split_file=split_file or DEFAULT_SPLIT_FILE, split=split,
                     protocols=list(protocols), max_per_dataset=max_per_dataset, out=out or "", device="cpu",
                     threads=threads or 0)
    registry = not str(checkpoint).endswith(".safetensors")  # e.g. lite_medsam with its bundled weights
    base = (build_model(checkpoint) if registry else load_model(checkpoint)).eval()
    name = getattr(base, "name", "kdsam")
    all_samples = discover(cfg.data_root)
    splits = read_splits(cfg.split_file)
    calib_ids: list[str] = []
    if any(b != "torch" for b in backends):
        onnx_dir = onnx_dir or tempfile.mkdtemp(prefix="kdsam-accuracy-onnx-")
        cal, calib_ids = calibration_inputs(base, select(all_samples, splits[calibration_split]), calibration_images)
        exported_folder(base, onnx_dir, int8="onnx-int8" in backends, calibration=cal or None)
    models = []
    for backend in backends:
        label = f"{name}@{base.img_size}/{backend}" if name.startswith("kdsam") else f"{name}/{backend}"
        m = EvalModel(f"{label}={checkpoint}", cpu)
        m.model = BackendModel(m.model, make_runner(m.model, backend, folder=onnx_dir, threads=threads))
        m.source = f"{checkpoint} on {backend}"
        models.append(m)
    if teacher:
        models.append(EvalModel(f"{teacher}/torch={teacher}", cpu))
    samples = select(all_samples, splits[cfg.split])
    skips = SkipLog()
    rows = []
    for i, (s, image, gt) in enumerate(eval_samples(samples, cfg, skips)):
        for m in models:
            for proto, met in evaluate_sample(m, s.id, m.embed(None, image), gt, cfg).items():
                rows.append({"model": m.label, "dataset": s.dataset, "id": s.id, "protocol": proto, **met})
        if progress is not None:
            progress(i + 1, len(samples))
        elif (i + 1) % 20 == 0:
            log.info("accuracy: %d images", i + 1)
    if not rows:
        raise KDSAMError(f"no usable samples in split {split!r} under {data_root} ({skips.summary()})")
    labels = [m.label for m in models]
    result = {"split": split, **split_record(cfg.split_file), "data_root": str(data_root),
              "models": {m.label: m.source for m in models}, "protocols": list(protocols),
              "max_per_dataset": max_per_dataset, "skipped": skips.summary(),
              "int8_calibration": {"split": calibration_split, "images": calib_ids,
                                   "encoder_ops": list(INT8_ENCODER_OPS), "decoder": "fp32"},
              "summary": summarise(rows),
              "paired_vs_torch": paired_differences(rows, labels[0]) if backends and backends[0] == "torch" else {},
              "per_image": rows}
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
        md = (f"Split `{split}`; models: " + "; ".join(f"**{k}** = {v}" for k, v in result["models"].items())
              + f". Skipped: {skips.total}.\n\n" + markdown_table(result["summary"], labels))
        if result["paired_vs_torch"]:
            md += "\nPer-image Dice difference from torch (points, mean ± std, worst):\n\n| row | protocol | n | mean | std | worst |\n|---|---|---|---|---|---|\n"
            for lab, per in result["paired_vs_torch"].items():
                for p, v in per.items():
                    md += (f"| {lab} | {p} | {v['n']} | {v['mean_points']:+.3f} | {v['std_points']:.3f} | "
                           f"{v['worst_points']:+.2f} |\n")
        write_text(path.with_suffix(".md"), md)
        log.info("wrote %s and %s", path.with_suffix(".json"), path.with_suffix(".md"))
    return result

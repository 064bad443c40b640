"""Does a student's embedding depend on the image? ``kdsam-train diagnose``.

Compares a student's image embeddings with the teacher's cached ones on the same items (copy
0: unaugmented) and reports, over N items with embeddings S_i (student) and T_i (teacher),
each (C, H, W):

* ``mse``: mean (S - T)^2, the phase-1 objective;
* ``mean_baseline_mse``: mean (T_mean - T)^2, what the best single image-independent
  embedding scores on these items (T_mean: their mean). A student above it has learned less
  than a constant;
* ``residual_cos``: cosine between S - S_mean and T - T_mean over all items and elements: how
  well the image-dependent parts agree (0: not at all, 1: up to scale);
* ``variance_ratio``: across-image variance of S over that of T (about 0: the student gives
  every image the same embedding).

A collapsed student (``residual_cos`` and ``variance_ratio`` near 0) can still score well with
box prompts after phase 2, from the prompt's shape alone; ``kdsam-train evaluate
--blank-control true`` shows that on masks.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from kdsam_core.atomic import write_text
from kdsam_core.errors import KDSAMError
from kdsam_core.model.build import load_model
from kdsam_core.transforms import preprocess

from . import runtime as R
from .config import DiagnoseConfig, write_config
from .data import SkipLog, discover, load_pair
from .distill import check_shapes, load_teacher_cache
from .splits import read_splits, select
from .teacher_cache import cache_key

log = logging.getLogger(__name__)


def embedding_stats(s: torch.Tensor, t: torch.Tensor) -> dict:
    """The statistics above for stacked embeddings ``s`` and ``t`` of shape (N, C, H, W)."""
    s, t = s.double(), t.double()
    ds, dt = s - s.mean(0), t - t.mean(0)
    return {"n": int(s.shape[0]), "mse": float(((s - t) ** 2).mean()), "mean_baseline_mse": float((dt ** 2).mean()),
            "residual_cos": float((ds * dt).sum() / (ds.norm() * dt.norm()).clamp_min(1e-12)),
            "variance_ratio": float((ds ** 2).mean() / (dt ** 2).mean().clamp_min(1e-12))}


@torch.inference_mode()
def run_diagnose(cfg: DiagnoseConfig) -> dict:
    """Writes ``<out>.json`` and ``<out>.md``; returns the JSON's content."""
    device, _, _ = R.setup(cfg.device, cfg.threads, cfg.seed)
    cache = load_teacher_cache(cfg.cache_dir)
    samples = select(discover(cfg.data_root), read_splits(cfg.split_file)[cfg.split])
    samples = [s for s in samples if cache_key(s.id) in cache][: cfg.max_items or None]
    if len(samples) < 2:
        raise KDSAMError(f"fewer than 2 items of split {cfg.split!r} are in the teacher cache {cfg.cache_dir}; "
                         f"fill it with `kdsam-train cache --splits {cfg.split}`")
    rows = {}
    for label_spec in cfg.students:
        label, _, path = label_spec.rpartition("=")
        label = label or Path(path).stem
        model = load_model(path).to(device).eval()
        check_shapes(model, cache)
        skips, ss, ts, ds = SkipLog(), [], [], []
        for s in samples:
            try:
                image, _ = load_pair(s, require_mask=False)
            except KDSAMError as e:
                skips.add(s.id, e)
                continue
            ss.append(model.encode(preprocess(image, model.preprocess).to(device)).float().cpu()[0])
            ts.append(cache.get(cache_key(s.id)).float())
            ds.append(s.dataset)
        S, T = torch.stack(ss), torch.stack(ts)
        per = {"all": embedding_stats(S, T)}
        for name in sorted(set(ds)):
            idx = [i for i, d in enumerate(ds) if d == name]
            if len(idx) > 1:
                per[name] = embedding_stats(S[idx], T[idx])
        rows[label] = {"checkpoint": path, "skipped": skips.summary(), "stats": per}
        log.info("%s: %s", label, per["all"])
    result = {"split": cfg.split, "cache_dir": cfg.cache_dir, "teacher": cache.signature.get("teacher"),
              "students": rows}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    write_text(out.with_suffix(".md"), markdown(result))
    write_config(cfg, out.with_suffix(".config.yaml"))
    return result


def markdown(result: dict) -> str:
    lines = [f"Student vs teacher ({result['teacher']}) embeddings, split `{result['split']}` "
             "(mean-baseline MSE: the best image-independent embedding; residual cosine and variance "
             "ratio near 0: the student ignores the image).\n",
             "| student | dataset | n | MSE | mean-baseline MSE | residual cosine | variance ratio |",
             "|---|---|---|---|---|---|---|"]
    for label, r in result["students"].items():
        for ds, st in r["stats"].items():
            lines.append(f"| {label} | {ds} | {st['n']} | {st['mse']:.5f} | {st['mean_baseline_mse']:.5f} | "
                         f"{st['residual_cos']:.3f} | {st['variance_ratio']:.3f} |")
    return "\n".join(lines) + "\n"

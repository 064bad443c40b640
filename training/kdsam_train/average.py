"""Weight averaging ("model soup", Wortsman et al. 2022) of KD SAM checkpoints of one architecture.

``average_checkpoints([a, b], out)`` writes a checkpoint whose every floating-point tensor is
the weighted mean of the inputs' (accumulated in float64, stored in the inputs' dtype). Integer
buffers (BatchNorm's ``num_batches_tracked``) are not averaged: they are taken from the first
input, and the metadata names any that differ. The inputs must describe the same model (its
``model``, ``config`` and ``preprocess`` metadata) with the same tensor names, shapes and
dtypes; anything else is one :class:`CheckpointError` before anything is written. The output's
metadata records each input's path, SHA-256 and weight under ``averaged``; an existing output
is never overwritten.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from kdsam_core.checkpoint import file_sha256, load_state_dict, read_metadata, save_checkpoint
from kdsam_core.errors import CheckpointError

log = logging.getLogger(__name__)

_SAME = ("model", "config", "preprocess")  # what makes two checkpoints the same architecture
_KEEP_IF_EQUAL = ("parameters", "teacher", "training_data", "phase", "coupled", "amp", "prompts")


def average_checkpoints(paths: list, out: str | os.PathLike, weights: list | None = None) -> Path:
    """Weighted mean of the checkpoints ``paths`` -> ``out``; ``weights`` default uniform.

    Weights must be positive, one per checkpoint; they are normalised to sum to 1.
    """
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise CheckpointError(f"averaging needs at least two checkpoints, got {len(paths)}")
    if weights:
        if len(weights) != len(paths):
            raise CheckpointError(f"{len(weights)} weights given for {len(paths)} checkpoints")
        if any(w <= 0 for w in weights):
            raise CheckpointError(f"averaging weights must be positive, got {list(weights)}")
    w = [float(x) for x in (weights or [1.0] * len(paths))]
    w = [x / sum(w) for x in w]
    out = Path(out)
    if out.exists():
        raise CheckpointError(f"{out} already exists; refusing to overwrite it")

    metas = [read_metadata(p) for p in paths]
    for p, m in zip(paths[1:], metas[1:]):
        for key in _SAME:
            if m.get(key) != metas[0].get(key):
                raise CheckpointError(f"{p} is another architecture than {paths[0]}: their '{key}' differs "
                                      f"({m.get(key)!r} vs {metas[0].get(key)!r})")
    states = [load_state_dict(p) for p in paths]
    ref = states[0]
    for p, sd in zip(paths[1:], states[1:]):
        if set(sd) != set(ref):
            extra = sorted(set(sd) ^ set(ref))
            raise CheckpointError(f"{p} and {paths[0]} hold different tensors (e.g. {extra[0]})")
        bad = [k for k in ref if sd[k].shape != ref[k].shape or sd[k].dtype != ref[k].dtype]
        if bad:
            k = bad[0]
            raise CheckpointError(f"{p} and {paths[0]} differ in tensor {k}: {tuple(sd[k].shape)} {sd[k].dtype} "
                                  f"vs {tuple(ref[k].shape)} {ref[k].dtype}")

    mean, first_only = {}, []
    for k, t in ref.items():
        if t.is_floating_point():
            acc = sum(wi * sd[k].double() for wi, sd in zip(w, states))
            mean[k] = acc.to(t.dtype)
        else:
            mean[k] = t.clone()
            if any(not torch.equal(sd[k], t) for sd in states[1:]):
                first_only.append(k)

    meta = {key: metas[0][key] for key in _SAME}
    for key in _KEEP_IF_EQUAL:
        if key in metas[0] and all(m.get(key) == metas[0][key] for m in metas[1:]):
            meta[key] = metas[0][key]
    meta["averaged"] = [{"checkpoint": str(p), "sha256": file_sha256(p), "weight": wi,
                         "phase": m.get("phase"), "steps": m.get("steps")}
                        for p, wi, m in zip(paths, w, metas)]
    if first_only:
        meta["averaged_not"] = {"from": str(paths[0]), "tensors": first_only}
    save_checkpoint(mean, out, meta)
    log.info("wrote %s: the mean of %s with weights %s (%d integer buffers from the first)",
             out, [str(p) for p in paths], [round(x, 4) for x in w], len(first_only))
    return out

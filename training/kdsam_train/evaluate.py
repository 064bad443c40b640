"""Evaluation: Dice, IoU, NSD, HD95 per dataset and prompt protocol, for several models on the
same images with the same prompts.

Protocols (prompts from the ground-truth mask, in original pixels, then mapped to each
model's input frame):

* ``box``: the mask's tight box; ``box_jitter``: each side moved by up to ``box_jitter`` of
  the box size (seeded per image, identical for every model);
* ``click``: one positive click at the innermost pixel of the largest component (SAM's
  three-mask output, the one with the highest predicted IoU is kept);
* ``corrective``: that click, then correction clicks in the largest error region of the
  model's own last prediction (innermost pixel; positive for missed, negative for false
  foreground); reported after 1, 3 and 5 clicks (``clicks_1`` .. ``clicks_5``).

Metrics (:mod:`.metrics`) are computed at the original resolution, distances in pixels,
NSD tolerance 2 px.

``blank_control`` (an image-blindness control): each model is also run with the embedding of an
all-black image of the same size and the same prompts, reported as ``<label>|blank``. A model
whose Dice barely moves when the image is taken away is answering from the prompt's shape, not
from the image; the markdown gives the real-minus-blank Dice per dataset and protocol.

A model spec is ``label=name``, ``label=name:checkpoint`` (registry),
``label=path.safetensors`` (a KD SAM checkpoint), each optionally ``@cache_dir`` to take its
embeddings from an fp16 embedding cache checked against that model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

from kdsam_core.atomic import write_text
from kdsam_core.errors import KDSAMError
from kdsam_core.model.build import MODEL_REGISTRY, build_model, load_model
from kdsam_core.transforms import boxes_to_model, coords_to_model, postprocess_masks, preprocess

from . import runtime as R
from .config import EvalConfig, write_config
from .data import SkipLog, discover, load_pair
from .metrics import all_metrics
from .prompts import box_from_mask, center_click, correction_click, jitter_box
from .splits import read_splits, select, split_record
from .teacher_cache import EmbeddingCache, cache_key, signature_for

log = logging.getLogger(__name__)
METRICS = ("dice", "iou", "nsd", "hd95")
CLICK_REPORTS = (1, 3, 5)


class EvalModel:
    """A model under evaluation, with an optional embedding cache."""

    def __init__(self, spec: str, device: torch.device) -> None:
        if "=" not in spec:
            raise ValueError(f"model spec {spec!r} must be label=model[:checkpoint][@cache]")
        self.label, rest = spec.split("=", 1)
        rest, _, cache_dir = rest.partition("@")
        name, _, ckpt = rest.partition(":")
        if name not in MODEL_REGISTRY and rest.endswith(".safetensors"):
            self.model = load_model(rest)
            self.name = getattr(self.model, "name", "kdsam")
        else:
            self.model, self.name = build_model(name, ckpt or None), name
        self.model.to(device).eval()
        self.device = device
        self.cache = None
        if cache_dir:
            stored = json.loads((Path(cache_dir) / "signature.json").read_text())
            self.cache = EmbeddingCache(cache_dir, signature_for(self.model, stored["teacher"], copies=stored["copies"],
                                                                 aug_seed=stored["aug_seed"]), create=False)
        self.source = rest + (f" (embeddings from the fp16 cache {cache_dir})" if cache_dir else "")

    @torch.inference_mode()
    def embed(self, sample_id: str | None, image: np.ndarray) -> torch.Tensor:
        """(1, C, G, G) embedding; from the cache when it holds ``sample_id`` (None: never)."""
        if sample_id is not None and self.cache is not None and cache_key(sample_id) in self.cache:
            return self.cache.get(cache_key(sample_id)).float()[None].to(self.device)
        return self.model.encode(preprocess(image, self.model.preprocess).to(self.device))

    @torch.inference_mode()
    def predict(self, emb: torch.Tensor, hw: tuple[int, int], *, box=None, points=None) -> np.ndarray:
        """Bool mask at the original size for a box (x0, y0, x1, y1) or clicks ([(x, y)], [label])."""
        s = self.model.img_size
        kw = {}
        if box is not None:
            kw["boxes"] = torch.from_numpy(boxes_to_model(box[None], hw, s)).to(self.device)
        if points is not None:
            xy, labels = points
            c = coords_to_model(np.asarray(xy, dtype=np.float32), hw, s)
            kw["points"] = (torch.from_numpy(c)[None].to(self.device),
                            torch.tensor([labels], dtype=torch.int64, device=self.device))
        multi = box is None and len(points[1]) == 1
        low, iou = self.model.decode(emb, multimask_output=multi, **kw)
        k = int(torch.argmax(iou[0]))
        return (postprocess_masks(low[:, k:k + 1], hw, s)[0, 0] > 0).cpu().numpy()


def evaluate_sample(m: EvalModel, sample_id: str, emb: torch.Tensor, gt: np.ndarray, cfg: EvalConfig) -> dict:
    """{protocol: metrics} of one model on one image, given the image's embedding ``emb``
    (prompts depend on ``sample_id`` and ``gt`` only, so a control embedding gets the same)."""
    hw = gt.shape
    out = {}
    if "box" in cfg.protocols:
        out["box"] = all_metrics(m.predict(emb, hw, box=box_from_mask(gt)), gt)
    if "box_jitter" in cfg.protocols:
        rng = np.random.default_rng(int(hashlib.sha1(f"{cfg.seed}:{sample_id}".encode()).hexdigest()[:8], 16))
        out["box_jitter"] = all_metrics(m.predict(emb, hw, box=jitter_box(box_from_mask(gt), hw, cfg.box_jitter, rng)), gt)
    if "click" in cfg.protocols or "corrective" in cfg.protocols:
        pts, labels = [center_click(gt)], [1]
        pred = m.predict(emb, hw, points=(pts, labels))
        first = all_metrics(pred, gt)
        if "click" in cfg.protocols:
            out["click"] = first
        if "corrective" in cfg.protocols:
            out["clicks_1"] = first
            for k in range(2, cfg.correction_clicks + 1):
                nxt = correction_click(pred, gt)
                if nxt is not None:  # perfect masks stay as they are
                    pts.append(nxt[0])
                    labels.append(nxt[1])
                    pred = m.predict(emb, hw, points=(pts, labels))
                if k in CLICK_REPORTS:
                    out[f"clicks_{k}"] = all_metrics(pred, gt)
    return out


def eval_samples(samples, cfg: EvalConfig, skips: SkipLog):
    """The split's samples with usable non-empty masks, at most ``max_per_dataset`` per dataset
    (the first in SHA-1 order of their ids), as (sample, image, mask)."""
    by_ds = defaultdict(list)
    for s in sorted(samples, key=lambda s: hashlib.sha1(f"{cfg.seed}:{s.id}".encode()).hexdigest()):
        if cfg.max_per_dataset and len(by_ds[s.dataset]) >= cfg.max_per_dataset:
            continue
        try:
            image, gt = load_pair(s, require_mask=True)
        except KDSAMError as e:
            skips.add(s.id, e)
            continue
        by_ds[s.dataset].append(s)
        yield s, image, gt


def planned_count(samples, cfg: EvalConfig) -> int:
    """How many samples :func:`eval_samples` yields at most (skipped pairs make it fewer)."""
    per_ds = Counter(s.dataset for s in samples)
    return sum(min(n, cfg.max_per_dataset) if cfg.max_per_dataset else n for n in per_ds.values())


def summarise(rows: list[dict]) -> dict:
    """Means per model / dataset / protocol, plus the mean over all images ('all')."""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for ds in (r["dataset"], "all"):
            for m in METRICS:
                acc[(r["model"], ds, r["protocol"])][m].append(r[m])
    out: dict = {}
    for (model, ds, proto), vals in sorted(acc.items()):
        out.setdefault(model, {}).setdefault(ds, {})[proto] = {
            "n": len(vals["dice"]), **{m: float(np.mean(v)) for m, v in vals.items()},
            "dice_std": float(np.std(vals["dice"]))}
    return out


def markdown_table(summary: dict, labels: list[str]) -> str:
    head = "| dataset | protocol | n | " + " | ".join(f"{lab} {m}" for m in ("Dice", "IoU", "NSD", "HD95")
                                                    for lab in labels) + " |"
    lines = [head, "|" + "---|" * (3 + 4 * len(labels))]
    first = summary[labels[0]]
    for ds in [d for d in first if d != "all"] + ["all"]:
        for proto in first[ds]:
            cells = []
            for m in METRICS:
                for lab in labels:
                    v = summary.get(lab, {}).get(ds, {}).get(proto, {}).get(m)
                    cells.append("" if v is None else (f"{v:.2f}" if m == "hd95" else f"{v:.4f}"))
            lines.append(f"| {ds} | {proto} | {first[ds][proto]['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def blank_table(summary: dict, labels: list[str]) -> str:
    """Dice real / blank / real - blank per dataset and protocol, for each model."""
    head = "| dataset | protocol | " + " | ".join(f"{lab} real | {lab} blank | {lab} real-blank" for lab in labels)
    lines = [head + " |", "|" + "---|" * (2 + 3 * len(labels))]
    first = summary[labels[0]]
    for ds in [d for d in first if d != "all"] + ["all"]:
        for proto in first[ds]:
            cells = []
            for lab in labels:
                real = summary.get(lab, {}).get(ds, {}).get(proto, {}).get("dice")
                blank = summary.get(f"{lab}|blank", {}).get(ds, {}).get(proto, {}).get("dice")
                if real is None or blank is None:
                    cells += ["", "", ""]
                else:
                    cells += [f"{real:.4f}", f"{blank:.4f}", f"{real - blank:+.4f}"]
            lines.append(f"| {ds} | {proto} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_evaluate(cfg: EvalConfig) -> dict:
    """Evaluate every model on the same samples; writes ``<out>.json`` and ``<out>.md``."""
    from tqdm import tqdm

    device, _, _ = R.setup(cfg.device, cfg.threads, cfg.seed)
    models = [EvalModel(spec, device) for spec in cfg.models]
    samples = select(discover(cfg.data_root), read_splits(cfg.split_file)[cfg.split])
    skips = SkipLog()
    rows = []
    for s, image, gt in tqdm(eval_samples(samples, cfg, skips), desc=f"evaluate {cfg.split}",
                             total=planned_count(samples, cfg),
                             dynamic_ncols=True, mininterval=10):
        for m in models:
            runs = [(m.label, m.embed(s.id, image))]
            if cfg.blank_control:
                runs.append((f"{m.label}|blank", m.embed(None, np.zeros_like(image))))
            for label, emb in runs:
                for proto, met in evaluate_sample(m, s.id, emb, gt, cfg).items():
                    rows.append({"model": label, "dataset": s.dataset, "id": s.id, "protocol": proto, **met})
    if not rows:
        raise KDSAMError(f"no usable samples in split {cfg.split!r} ({skips.summary()})")
    summary = summarise(rows)
    labels = [m.label for m in models]
    result = {"split": cfg.split, **split_record(cfg.split_file), "models": {m.label: m.source for m in models},
              "protocols": cfg.protocols, "seed": cfg.seed, "box_jitter": cfg.box_jitter,
              "correction_clicks": cfg.correction_clicks, "nsd_tolerance_px": 2.0,
              "max_per_dataset": cfg.max_per_dataset, "skipped": skips.summary(), "summary": summary, "per_image": rows}
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out.with_suffix(".json"), json.dumps(result, indent=1) + "\n")
    md = (f"Split `{cfg.split}` of `{Path(cfg.split_file).name}`; models: "
          + "; ".join(f"**{m.label}** = {m.source}" for m in models)
          + f". Skipped: {skips.total} {dict(skips.counts)}. Distances in pixels, NSD tolerance 2 px.\n\n"
          + markdown_table(summary, labels))
    if cfg.blank_control:
        md += ("\nImage-blindness control: Dice with the real image, with an all-black image (same prompts), "
               "and their difference. A difference near 0 means the model does not use the image.\n\n"
               + blank_table(summary, labels))
    write_text(out.with_suffix(".md"), md)
    write_config(cfg, out.with_suffix(".config.yaml"))
    log.info("wrote %s and %s", out.with_suffix(".json"), out.with_suffix(".md"))
    return result

"""Phase 2: freeze the student encoder, fine-tune prompt encoder + mask decoder on masks.

Prompts are simulated per sample (:mod:`.prompts`): with probability ``p_box`` a box from
the mask (jittered, but for a share ``p_exact_box`` of tight boxes), otherwise a positive
click followed by 0..``max_correction_clicks`` correction clicks, each placed in the largest
error region of the model's own previous prediction (computed without gradient), as a user
would. Loss: Dice + ``bce_weight`` * BCE on the low-res logits (for a single click, the best of
SAM's three masks), plus MSE of the predicted IoU. The decoder starts from the teacher's (LiteMedSAM's) by default.

With the encoder frozen its embeddings are computed once into an fp16 cache (the same
format as the teacher cache, keyed to the encoder's weights); ``embed_copies=k`` adds k-1
seeded augmented copies of each image (and its mask), drawn like distinct training items.
``coupled=True`` is the baseline that trains encoder and decoder jointly (no cache, optional
augmentation on the fly).
Resume, logging and DDP as in phase 1 (gradients averaged across ranks with all-reduce).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from kdsam_core.checkpoint import file_sha256, load_into, save_checkpoint
from kdsam_core.errors import KDSAMError
from kdsam_core.model.build import build_model, checkpoint_metadata, load_model
from kdsam_core.transforms import preprocess, resized_shape

from . import runtime as R
from .augment import augment, modality_of
from .config import FinetuneConfig, write_config
from .data import SkipLog, discover, load_pair
from .losses import mask_loss
from .prompts import box_from_mask, correction_click, jitter_box, random_click
from .splits import read_splits, select, split_record
from .teacher_cache import cache_key, fill_cache, open_cache, sample_view

log = logging.getLogger(__name__)
LOG_FIELDS = ["step", "loss", "mask_loss", "iou_loss", "box_frac", "clicks_mean", "lr", "sec_per_step",
              "skipped", "elapsed_s"]


def mask_to_frame(mask: np.ndarray, img_size: int, frame: int) -> np.ndarray:
    """An (H, W) bool mask in the model's padded input frame at ``frame`` x ``frame`` pixels."""
    h, w = resized_shape(mask.shape[0], mask.shape[1], frame)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0] > 0.5
    out = np.zeros((frame, frame), dtype=bool)
    out[:h, :w] = t.numpy()
    return out


class Targets:
    """Ground-truth masks in the low-res frame, loaded once per training item (sample index,
    copy; copy k>0 augmented as the embedding cache saw it); unusable samples skipped and
    counted once (not once per copy)."""

    def __init__(self, samples, img_size: int, frame: int, skips: SkipLog, aug_seed: int = 0) -> None:
        self.samples, self.img_size, self.frame, self.skips = samples, img_size, frame, skips
        self.aug_seed = aug_seed
        self._gt: dict[tuple[str, int], np.ndarray] = {}
        self._bad: set[str] = set()

    def get(self, i: int, copy: int = 0) -> np.ndarray | None:
        s = self.samples[i]
        if s.id in self._bad:
            return None
        if (s.id, copy) not in self._gt:
            try:
                _, mask = sample_view(s, copy, self.aug_seed, require_mask=True)
                self._gt[s.id, copy] = mask_to_frame(mask, self.img_size, self.frame)
            except KDSAMError as e:
                self.skips.add(s.id, e)
                self._bad.add(s.id)
                return None
        return self._gt[s.id, copy]


def _pick(logits: torch.Tensor, iou: torch.Tensor) -> torch.Tensor:
    """(M, h, w) -> the (h, w) mask SAM's predictor returns: best predicted IoU."""
    return logits[int(torch.argmax(iou))]


def simulate_and_loss(model, emb: torch.Tensor, gt: np.ndarray, rng: np.random.Generator, cfg: FinetuneConfig,
                      scale: float) -> tuple[torch.Tensor, dict]:
    """One sample's prompt episode and its loss. ``gt`` is the (R, R) bool target; prompts
    are made in that frame and multiplied by ``scale`` into the model's input frame."""
    device = emb.device
    gt_t = torch.from_numpy(gt).to(device)
    if rng.random() < cfg.p_box:
        box = box_from_mask(gt)
        if not (cfg.p_exact_box > 0 and rng.random() < cfg.p_exact_box):
            box = jitter_box(box, gt.shape, cfg.box_jitter, rng)
        box = box * scale
        kw = {"boxes": torch.from_numpy(box)[None].to(device)}
        multi, info = False, {"box": 1, "clicks": 0}
    else:
        pts, labels = [random_click(gt, rng)], [1]
        for _ in range(int(rng.integers(0, cfg.max_correction_clicks + 1))):
            with torch.no_grad():
                low, iou = model.decode(emb, points=_points(pts, labels, scale, device), multimask_output=len(pts) == 1)
            pred = (_pick(low[0], iou[0]) > 0).cpu().numpy()
            nxt = correction_click(pred, gt, rng)
            if nxt is None:
                break
            pts.append(nxt[0])
            labels.append(nxt[1])
        kw = {"points": _points(pts, labels, scale, device)}
        multi, info = len(pts) == 1, {"box": 0, "clicks": len(pts)}
    low, iou = model.decode(emb, multimask_output=multi, **kw)
    per_mask = mask_loss(low[0], gt_t, cfg.bce_weight)  # (M,)
    k = int(torch.argmin(per_mask.detach()))
    with torch.no_grad():
        pred = low[0] > 0
        inter = (pred & gt_t).flatten(1).sum(-1).float()
        union = (pred | gt_t).flatten(1).sum(-1).float().clamp(min=1)
    iou_loss = F.mse_loss(iou[0], inter / union)
    info.update(mask_loss=per_mask[k].item(), iou_loss=iou_loss.item())
    return per_mask[k] + iou_loss, info


def _points(pts, labels, scale, device):
    c = torch.from_numpy(np.stack(pts).astype(np.float32) * scale)[None].to(device)
    return c, torch.tensor([labels], dtype=torch.int64, device=device)


def run_finetune(cfg: FinetuneConfig) -> Path:
    """Train; returns the exported ``student_final.safetensors``."""
    device, rank, world = R.setup(cfg.device, cfg.threads, cfg.seed)
    run = Path(cfg.run_dir)
    try:
        student = load_model(cfg.student_checkpoint)
        if cfg.init_decoder == "teacher":
            teacher = build_model(cfg.teacher, cfg.teacher_checkpoint or None)
            for part in ("prompt_encoder", "mask_decoder"):
                load_into(getattr(student, part), getattr(teacher, part).state_dict(),
                          source=f"the {cfg.teacher} {part}", what=f"student {part}")
            del teacher
        elif cfg.init_decoder != "student":
            raise KDSAMError(f"init_decoder must be teacher or student, not {cfg.init_decoder!r}")
        if cfg.embed_copies < 1:
            raise KDSAMError(f"embed_copies must be at least 1, not {cfg.embed_copies}")
        if cfg.amp != "none" and not cfg.coupled:
            raise KDSAMError(f"amp {cfg.amp} is for the coupled run's encoder; the decoder-only run trains "
                             "the decoder in fp32 on cached fp32 embeddings (amp: none)")
        amp = R.autocast(device, cfg.amp)  # an unknown mode fails here, before any step
        if cfg.coupled and cfg.embed_copies != 1:
            raise KDSAMError("embed_copies is for the decoder-only run's embedding cache; the coupled baseline "
                             "augments on the fly (augment: true)")
        skips = SkipLog()
        samples = select(discover(cfg.data_root), read_splits(cfg.split_file)["train"])
        frame = 4 * student.embedding_shape[1]
        scale = student.img_size / frame
        targets = Targets(samples, student.img_size, frame, skips, cfg.aug_seed)
        items = [(i, c) for i in range(len(samples)) for c in range(cfg.embed_copies)]
        cache = None
        if not cfg.coupled:
            for p in student.image_encoder.parameters():
                p.requires_grad_(False)
            name, sig = f"{getattr(student, 'name', 'kdsam')}:encoder", {"copies": cfg.embed_copies,
                                                                         "aug_seed": cfg.aug_seed}
            cache = open_cache(cfg.embed_cache_dir, student, name, **sig)
            if rank == 0:
                fill_cache(student, cache, samples, batch_size=4, device=device, skips=SkipLog())
            if world > 1:
                dist.barrier()
                cache = open_cache(cfg.embed_cache_dir, student, name, **sig)
        student.to(device)
        student.image_encoder.train(cfg.coupled)
        student.prompt_encoder.train()
        student.mask_decoder.train()
        groups = [{"params": [*student.prompt_encoder.parameters(), *student.mask_decoder.parameters()],
                   "lr": cfg.lr, "base": cfg.lr}]
        if cfg.coupled:
            groups.append({"params": list(student.image_encoder.parameters()), "lr": cfg.encoder_lr,
                           "base": cfg.encoder_lr})
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        start, state = 0, R.load_state(run / "train_state.pt")
        if state is not None:
            student.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            R.set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
            start = state["step"]
            skips.counts.update(state.get("skips", {}))
            log.info("resumed %s at step %d", run, start)
        if rank == 0:
            write_config(cfg, run / "config.yaml")
            log.info("phase 2 (%s): %d training samples x %d copies, %d steps x %d x %d ranks",
                     "coupled" if cfg.coupled else "decoder only", len(samples), cfg.embed_copies, cfg.steps,
                     cfg.batch_size, world)
        csv = R.CSVLog(run / "log.csv", LOG_FIELDS, resume_step=start if state else None) if rank == 0 else None
        ctx = R.RunContext(run, device, rank, world, start, csv, skips)
        step = _loop(cfg, ctx, student, opt, samples, items, targets, cache, scale, amp)
        if rank == 0:
            student.cpu().eval()
            prompts = {"p_box": cfg.p_box, "box_jitter": cfg.box_jitter,
                       "max_correction_clicks": cfg.max_correction_clicks}
            if cfg.p_exact_box:
                prompts["p_exact_box"] = cfg.p_exact_box
            extra = {"embed_copies": cfg.embed_copies, "aug_seed": cfg.aug_seed} if cfg.embed_copies > 1 else {}
            if cfg.amp != "none":
                extra["amp"] = cfg.amp
            if cache is not None:  # the frozen encoder's weights, hashed for the embedding cache's signature
                extra["encoder_weights_sha256"] = cache.signature["weights_sha256"]
            out = save_checkpoint(student.state_dict(), run / "student_final.safetensors", checkpoint_metadata(
                student, phase=2, coupled=cfg.coupled, steps=step, batch_size=cfg.batch_size * world,
                init_decoder=cfg.init_decoder, **phase1_lineage(student.metadata, cfg.student_checkpoint),
                prompts=prompts, **extra,
                training_data={**split_record(cfg.split_file), "split": "train", "samples": len(samples)},
                skipped=skips.summary()), overwrite=True)
            log.info("phase 2 done at step %d: %s; skipped %s", step, out, skips.summary())
            return out
        return run / "student_final.safetensors"
    finally:
        R.teardown()


def phase1_lineage(meta: dict, checkpoint) -> dict:
    """Where the frozen encoder of a phase-2 run comes from, as checkpoint metadata.

    ``checkpoint`` is usually phase 1's output; it may also be an earlier phase-2 checkpoint
    (whose encoder phase 2 kept frozen): then its own phase-1 record is carried over, and the
    file this run read is named as ``encoder_from``."""
    read = {"checkpoint": str(checkpoint), "sha256": file_sha256(checkpoint)}
    keys = ("phase1_checkpoint", "phase1_sha256", "teacher", "phase1_steps", "perceptual", "phase1_init_encoder",
            "phase1_backbone_init")
    if meta.get("phase") == 2 and not meta.get("coupled"):
        return {**{k: meta.get(k) for k in keys}, "encoder_from": {**read, "phase": 2}}
    return {"phase1_checkpoint": read["checkpoint"], "phase1_sha256": read["sha256"], "teacher": meta.get("teacher"),
            "phase1_steps": meta.get("steps"), "perceptual": meta.get("perceptual"),
            "phase1_init_encoder": meta.get("init_encoder"),  # a warm-started phase 1's source
            "phase1_backbone_init": meta.get("backbone_init")}  # an ImageNet-initialised one's weights


def _embeddings(student, cache, samples, idx, cfg, step, device, amp):
    """(B, C, H, W) fp32 embeddings of the training items ``idx`` ((sample index, copy) pairs;
    coupled: computed with gradient, under ``amp``, copy 0 only)."""
    if cache is not None:
        return torch.stack([cache.get(cache_key(samples[i].id, c)).float() for i, c in idx]).to(device), None
    xs, gts = [], []
    for i, _ in idx:
        s = samples[i]
        image, mask = load_pair(s, require_mask=True)  # already known to be usable
        if cfg.augment:
            image, mask = augment(image, mask, modality_of(s.dataset), np.random.default_rng([cfg.seed, step, i, 7]))
        xs.append(preprocess(image, student.preprocess))
        gts.append(mask_to_frame(mask, student.img_size, 4 * student.embedding_shape[1]))
    with amp:
        emb = student.encode(torch.cat(xs).to(device))
    return emb.float(), gts


def _loop(cfg, ctx: R.RunContext, student, opt, samples, items, targets, cache, scale, amp) -> int:
    """Phase-2 steps from ``ctx.start`` to ``cfg.steps`` (or a stop) over the training ``items``
    ((sample index, copy) pairs); returns the last step."""
    from tqdm import tqdm

    device, rank, world, csv, skips = ctx.device, ctx.rank, ctx.world, ctx.csv, ctx.skips
    bar = tqdm(total=cfg.steps, initial=ctx.start, desc="finetune", disable=rank != 0, dynamic_ncols=True,
               mininterval=10)
    t_start, step = time.time(), ctx.start
    params = [p for g in opt.param_groups for p in g["params"]]
    while step < cfg.steps:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = R.lr_at(step, cfg.steps, g["base"], cfg.warmup_steps)
        idx = [items[k] for k in R.batch_indices(len(items), cfg.batch_size, step, cfg.seed, rank, world)]
        idx = [(i, c) for i, c in idx
               if targets.get(i, c) is not None and (cache is None or cache_key(samples[i].id, c) in cache)]
        opt.zero_grad(set_to_none=True)
        infos = []
        if idx:
            emb, gts = _embeddings(student, cache, samples, idx, cfg, step, device, amp)
            total = 0.0
            for j, (i, c) in enumerate(idx):
                gt = gts[j] if gts is not None else targets.get(i, c)
                rng = np.random.default_rng([cfg.seed, step, i, *([c] if c else [])])  # copy 0: as before copies
                loss, info = simulate_and_loss(student, emb[j:j + 1], gt, rng, cfg, scale)
                total = total + loss / len(idx)
                infos.append(info)
            total.backward()
        if world > 1:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
        if idx or world > 1:
            opt.step()
        step += 1
        bar.update(1)
        mean = {k: float(np.mean([x[k] for x in infos])) if infos else float("nan")
                for k in ("mask_loss", "iou_loss", "box", "clicks")}
        bar.set_postfix(loss=f"{mean['mask_loss']:.3f}")
        stop = (cfg.max_minutes > 0 and (time.time() - t_start) > cfg.max_minutes * 60) or step == cfg.stop_at_step
        if world > 1:
            flag = torch.tensor([float(stop)])
            dist.all_reduce(flag)
            stop = bool(flag.item())
        if csv is not None and (step % cfg.log_every == 0 or step == cfg.steps or stop):
            csv.write({"step": step, "loss": mean["mask_loss"] + mean["iou_loss"], "mask_loss": mean["mask_loss"],
                       "iou_loss": mean["iou_loss"], "box_frac": mean["box"], "clicks_mean": mean["clicks"],
                       "lr": opt.param_groups[0]["lr"], "sec_per_step": round(time.time() - t0, 3),
                       "skipped": skips.total, "elapsed_s": round(time.time() - t_start, 1)})
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stop:
            ctx.save("model", student, opt, step)
        if stop:
            log.info("stopped at step %d", step)
            break
    bar.close()
    return step

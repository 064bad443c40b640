"""Phase 1: distil the teacher's image encoder into the student's, from cached embeddings.

loss = MSE(student embedding, teacher embedding) + lambda * perceptual, where perceptual
is :class:`~.losses.DecoderPerceptual` (default, no ImageNet weights) or the paper's
:class:`~.losses.VGGPerceptual`. Only the student image encoder is trained. It starts from a
random initialisation, from torchvision ImageNet weights in its ResNet body
(``backbone_weights``, :mod:`.imagenet`), or from another KD SAM checkpoint's encoder (``init_encoder``).

Resumable: ``<run_dir>/train_state.pt`` (model, optimiser, step, RNG states) is written
atomically every ``ckpt_every`` steps; a batch and its random prompts are functions of the
step number, so a run killed with ``kill -9`` and restarted repeats the same steps.
Under ``torchrun`` each rank trains on its own part of every global batch (DDP).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from kdsam_core.checkpoint import file_sha256, load_into, read_metadata, save_checkpoint
from kdsam_core.errors import KDSAMError
from kdsam_core.model.build import build_model, checkpoint_metadata, load_model
from kdsam_core.transforms import boxes_to_model, preprocess

from . import runtime as R
from .config import DistillConfig, write_config
from .data import SkipLog, discover
from .imagenet import init_backbone
from .losses import build_perceptual, embedding_mse
from .prompts import box_from_mask, jitter_box
from .splits import read_splits, select, split_record
from .teacher_cache import EmbeddingCache, cache_key, sample_view, weights_sha256

log = logging.getLogger(__name__)
LOG_FIELDS = ["step", "loss", "mse", "perceptual", "lr", "sec_per_step", "skipped", "elapsed_s"]


def load_teacher_cache(cache_dir: str) -> EmbeddingCache:
    """Open a cache with the signature stored in it (checked against the teacher later)."""
    import json

    sig_file = Path(cache_dir) / "signature.json"
    if not sig_file.is_file():
        raise KDSAMError(f"{cache_dir} is not an embedding cache; fill it with `kdsam-train cache` first")
    return EmbeddingCache(cache_dir, json.loads(sig_file.read_text()), create=False)


def check_shapes(student, cache: EmbeddingCache) -> None:
    """Student embedding shape must equal the teacher's; checked before any training."""
    t_shape = tuple(cache.signature["embedding_shape"])
    if tuple(student.embedding_shape) != t_shape:
        raise KDSAMError(
            f"the student's embedding {tuple(student.embedding_shape)} (C, H, W) does not match the teacher's "
            f"{t_shape} in {cache.root}; build the student with the teacher's embedding size")


class DistillBatches:
    """Student inputs, teacher embeddings and perceptual box prompts of cached samples."""

    def __init__(self, samples, cache: EmbeddingCache, student_pre, teacher_size: int, seed: int,
                 skips: SkipLog) -> None:
        sig = cache.signature
        self.items = [(s, c) for s in samples for c in range(sig["copies"]) if cache_key(s.id, c) in cache]
        self.not_cached = len(samples) * sig["copies"] - len(self.items)
        if not self.items:
            raise KDSAMError(f"none of the {len(samples)} training samples is in the cache {cache.root}")
        self.cache, self.pre, self.tsize, self.seed, self.skips = cache, student_pre, teacher_size, seed, skips
        self.aug_seed = sig["aug_seed"]

    def __len__(self) -> int:
        return len(self.items)

    def get(self, indices: list[int], step: int):
        xs, ts, boxes = [], [], []
        for j, i in enumerate(indices):
            s, c = self.items[i]
            try:
                image, mask = sample_view(s, c, self.aug_seed)
            except KDSAMError as e:
                self.skips.add(s.id, e)
                continue
            rng = np.random.default_rng([self.seed, step, i])
            h, w = image.shape[:2]
            if mask is not None and mask.any() and rng.random() < 0.75:
                box = jitter_box(box_from_mask(mask), (h, w), 0.1, rng)
            else:  # a random box inside the image
                c0 = rng.uniform(0, 1, 2) * [w, h]
                c1 = rng.uniform(0, 1, 2) * [w, h]
                box = np.concatenate([np.minimum(c0, c1), np.maximum(c0, c1)]).astype(np.float32)
            boxes.append(boxes_to_model(box, (h, w), self.tsize))
            xs.append(preprocess(image, self.pre))
            ts.append(self.cache.get(cache_key(s.id, c)).float())
        if not xs:
            return None
        return torch.cat(xs), torch.stack(ts), torch.from_numpy(np.stack(boxes))


@torch.no_grad()
def init_output_affine(encoder: torch.nn.Module, cache: EmbeddingCache, keys: list[str],
                       residual_scale: float = 0.25) -> bool:
    """Start the student at the teacher's statistics (over ``keys``), from streamed sums.

    Without a prior (``ResNetEncoder(prior=False)``, v1): the affine of the encoder's last
    channel LayerNorm gets the teacher embeddings' per-channel mean and std (the teacher's
    values are ~10x smaller than unit variance, which the MSE would otherwise spend hundreds of
    steps on). With one: the prior becomes the mean embedding per channel and position, and the
    residual head's last conv is rescaled so that its output's std is ``residual_scale`` times
    the teacher residual's: the student starts close to the mean embedding. Returns False if
    there is nothing to set."""
    from segment_anything.modeling.common import LayerNorm2d

    if not keys:
        return False
    s = s2 = None
    for k in keys:
        t = cache.get(k).double()
        s, s2 = (t, t * t) if s is None else (s + t, s2 + t * t)
    mean, sq = s / len(keys), s2 / len(keys)  # per (C, H, W)
    if getattr(encoder, "has_prior", False):
        encoder.prior.copy_(mean)
        conv = encoder.fuse[-1]
        # the head's input is channel-normalised (unit variance a position), so a conv with
        # weight std sigma / sqrt(fan_in) gives outputs of std ~ sigma
        target = residual_scale * float((sq - mean * mean).clamp_min(0).mean().sqrt())
        fan_in = conv.weight[0].numel()
        conv.weight.normal_(0, target / fan_in ** 0.5)
        return True
    norms = [m for m in encoder.modules() if isinstance(m, LayerNorm2d)]
    if not norms:
        return False
    m_c = mean.mean(dim=(1, 2))
    norms[-1].weight.copy_((sq.mean(dim=(1, 2)) - m_c * m_c).clamp_min(0).sqrt())
    norms[-1].bias.copy_(m_c)
    return True


def warm_start(encoder: torch.nn.Module, student, checkpoint: str) -> None:
    """Load the image encoder of the KD SAM ``checkpoint`` into ``encoder`` (the student being trained).

    The checkpoint must describe the same student (model name, backbone, neck, prior, decoder); a
    mismatch is a :class:`KDSAMError` before any training step. The input size may differ (a
    256 px encoder trained on at 512): a ResNet's and the neck's weights do not depend on it, and
    the embedding grid, hence the prior's shape, is the decoder's, which must match.
    """
    source = load_model(checkpoint)
    def arch(config: dict) -> dict:
        return {k: v for k, v in config.items() if k != "img_size"}

    if getattr(source, "name", None) != getattr(student, "name", None) or arch(source.config) != arch(student.config):
        raise KDSAMError(f"--init-encoder {checkpoint} holds a {getattr(source, 'name', '?')} student with "
                         f"config {source.config}, but this run trains {getattr(student, 'name', '?')} with "
                         f"{student.config}; set --student/--neck/--embed-prior to match it")
    load_into(encoder, source.image_encoder.state_dict(), source=str(checkpoint), what="student image encoder")
    log.info("warm start: image encoder from %s (trained at %d px, now at %d px)", checkpoint,
             source.config["img_size"], student.config["img_size"])


def run_distill(cfg: DistillConfig) -> Path:
    """Train; returns the exported ``student_phase1.safetensors``."""
    device, rank, world = R.setup(cfg.device, cfg.threads, cfg.seed)
    run = Path(cfg.run_dir)
    try:
        cache = load_teacher_cache(cfg.cache_dir)
        if cfg.init_encoder and cfg.backbone_weights:
            raise KDSAMError("--init-encoder and --backbone-weights both set the encoder's start; give one of them")
        student = build_model(cfg.student, img_size=cfg.img_size, neck=cfg.neck, prior=cfg.embed_prior)
        check_shapes(student, cache)
        teacher = build_model(cfg.teacher, cfg.teacher_checkpoint or None)
        if weights_sha256(teacher.image_encoder) != cache.signature["weights_sha256"]:
            raise KDSAMError(f"the cache {cfg.cache_dir} was made by another {cache.signature['teacher']} "
                             f"than the --teacher {cfg.teacher} {cfg.teacher_checkpoint or '(default weights)'}")
        perceptual = build_perceptual(cfg.perceptual, teacher, student.embedding_shape[0], cfg.vgg_weights or None,
                                      cfg.perceptual_samples)
        perceptual = perceptual.to(device) if perceptual is not None else None
        amp = R.autocast(device, cfg.amp)  # an unknown mode fails here, before any step
        skips = SkipLog()
        samples = select(discover(cfg.data_root), read_splits(cfg.split_file)["train"])
        data = DistillBatches(samples, cache, student.preprocess, teacher.img_size, cfg.seed, skips)
        if rank == 0:
            write_config(cfg, run / "config.yaml")
            log.info("phase 1: %d cached training items (%d not cached), %d steps x %d x %d ranks",
                     len(data), data.not_cached, cfg.steps, cfg.batch_size, world)
        encoder = student.image_encoder.to(device).train()
        opt = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = 0
        state = R.load_state(run / "train_state.pt")
        backbone_record = state.get("backbone_init") if state else None  # kept in the run state, as below
        if state is None and cfg.init_encoder:
            warm_start(encoder, student, cfg.init_encoder)
        elif state is None:  # a resumed run gets all of this from its state, RNG included
            if cfg.backbone_weights:
                backbone_record = init_backbone(encoder, student.config["backbone"], cfg.backbone_weights)
            init_output_affine(encoder, cache, [cache_key(s.id, c) for s, c in data.items[:cfg.init_items or None]])
        else:
            encoder.load_state_dict(state["encoder"])
            opt.load_state_dict(state["optimizer"])
            R.set_rng_state(state["rng"][rank] if isinstance(state["rng"], list) else state["rng"])
            start = state["step"]
            skips.counts.update(state.get("skips", {}))
            log.info("resumed %s at step %d", run, start)
        # the warm start's source, hashed when it is loaded and kept in the run state, so that a resumed
        # run records the file it started from (a state written before the record existed: hashed now)
        init_record = state.get("init_encoder") if state else None
        if cfg.init_encoder and init_record is None:
            init_record = {"checkpoint": str(cfg.init_encoder), "sha256": file_sha256(cfg.init_encoder),
                           "img_size": read_metadata(cfg.init_encoder)["config"].get("img_size")}
        model = DDP(encoder) if world > 1 else encoder
        csv = R.CSVLog(run / "log.csv", LOG_FIELDS, resume_step=start if state else None) if rank == 0 else None
        extra = {k: v for k, v in (("init_encoder", init_record), ("backbone_init", backbone_record)) if v} or None
        ctx = R.RunContext(run, device, rank, world, start, csv, skips, extra)
        step = _loop(cfg, ctx, model, encoder, opt, data, perceptual, amp)
        if rank == 0:
            student.image_encoder = encoder.cpu().eval()
            # ship the teacher's decoder with the phase-1 encoder: usable with boxes at once
            student.prompt_encoder.load_state_dict(teacher.prompt_encoder.state_dict())
            student.mask_decoder.load_state_dict(teacher.mask_decoder.state_dict())
            out = save_checkpoint(student.state_dict(), run / "student_phase1.safetensors", checkpoint_metadata(
                student, phase=1, steps=step, batch_size=cfg.batch_size * world,
                teacher={"name": cfg.teacher, "weights_sha256": cache.signature["weights_sha256"]},
                perceptual=cfg.perceptual, lambda_perceptual=cfg.lambda_perceptual,
                perceptual_samples=cfg.perceptual_samples,
                training_data={**split_record(cfg.split_file), "split": "train", "items": len(data)},
                init_encoder=init_record, backbone_init=backbone_record, amp=cfg.amp,
                skipped=skips.summary()), overwrite=True)
            log.info("phase 1 done at step %d: %s; skipped %s", step, out, skips.summary())
            return out
        return run / "student_phase1.safetensors"
    finally:
        R.teardown()


def _loop(cfg, ctx: R.RunContext, model, encoder, opt, data, perceptual, amp) -> int:
    """Phase-1 steps from ``ctx.start`` to ``cfg.steps`` (or a stop); returns the last step.
    ``amp``: the context of the student's forward (:func:`.runtime.autocast`); losses are fp32."""
    from tqdm import tqdm

    device, rank, world, csv, skips = ctx.device, ctx.rank, ctx.world, ctx.csv, ctx.skips
    bar = tqdm(total=cfg.steps, initial=ctx.start, desc="distill", disable=rank != 0, dynamic_ncols=True,
               mininterval=10)
    t_start = time.time()
    step = ctx.start
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = R.lr_at(step, cfg.steps, cfg.lr, cfg.warmup_steps)
        t0 = time.time()
        batch = data.get(R.batch_indices(len(data), cfg.batch_size, step, cfg.seed, rank, world), step)
        if batch is None:  # every sample of this batch was unusable: still one (empty) step
            loss_v = mse_v = per_v = float("nan")
            if world > 1:  # keep DDP's collective calls matched across ranks
                for p in encoder.parameters():
                    p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
        else:
            x, t, boxes = (v.to(device) for v in batch)
            with amp:
                s = model(x)
            s = s.float()
            mse = embedding_mse(s, t)
            per = perceptual(s, t, boxes) if perceptual is not None else torch.zeros((), device=device)
            loss = mse + cfg.lambda_perceptual * per
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_v, mse_v, per_v = loss.item(), mse.item(), per.item()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_v:.4f}", mse=f"{mse_v:.4f}")
        stop = (cfg.max_minutes > 0 and (time.time() - t_start) > cfg.max_minutes * 60) or step == cfg.stop_at_step
        if world > 1:
            flag = torch.tensor([float(stop)])
            dist.all_reduce(flag)
            stop = bool(flag.item())
        if csv is not None and (step % cfg.log_every == 0 or step == cfg.steps or stop):
            csv.write({"step": step, "loss": loss_v, "mse": mse_v, "perceptual": per_v,
                       "lr": opt.param_groups[0]["lr"], "sec_per_step": round(time.time() - t0, 3),
                       "skipped": skips.total, "elapsed_s": round(time.time() - t_start, 1)})
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stop:
            ctx.save("encoder", encoder, opt, step)
        if stop:
            log.info("time limit of %.1f min reached at step %d", cfg.max_minutes, step)
            break
    bar.close()
    return step

"""``kdsam-train``: split, cache, distill, finetune, evaluate, diagnose, average.

Each subcommand takes ``--config file.yaml`` and per-option overrides (see
``kdsam-train <cmd> --help`` and training/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from kdsam_core.errors import KDSAMError

from . import config as C

log = logging.getLogger("kdsam_train")


def _split(cfg: C.SplitConfig) -> None:
    from .data import discover
    from .splits import make_splits, write_splits

    samples = discover(cfg.data_root, cfg.datasets or None)
    splits = make_splits(samples, fractions=tuple(cfg.fractions), seed=cfg.seed)
    write_splits(cfg.split_file, splits, seed=cfg.seed, fractions=list(cfg.fractions),
                 datasets=sorted({s.dataset for s in samples}),
                 rule="per dataset: groups ordered by sha1('<seed>:<dataset>/<stem>'), cut at fractions")
    log.info("wrote %s: %s", cfg.split_file, {k: len(v) for k, v in splits.items()})


def _cache(cfg: C.CacheConfig) -> None:
    from tqdm import tqdm

    from kdsam_core.device import pick_device, set_threads
    from kdsam_core.model.build import build_model

    from .data import discover
    from .splits import read_splits, select
    from .teacher_cache import fill_cache, open_cache

    set_threads(cfg.threads or None)
    device = pick_device(None if cfg.device == "auto" else cfg.device)
    splits = read_splits(cfg.split_file)
    samples = discover(cfg.data_root)
    todo = []
    for name in cfg.splits:
        todo += interleave(select(samples, splits[name]))
    teacher = build_model(cfg.teacher, cfg.teacher_checkpoint or None)
    cache = open_cache(cfg.cache_dir, teacher, cfg.teacher, copies=cfg.copies, aug_seed=cfg.aug_seed)
    bar = tqdm(total=1, desc="teacher cache", unit="img", dynamic_ncols=True, mininterval=5)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    skips = fill_cache(teacher, cache, todo, batch_size=cfg.batch_size, shard_size=cfg.shard_size,
                       device=device, progress=progress)
    bar.close()
    log.info("cache %s holds %d embeddings; %s", cfg.cache_dir, len(cache), json.dumps(skips.summary()))


def interleave(samples: list) -> list:
    """Round-robin over datasets, so a partly filled cache covers every dataset."""
    by_ds: dict[str, list] = {}
    for s in samples:
        by_ds.setdefault(s.dataset, []).append(s)
    out, lists = [], list(by_ds.values())
    for i in range(max((len(v) for v in lists), default=0)):
        out += [v[i] for v in lists if i < len(v)]
    return out


def _distill(cfg: C.DistillConfig) -> None:
    from .distill import run_distill

    run_distill(cfg)


def _finetune(cfg: C.FinetuneConfig) -> None:
    from .finetune import run_finetune

    run_finetune(cfg)


def _evaluate(cfg: C.EvalConfig) -> None:
    from .evaluate import run_evaluate

    run_evaluate(cfg)


def _diagnose(cfg: C.DiagnoseConfig) -> None:
    from .diagnose import run_diagnose

    run_diagnose(cfg)


def _average(cfg: C.AverageConfig) -> None:
    from .average import average_checkpoints

    average_checkpoints(cfg.models, cfg.out, cfg.weights or None)


COMMANDS = {
    "split": (C.SplitConfig, _split, "write deterministic train/val/test splits"),
    "cache": (C.CacheConfig, _cache, "compute the teacher's fp16 embedding cache (resumable)"),
    "distill": (C.DistillConfig, _distill, "phase 1: distil the teacher's encoder into the student"),
    "finetune": (C.FinetuneConfig, _finetune, "phase 2: fine-tune the mask decoder with box and click prompts"),
    "evaluate": (C.EvalConfig, _evaluate, "Dice/IoU/NSD/HD95 of student and teacher per dataset and protocol"),
    "diagnose": (C.DiagnoseConfig, _diagnose, "does the student's embedding follow the teacher's from image to image?"),
    "average": (C.AverageConfig, _average, "weight-average checkpoints of one architecture (a model soup)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdsam-train", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        C.add_options(sp, cls)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cls, fn, _ = COMMANDS[args.command]
    import torch

    torch.set_flush_denormal(True)  # zero-padded inputs make denormals; 2x slower on x86 CPUs otherwise
    try:
        fn(C.resolve(cls, args))
    except KDSAMError as e:
        log.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

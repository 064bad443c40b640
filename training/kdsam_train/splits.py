"""Deterministic train/val/test splits, written to a JSON file and reused.

Each dataset is split on its own: sample groups (an image, or all slices of one volume)
are ordered by SHA-1 of ``"<seed>:<group>"`` and cut at the given fractions, so adding a
dataset never moves another dataset's samples.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from pathlib import Path

from kdsam_core.atomic import write_text
from kdsam_core.checkpoint import file_sha256
from kdsam_core.errors import InputError

from .data import Sample

SPLITS = ("train", "val", "test")
_REPO_ROOT = Path(__file__).resolve().parents[2]
# the split file of ../shared/data that every shipped run used (training/README.md, Data)
DEFAULT_SPLIT_FILE = str(_REPO_ROOT / "training" / "splits" / "shared_data_v1.json")


def make_splits(samples: list[Sample], *, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                seed: int = 0) -> dict[str, list[str]]:
    """{"train": [ids], "val": [...], "test": [...]} (ids sorted)."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, not {fractions}")
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        groups[s.dataset][s.group].append(s.id)
    out: dict[str, list[str]] = {k: [] for k in SPLITS}
    for ds in sorted(groups):
        keys = sorted(groups[ds], key=lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest())
        n = len(keys)
        n_train = int(round(fractions[0] * n))
        n_val = int(round(fractions[1] * n))
        parts = {"train": keys[:n_train], "val": keys[n_train:n_train + n_val], "test": keys[n_train + n_val:]}
        for split, gs in parts.items():
            for g in gs:
                out[split].extend(groups[ds][g])
    return {k: sorted(v) for k, v in out.items()}


def write_splits(path: str | os.PathLike, splits: dict[str, list[str]], **info) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = dict(info)
    doc["counts"] = {k: len(v) for k, v in splits.items()}
    doc["splits"] = splits
    return write_text(path, json.dumps(doc, indent=1) + "\n")


def locate(path: str | os.PathLike) -> Path:
    """A split file's path as given, or, when it is relative and absent under the working
    directory, the same path under the repository (how written configs name it: :func:`shown`)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists() and (_REPO_ROOT / path).exists():
        return _REPO_ROOT / path
    return path


def shown(path: str | os.PathLike) -> str:
    """A path as results and configs record it: relative to the repository when it lies inside
    it (so a record reads the same on every clone), absolute otherwise."""
    path = locate(path).resolve()
    try:
        return str(path.relative_to(_REPO_ROOT))
    except ValueError:
        return str(path)


def read_splits(path: str | os.PathLike) -> dict[str, list[str]]:
    path = locate(path)
    if not path.is_file():
        raise InputError(f"split file {path} does not exist; write it with `kdsam-train split`")
    doc = json.loads(path.read_text())
    splits = doc.get("splits")
    if not isinstance(splits, dict) or not set(SPLITS) <= set(splits):
        raise InputError(f"{path} is not a split file (needs train/val/test lists)")
    return splits


def split_record(path: str | os.PathLike) -> dict:
    """How checkpoints and results name the split file they used: its path relative to the
    repository when it lies inside it (absolute otherwise) and the SHA-256 of its bytes."""
    path = locate(path)
    return {"split_file": shown(path), "split_file_sha256": file_sha256(path)}


def select(samples: list[Sample], ids: list[str]) -> list[Sample]:
    """The samples named by ``ids``, in that order; ids without a sample are an error."""
    by_id = {s.id: s for s in samples}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InputError(f"{len(missing)} split ids have no sample under the data root (e.g. {missing[0]})")
    return [by_id[i] for i in ids]

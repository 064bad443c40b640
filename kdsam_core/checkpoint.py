"""Checkpoints: safetensors tensors plus JSON metadata, and safe loading of SAM ``.pth`` files.

A KD SAM checkpoint is one ``.safetensors`` file whose header metadata holds, under the
key ``kdsam``, a JSON object::

    {"format_version": 1, "model": "kdsam", "config": {...build_model kwargs...},
     "preprocess": {...}, "teacher": ..., "training_data": ..., "metrics": ...,
     "kdsam_version": "...", "created": "..."}

Nothing here unpickles: ``.pth`` / ``.pt`` files (official SAM, LiteMedSAM) go through
``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .atomic import atomic_path
from .errors import CheckpointError, NoWeightsError

FORMAT_VERSION = 1
METADATA_KEY = "kdsam"
DEFAULT_WEIGHTS_NAME = "kdsam_default.safetensors"
_REPO_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "resources" / "weights"


def save_checkpoint(state_dict: dict, path: str | os.PathLike, metadata: dict, *, overwrite: bool = False) -> Path:
    """Write ``state_dict`` and ``metadata`` to ``path`` atomically (temp file + rename).

    Raises CheckpointError when ``path`` exists and ``overwrite`` is False.
    """
    from . import __version__

    path = Path(path)
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists; refusing to overwrite it")
    meta = {"format_version": FORMAT_VERSION, "kdsam_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    meta.update(metadata)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(meta)})
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a KD SAM safetensors checkpoint."""
    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file without KD SAM metadata (no '{METADATA_KEY}' key)")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} has corrupt KD SAM metadata ({e})") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` through ``weights_only`` loading.

    A ``.pth`` holding ``{"model": sd}`` or ``{"state_dict": sd}`` is unwrapped.
    """
    path = _existing(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError ...
        raise CheckpointError(
            f"{path} could not be loaded safely: torch.load(weights_only=True) refused it or the file is "
            f"corrupt ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). KD SAM never unpickles "
            "arbitrary objects; convert the file to .safetensors with a tool you trust."
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return obj


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], *, source: str, what: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names the mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(f"{source} does not fit the {what} architecture: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def default_weights_dir() -> Path:
    """``$KDSAM_WEIGHTS_DIR`` if set, else the repository's ``resources/weights``."""
    env = os.environ.get("KDSAM_WEIGHTS_DIR")
    return Path(env) if env else _REPO_WEIGHTS_DIR


def default_checkpoint() -> Path:
    """Path of the shipped default KD SAM weights; NoWeightsError when none are installed."""
    path = default_weights_dir() / DEFAULT_WEIGHTS_NAME
    if not path.is_file():
        raise NoWeightsError(
            f"No trained KD SAM weights are installed (looked for {path}). Train them with "
            "`kdsam-train` (see training/README.md) or pass a checkpoint with --checkpoint."
        )
    return path


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    return path

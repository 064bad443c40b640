"""ImageNet weights from torchvision files the user already has; nothing is downloaded.

Two uses, both the paper's: the VGG16 features of the perceptual loss (:mod:`.losses`) and the
student's ResNet initialisation (``kdsam-train distill --backbone-weights``). A weights option
takes a path to torchvision's file (``.pth``, read with ``torch.load(weights_only=True)``, or a
``.safetensors`` conversion of it), or ``imagenet`` for the file under its own name in the torch
hub cache (``$TORCH_HOME/hub/checkpoints``, where ``torchvision.models.*(weights=...)`` leaves it).
What is missing is said in one message; no ImageNet weights can be had on these machines.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from kdsam_core.checkpoint import file_sha256, load_state_dict
from kdsam_core.errors import CheckpointError

log = logging.getLogger(__name__)

VGG16_FILES = ("vgg16-397923af.pth",)  # IMAGENET1K_V1
# torchvision's ImageNet files of each student backbone, newest first (resnet50: IMAGENET1K_V2, V1)
RESNET_FILES = {"resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
                "resnet18": ("resnet18-f37072fd.pth",)}


def hub_dir() -> Path:
    """Where torchvision keeps downloaded weights: ``<torch.hub.get_dir()>/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_weights(path: str | os.PathLike | None, names: tuple[str, ...], *, option: str, needs: str,
                 otherwise: str) -> Path:
    """``path`` if given (and not ``imagenet``), else the first of torchvision's ``names`` in the hub
    cache. A :class:`CheckpointError` says what ``needs`` them, the places looked at, the option and
    ``otherwise``."""
    if path and str(path) != "imagenet":
        p = Path(path)
        if not p.is_file():
            raise CheckpointError(f"{option} {p} does not exist")
        return p
    for name in names:
        p = hub_dir() / name
        if p.is_file():
            return p
    raise CheckpointError(
        f"{needs}, and none were found (looked for {', '.join(names)} in {hub_dir()}). "
        f"Pass {option} PATH to torchvision's file, {otherwise}")


def init_backbone(encoder, backbone: str, weights: str) -> dict:
    """Load torchvision ImageNet weights (``weights``: a path, or ``imagenet`` for the hub cache) into
    the ResNet body of a student ``encoder`` (:class:`kdsam_core.model.encoder.ResNetEncoder`).
    Returns the record a checkpoint keeps: the file and its SHA-256."""
    names = RESNET_FILES.get(backbone)
    if names is None and str(weights) == "imagenet":
        raise CheckpointError(f"torchvision has no ImageNet weights for the backbone {backbone!r}; "
                              "pass --backbone-weights PATH to a state dict of it")
    path = find_weights(weights, names or (), option="--backbone-weights",
                        needs=f"--backbone-weights {weights} needs ImageNet {backbone} weights",
                        otherwise="or leave --backbone-weights empty for a random initialisation.")
    encoder.load_torchvision_body(load_state_dict(path), source=str(path))
    record = {"file": str(path), "sha256": file_sha256(path)}
    log.info("backbone: %s body from %s (sha256 %s)", backbone, path, record["sha256"][:12])
    return record

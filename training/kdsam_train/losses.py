"""Losses: embedding MSE, two perceptual terms, and Dice/BCE for masks.

* :func:`embedding_mse` - the distillation term of phase 1.
* :class:`DecoderPerceptual` - needs no ImageNet weights: teacher and student embeddings
  are each passed through the *frozen* teacher prompt encoder + mask decoder with the same
  sampled box prompts, and the student's mask logits are pulled to the teacher's masks
  (BCE against the teacher's probabilities). It measures the embedding difference that
  matters to the decoder the student will be used with.
* :class:`VGGPerceptual` - the paper's VGG16 feature loss. The 256-channel embeddings are
  mapped to 3 channels by a fixed (seeded) random 1x1 projection shared by teacher and
  student, then compared through VGG16 ``relu1_2 .. relu3_3`` features. Needs ImageNet
  VGG16 weights: ``--vgg-weights PATH`` or torchvision's file in the torch hub cache.
* :func:`dice_loss`, :func:`mask_loss` - phase 2.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kdsam_core.model.promptable import PromptableSAM

from .imagenet import VGG16_FILES, find_weights


def embedding_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


class DecoderPerceptual(nn.Module):
    """Compare embeddings through a frozen copy of the teacher's prompt encoder and mask decoder."""

    def __init__(self, teacher: PromptableSAM, samples: int = 0) -> None:
        super().__init__()
        self.samples = samples  # >0: only the first ``samples`` items of a batch (the decoder is costly on CPUs)
        self.prompt_encoder = copy.deepcopy(teacher.prompt_encoder).eval()
        self.mask_decoder = copy.deepcopy(teacher.mask_decoder).eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def _decode(self, emb: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(emb.shape[0]):
            sparse, dense = self.prompt_encoder(points=None, boxes=boxes[i:i + 1], masks=None)
            low, _ = self.mask_decoder(image_embeddings=emb[i:i + 1], image_pe=self.prompt_encoder.get_dense_pe(),
                                       sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                       multimask_output=False)
            out.append(low)
        return torch.cat(out)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """student/teacher (B, C, H, W); boxes (B, 4) in the teacher's input frame."""
        if self.samples:
            student, teacher, boxes = student[:self.samples], teacher[:self.samples], boxes[:self.samples]
        with torch.no_grad():
            target = torch.sigmoid(self._decode(teacher.float(), boxes))
        return F.binary_cross_entropy_with_logits(self._decode(student, boxes), target)


def find_vgg_weights(path: str | os.PathLike | None = None) -> Path:
    """``path`` if given, else torchvision's VGG16 file in the torch hub cache; a clear error if neither."""
    return find_weights(path, VGG16_FILES, option="--vgg-weights",
                        needs="the VGG perceptual loss needs ImageNet VGG16 weights",
                        otherwise="or use --perceptual decoder (no ImageNet weights needed) or --perceptual none.")


class VGGPerceptual(nn.Module):
    """VGG16 feature distance between 3-channel random projections of two embeddings."""

    LAYERS = (3, 8, 15)  # relu1_2, relu2_2, relu3_3

    def __init__(self, channels: int, weights: str | os.PathLike | None = None, *, size: int = 128,
                 seed: int = 0) -> None:
        super().__init__()
        from torchvision.models import vgg16

        from kdsam_core.checkpoint import load_state_dict

        net = vgg16(weights=None)
        net.load_state_dict(load_state_dict(find_vgg_weights(weights)))
        self.features = net.features[: self.LAYERS[-1] + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3, channels, 1, 1, generator=g) / channels ** 0.5)
        self.size = size

    def _feats(self, emb: torch.Tensor) -> list[torch.Tensor]:
        x = F.conv2d(emb.float(), self.proj)
        x = (x - x.mean(dim=(2, 3), keepdim=True)) / (x.std(dim=(2, 3), keepdim=True) + 1e-6)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.LAYERS:
                out.append(x)
        return out

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        with torch.no_grad():
            ft = self._feats(teacher)
        return sum(F.mse_loss(a, b) for a, b in zip(self._feats(student), ft)) / len(ft)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per item (shape: leading dims of ``logits`` without the last two)."""
    p = torch.sigmoid(logits).flatten(-2)
    t = target.float().flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def mask_loss(logits: torch.Tensor, target: torch.Tensor, bce_weight: float = 1.0) -> torch.Tensor:
    """Dice + ``bce_weight`` * BCE per mask: logits (M, h, w), target (h, w) -> (M,)."""
    t = target.float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").flatten(-2).mean(-1)
    return dice_loss(logits, t) + bce_weight * bce


def build_perceptual(kind: str, teacher: PromptableSAM | None, channels: int, vgg_weights: str | None = None,
                     samples: int = 0) -> nn.Module | None:
    if kind == "none":
        return None
    if kind == "decoder":
        if teacher is None:
            raise ValueError("the decoder perceptual loss needs the teacher model")
        return DecoderPerceptual(teacher, samples)
    if kind == "vgg":
        return VGGPerceptual(channels, vgg_weights)
    raise ValueError(f"unknown perceptual loss {kind!r}: choose decoder, vgg or none")

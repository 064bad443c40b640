"""The KD SAM student image encoder: a torchvision ResNet reshaped to SAM's embedding.

Input  (B, 3, S, S) normalised pixels, S = ``img_size`` (1024 as in the paper, or 512, 256).
Output (B, embed_dim, G, G) with G = ``embed_grid`` (SAM: 256 x 64 x 64).

Two necks:

* ``simple`` (the paper): 1x1 conv 2048 -> 256 on the stride-32 features, bilinear
  upsampling to G x G, a 3x3 conv and a channel LayerNorm (SAM's own neck ends the same way).
* ``fpn``: the stride 4/8/16/32 features each reduced to 256 channels by a 1x1 conv,
  resized to G x G and summed, then the same 3x3 conv + LayerNorm. Fine stages keep
  the spatial detail that a 2048 x (S/32)^2 map has lost (at S=256 that map is 8 x 8).

``prior=True`` makes the output ``prior + residual``: ``prior`` is a fixed (embed_dim, G, G)
buffer, the teacher's mean embedding over the training images, set once by phase 1 (saved
with the weights, never trained), and the residual head ends with the 3x3 conv, without the
last LayerNorm, so "no information" is 0 and the network learns only the image-dependent part.
Without it a randomly initialised ResNet trained with MSE collapsed to one image-independent
embedding (training/README.md, "Phase 1 collapse").

The body is built randomly initialised (nothing is downloaded);
:meth:`ResNetEncoder.load_torchvision_body` loads a torchvision ResNet state dict into it (the
paper's student starts from ImageNet weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import nn
from torchvision.models import resnet

from ..checkpoint import load_into


def _backbone(name: str) -> tuple[nn.Module, list[int]]:
    """A randomly initialised torchvision ResNet (nothing is downloaded) and its stage widths."""
    if name == "resnet50":
        return resnet.resnet50(weights=None), [256, 512, 1024, 2048]
    if name == "resnet18":
        return resnet.resnet18(weights=None), [64, 128, 256, 512]
    if name == "tiny":  # for tests: one BasicBlock per stage
        return resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1]), [64, 128, 256, 512]
    raise ValueError(f"unknown backbone {name!r}: choose resnet50, resnet18 or tiny")


class ResNetEncoder(nn.Module):
    """ResNet body + neck producing a SAM-shaped image embedding."""

    def __init__(
        self,
        *,
        backbone: str = "resnet50",
        neck: str = "fpn",
        img_size: int = 1024,
        embed_dim: int = 256,
        embed_grid: int = 64,
        prior: bool = False,
    ) -> None:
        super().__init__()
        if neck not in ("simple", "fpn"):
            raise ValueError(f"unknown neck {neck!r}: choose simple or fpn")
        body, widths = _backbone(backbone)
        self.img_size = img_size
        self.embed_grid = embed_grid
        self.neck_type = neck
        self.stem = nn.Sequential(body.conv1, body.bn1, body.relu, body.maxpool)
        self.stages = nn.ModuleList([body.layer1, body.layer2, body.layer3, body.layer4])
        used = widths if neck == "fpn" else widths[-1:]
        self.lateral = nn.ModuleList(nn.Conv2d(w, embed_dim, 1, bias=False) for w in used)
        fuse = [LayerNorm2d(embed_dim), nn.Conv2d(embed_dim, embed_dim, 3, padding=1, bias=False)]
        self.fuse = nn.Sequential(*fuse) if prior else nn.Sequential(*fuse, LayerNorm2d(embed_dim))
        self.has_prior = prior
        if prior:
            self.register_buffer("prior", torch.zeros(embed_dim, embed_grid, embed_grid))

    def load_torchvision_body(self, state: dict[str, torch.Tensor], *, source: str) -> None:
        """Load a torchvision ResNet ``state_dict`` (keys ``conv1.*``, ``bn1.*``, ``layer1.*`` ..
        ``layer4.*``; the classifier ``fc.*`` is ignored) into the body. The neck and head are left
        as they are. A state of another ResNet (say resnet18 into resnet50) is a
        :class:`~kdsam_core.errors.CheckpointError` naming the mismatch; nothing is loaded then."""
        view = nn.Module()  # the body under torchvision's names, sharing this encoder's parameters
        view.conv1, view.bn1 = self.stem[0], self.stem[1]
        for i, stage in enumerate(self.stages):
            setattr(view, f"layer{i + 1}", stage)
        load_into(view, {k: v for k, v in state.items() if not k.startswith("fc.")}, source=source,
                  what="torchvision ResNet body")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        if self.neck_type == "simple":
            feats = feats[-1:]
        size = (self.embed_grid, self.embed_grid)
        out = 0
        for lat, f in zip(self.lateral, feats):
            y = lat(f)
            if y.shape[-1] > size[-1]:  # finer than the grid: average, do not alias
                y = F.adaptive_avg_pool2d(y, size)
            elif y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = out + y
        out = self.fuse(out)
        return out + self.prior if self.has_prior else out

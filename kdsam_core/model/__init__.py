"""Models: the KD SAM student and the SAM-family models behind one interface."""

from .build import MODEL_REGISTRY, build_model, checkpoint_metadata, load_model
from .encoder import ResNetEncoder
from .promptable import DecoderConfig, Preprocess, PromptableSAM

__all__ = ["MODEL_REGISTRY", "build_model", "load_model", "checkpoint_metadata", "ResNetEncoder",
           "DecoderConfig", "Preprocess", "PromptableSAM"]

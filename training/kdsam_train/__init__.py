"""kdsam_train: two-phase distillation of a SAM-family teacher into the KD SAM student.

Phase 1 (:mod:`.distill`) trains the student image encoder on cached teacher embeddings;
phase 2 (:mod:`.finetune`) freezes it and fine-tunes the mask decoder with box and click
prompts; :mod:`.evaluate` scores student and teacher on the same images. Entry point:
``kdsam-train`` (:mod:`.cli`). This package imports ``kdsam_core`` and never a GUI.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"

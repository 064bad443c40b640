"""kdsam_core: distilled SAM for click-prompted medical image segmentation.

The Slicer- and Qt-free core: models (:mod:`kdsam_core.model`), checkpoints
(:mod:`kdsam_core.checkpoint`), the predictor (:mod:`kdsam_core.predictor`), medical
image I/O (:mod:`kdsam_core.io`), 3D propagation (:mod:`kdsam_core.propagate`) and the
``kdsam`` command line (:mod:`kdsam_core.cli`).
"""

__version__ = "0.1.0"

"""kdsam_bench: latency, memory, size and accuracy of KD SAM beside SAM and LiteMedSAM, on one machine.

``kdsam-bench run`` measures every row of a plan (model x input size x backend) in its own
process and writes JSON, markdown and a PNG (:mod:`.run`, :mod:`.measure`, :mod:`.report`);
``kdsam-bench export`` writes a model's ONNX graphs (:mod:`kdsam_core.fast`);
``kdsam-bench accuracy`` measures Dice per backend on a split (:mod:`.accuracy`).
"""

__all__ = ["accuracy", "cli", "measure", "report", "run"]

"""Shared by the box-prompt probes: the student and LiteMedSAM on the same images with the same box.

``tight_boxes(student_file, split)`` yields ``(model, sample, gt, embedding, box)`` for every image
of ``split`` with a non-empty mask (evaluate's order, seed 0), once per model: ``box`` is the tight
ground-truth box in the model's input coordinates, (1, 4) x0 y0 x1 y1. Not part of the package.
"""
import torch

from kdsam_core.transforms import boxes_to_model
from kdsam_train.config import DEFAULT_SPLIT_FILE, EvalConfig
from kdsam_train.data import SkipLog, discover
from kdsam_train.evaluate import EvalModel, eval_samples
from kdsam_train.prompts import box_from_mask
from kdsam_train.splits import read_splits, select


def tight_boxes(student_file: str, split: str):
    models = [EvalModel(f"student={student_file}", torch.device("cpu")),
              EvalModel("teacher=lite_medsam:../shared/weights/lite_medsam.pth", torch.device("cpu"))]
    samples = select(discover("../shared/data"), read_splits(DEFAULT_SPLIT_FILE)[split])
    with torch.inference_mode():
        for s, image, gt in eval_samples(samples, EvalConfig(max_per_dataset=0), SkipLog()):
            for m in models:
                box = torch.from_numpy(boxes_to_model(box_from_mask(gt)[None], gt.shape, m.model.img_size))
                yield m, s, gt, m.embed(None, image), box

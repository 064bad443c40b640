"""Write the split file of the fit probe: the Kvasir-SEG and BUSI training images that
``eval_train_v7.yaml`` scored (``training/results/train_v7.json``), as train, val and test alike.

Usage (repository root): python training/probes/fit_subset.py [OUT]
(default ``training/splits/probe_fit_kvasir_busi.json``). The probe then fine-tunes v7 on these
120 images alone (``finetune_coupled_probe_fit.yaml``) and scores it on the same images
(``eval_probe_fit.yaml``): can the student fit them better than the teacher does when it trains
on nothing else? A one-off research probe, not part of the package.
"""
import json
import sys
from pathlib import Path

from kdsam_core.atomic import write_text

out = Path(sys.argv[1] if len(sys.argv) > 1 else "training/splits/probe_fit_kvasir_busi.json")
result = json.loads(Path("training/results/train_v7.json").read_text())
ids = sorted({r["id"] for r in result["per_image"]
              if r["model"] == "v7" and r["protocol"] == "box" and r["dataset"] in ("kvasir_seg", "busi")})
doc = {"rule": "the kvasir_seg and busi images of training/results/train_v7.json; train = val = test",
       "source_split_file": result["split_file"], "counts": {k: len(ids) for k in ("train", "val", "test")},
       "splits": {k: ids for k in ("train", "val", "test")}}
write_text(out, json.dumps(doc, indent=1) + "\n")
print(f"wrote {out}: {len(ids)} images")

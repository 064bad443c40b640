"""The ``kdsam`` command line.

    kdsam segment INPUT --point x,y[,label] ... [--box x0,y0,x1,y1] [--slice k] [--axis a]
                  [--propagate] -o OUT [--checkpoint FILE | --model NAME] [--overwrite]
    kdsam info CHECKPOINT
    kdsam series FOLDER
    kdsam models [NAME ...]

Points and boxes are in pixels of the chosen slice: x is the column, y the row. A user's
mistake ends with one line ``kdsam: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .errors import KDSAMError, SeriesChoiceError

log = logging.getLogger("kdsam")


def _point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    try:
        if len(parts) == 2:
            return float(parts[0]), float(parts[1]), 1
        if len(parts) == 3 and parts[2].strip() in ("0", "1"):
            return float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"a point is x,y or x,y,label with label 1 (object) or 0 (background): {text!r}")


def _box(text: str) -> tuple[float, float, float, float]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1: {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdsam", description="KD SAM: click-prompted medical image segmentation.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment an image or volume from point/box prompts")
    s.add_argument("input", help="image file, DICOM file, or folder of one DICOM series")
    s.add_argument("--point", "-p", action="append", type=_point, default=[], metavar="X,Y[,LABEL]",
                   help="a click: x (column), y (row); label 1 object (default) or 0 background; repeatable")
    s.add_argument("--box", "-b", type=_box, metavar="X0,Y0,X1,Y1", help="a box around the object")
    s.add_argument("--slice", "-k", type=int, default=None, help="slice index (default: the middle slice)")
    s.add_argument("--axis", type=int, default=0, choices=(0, 1, 2),
                   help="slicing axis of the array [z, y, x]: 0 (default), 1 or 2")
    s.add_argument("--propagate", action="store_true", help="propagate the mask through neighbouring slices")
    s.add_argument("--max-slices", type=int, default=None, help="with --propagate: at most this many per side")
    s.add_argument("--series", default=None, help="series instance UID, for a folder with several series")
    s.add_argument("--output", "-o", required=True,
                   help="mask file: .nii.gz / .nrrd / .mha (3D, source geometry), .png (the slice), .dcm (DICOM SEG)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    s.add_argument("--multimask", choices=("best", "0", "1", "2"), default="best",
                   help="best (default): one mask for a box or several clicks, the best-scored of three for one "
                        "click; 0, 1 or 2: that one of the three candidates")
    _model_args(s)

    i = sub.add_parser("info", help="describe a checkpoint")
    i.add_argument("checkpoint")

    r = sub.add_parser("series", help="list the DICOM series in a folder")
    r.add_argument("folder")

    m = sub.add_parser("models", help="list the model registry with parameter counts (no weights needed)")
    m.add_argument("names", nargs="*", help="registry names (default: all)")
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", "-c", default=None,
                   help="weights (default: the shipped KD SAM weights in resources/weights)")
    p.add_argument("--model", "-m", default=None,
                   help="registry name: kdsam (default), sam_vit_h/l/b (needs --checkpoint), lite_medsam")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, mps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--backend", choices=("torch", "onnx", "onnx-int8"), default="torch",
                   help="engine: torch (default), or the fast CPU path through onnxruntime, fp32 or int8 "
                        "(graphs exported on first use; see kdsam_core/fast.py)")


def load_predictor(args):
    """Model and predictor from --model / --checkpoint / --device / --threads."""
    from .checkpoint import default_checkpoint
    from .model import build_model, load_model
    from .predictor import KDSAMPredictor

    name, ckpt = args.model, args.checkpoint
    if name is None or name in ("kdsam", "kdsam_tiny"):
        if ckpt is None:
            ckpt = default_checkpoint()  # NoWeightsError says plainly that none are installed
        model = load_model(ckpt) if name is None else build_model(name, ckpt)
    else:
        if name.startswith("sam_vit") and ckpt is None:
            raise KDSAMError(f"{name} needs its official checkpoint: pass --checkpoint sam_{name[4:]}_....pth")
        model = build_model(name, ckpt)
    return KDSAMPredictor(model, device=args.device, threads=args.threads, backend=args.backend)


def cmd_segment(args) -> int:
    from .io import MASK_SUFFIXES, load_volume, save_mask, window_to_uint8
    from .io.readers import _suffix
    from .propagate import propagate_volume

    out = Path(args.output)
    if _suffix(out) not in MASK_SUFFIXES:
        raise KDSAMError(f"cannot write {out.name}: the output must end in one of {', '.join(MASK_SUFFIXES)}")
    if out.exists() and not args.overwrite:
        raise KDSAMError(f"{out} already exists; choose another name or pass --overwrite")
    if not args.point and args.box is None:
        raise KDSAMError("give at least one prompt: --point x,y or --box x0,y0,x1,y1")
    volume = load_volume(args.input, series_uid=args.series)
    n = volume.num_slices(args.axis)
    k = n // 2 if args.slice is None else args.slice
    if not 0 <= k < n:
        raise KDSAMError(f"--slice {k} is outside the volume: axis {args.axis} has slices 0..{n - 1}")
    if _suffix(out) == ".png" and (args.propagate or n > 1):
        log.info("PNG output holds the prompted slice only")
    image = window_to_uint8(volume.slice(k, args.axis), volume.window)
    predictor = load_predictor(args)
    t0 = time.perf_counter()
    predictor.set_image(image, key=("cli", args.axis, k))
    t1 = time.perf_counter()
    coords = np.array([p[:2] for p in args.point], dtype=np.float32).reshape(-1, 2) if args.point else None
    labels = np.array([p[2] for p in args.point]) if args.point else None
    pred = predictor.predict(point_coords=coords, point_labels=labels, box=args.box,
                             multimask_output=None if args.multimask == "best" else True)
    mask = pred.best() if args.multimask == "best" else pred.masks[int(args.multimask)]
    t2 = time.perf_counter()
    print(f"slice {k} (axis {args.axis}): encoder {t1 - t0:.2f} s, prompt-to-mask {1000 * (t2 - t1):.0f} ms, "
          f"{int(mask.sum())} pixels, predicted IoU {float(pred.scores.max()):.3f}")
    if _suffix(out) == ".png":
        save_mask(mask, out, None, overwrite=args.overwrite)
    else:
        if args.propagate:
            if not mask.any():
                raise KDSAMError("the prompted slice gave an empty mask: nothing to propagate")
            from tqdm import tqdm

            bar = tqdm(desc="propagating", unit="slice", total=n - 1)

            def progress(done, total):
                bar.total = total
                bar.n = done
                bar.refresh()

            try:
                labels3d = propagate_volume(predictor, volume, k, mask, axis=args.axis,
                                            max_slices=args.max_slices, progress=progress)
            finally:
                bar.close()
            filled = np.unique(np.nonzero(labels3d)[args.axis])
            print(f"propagated to slices {filled.min()}..{filled.max()} ({len(filled)} slices)")
        else:
            labels3d = volume.empty_mask()
            volume.set_mask_slice(labels3d, k, args.axis, mask)
        save_mask(labels3d, out, volume, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def cmd_info(args) -> int:
    from .checkpoint import load_state_dict, read_metadata

    path = Path(args.checkpoint)
    if path.suffix == ".safetensors":
        meta = read_metadata(path)
        print(json.dumps(meta, indent=2))
        from .model import load_model

        counts = load_model(path).num_parameters()
    else:
        state = load_state_dict(path)
        counts = {"total": int(sum(v.numel() for v in state.values()))}
        print(f"{path}: {len(state)} tensors (no KD SAM metadata: not a KD SAM checkpoint)")
    print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in counts.items()))
    return 0


def cmd_series(args) -> int:
    from .io import list_dicom_series

    series = list_dicom_series(args.folder)
    if not series:
        raise KDSAMError(f"{args.folder} holds no DICOM series")
    for uid, desc, n in series:
        print(f"{uid}\t{desc}\t{n} files")
    return 0


def cmd_models(args) -> int:
    from .model import MODEL_REGISTRY

    names = args.names or list(MODEL_REGISTRY)
    unknown = [n for n in names if n not in MODEL_REGISTRY]
    if unknown:
        raise KDSAMError(f"unknown model {unknown[0]!r}; known: {', '.join(MODEL_REGISTRY)}")
    print(f"{'model':<12} {'input':>5} {'encoder':>10} {'decoder':>10} {'total':>10}")
    for name in names:
        model = MODEL_REGISTRY[name]()  # random weights: only the architecture is counted
        c = model.num_parameters()
        print(f"{name:<12} {model.img_size:>5} {c['image_encoder'] / 1e6:>9.2f}M "
              f"{(c['mask_decoder'] + c['prompt_encoder']) / 1e6:>9.2f}M {c['total'] / 1e6:>9.2f}M")
        del model
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        commands = {"segment": cmd_segment, "info": cmd_info, "series": cmd_series, "models": cmd_models}
        return commands[args.command](args)
    except SeriesChoiceError as e:
        print(f"kdsam: error: {e}", file=sys.stderr)
        return 2
    except KDSAMError as e:
        print(f"kdsam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdsam: interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

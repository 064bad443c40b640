"""The ``kdsam-bench`` command line.

    kdsam-bench run [--models ...] [--sizes ...] [--backends ...] [--repeats N] [--vit-repeats N]
                    [--accuracy FILE.json [--dice-map LABEL=ROW ...]] [-o benchmarks/results/NAME]
    kdsam-bench report RESULT.json --accuracy FILE.json [--dice-map LABEL=ROW ...]
    kdsam-bench export MODEL|CHECKPOINT [--img-size S] -o FOLDER [--no-int8]
    kdsam-bench accuracy --checkpoint FILE [--split val] [--backends torch onnx onnx-int8] -o FILE

A user's mistake ends with one line ``kdsam-bench: error: ...`` and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from kdsam_core.errors import KDSAMError

log = logging.getLogger("kdsam_bench")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kdsam-bench", description="Latency, memory, size and accuracy of KD SAM "
                                "beside SAM and LiteMedSAM on this machine.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="measure the benchmark table (each row in its own process)")
    r.add_argument("--models", nargs="+", default=["kdsam", "lite_medsam", "sam_vit_b", "sam_vit_h"],
                   help="kdsam, kdsam_tiny, lite_medsam, sam_vit_b, sam_vit_l, sam_vit_h (default: all but vit_l)")
    r.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024], help="student input sizes")
    r.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"],
                   help="student backends (the other models run on torch)")
    r.add_argument("--repeats", type=int, default=5, help="timed encoder calls per row (default 5)")
    r.add_argument("--warmup", type=int, default=1, help="untimed encoder calls first (default 1)")
    r.add_argument("--vit-repeats", type=int, default=2, help="timed encoder calls for SAM ViTs (default 2)")
    r.add_argument("--vit-warmup", type=int, default=1, help="untimed encoder calls for SAM ViTs (default 1)")
    r.add_argument("--decoder-repeats", type=int, default=30, help="timed decoder / click calls (default 30)")
    r.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    r.add_argument("--student-checkpoint", default=None,
                   help="trained student weights, used for the rows at their own input size")
    r.add_argument("--neck", choices=("fpn", "simple"), default=None, help="student neck (default: the builder's)")
    r.add_argument("--onnx-dir", default=None, help="where ONNX graphs go (default: ~/.cache/kdsam/onnx)")
    r.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    r.add_argument("--in-process", action="store_true", help="measure all rows in this process (tests)")
    _dice_args(r)
    r.add_argument("--output", "-o", default="benchmarks/results/bench",
                   help="output stem: writes STEM.json, STEM.md, STEM.png")

    rp = sub.add_parser("report", help="re-write a result's table, markdown and PNG, adding a Dice column")
    rp.add_argument("result", help="a result JSON written by kdsam-bench run")
    _dice_args(rp)
    rp.add_argument("--output", "-o", default=None, help="output stem (default: the result's own)")

    e = sub.add_parser("export", help="export a model's encoder and prompt decoder to ONNX (+ int8)")
    e.add_argument("model", help="registry name (kdsam, kdsam_tiny, lite_medsam, ...) or a .safetensors checkpoint")
    e.add_argument("--img-size", type=int, default=None, help="student input size (random-weight students)")
    e.add_argument("--output", "-o", required=True, help="folder for encoder.onnx, decoder.onnx, *.int8.onnx")
    e.add_argument("--no-int8", action="store_true", help="fp32 graphs only")

    a = sub.add_parser("accuracy", help="Dice per backend on a split, in kdsam-train's evaluation format")
    a.add_argument("--checkpoint", "-c", required=True,
                   help="trained student .safetensors, or a registry name with bundled weights (lite_medsam)")
    a.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8"])
    a.add_argument("--teacher", default=None, help="also evaluate this registry model on torch, e.g. lite_medsam")
    a.add_argument("--data-root", default="../shared/data")
    a.add_argument("--split", default="val")
    a.add_argument("--split-file", default=None, help="(default: kdsam_train's shipped split file)")
    a.add_argument("--protocols", nargs="+", default=["box", "click"])
    a.add_argument("--max-per-dataset", type=int, default=0, help="0: all images of the split")
    a.add_argument("--threads", type=int, default=None)
    a.add_argument("--onnx-dir", default=None, help="where the graphs are exported (default: a temporary folder)")
    a.add_argument("--calibration-images", type=int, default=16,
                   help="int8 calibration images, from the train split (default 16)")
    a.add_argument("--output", "-o", default="benchmarks/results/accuracy_val.json")
    return p


def _dice_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accuracy", action="append", default=[], metavar="FILE.json",
                   help="evaluation JSON (kdsam-bench accuracy or kdsam-train evaluate) for the Dice column")
    p.add_argument("--dice-map", nargs="+", default=[], metavar="LABEL=ROW",
                   help="map evaluation labels to rows, e.g. student=kdsam@256/torch teacher=lite_medsam/torch")
    p.add_argument("--dice-protocol", nargs="+", default=["click"],
                   help="evaluation protocols, a Dice column each (default click; e.g. box click)")
    p.add_argument("--note", action="append", default=[], help="a sentence for the markdown (e.g. what else ran)")


def _add_dice(result: dict, args) -> None:
    from .run import add_ratios, attach_dice

    mapping = {}
    for m in args.dice_map:
        if "=" not in m:
            raise KDSAMError(f"--dice-map takes LABEL=ROW, not {m!r}")
        k, v = m.split("=", 1)
        mapping[k] = v
    result.setdefault("notes", []).extend(n for n in args.note if n not in result.get("notes", []))
    for path in args.accuracy:
        if not Path(path).exists():
            raise KDSAMError(f"no evaluation file {path}")
        n = attach_dice(result, json.loads(Path(path).read_text()), mapping, protocols=args.dice_protocol)
        log.info("%s: Dice on %d rows", path, n)
    add_ratios(result)


def cmd_report(args) -> int:
    from .report import text_table, write_outputs

    path = Path(args.result)
    if not path.exists():
        raise KDSAMError(f"no result file {path}")
    result = json.loads(path.read_text())
    _add_dice(result, args)
    paths = write_outputs(result, args.output or path.with_suffix(""), result.get("command"))
    print(text_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def cmd_run(args) -> int:
    from .report import text_table, write_outputs
    from .run import build_plan, run_plan

    plan = build_plan(args.models, args.sizes, args.backends, repeats=args.repeats, vit_repeats=args.vit_repeats,
                      vit_h_warmup=args.vit_warmup, warmup=args.warmup, decoder_repeats=args.decoder_repeats,
                      threads=args.threads, onnx_dir=args.onnx_dir, student_checkpoint=args.student_checkpoint,
                      student_config={"neck": args.neck} if args.neck else None, flops=not args.no_flops)

    def progress(done: int, total: int, row: dict) -> None:
        msg = row.get("error", "").splitlines()[-1:] or [(f"encoder {row['encoder_ms']['median']:.1f} ms, "
                                                          f"click {row['click_ms']['median']:.1f} ms")]
        log.info("[%d/%d] %s: %s (%.0f s)", done, total, row["label"], msg[0], row.get("wall_s", 0))

    result = run_plan(plan, isolate=not args.in_process, progress=progress)
    _add_dice(result, args)
    command = "kdsam-bench " + " ".join(shlex.quote(a) for a in args.argv)
    paths = write_outputs(result, args.output, command)
    print(text_table(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0 if not any("error" in r for r in result["rows"]) else 1


def cmd_export(args) -> int:
    from kdsam_core.fast import export_onnx
    from kdsam_core.model import build_model, load_model

    if args.model.endswith(".safetensors"):
        model = load_model(args.model)
    else:
        model = build_model(args.model, **({"img_size": args.img_size} if args.img_size else {}))
    paths = export_onnx(model, args.output, int8=not args.no_int8)
    for k, p in paths.items():
        print(f"{k}: {p} ({p.stat().st_size / 2**20:.1f} MiB)")
    return 0


def cmd_accuracy(args) -> int:
    from .accuracy import evaluate_backends

    result = evaluate_backends(args.checkpoint, backends=args.backends, teacher=args.teacher, data_root=args.data_root,
                               split=args.split, split_file=args.split_file, protocols=args.protocols,
                               max_per_dataset=args.max_per_dataset, threads=args.threads, onnx_dir=args.onnx_dir,
                               out=args.output, calibration_images=args.calibration_images)
    for label, per_ds in result["summary"].items():
        cells = ", ".join(f"{p} Dice {100 * v['dice']:.2f} (n={v['n']})" for p, v in per_ds["all"].items())
        print(f"{label}: {cells}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for ours in ("kdsam_bench", "kdsam_core", "kdsam_train"):
        logging.getLogger(ours).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return {"run": cmd_run, "report": cmd_report, "export": cmd_export,
                "accuracy": cmd_accuracy}[args.command](args)
    except KDSAMError as e:
        print(f"kdsam-bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

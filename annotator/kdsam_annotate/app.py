"""``kdsam-annotate``: the command line of the standalone annotator window."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

from .worker import BACKENDS, ModelSpec

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    from kdsam_core.model import MODEL_REGISTRY

    p = argparse.ArgumentParser(
        prog="kdsam-annotate",
        description="Click-to-mask annotation of medical images with KD SAM (PyQt5 window). "
                    "Left click: object, right click: background, drag: box. F1 lists every shortcut.")
    p.add_argument("image", nargs="?", help="an image file (DICOM, NIfTI, NRRD, MHA, PNG, JPEG, TIFF) or a "
                                            "DICOM folder")
    p.add_argument("--series", metavar="UID", help="the DICOM series to open when the folder holds several")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="model weights (.safetensors KD SAM, or .pth for --model sam_vit_* / lite_medsam); "
                        "default: the installed KD SAM weights")
    p.add_argument("--model", choices=sorted(MODEL_REGISTRY),
                   help="model family; default: read from the checkpoint (KD SAM)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or mps (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: torch's)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="inference backend (default: torch)")
    p.add_argument("--no-model", action="store_true", help="open the window without loading a model")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _show_unexpected(exc_type, exc, tb) -> None:
    """Report an unexpected error in a message box instead of letting PyQt abort the process."""
    log.error("unexpected error:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
    from PyQt5.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is not None:
        QMessageBox.critical(None, "Unexpected error",
                             f"{exc_type.__name__}: {exc}\n\nThe details are in the log. Your work is autosaved.")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from PyQt5.QtWidgets import QApplication

    from .window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("kdsam-annotate")
    sys.excepthook = _show_unexpected
    spec = None if args.no_model else ModelSpec(name=args.model, checkpoint=args.checkpoint, device=args.device,
                                                threads=args.threads, backend=args.backend)
    win = MainWindow(spec)
    win.show()
    if args.image:
        win.open_path(args.image, series_uid=args.series)
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())

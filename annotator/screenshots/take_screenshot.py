"""Make annotator/screenshots/annotator.png: open an image, draw a box and a click, grab the window.

Run under a display, e.g.::

    xvfb-run -s "-screen 0 1400x1000x24" python annotator/screenshots/take_screenshot.py IMAGE \
        --box X0 Y0 X1 Y1 [--point X Y] [--model lite_medsam] [--out annotator/screenshots/annotator.png]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from PyQt5.QtCore import Qt
from PyQt5.QtTest import QTest
from PyQt5.QtWidgets import QApplication


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("image")
    p.add_argument("--box", nargs=4, type=int, required=True)
    p.add_argument("--point", nargs=2, type=int)
    p.add_argument("--model", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", default="annotator/screenshots/annotator.png")
    args = p.parse_args()
    app = QApplication(sys.argv[:1])
    app.setApplicationName("kdsam-annotate")
    from kdsam_annotate.window import MainWindow
    from kdsam_annotate.worker import ModelSpec

    win = MainWindow(ModelSpec(name=args.model, checkpoint=args.checkpoint, device="cpu"))
    win.resize(1200, 860)
    win.show()
    QTest.qWaitForWindowExposed(win)
    if not win.worker.wait_idle(300) or win.worker.predictor is None:
        print("the model did not load", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp()) / Path(args.image).name  # the autosave goes beside the copy
    shutil.copy(args.image, tmp)
    if not win.open_path(str(tmp)):
        return 1
    key = win.slice_key(win.index)
    while not win.worker.predictor.has_embedding(key):  # the encoder runs when the slice is shown
        QTest.qWait(50)
    vp = win.canvas.viewport()
    a, b = win.canvas.pixel_to_view(*args.box[:2]), win.canvas.pixel_to_view(*args.box[2:])
    QTest.mousePress(vp, Qt.LeftButton, Qt.NoModifier, a)
    QTest.mouseMove(vp, (a + b) / 2)
    QTest.mouseRelease(vp, Qt.LeftButton, Qt.NoModifier, b)
    win.worker.wait_idle(120)
    if args.point:
        click = win.canvas.pixel_to_view(*args.point)
        QTest.mouseClick(win.canvas.viewport(), Qt.LeftButton, Qt.NoModifier, click)
        win.worker.wait_idle(120)
    QTest.qWait(300)
    win.grab().save(args.out)
    print(f"saved {args.out}; {win.latency_label.text()}; {win.device_label.text()}")
    win.session.mark_saved()  # a demo: leave no autosave behind
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The slice view: image, label overlay and prompts; zoom, pan and mouse prompts.

Scene coordinates are image pixels: pixel ``(x, y)`` (column, row) covers the square
``[x, x+1) x [y, y+1)``; a pixel aspect (height / width, from the voxel spacing) only
stretches the view, never the coordinates. :meth:`SliceCanvas.view_to_pixel` is the one place a mouse position
becomes the (x, y) a prompt carries; :meth:`pixel_to_view` is its inverse (for tests).

Mouse: left click = positive point, right click = negative point, left drag = box,
wheel = slice, Ctrl+wheel = zoom, middle drag = pan, Shift+left drag = window/level.
"""

from __future__ import annotations

import math
import time

import numpy as np
from PyQt5.QtCore import QPoint, QPointF, QRectF, Qt, pyqtSignal
from PyQt5.QtGui import QBrush, QColor, QPainter, QPen, QPixmap
from PyQt5.QtWidgets import (
    QGraphicsEllipseItem,
    QGraphicsItem,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
)

from .display import to_qimage

DRAG_PIXELS = 4  # screen pixels a press must move to become a box rather than a click
POINT_RADIUS = 5  # screen pixels


class SliceCanvas(QGraphicsView):
    point_clicked = pyqtSignal(int, int, bool, float)  # x, y, positive, time of the click
    box_drawn = pyqtSignal(int, int, int, int, float)  # x0, y0, x1, y1, time of the release
    slice_step = pyqtSignal(int)  # +1 / -1 from the wheel
    window_drag = pyqtSignal(int, int)  # screen dx, dy while Shift+dragging

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.SmoothPixmapTransform, False)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setDragMode(QGraphicsView.NoDrag)
        self.setBackgroundBrush(QBrush(QColor(20, 20, 20)))
        self.setContextMenuPolicy(Qt.PreventContextMenu)
        self.setMouseTracking(True)
        self._image = QGraphicsPixmapItem()
        self._overlay = QGraphicsPixmapItem()
        self._overlay.setZValue(1)
        self.scene().addItem(self._image)
        self.scene().addItem(self._overlay)
        self._prompt_items: list[QGraphicsItem] = []
        self._rubber = QGraphicsRectItem()
        self._rubber.setPen(_cosmetic_pen(QColor(255, 255, 0), Qt.DashLine))
        self._rubber.setZValue(3)
        self._rubber.hide()
        self.scene().addItem(self._rubber)
        self._press: QPoint | None = None
        self._press_button = Qt.NoButton
        self._press_mods = Qt.NoModifier
        self._last: QPoint | None = None
        self._size = (0, 0)  # (h, w)
        self._aspect = 1.0  # pixel height / width on screen

    # ------------------------------------------------------------ content
    def set_image(self, rgb: np.ndarray, *, fit: bool = False) -> None:
        h, w = rgb.shape[:2]
        self._image.setPixmap(QPixmap.fromImage(to_qimage(rgb)))
        if (h, w) != self._size:
            self._size = (h, w)
            self.scene().setSceneRect(QRectF(0, 0, w, h))
            fit = True
        if fit:
            self.fit()

    def set_aspect(self, aspect: float) -> None:
        """Show pixels ``aspect`` times taller than wide (refits the view when it changes)."""
        aspect = float(aspect) if aspect > 0 else 1.0
        if abs(aspect - self._aspect) > 1e-6:
            self._aspect = aspect
            self.fit()

    def set_overlay(self, rgba: np.ndarray | None) -> None:
        self._overlay.setPixmap(QPixmap() if rgba is None else QPixmap.fromImage(to_qimage(rgba)))

    def set_prompts(self, points, box, color: tuple[int, int, int] = (255, 255, 0)) -> None:
        """Draw points ``(x, y, positive)`` (green +, red -) and a box, in image pixels."""
        for item in self._prompt_items:
            self.scene().removeItem(item)
        self._prompt_items = []
        if box is not None:
            x0, y0, x1, y1 = box
            r = QGraphicsRectItem(QRectF(x0 + 0.5, y0 + 0.5, x1 - x0, y1 - y0))
            r.setPen(_cosmetic_pen(QColor(*color)))
            self._add(r)
        for x, y, positive in points:
            e = QGraphicsEllipseItem(-POINT_RADIUS, -POINT_RADIUS, 2 * POINT_RADIUS, 2 * POINT_RADIUS)
            e.setFlag(QGraphicsItem.ItemIgnoresTransformations)
            e.setPos(x + 0.5, y + 0.5)
            e.setBrush(QBrush(QColor(40, 220, 40) if positive else QColor(230, 40, 40)))
            e.setPen(QPen(QColor(255, 255, 255), 1))
            self._add(e)

    def _add(self, item: QGraphicsItem) -> None:
        item.setZValue(2)
        self.scene().addItem(item)
        self._prompt_items.append(item)

    # ------------------------------------------------------------ coordinates
    def view_to_pixel(self, pos: QPoint) -> tuple[int, int] | None:
        """Image pixel (x, y) under a viewport position, or None outside the image."""
        p = self.mapToScene(pos)
        x, y = math.floor(p.x()), math.floor(p.y())
        h, w = self._size
        return (x, y) if 0 <= x < w and 0 <= y < h else None

    def pixel_to_view(self, x: int, y: int) -> QPoint:
        """The viewport position of the centre of image pixel (x, y)."""
        return self.mapFromScene(QPointF(x + 0.5, y + 0.5))

    def _clamped_pixel(self, pos: QPoint) -> tuple[int, int]:
        p = self.mapToScene(pos)
        h, w = self._size
        return min(max(math.floor(p.x()), 0), w - 1), min(max(math.floor(p.y()), 0), h - 1)

    # ------------------------------------------------------------ zoom / pan
    def fit(self) -> None:
        if self._size != (0, 0):
            h, w = self._size
            vp = self.viewport().rect()
            s = max(min((vp.width() - 2) / w, (vp.height() - 2) / (h * self._aspect)), 1e-3)
            self.resetTransform()
            self.scale(s, s * self._aspect)
            self.centerOn(w / 2, h / 2)

    def zoom_by(self, factor: float) -> None:
        scale = self.transform().m11() * factor
        if 0.02 <= scale <= 64:
            self.scale(factor, factor)

    def pan_by(self, dx: int, dy: int) -> None:
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - dx)
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() - dy)

    # ------------------------------------------------------------ mouse
    def wheelEvent(self, event) -> None:
        steps = event.angleDelta().y()
        if not steps:
            return
        if event.modifiers() & Qt.ControlModifier:
            self.zoom_by(1.25 if steps > 0 else 0.8)
        else:
            self.slice_step.emit(1 if steps > 0 else -1)
        event.accept()

    def mousePressEvent(self, event) -> None:
        self._press, self._last = event.pos(), event.pos()
        self._press_button, self._press_mods = event.button(), event.modifiers()
        event.accept()

    def mouseMoveEvent(self, event) -> None:
        if self._press is None:
            return
        delta = event.pos() - self._last
        self._last = event.pos()
        if self._press_button == Qt.MiddleButton:
            self.pan_by(delta.x(), delta.y())
        elif self._press_button == Qt.LeftButton and self._press_mods & Qt.ShiftModifier:
            self.window_drag.emit(delta.x(), delta.y())
        elif self._press_button == Qt.LeftButton and _dragged(self._press, event.pos()):
            x0, y0 = self._clamped_pixel(self._press)
            x1, y1 = self._clamped_pixel(event.pos())
            self._rubber.setRect(QRectF(min(x0, x1), min(y0, y1), abs(x1 - x0) + 1, abs(y1 - y0) + 1))
            self._rubber.show()

    def mouseReleaseEvent(self, event) -> None:
        if self._press is None:
            return
        t = time.perf_counter()
        press, button, mods = self._press, self._press_button, self._press_mods
        self._press = None
        self._rubber.hide()
        if button == Qt.MiddleButton or (button == Qt.LeftButton and mods & Qt.ShiftModifier):
            return
        if button == Qt.LeftButton and _dragged(press, event.pos()):
            x0, y0 = self._clamped_pixel(press)
            x1, y1 = self._clamped_pixel(event.pos())
            if x0 != x1 and y0 != y1:
                self.box_drawn.emit(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1), t)
            return
        pix = self.view_to_pixel(press)
        if pix is not None and button in (Qt.LeftButton, Qt.RightButton):
            self.point_clicked.emit(pix[0], pix[1], button == Qt.LeftButton, t)


def _dragged(press: QPoint, pos: QPoint) -> bool:
    return (pos - press).manhattanLength() >= DRAG_PIXELS

def _cosmetic_pen(color: QColor, style=Qt.SolidLine) -> QPen:
    pen = QPen(color, 2, style)
    pen.setCosmetic(True)
    return pen

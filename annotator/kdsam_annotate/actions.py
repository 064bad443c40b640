"""Every action of the window in one table: menus, keyboard shortcuts and the help dialog come from it."""

from __future__ import annotations

from dataclasses import dataclass

from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import (
    QAction,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class ActionSpec:
    name: str  # the window's method called, also the action's objectName
    menu: str
    text: str
    shortcuts: tuple[str, ...]


ACTIONS = (
    ActionSpec("open_file_dialog", "&File", "&Open image…", ("Ctrl+O",)),
    ActionSpec("open_folder_dialog", "&File", "Open DICOM &folder…", ("Ctrl+Shift+O",)),
    ActionSpec("save_dialog", "&File", "&Save mask as…", ("Ctrl+S",)),
    ActionSpec("autosave_now", "&File", "&Autosave now", ("Ctrl+Shift+S",)),
    ActionSpec("close", "&File", "&Quit", ("Ctrl+Q",)),
    ActionSpec("undo", "&Edit", "&Undo", ("Ctrl+Z",)),
    ActionSpec("redo", "&Edit", "&Redo", ("Ctrl+Shift+Z", "Ctrl+Y")),
    ActionSpec("clear_slice", "&Edit", "&Clear label on this slice", ("Delete", "Backspace")),
    ActionSpec("next_candidate", "&Segment", "Next &candidate mask", ("M",)),
    ActionSpec("propagate", "&Segment", "&Propagate through slices", ("P",)),
    ActionSpec("cancel", "&Segment", "C&ancel propagation", ("Esc",)),
    ActionSpec("new_label", "&Labels", "&New label", ("N",)),
    ActionSpec("next_label", "&Labels", "Ne&xt label", ("L",)),
    ActionSpec("previous_label", "&Labels", "&Previous label", ("Shift+L",)),
    ActionSpec("next_slice", "&View", "Next slice", ("Up", "D")),
    ActionSpec("previous_slice", "&View", "Previous slice", ("Down", "A")),
    ActionSpec("next_slice_10", "&View", "10 slices on", ("PgUp",)),
    ActionSpec("previous_slice_10", "&View", "10 slices back", ("PgDown",)),
    ActionSpec("next_axis", "&View", "Slice along the ne&xt axis (z, y, x)", ("X",)),
    ActionSpec("zoom_in", "&View", "Zoom &in", ("Ctrl++", "+", "=")),
    ActionSpec("zoom_out", "&View", "Zoom &out", ("Ctrl+-", "-")),
    ActionSpec("fit_view", "&View", "&Fit to window", ("F",)),
    ActionSpec("reset_window", "&View", "&Reset window/level", ("W",)),
    ActionSpec("toggle_overlay", "&View", "Show/hide &mask", ("O",)),
    ActionSpec("load_checkpoint_dialog", "&Model", "&Load checkpoint…", ("Ctrl+L",)),
    ActionSpec("device_dialog", "&Model", "&Device and backend…", ("Ctrl+Shift+D",)),
    ActionSpec("show_help", "&Help", "&Keyboard shortcuts", ("F1", "?")),
)

MOUSE = (
    ("Left click", "positive point (object)"),
    ("Right click", "negative point (background)"),
    ("Left drag", "box around the object"),
    ("Wheel", "next / previous slice"),
    ("Ctrl+wheel", "zoom at the cursor"),
    ("Middle drag", "pan"),
    ("Shift+left drag", "window (left-right) and level (up-down)"),
    ("1 … 9", "select label 1 … 9"),
    ("Drop a file or folder", "open it"),
)


def make_actions(window: QWidget) -> dict[str, QAction]:
    """QActions for ACTIONS, added to ``window``'s menu bar and connected to its methods."""
    menus: dict = {}
    out: dict[str, QAction] = {}
    for spec in ACTIONS:
        if spec.menu not in menus:
            menus[spec.menu] = window.menuBar().addMenu(spec.menu)
        act = QAction(spec.text, window)
        act.setObjectName(spec.name)
        act.setShortcuts([QKeySequence(s) for s in spec.shortcuts])
        act.triggered.connect(lambda _checked=False, n=spec.name: getattr(window, n)())
        menus[spec.menu].addAction(act)
        window.addAction(act)  # shortcuts work with the menu bar hidden too
        out[spec.name] = act
    return out


def help_dialog(parent: QWidget) -> QDialog:
    rows = [(" or ".join(s.shortcuts), f"{s.menu.replace('&', '')}: {s.text.replace('&', '')}") for s in ACTIONS]
    rows += list(MOUSE)
    dlg = QDialog(parent)
    dlg.setWindowTitle("KD SAM annotator: keyboard and mouse")
    table = QTableWidget(len(rows), 2, dlg)
    table.setObjectName("shortcut_table")
    table.setHorizontalHeaderLabels(["Key / mouse", "Action"])
    for r, (key, what) in enumerate(rows):
        table.setItem(r, 0, QTableWidgetItem(key))
        table.setItem(r, 1, QTableWidgetItem(what))
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    table.verticalHeader().hide()
    buttons = QDialogButtonBox(QDialogButtonBox.Close, parent=dlg)
    buttons.rejected.connect(dlg.reject)
    lay = QVBoxLayout(dlg)
    lay.addWidget(table)
    lay.addWidget(buttons)
    dlg.resize(560, 640)
    return dlg

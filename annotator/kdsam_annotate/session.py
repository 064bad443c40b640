"""Annotation state without Qt: labels, prompts per slice, the label mask, undo and redo.

The mask is a (z, y, x) uint8 label array on the volume's grid. The session slices it along
one ``axis`` at a time (0: z, 1: y, 2: x; :meth:`Session.set_axis`), with the layout of
``kdsam_core.io.Volume.slice``: slice ``i`` is ``np.take(mask, i, axis)``, indexed ``[row, col]``
(axis 0 -> ``[y, x]``, 1 -> ``[z, x]``, 2 -> ``[z, y]``). Methods that take a slice ``index``
mean the current axis unless given ``axis=``. Prompts are kept per ``(axis, slice, label)``:
points ``(x, y, positive)`` in pixels (column, row) of that slice, as SAM takes them, and at
most one box ``(x0, y0, x1, y1)``. Every change goes through :meth:`Session.commit` as an
:class:`Edit` that stores only what changed, so undo and redo are exact and cheap, whatever
axis is shown when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdsam_core.errors import InputError
from kdsam_core.prompts import auto_multimask

PALETTE = [(255, 64, 64), (64, 200, 255), (255, 210, 0), (80, 220, 100), (200, 90, 255),
           (255, 140, 40), (0, 170, 170), (255, 105, 180), (160, 160, 255)]
UNDO_DEPTH = 200


@dataclass(frozen=True)
class Label:
    value: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Prompts:
    """Points ``((x, y, 1|0), ...)`` and an optional box ``(x0, y0, x1, y1)``, in pixels."""

    points: tuple = ()
    box: tuple | None = None

    def is_empty(self) -> bool:
        return not self.points and self.box is None

    def with_point(self, x: float, y: float, positive: bool) -> Prompts:
        return Prompts(self.points + ((float(x), float(y), int(bool(positive))),), self.box)

    def with_box(self, x0: float, y0: float, x1: float, y1: float) -> Prompts:
        x0, x1 = sorted((float(x0), float(x1)))
        y0, y1 = sorted((float(y0), float(y1)))
        return Prompts(self.points, (x0, y0, x1, y1))

    def arrays(self) -> dict:
        """Keyword arguments for ``KDSAMPredictor.predict``: point_coords (N, 2) (x, y), point_labels, box."""
        out: dict = {"point_coords": None, "point_labels": None, "box": None}
        if self.points:
            pts = np.asarray(self.points, dtype=np.float32)
            out["point_coords"] = pts[:, :2]
            out["point_labels"] = pts[:, 2].astype(np.int64)
        if self.box is not None:
            out["box"] = np.asarray(self.box, dtype=np.float32)
        return out

    def multimask(self) -> bool:
        """Ask for 3 candidates only when the prompt is ambiguous (kdsam_core's policy: one click alone)."""
        return auto_multimask(len(self.points), self.box is not None)

    def to_dict(self) -> dict:
        return {"points": [list(p) for p in self.points], "box": None if self.box is None else list(self.box)}

    @staticmethod
    def from_dict(d: dict) -> Prompts:
        pts = tuple((float(x), float(y), int(v)) for x, y, v in d.get("points", []))
        box = d.get("box")
        return Prompts(pts, None if box is None else tuple(float(v) for v in box))


@dataclass(frozen=True)
class Candidates:
    """The masks a prediction offered for one (slice, label), and which one is shown."""

    masks: np.ndarray  # (M, H, W) bool
    scores: np.ndarray  # (M,)
    chosen: int


@dataclass
class Edit:
    """One undoable change. ``slices``: (axis, index) -> (flat positions, values before, after)."""

    name: str
    slices: dict = field(default_factory=dict)
    prompts: dict = field(default_factory=dict)  # (axis, index, label) -> (before, after), None = none
    candidates: dict = field(default_factory=dict)  # (axis, index, label) -> (before, after)
    labels: tuple | None = None  # (labels before, labels after)
    current: tuple | None = None  # (current label before, after)


class Session:
    """The annotation of one volume of shape (z, y, x)."""

    def __init__(self, shape_zyx: tuple[int, int, int]) -> None:
        if len(shape_zyx) != 3:
            raise InputError(f"a session needs a (z, y, x) shape, got {shape_zyx}")
        self.mask = np.zeros(tuple(int(s) for s in shape_zyx), dtype=np.uint8)
        self.labels: list[Label] = [Label(1, "label 1", PALETTE[0])]
        self.current_label = 1
        self.axis = 0
        self.prompts: dict[tuple[int, int, int], Prompts] = {}  # (axis, index, label)
        self.candidates: dict[tuple[int, int, int], Candidates] = {}
        self._undo: list[Edit] = []
        self._redo: list[Edit] = []
        self.revision = 0  # counts changes; undo counts as a change too
        self.saved_revision = 0

    # ------------------------------------------------------------- queries
    def view(self, axis: int | None = None) -> np.ndarray:
        """The mask with ``axis`` (default: the current one) first: ``view()[i]`` is slice ``i``,
        a writable view into :attr:`mask`."""
        return np.moveaxis(self.mask, self._axis(axis), 0)

    def slice(self, index: int, axis: int | None = None) -> np.ndarray:
        """The (rows, cols) label slice ``index`` along ``axis`` (a view into :attr:`mask`)."""
        v = self.view(axis)
        if not 0 <= index < v.shape[0]:
            raise InputError(f"slice {index} is outside 0..{v.shape[0] - 1}")
        return v[index]

    def set_axis(self, axis: int) -> None:
        """Slice along ``axis`` from now on (not an edit: nothing in the mask changes)."""
        self.axis = self._axis(axis)

    @property
    def num_slices(self) -> int:
        """Slices along the current axis."""
        return self.mask.shape[self.axis]

    @property
    def slice_shape(self) -> tuple[int, int]:
        """(rows, cols) of a slice along the current axis."""
        return self.view().shape[1:]

    @property
    def dirty(self) -> bool:
        return self.revision != self.saved_revision

    def mark_saved(self) -> None:
        self.saved_revision = self.revision

    def label(self, value: int) -> Label:
        for lab in self.labels:
            if lab.value == value:
                return lab
        raise InputError(f"there is no label {value}")

    def prompts_for(self, index: int, label: int | None = None, axis: int | None = None) -> Prompts:
        return self.prompts.get(self._key(index, label, axis), Prompts())

    def candidates_for(self, index: int, label: int | None = None, axis: int | None = None) -> Candidates | None:
        return self.candidates.get(self._key(index, label, axis))

    def can_undo(self) -> bool:
        return bool(self._undo)

    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo_name(self) -> str:
        return self._undo[-1].name if self._undo else ""

    def redo_name(self) -> str:
        return self._redo[-1].name if self._redo else ""

    # ------------------------------------------------------------- edits
    def apply_prediction(self, index: int, label: int, prompts: Prompts, masks: np.ndarray,
                         scores: np.ndarray, name: str = "segment", axis: int | None = None) -> None:
        """Record ``prompts`` for (axis, index, label) and show the best of the predicted ``masks``
        (M, rows, cols)."""
        axis = self._axis(axis)
        masks = np.asarray(masks, dtype=bool)
        shape = self.view(axis).shape[1:]
        if masks.ndim != 3 or masks.shape[1:] != shape:
            raise InputError(f"predicted masks {masks.shape} do not fit slices of shape {shape}")
        cand = Candidates(masks, np.asarray(scores, dtype=np.float32), int(np.argmax(scores)))
        self._commit_slice(name, axis, index, label, masks[cand.chosen], prompts=prompts, candidates=cand)

    def cycle_candidate(self, index: int, label: int | None = None, axis: int | None = None) -> int | None:
        """Show the next predicted candidate mask; returns its number, or None if there is no other."""
        axis, index, label = self._key(index, label, axis)
        cand = self.candidates.get((axis, index, label))
        if cand is None or len(cand.masks) < 2:
            return None
        nxt = Candidates(cand.masks, cand.scores, (cand.chosen + 1) % len(cand.masks))
        self._commit_slice("next candidate", axis, index, label, cand.masks[nxt.chosen], candidates=nxt)
        return nxt.chosen

    def clear(self, index: int, label: int | None = None, axis: int | None = None) -> bool:
        """Remove one label's mask and prompts from a slice; False if there was nothing."""
        key = axis, index, label = self._key(index, label, axis)
        if key not in self.prompts and not (self.slice(index, axis) == label).any():
            return False
        self._commit_slice("clear", axis, index, label, np.zeros(self.view(axis).shape[1:], bool), prompts=None,
                           candidates=None)
        return True

    def apply_masks(self, label: int, masks: dict[int, np.ndarray], name: str = "propagate",
                    axis: int | None = None) -> int:
        """Write ``{index: (rows, cols) bool}`` masks of one label, slices along ``axis``, as a
        single edit; returns the number of slices changed."""
        axis = self._axis(axis)
        edit = Edit(name)
        for index, m in masks.items():
            self._diff_slice(edit, axis, int(index), self._painted(axis, int(index), label, m))
        if edit.slices:
            self.commit(edit)
        return len(edit.slices)

    def add_label(self, name: str | None = None) -> Label:
        used = {lab.value for lab in self.labels}
        value = next(v for v in range(1, 256) if v not in used) if len(used) < 255 else None
        if value is None:
            raise InputError("all 255 labels are in use")
        lab = Label(value, name or f"label {value}", PALETTE[(value - 1) % len(PALETTE)])
        self.commit(Edit("new label", labels=(list(self.labels), self.labels + [lab]),
                         current=(self.current_label, value)))
        return lab

    def select_label(self, value: int) -> None:
        """Make ``value`` the label that clicks paint (not an edit: nothing in the mask changes)."""
        self.label(value)
        self.current_label = value

    # ------------------------------------------------------------- undo / redo
    def commit(self, edit: Edit) -> None:
        self._apply(edit, forward=True)
        self._undo.append(edit)
        del self._undo[:-UNDO_DEPTH]
        self._redo.clear()

    def undo(self) -> str | None:
        if not self._undo:
            return None
        edit = self._undo.pop()
        self._apply(edit, forward=False)
        self._redo.append(edit)
        return edit.name

    def redo(self) -> str | None:
        if not self._redo:
            return None
        edit = self._redo.pop()
        self._apply(edit, forward=True)
        self._undo.append(edit)
        return edit.name

    def touched_slices(self, axis: int | None = None) -> list[int]:
        """Slices along ``axis`` (default: the current one) holding any label, in order."""
        axes = tuple(a for a in range(3) if a != self._axis(axis))
        return [int(i) for i in np.flatnonzero(self.mask.any(axis=axes))]

    # ------------------------------------------------------------- persistence
    def state(self) -> dict:
        """JSON-able state beside the mask: labels, current label, prompts (not undo history)."""
        return {
            "shape": list(self.mask.shape),
            "labels": [{"value": lab.value, "name": lab.name, "color": list(lab.color)} for lab in self.labels],
            "current_label": self.current_label,
            "axis": self.axis,
            "prompts": [{"axis": a, "index": i, "label": lab, **p.to_dict()}
                        for (a, i, lab), p in sorted(self.prompts.items())],
        }

    @classmethod
    def from_state(cls, state: dict, mask: np.ndarray) -> Session:
        mask = np.asarray(mask)
        if list(mask.shape) != list(state.get("shape", [])):
            raise InputError(f"the saved mask {mask.shape} does not match the saved state {state.get('shape')}")
        s = cls(mask.shape)
        s.mask[...] = mask.astype(np.uint8)
        s.labels = [Label(int(d["value"]), str(d["name"]), tuple(d["color"])) for d in state["labels"]] or s.labels
        s.current_label = int(state.get("current_label", s.labels[0].value))
        s.axis = s._axis(int(state.get("axis", 0)))  # states before slicing axes: 0
        s.prompts = {(s._axis(int(d.get("axis", 0))), int(d["index"]), int(d["label"])): Prompts.from_dict(d)
                     for d in state.get("prompts", [])}
        return s

    # ------------------------------------------------------------- internals
    _KEEP = object()

    def _axis(self, axis: int | None) -> int:
        if axis is None:
            return self.axis
        if axis not in (0, 1, 2):
            raise InputError(f"axis must be 0 (z), 1 (y) or 2 (x), not {axis}")
        return int(axis)

    def _key(self, index: int, label: int | None, axis: int | None) -> tuple[int, int, int]:
        return self._axis(axis), int(index), self.current_label if label is None else int(label)

    def _commit_slice(self, name: str, axis: int, index: int, label: int, mask2d: np.ndarray, *,
                      prompts=_KEEP, candidates=_KEEP) -> None:
        edit = Edit(name)
        key = (axis, index, label)
        self._diff_slice(edit, axis, index, self._painted(axis, index, label, mask2d))
        if prompts is not Session._KEEP:
            edit.prompts[key] = (self.prompts.get(key), None if prompts is None or prompts.is_empty() else prompts)
        if candidates is not Session._KEEP:
            edit.candidates[key] = (self.candidates.get(key), candidates)
        self.commit(edit)

    def _painted(self, axis: int, index: int, label: int, mask2d: np.ndarray) -> np.ndarray:
        old = self.slice(index, axis)
        m = np.asarray(mask2d, dtype=bool)
        if m.shape != old.shape:
            raise InputError(f"a mask of shape {m.shape} does not fit slices of shape {old.shape}")
        new = old.copy()
        new[new == label] = 0
        new[m] = label
        return new

    def _diff_slice(self, edit: Edit, axis: int, index: int, new: np.ndarray) -> None:
        old = self.slice(index, axis)
        pos = np.flatnonzero(old != new)
        if len(pos):
            edit.slices[(axis, index)] = (pos, old.ravel()[pos].copy(), new.ravel()[pos].copy())

    def _apply(self, edit: Edit, forward: bool) -> None:
        pick = 2 if forward else 1
        for (axis, index), parts in edit.slices.items():
            self.slice(index, axis).flat[parts[0]] = parts[pick]  # .flat writes through strided views
        for store, changes in ((self.prompts, edit.prompts), (self.candidates, edit.candidates)):
            for key, (before, after) in changes.items():
                value = after if forward else before
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
        if edit.labels is not None:
            self.labels = list(edit.labels[1] if forward else edit.labels[0])
        if edit.current is not None:
            self.current_label = edit.current[1] if forward else edit.current[0]
        if self.current_label not in {lab.value for lab in self.labels}:
            self.current_label = self.labels[0].value
        self.revision += 1

"""The annotator's Qt-free state: edits, candidates, labels, undo/redo, autosave files."""

import json

import numpy as np
import pytest
from kdsam_annotate.autosave import Autosave, autosave_dir
from kdsam_annotate.session import Prompts, Session

from kdsam_core.errors import InputError
from kdsam_core.io import Volume


def _masks(h=6, w=8):
    m = np.zeros((3, h, w), bool)
    m[0, 1:3, 1:3] = True
    m[1, 0:4, 0:5] = True
    m[2, 4:6, 6:8] = True
    return m


def test_prompts_map_to_predictor_arguments():
    p = Prompts().with_point(5, 7, True).with_point(1, 2, False)
    a = p.arrays()
    np.testing.assert_array_equal(a["point_coords"], [[5, 7], [1, 2]])
    np.testing.assert_array_equal(a["point_labels"], [1, 0])
    assert a["box"] is None and not p.multimask()
    b = Prompts().with_box(9, 8, 2, 3)
    assert b.box == (2, 3, 9, 8) and not b.multimask()  # a box is not ambiguous: one mask
    assert Prompts.from_dict(p.with_box(0, 0, 4, 4).to_dict()) == p.with_box(0, 0, 4, 4)


def test_prediction_candidates_and_exact_undo_redo():
    s = Session((2, 6, 8))
    p = Prompts().with_point(2, 2, True)
    s.apply_prediction(1, 1, p, _masks(), np.array([0.9, 0.5, 0.1]))
    np.testing.assert_array_equal(s.mask[1] == 1, _masks()[0])
    assert s.prompts_for(1) == p and s.dirty
    assert s.cycle_candidate(1) == 1
    np.testing.assert_array_equal(s.mask[1] == 1, _masks()[1])
    assert s.cycle_candidate(0) is None  # nothing predicted on slice 0
    assert s.undo() == "next candidate"
    np.testing.assert_array_equal(s.mask[1] == 1, _masks()[0])
    assert s.undo() == "segment"
    assert not s.mask.any() and s.prompts_for(1).is_empty() and (0, 1, 1) not in s.candidates
    assert s.undo() is None
    assert s.redo() == "segment" and s.redo() == "next candidate"
    np.testing.assert_array_equal(s.mask[1] == 1, _masks()[1])
    assert s.candidates[(0, 1, 1)].chosen == 1 and s.candidates_for(1).chosen == 1


def test_labels_do_not_erase_each_other_and_clear_one():
    s = Session((1, 6, 8))
    s.apply_prediction(0, 1, Prompts().with_point(1, 1, True), _masks()[:1], np.ones(1))
    lab = s.add_label()
    assert lab.value == 2 and s.current_label == 2
    s.apply_prediction(0, 2, Prompts().with_point(7, 5, True), _masks()[2:], np.ones(1))
    assert set(np.unique(s.mask)) == {0, 1, 2}
    assert s.clear(0, 1) and not (s.mask == 1).any() and (s.mask == 2).sum() == 4
    assert not s.clear(0, 1)
    s.undo()
    assert (s.mask == 1).sum() == 4
    s.undo()
    s.undo()  # the new label goes away with its undo
    assert [lab.value for lab in s.labels] == [1] and s.current_label == 1


def test_propagated_masks_are_one_edit_and_saved_state_tracks_revisions():
    s = Session((4, 6, 8))
    s.mark_saved()
    n = s.apply_masks(1, {0: _masks()[0], 2: _masks()[1], 3: np.zeros((6, 8), bool)})
    assert n == 2 and s.touched_slices() == [0, 2] and s.dirty
    s.mark_saved()
    assert not s.dirty
    s.undo()
    assert not s.mask.any() and s.dirty
    with pytest.raises(InputError):
        s.apply_masks(1, {0: np.zeros((3, 3), bool)})


def test_state_round_trip():
    s = Session((2, 6, 8))
    s.add_label("tumour")
    s.apply_prediction(1, 2, Prompts().with_point(3, 4, True).with_box(0, 0, 5, 5), _masks(), np.arange(3.0))
    r = Session.from_state(json.loads(json.dumps(s.state())), s.mask.copy())
    np.testing.assert_array_equal(r.mask, s.mask)
    assert r.labels == s.labels and r.current_label == 2 and r.prompts == s.prompts


def test_autosave_beside_the_input_and_recovery(tmp_path):
    src = tmp_path / "scan.nii.gz"
    src.write_bytes(b"user data")  # the input itself is never touched
    vol = Volume(array=np.zeros((2, 6, 8), np.int16), spacing=(0.5, 0.7, 2.0), origin=(1.0, 2.0, 3.0))
    a = Autosave(src, vol)
    assert a.dir == autosave_dir(src) == tmp_path / "scan.nii.gz.kdsam-autosave"
    assert a.find() is None
    s = Session(vol.shape_zyx)
    s.apply_prediction(1, 1, Prompts().with_point(2, 2, True), _masks(), np.ones(3))
    a.write_async(s).result()
    assert sorted(p.name for p in a.dir.iterdir()) == ["mask.nii.gz", "state.json"]
    r = a.read()
    np.testing.assert_array_equal(r.mask, s.mask)
    assert r.prompts == s.prompts
    (a.dir / "notes.txt").write_text("the user's own file")
    a.discard()
    assert (a.dir / "notes.txt").exists() and a.find() is None  # only our files are removed
    assert src.read_bytes() == b"user data"
    other = Autosave(src, Volume(array=np.zeros((3, 6, 8), np.int16)))
    a.write(s)
    assert other.find() is None  # an autosave of another grid is not offered


def test_slicing_axes_share_one_mask_and_undo_across_axes():
    s = Session((4, 6, 8))
    with pytest.raises(InputError, match="axis must be 0"):
        s.set_axis(3)
    s.set_axis(1)  # slices (z, x): 6 of 4 x 8
    assert s.num_slices == 6 and s.slice_shape == (4, 8)
    m = np.zeros((1, 4, 8), bool)
    m[0, 1:3, 2:6] = True
    p = Prompts().with_point(3, 2, True)
    s.apply_prediction(2, 1, p, m, np.ones(1))
    expected = np.zeros((4, 6, 8), bool)
    expected[1:3, 2, 2:6] = True
    np.testing.assert_array_equal(s.mask == 1, expected)  # written into the (z, y, x) mask at y = 2
    assert s.prompts_for(2) == p and s.prompts_for(2, axis=0).is_empty() and (1, 2, 1) in s.prompts
    assert s.touched_slices() == [2] and s.touched_slices(axis=0) == [1, 2] and s.touched_slices(axis=2) == [2, 3, 4, 5]
    with pytest.raises(InputError, match="do not fit"):
        s.apply_prediction(0, 1, p, np.zeros((1, 6, 8), bool), np.ones(1))  # an axial-shaped mask
    s.set_axis(2)  # edits on another axis, then undo everything from here
    s.apply_masks(1, {4: np.ones((4, 6), bool)})
    assert (s.mask[:, :, 4] == 1).all()
    state = s.state()
    r = Session.from_state(json.loads(json.dumps(state)), s.mask.copy())
    assert r.axis == 2 and r.prompts == s.prompts
    s.undo()
    s.undo()
    assert not s.mask.any() and s.axis == 2 and s.prompts_for(2, axis=1).is_empty()
    s.redo()
    np.testing.assert_array_equal(s.mask == 1, expected)
    old = {k: v for k, v in state.items() if k != "axis"}  # a state saved before slicing axes existed
    old["prompts"] = [{k: v for k, v in d.items() if k != "axis"} for d in state["prompts"]]
    assert Session.from_state(old, s.mask.copy()).axis == 0

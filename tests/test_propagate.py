import numpy as np
import pytest

from kdsam_core.errors import InputError
from kdsam_core.io import Volume
from kdsam_core.predictor import Prediction
from kdsam_core.propagate import propagate_mask, propagate_volume


class OraclePredictor:
    """Returns the ground truth of the slice inside the prompted box (grown by 3 px)."""

    def __init__(self, gt):
        self.gt, self.k, self.prompts = gt, None, []

    def set_image(self, image, key=None):
        self.k = int(image[0, 0])  # slices carry their index in pixel (0, 0)
        return True

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True, **_):
        self.prompts.append((self.k, None if box is None else tuple(box), point_coords))
        m = self.gt[self.k].copy()
        if box is not None:
            x0, y0, x1, y1 = np.asarray(box, int)
            window = np.zeros_like(m)
            window[max(y0 - 3, 0):y1 + 4, max(x0 - 3, 0):x1 + 4] = True
            m &= window
        return Prediction(masks=m[None], scores=np.ones(1), low_res_logits=np.zeros((1, 4, 4)))


def _ball(n=20, lo=5, hi=14):
    gt = np.zeros((n, 64, 64), bool)
    yy, xx = np.mgrid[:64, :64]
    for k in range(lo, hi + 1):
        r = 12 - abs(k - (lo + hi) / 2)
        gt[k] = (xx - 30 - k) ** 2 + (yy - 32) ** 2 <= r * r  # drifts right slice by slice
    gt[17, 50:60, 2:12] = True  # another object after a gap: must not be reached
    return gt


def _slices(n):
    return lambda k: np.full((64, 64), k, np.uint8)


def test_propagation_follows_the_object_and_stops_where_it_ends():
    gt = _ball()
    p = OraclePredictor(gt)
    out = propagate_mask(p, _slices(20), 20, 9, gt[9])
    assert sorted(out) == [k for k in range(5, 15) if k != 9]  # the start slice is the caller's
    for k, m in out.items():
        np.testing.assert_array_equal(m, gt[k])
    # each slice was prompted from its neighbour's mask
    k, box, pts = next(pr for pr in p.prompts if pr[0] == 10)
    ys, xs = np.nonzero(gt[9])
    assert box == (xs.min(), ys.min(), xs.max(), ys.max()) and gt[9][int(pts[0, 1]), int(pts[0, 0])]


def test_direction_limit_progress_and_cancel():
    gt = _ball()
    seen = []
    out = propagate_mask(OraclePredictor(gt), _slices(20), 20, 9, gt[9], direction="forward", max_slices=2,
                         progress=lambda d, t: seen.append((d, t)))
    assert sorted(out) == [10, 11] and seen[-1] == (2, 2)
    calls = iter([False, False, True])
    out = propagate_mask(OraclePredictor(gt), _slices(20), 20, 9, gt[9], should_stop=lambda: next(calls))
    assert sorted(out) == [10, 11]


def test_bad_arguments():
    gt = _ball()
    with pytest.raises(InputError, match="start mask is empty"):
        propagate_mask(OraclePredictor(gt), _slices(20), 20, 0, gt[0])
    with pytest.raises(InputError, match="outside"):
        propagate_mask(OraclePredictor(gt), _slices(20), 20, 25, gt[9])
    with pytest.raises(InputError, match="direction"):
        propagate_mask(OraclePredictor(gt), _slices(20), 20, 9, gt[9], direction="up")


def test_propagate_volume_with_a_real_model_fills_a_3d_label_array(tiny_model):
    from kdsam_core.predictor import KDSAMPredictor

    vol = Volume(array=np.random.default_rng(0).integers(0, 100, (6, 32, 40)).astype(np.int16))
    start = np.zeros((32, 40), bool)
    start[10:20, 10:25] = True
    p = KDSAMPredictor(tiny_model, device="cpu")
    out = propagate_volume(p, vol, 2, start, min_area=0, min_ratio=0, min_overlap=0, label=3)
    assert out.shape == (6, 32, 40) and out.dtype == np.uint8
    assert set(np.unique(out)) <= {0, 3}
    np.testing.assert_array_equal(out[2] == 3, start)
    assert len(p.cache) == 5  # every other slice encoded once

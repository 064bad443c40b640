"""Metrics and prompt simulation on hand-made masks."""

import numpy as np
import pytest

from kdsam_train.metrics import all_metrics, dice, hd95, iou, nsd
from kdsam_train.prompts import box_from_mask, center_click, correction_click, jitter_box, random_click


def square(y, x, size=10, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[y:y + size, x:x + size] = True
    return m


def test_dice_iou_of_shifted_squares():
    a, b = square(5, 5), square(5, 7)  # overlap 10 x 8
    assert dice(a, b) == pytest.approx(2 * 80 / 200)
    assert iou(a, b) == pytest.approx(80 / 120)
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0


def test_hd95_and_nsd_of_a_two_pixel_shift():
    a, b = square(5, 5), square(5, 7)
    # the left/right borders are 2 px apart, top/bottom rows overlap: distances lie in 0..2
    assert hd95(a, b) == pytest.approx(2.0)
    assert nsd(a, b, tolerance=2.0) == 1.0
    assert nsd(a, b, tolerance=0.5) < 1.0
    far = square(25, 25)
    assert hd95(a, far) == pytest.approx(np.hypot(20, 20), abs=1.5)
    assert nsd(a, far, tolerance=2.0) == 0.0


def test_degenerate_cases():
    e = np.zeros((40, 40), bool)
    assert all_metrics(e, e) == {"dice": 1.0, "iou": 1.0, "nsd": 1.0, "hd95": 0.0}
    m = all_metrics(e, square(5, 5))
    assert m["dice"] == 0.0 and m["nsd"] == 0.0 and m["hd95"] == pytest.approx(np.hypot(40, 40))


def test_box_and_clicks():
    m = square(5, 8, size=10)
    assert box_from_mask(m).tolist() == [8, 5, 17, 14]
    x, y = center_click(m)
    assert m[int(y), int(x)] and 11 <= x <= 14 and 8 <= y <= 11
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = random_click(m, rng)
        assert m[int(y), int(x)]
        b = jitter_box(box_from_mask(m), m.shape, 0.2, rng)
        assert np.all(np.abs(b - box_from_mask(m)) <= 0.2 * 9 + 1e-4)


def test_correction_click_labels():
    gt = square(5, 5, size=20)
    under = square(5, 5, size=8)  # misses most of the object -> positive click in the miss
    (x, y), label = correction_click(under, gt)
    assert label == 1 and gt[int(y), int(x)] and not under[int(y), int(x)]
    over = gt | square(28, 28, size=10)  # extra blob -> negative click on it
    (x, y), label = correction_click(over, gt)
    assert label == 0 and over[int(y), int(x)] and not gt[int(y), int(x)]
    assert correction_click(gt, gt) is None

import numpy as np
import torch

from kdsam_core.model.promptable import Preprocess
from kdsam_core.transforms import (boxes_to_model, coords_to_model, postprocess_masks, preprocess, resized_shape,
                                   to_rgb_uint8)


def test_resize_longest_side_and_padding():
    img = np.zeros((50, 100, 3), np.uint8)
    img[:, :50] = 255
    x = preprocess(img, Preprocess(img_size=64, scaling="fixed", mean=(0, 0, 0), std=(1, 1, 1)))
    assert x.shape == (1, 3, 64, 64)
    assert resized_shape(50, 100, 64) == (32, 64)
    assert torch.all(x[..., 32:, :] == 0)  # padded rows at the bottom
    assert x[0, 0, 10, 5] > 0.99 and x[0, 0, 10, 60] < 0.01


def test_minmax_scaling_spans_zero_to_one():
    img = np.full((20, 20, 3), 100, np.uint8)
    img[5:10, 5:10] = 150
    x = preprocess(img, Preprocess(img_size=20, scaling="minmax", mean=(0, 0, 0), std=(1, 1, 1)))
    assert abs(float(x.min())) < 1e-6 and abs(float(x.max()) - 1) < 1e-6


def test_coordinates_scale_with_the_longest_side():
    c = coords_to_model(np.array([[99.0, 49.0]]), (50, 100), 1024)
    np.testing.assert_allclose(c, [[99 * 10.24, 49 * 512 / 50]], rtol=1e-5)
    b = boxes_to_model(np.array([0, 0, 100, 50]), (50, 100), 1024)
    np.testing.assert_allclose(b, [0, 0, 1024, 512], rtol=1e-5)


def test_postprocess_maps_a_low_res_square_back_to_the_original_grid():
    low = torch.full((1, 1, 64, 64), -10.0)
    low[..., 8:24, 16:32] = 10.0  # frame 256: x 64..128, y 32..96; original 2x smaller (128 x 64 image)
    out = postprocess_masks(low, (64, 128), 256)
    m = out[0, 0].numpy() > 0
    ys, xs = np.nonzero(m)
    assert m.shape == (64, 128)
    assert abs(xs.min() - 32) <= 1 and abs(xs.max() - 63) <= 1 and abs(ys.min() - 16) <= 1 and abs(ys.max() - 47) <= 1


def test_to_rgb_uint8_handles_dtypes_and_nan():
    a = np.array([[0.0, np.nan], [1.0, 2.0]], np.float32)
    rgb = to_rgb_uint8(a)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1, 0] == 0 and rgb[1, 1, 0] == 255
    assert to_rgb_uint8(np.ones((4, 4), np.uint16) * 7).max() == 0  # constant image -> black

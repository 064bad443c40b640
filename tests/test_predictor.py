import numpy as np
import pytest
import torch

from kdsam_core.errors import InputError
from kdsam_core.predictor import KDSAMPredictor


def _counting(model):
    calls = []
    orig = model.encode

    def encode(x):
        calls.append(x.shape)
        return orig(x)

    model.encode = encode
    return calls


def test_second_click_on_a_slice_never_runs_the_encoder(tiny_model, disk_image):
    img, _ = disk_image
    calls = _counting(tiny_model)
    p = KDSAMPredictor(tiny_model, device="cpu")
    assert p.set_image(img, key=("vol", 0, 3)) is True
    p.predict(np.array([[70, 40]]), np.array([1]))
    assert p.set_image(img, key=("vol", 0, 3)) is False
    p.predict(np.array([[70, 40], [10, 10]]), np.array([1, 0]))
    assert p.set_image(img.copy()) is True  # a content key is another key
    assert p.set_image(img.copy()) is False  # ...that the same pixels hit again
    assert len(calls) == 2


def test_cache_is_bounded_in_memory(tiny_model, disk_image):
    img, _ = disk_image
    p = KDSAMPredictor(tiny_model, device="cpu", cache_mb=0.1)  # one 32x16x16 fp32 embedding is 32 KiB
    for k in range(6):
        p.set_image(img, key=k)
    assert len(p.cache) == 3 and p.cache.nbytes <= 0.1 * 2**20
    assert not p.has_embedding(0) and p.has_embedding(5)


def test_masks_come_back_on_the_original_grid(tiny_model):
    p = KDSAMPredictor(tiny_model, device="cpu")
    for img in (np.zeros((37, 91), np.uint16), np.random.rand(91, 37, 3).astype(np.float32),
                np.zeros((40, 40), bool)):
        p.set_image(img)
        out = p.predict(np.array([[5, 5]]), np.array([1]))
        assert out.masks.shape == (3,) + img.shape[:2] and out.masks.dtype == bool
        assert out.scores.shape == (3,) and out.low_res_logits.shape == (3, 64, 64)
        single = p.predict(box=[1, 1, 30, 30], mask_input=out.low_res_logits[0], multimask_output=False)
        assert single.masks.shape == (1,) + img.shape[:2]


def test_prompts_reach_the_decoder_in_the_model_frame(tiny_model, monkeypatch):
    seen = {}
    orig = tiny_model.decode

    def decode(emb, **kw):
        seen.update(kw)
        return orig(emb, **kw)

    monkeypatch.setattr(tiny_model, "decode", decode)
    p = KDSAMPredictor(tiny_model, device="cpu")
    p.set_image(np.zeros((50, 100), np.uint8))  # scale 64/100
    p.predict(np.array([[99, 49], [0, 0]]), np.array([1, 0]), box=[10, 5, 50, 25])
    coords, labels = seen["points"]
    np.testing.assert_allclose(coords[0].numpy(), [[99 * 0.64, 49 * 32 / 50], [0, 0]], rtol=1e-5)
    assert labels.tolist() == [[1, 0]]
    np.testing.assert_allclose(seen["boxes"][0].numpy(), [6.4, 3.2, 32, 16], rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"point_coords": [[100, 5]], "point_labels": [1]}, "outside the 100 x 50 image"),
    ({"point_coords": [[-1, 5]], "point_labels": [1]}, "outside"),
    ({"point_coords": [[1, 5]], "point_labels": [2]}, "labels must be 1"),
    ({"point_coords": [[1, 5]]}, "point_labels are required"),
    ({"box": [0, 0, 10]}, "a box is 4 numbers"),
    ({"box": [0, 0, 10, 80]}, "outside"),
    ({}, "at least one prompt"),
])
def test_bad_prompts_are_named(tiny_model, kwargs, match):
    p = KDSAMPredictor(tiny_model, device="cpu")
    p.set_image(np.zeros((50, 100), np.uint8))
    with pytest.raises(InputError, match=match):
        p.predict(**kwargs)


def test_bad_images_are_named(tiny_model):
    p = KDSAMPredictor(tiny_model, device="cpu")
    with pytest.raises(InputError, match="no image is set"):
        p.predict(box=[0, 0, 1, 1])
    with pytest.raises(InputError, match="2D slice"):
        p.set_image(np.zeros((2, 3, 8, 8)))
    with pytest.raises(InputError, match="no finite pixel"):
        p.set_image(np.full((8, 8), np.nan))
    img = np.random.rand(16, 16)
    img[3, 3] = np.nan  # a few NaN pixels are tolerated
    p.set_image(img)
    assert p.is_image_set


def test_device_choice():
    from kdsam_core.device import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert pick_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        pick_device("tpu9")


def test_disk_cache_is_reused_only_for_the_same_image_and_model(tmp_path, tiny_model, disk_image):
    from kdsam_core.model import build_model

    img, _ = disk_image
    p1 = KDSAMPredictor(tiny_model, device="cpu", disk_cache=tmp_path)
    assert p1.set_image(img) is True
    ref = p1.predict(np.array([[70, 40]]), np.array([1]))
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1

    calls = _counting(tiny_model)
    p2 = KDSAMPredictor(tiny_model, device="cpu", disk_cache=tmp_path)  # a new session
    assert p2.set_image(img, key="slice-0") is False and not calls
    again = p2.predict(np.array([[70, 40]]), np.array([1]))
    np.testing.assert_allclose(again.low_res_logits, ref.low_res_logits, atol=0.05)  # fp16 on disk

    other = img.copy()
    other[0, 0] ^= 1
    assert p2.set_image(other) is True  # one pixel differs: another image
    torch.manual_seed(1)
    p3 = KDSAMPredictor(build_model("kdsam_tiny"), device="cpu", disk_cache=tmp_path)
    assert p3.set_image(img) is True  # other weights: never reused
    files[0].write_bytes(b"damaged")
    assert KDSAMPredictor(tiny_model, device="cpu", disk_cache=tmp_path).set_image(img) is True


def test_candidates_only_for_an_ambiguous_prompt(tiny_model):
    p = KDSAMPredictor(tiny_model, device="cpu")
    p.set_image(np.zeros((40, 40), np.uint8))
    assert p.predict([[5, 5]], [1]).masks.shape[0] == 3  # one click alone
    assert p.predict([[5, 5], [9, 9]], [1, 0]).masks.shape[0] == 1
    assert p.predict(box=[1, 1, 20, 20]).masks.shape[0] == 1
    assert p.predict(box=[1, 1, 20, 20], multimask_output=True).masks.shape[0] == 3  # asked explicitly

import pytest
import torch

from kdsam_core.errors import CheckpointError
from kdsam_core.model import MODEL_REGISTRY, build_model


def test_student_resnet50_outputs_sam_embedding():
    model = build_model("kdsam", img_size=256)
    with torch.no_grad():
        emb = model.encode(torch.randn(1, 3, 256, 256))
    assert emb.shape == (1, 256, 64, 64)
    counts = model.num_parameters()
    # ResNet-50 body (23.5 M) + neck; SAM's decoder 4.06 M, prompt encoder 6 k
    assert 23e6 < counts["image_encoder"] < 27e6
    assert counts["mask_decoder"] == 4058340
    assert 27e6 < counts["total"] < 31e6


@pytest.mark.parametrize("size", [256, 512, 1024])
@pytest.mark.parametrize("neck", ["simple", "fpn"])
def test_input_sizes_give_the_same_embedding_grid(size, neck):
    model = build_model("kdsam_tiny", img_size=size, neck=neck)
    with torch.no_grad():
        emb = model.encode(torch.randn(1, 3, size, size))
    assert emb.shape == (1, *model.embedding_shape)


def test_simple_neck_uses_only_the_last_stage():
    model = build_model("kdsam", img_size=256, neck="simple")
    assert len(model.image_encoder.lateral) == 1
    assert model.image_encoder.lateral[0].in_channels == 2048


def test_decode_shapes_single_and_batched(tiny_model):
    emb = torch.randn(2, *tiny_model.embedding_shape)
    pts = (torch.tensor([[[10.0, 10.0]], [[20.0, 30.0]]]), torch.ones(2, 1, dtype=torch.int))
    low, iou = tiny_model.decode(emb, points=pts, multimask_output=True)
    assert low.shape == (2, 3, 64, 64) and iou.shape == (2, 3)
    # batched decoding equals decoding each image alone
    low0, _ = tiny_model.decode(emb[:1], points=(pts[0][:1], pts[1][:1]), multimask_output=True)
    torch.testing.assert_close(low[:1], low0)


def test_registry_lists_compared_models_and_rejects_unknown():
    assert {"kdsam", "sam_vit_h", "sam_vit_l", "sam_vit_b", "lite_medsam"} <= set(MODEL_REGISTRY)
    with pytest.raises(CheckpointError, match="unknown model"):
        build_model("resnet9000")
    with pytest.raises(ValueError, match="takes no configuration"):
        build_model("lite_medsam", img_size=512)


def test_sam_vit_b_builds_with_sam_parts():
    model = build_model("sam_vit_b")
    counts = model.num_parameters()
    assert 85e6 < counts["image_encoder"] < 95e6
    assert model.img_size == 1024 and model.embedding_shape == (256, 64, 64)


def test_lite_medsam_box_prompt_segments_a_disk(disk_image):
    """LiteMedSAM with its bundled weights and a box finds a bright disk (a real-weights check)."""
    from kdsam_core.predictor import KDSAMPredictor

    img, mask = disk_image
    pred = KDSAMPredictor(build_model("lite_medsam"), device="cpu")
    pred.set_image(img)
    out = pred.predict(box=[53, 23, 87, 57], multimask_output=False)
    m = out.masks[0]
    dice = 2 * (m & mask).sum() / (m.sum() + mask.sum())
    assert dice > 0.8

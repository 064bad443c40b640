"""kdsam-bench on the tiny configuration, and the ONNX / int8 fast path (kdsam_core.fast).

Not timed tests: they check that the benchmark runs and writes its files, that the ONNX graphs
answer as torch does, and that the int8 graphs run. No test reads ../shared.
"""

import hashlib
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from kdsam_core.errors import KDSAMError
from kdsam_core.fast import OnnxModel, export_onnx
from kdsam_core.predictor import KDSAMPredictor


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """kdsam_tiny with a mean-embedding prior, and its exported fp32 + int8 graphs (once)."""
    from kdsam_core.model import build_model

    torch.manual_seed(0)
    model = build_model("kdsam_tiny", prior=True)
    model.image_encoder.prior.normal_(0, 0.1)  # the graphs must carry the buffer
    folder = tmp_path_factory.mktemp("onnx")
    paths = export_onnx(model, folder, int8=True)
    return model, folder, paths


def _prompts(model):
    s = model.img_size
    pts = (torch.tensor([[[0.3 * s, 0.4 * s], [0.7 * s, 0.2 * s]]]), torch.tensor([[1, 0]], dtype=torch.int))
    box = torch.tensor([[0.1 * s, 0.2 * s, 0.6 * s, 0.8 * s]])
    return pts, box


def test_export_writes_fp32_and_int8_graphs(tiny_onnx):
    model, _, paths = tiny_onnx
    assert set(paths) == {"encoder", "decoder", "encoder_int8"}  # the decoder stays fp32
    assert all(p.exists() and p.stat().st_size > 0 for p in paths.values())
    assert not model.training  # the exporter must hand the model back in eval mode


def test_onnx_matches_torch(tiny_onnx):
    model, folder, _ = tiny_onnx
    onnx = OnnxModel(model, backend="onnx", folder=folder)
    x = torch.randn(1, 3, model.img_size, model.img_size)
    with torch.inference_mode():
        emb = model.encode(x)
    torch.testing.assert_close(onnx.encode(x), emb, atol=1e-4, rtol=1e-4)
    pts, box = _prompts(model)
    _, h, w = model.embedding_shape
    mask = torch.randn(1, 1, 4 * h, 4 * w)
    for kw in ({"points": pts}, {"boxes": box}, {"points": pts, "boxes": box}, {"points": pts, "mask_input": mask}):
        for multi in (True, False):
            with torch.inference_mode():
                low, iou = model.decode(emb, multimask_output=multi, **kw)
            low_o, iou_o = onnx.decode(emb, multimask_output=multi, **kw)
            assert low_o.shape == low.shape and iou_o.shape == iou.shape
            torch.testing.assert_close(low_o, low, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(iou_o, iou, atol=1e-4, rtol=1e-4)


def test_predictor_backends_agree(tiny_onnx, disk_image):
    model, folder, _ = tiny_onnx
    img, _ = disk_image
    ref = KDSAMPredictor(model, device="cpu")
    ref.set_image(img)
    want = ref.predict(np.array([[70, 40]]), np.array([1]))
    fast = KDSAMPredictor(model, device="cpu", backend="onnx", onnx_dir=str(folder))
    assert fast.set_image(img) is True and fast.set_image(img) is False  # the embedding cache still works
    got = fast.predict(np.array([[70, 40]]), np.array([1]))
    np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-4)
    assert (got.masks != want.masks).mean() < 1e-3
    got_box = fast.predict(box=np.array([50, 20, 90, 60]), multimask_output=False)
    assert got_box.masks.shape == (1, 96, 128)


def test_int8_runs_close_to_fp32(tiny_onnx, disk_image):
    model, folder, _ = tiny_onnx
    img, _ = disk_image
    q = KDSAMPredictor(model, device="cpu", backend="onnx-int8", onnx_dir=str(folder))
    q.set_image(img)
    pred = q.predict(np.array([[70, 40]]), np.array([1]))
    assert pred.masks.shape == (3, 96, 128) and np.isfinite(pred.scores).all()
    x = torch.randn(1, 3, model.img_size, model.img_size)
    with torch.inference_mode():
        emb = model.encode(x)
    emb_q = q.runner.encode(x)
    assert emb_q.shape == emb.shape and torch.isfinite(emb_q).all()
    assert torch.nn.functional.cosine_similarity(emb_q.flatten(), emb.flatten(), dim=0) > 0.8


def test_unknown_backend_is_a_user_error(tiny_model):
    with pytest.raises(KDSAMError, match="onnx-int8"):
        KDSAMPredictor(tiny_model, device="cpu", backend="tensorrt")


def test_bench_runs_on_the_tiny_configuration(tmp_path, capsys):
    from kdsam_bench.cli import main

    out = tmp_path / "res" / "tiny"
    rc = main(["run", "--models", "kdsam_tiny", "--sizes", "64", "--backends", "torch", "onnx-int8",
               "--repeats", "2", "--decoder-repeats", "3", "--onnx-dir", str(tmp_path / "onnx"), "-o", str(out)])
    assert rc == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert {"cpu", "logical_cpus", "torch_threads", "torch"} <= set(result["machine"])
    assert len(result["load_average_start"]) == 3
    rows = {r["label"]: r for r in result["rows"]}
    assert set(rows) == {"kdsam_tiny@64/torch", "kdsam_tiny@64/onnx-int8"}
    for r in rows.values():
        assert r["encoder_ms"]["n"] == 2 and r["decoder_ms"]["n"] == 3 and r["click_ms"]["median"] > 0
        assert r["params"]["total"] > 0 and r["encoder_flops"] > 0 and r["decoder_flops"] > 0
        assert r["encoder_peak_mb"] >= 0 and r["max_rss_mb"] > 0
    assert rows["kdsam_tiny@64/torch"]["vs_student"]["encoder_ms"] == pytest.approx(1.0)
    md = out.with_suffix(".md").read_text()
    assert "kdsam_tiny@64/onnx-int8" in md and "## Targets" in md
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "x student" in capsys.readouterr().out
    acc = tmp_path / "acc.json"  # a Dice column added afterwards, without measuring again
    acc.write_text(json.dumps({"split": "val", "summary": {"student": {"all": {"click": {"dice": 0.5, "n": 3}}}}}))
    assert main(["report", str(out.with_suffix(".json")), "--accuracy", str(acc),
                 "--dice-map", "student=kdsam_tiny@64/torch"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["rows"][0]["dice"]["click"]["dice"] == 0.5 and "50.00" in out.with_suffix(".md").read_text()


def test_dice_column_and_targets():
    from kdsam_bench.report import markdown, targets
    from kdsam_bench.run import add_ratios, attach_dice

    def row(model, size, backend, enc, click=5.0):
        ms = lambda v: {"median": v, "min": v, "max": v, "n": 1, "values": [v]}
        return {"label": f"{model}@{size}/{backend}" if model == "kdsam" else f"{model}/{backend}", "model": model,
                "img_size": size, "backend": backend, "params": {"total": 1e6}, "encoder_flops": 1e9,
                "encoder_ms": ms(enc), "decoder_ms": ms(2.0), "click_ms": ms(click), "encoder_peak_mb": 10.0}

    result = {"machine": {"cpu": "x", "logical_cpus": 2, "isa": [], "memory_gb": 1, "torch": "2", "torch_threads": 2,
                          "onnxruntime": "1", "python": "3"}, "started_utc": "t", "rows": [
        row("kdsam", 1024, "torch", 100.0), row("kdsam", 256, "torch", 10.0), row("kdsam", 256, "onnx-int8", 5.0),
        row("sam_vit_b", 1024, "torch", 4000.0), row("sam_vit_h", 1024, "torch", 9000.0, click=30),
        row("lite_medsam", 256, "torch", 12.0)]}
    add_ratios(result)
    acc = {"split": "val", "summary": {
        "student": {"all": {"click": {"dice": 0.80, "n": 10}}},
        "kdsam@256/onnx-int8": {"all": {"click": {"dice": 0.797, "n": 10}}}}}
    assert attach_dice(result, acc, {"student": "kdsam@256/torch"}) == 2
    tg = targets(result)
    vit_b = next(t for t in tg if "sam_vit_b" in t["target"])
    vit_h = next(t for t in tg if "sam_vit_h" in t["target"])
    assert vit_b["met"] is True and vit_h["met"] is False  # 40x and 90x
    int8 = next(t for t in tg if t["target"].startswith("int8"))
    assert int8["met"] is True and "-0.30" in int8["measured"]
    assert "80.00" in markdown(result)


def test_paired_differences():
    from kdsam_bench.accuracy import paired_differences

    rows = [{"model": m, "id": i, "protocol": "click", "dice": d}
            for m, i, d in [("t", "a", 0.9), ("t", "b", 0.8), ("q", "a", 0.88), ("q", "b", 0.8)]]
    d = paired_differences(rows, "t")["q"]["click"]
    assert d["n"] == 2 and d["mean_points"] == pytest.approx(-1.0) and d["worst_points"] == pytest.approx(-2.0)


def test_bench_user_errors_are_one_line(tmp_path, capsys):
    from kdsam_bench.cli import main

    assert main(["run", "--models", "kdsam", "--backends", "tpu", "-o", str(tmp_path / "x")]) == 2
    assert main(["run", "--models", "sam_vit_x", "-o", str(tmp_path / "x")]) == 2
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("kdsam-bench: error:") == 3 and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_accuracy_runs_every_backend_on_the_same_images(tmp_path, tiny_onnx):
    """kdsam-bench accuracy end to end on a synthetic split: torch, onnx and onnx-int8 rows on the
    same images, fp32 ONNX equal to torch, and the paired differences computed from them."""
    from kdsam_bench.accuracy import evaluate_backends
    from kdsam_core.checkpoint import save_checkpoint
    from kdsam_core.model.build import checkpoint_metadata
    from kdsam_train.splits import write_splits
    from train_helpers import make_dataset

    model = tiny_onnx[0]
    ckpt = save_checkpoint(model.state_dict(), tmp_path / "tiny.safetensors", checkpoint_metadata(model))
    data = make_dataset(tmp_path / "data", "synth", n=6)
    ids = [f"synth/img{i:03d}" for i in range(6)]
    split = write_splits(tmp_path / "splits.json", {"train": ids[:3], "val": ids[3:], "test": []})
    out = tmp_path / "acc"
    result = evaluate_backends(str(ckpt), backends=("torch", "onnx", "onnx-int8"), data_root=str(data),
                               split="val", split_file=str(split), threads=1, onnx_dir=str(tmp_path / "onnx"),
                               out=str(out), calibration_images=2)
    labels = [f"kdsam_tiny@{model.img_size}/{b}" for b in ("torch", "onnx", "onnx-int8")]
    assert list(result["models"]) == labels
    assert result["int8_calibration"]["images"] and set(result["int8_calibration"]["images"]) <= set(ids[:3])
    assert result["split_file"] == str(split.resolve())  # outside the repository: its absolute path, and its hash
    assert result["split_file_sha256"] == hashlib.sha256(split.read_bytes()).hexdigest()
    for lab in labels:
        assert {r["id"] for r in result["per_image"] if r["model"] == lab} == set(ids[3:])
    for proto in ("box", "click"):
        assert result["summary"][labels[1]]["all"][proto]["dice"] == pytest.approx(
            result["summary"][labels[0]]["all"][proto]["dice"], abs=1e-3)
        assert result["paired_vs_torch"][labels[2]][proto]["n"] == 3
    assert out.with_suffix(".json").exists() and out.with_suffix(".md").exists()

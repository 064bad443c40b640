"""The training package end to end on synthetic data with tiny models (no shared/ data)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_dataset, tiny_teacher  # noqa: E402

from kdsam_core.checkpoint import read_metadata  # noqa: E402
from kdsam_core.errors import KDSAMError  # noqa: E402
from kdsam_core.model.build import build_model  # noqa: E402
from kdsam_core.transforms import preprocess  # noqa: E402
from kdsam_train import cli  # noqa: E402
from kdsam_train.data import discover, load_pair  # noqa: E402
from kdsam_train.splits import make_splits, read_splits  # noqa: E402
from kdsam_train.teacher_cache import CacheMismatchError, EmbeddingCache, cache_key, fill_cache, open_cache  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Data (with one empty mask, one corrupt image, one size mismatch), splits, teacher, cache."""
    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "data", "synth", n=14, empty=1)
    make_dataset(root / "data", "other", n=6, seed=1, size=(36, 52))
    (data / "synth" / "images" / "img900.png").write_bytes(b"not a png at all")  # corrupt
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(data / "synth" / "masks" / "img900.png")
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(data / "synth" / "images" / "img901.png")  # mismatch
    Image.fromarray(np.full((31, 30), 255, np.uint8)).save(data / "synth" / "masks" / "img901.png")
    split = root / "splits.json"
    assert cli.main(["split", "--data-root", str(data), "--split-file", str(split), "--fractions", "0.75", "0.1",
                     "0.15"]) == 0
    teacher = tiny_teacher(root / "teacher.safetensors")
    w = {"root": root, "data": data, "split": split, "teacher": teacher, "cache": root / "cache"}
    assert cli.main(["cache", *common(w), "--cache-dir", str(w["cache"]), "--shard-size", "4",
                     "--teacher", "kdsam_tiny", "--teacher-checkpoint", str(teacher),
                     "--splits", "train", "val", "test", "--threads", "1"]) == 0
    return w


def common(w):
    return ["--data-root", str(w["data"]), "--split-file", str(w["split"])]


def distill_args(w, run, steps, **extra):
    args = ["distill", *common(w), "--cache-dir", str(w["cache"]), "--teacher", "kdsam_tiny",
            "--teacher-checkpoint", str(w["teacher"]), "--student", "kdsam_tiny", "--img-size", "64",
            "--run-dir", str(run), "--steps", str(steps), "--batch-size", "3", "--ckpt-every", "2",
            "--log-every", "1", "--warmup-steps", "1", "--lr", "0.002", "--threads", "1"]
    extra.setdefault("perceptual", "decoder")  # the default is none; cover the decoder term here
    for k, v in extra.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    return args


def test_splits_are_deterministic_and_written(world):
    samples = discover(world["data"])
    assert len(samples) == 22
    a = make_splits(samples, fractions=(0.75, 0.1, 0.15), seed=0)
    assert a == make_splits(list(reversed(samples)), fractions=(0.75, 0.1, 0.15), seed=0)
    assert a != make_splits(samples, fractions=(0.75, 0.1, 0.15), seed=1)
    assert read_splits(world["split"]) == a
    ids = [i for v in a.values() for i in v]
    assert sorted(ids) == sorted(s.id for s in samples)  # a partition
    # adding a dataset leaves the others' assignment alone
    extra = world["root"] / "data2"
    shutil.copytree(world["data"], extra, dirs_exist_ok=True)
    make_dataset(extra, "third", n=5, seed=3)
    b = make_splits(discover(extra), fractions=(0.75, 0.1, 0.15), seed=0)
    for k in a:
        assert [i for i in b[k] if not i.startswith("third/")] == a[k]
    assert any(i.startswith("third/") for i in b["train"])


def test_bad_pairs_raise_input_errors(world):
    by_id = {s.id: s for s in discover(world["data"])}
    with pytest.raises(KDSAMError, match="unreadable"):
        load_pair(by_id["synth/img900"])
    with pytest.raises(KDSAMError, match="size mismatch"):
        load_pair(by_id["synth/img901"])
    with pytest.raises(KDSAMError, match="empty mask"):
        load_pair(by_id["synth/img000"])
    image, mask = load_pair(by_id["synth/img000"], require_mask=False)
    assert image.shape == (48, 40, 3) and image.dtype == np.uint8 and not mask.any()


def test_cache_is_resumable_and_checked(world, tmp_path):
    teacher = build_model("kdsam_tiny", world["teacher"])
    samples = [s for s in discover(world["data"]) if s.id not in ("synth/img900", "synth/img901")][:9]
    cache = open_cache(tmp_path / "c", teacher, "kdsam_tiny")
    fill_cache(teacher, cache, samples[:5], shard_size=2)  # "interrupted" after 5
    seen = []
    reopened = open_cache(tmp_path / "c", teacher, "kdsam_tiny")
    assert len(reopened) == 5
    fill_cache(teacher, reopened, samples, shard_size=2, progress=lambda d, t: seen.append(t))
    assert seen[-1] == 4  # only the missing ones were computed
    assert reopened.keys() == {cache_key(s.id) for s in samples}
    image, _ = load_pair(samples[7], require_mask=False)
    with torch.no_grad():
        direct = teacher.encode(preprocess(image, teacher.preprocess))[0]
    got = reopened.get(cache_key(samples[7].id))
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), direct, atol=2e-3, rtol=2e-3)
    torch.manual_seed(7)
    other = build_model("kdsam_tiny")  # another teacher: other weights
    with pytest.raises(CacheMismatchError, match="weights_sha256"):
        open_cache(tmp_path / "c", other, "kdsam_tiny")
    from dataclasses import replace

    teacher.preprocess = replace(teacher.preprocess, interpolation="bicubic")
    with pytest.raises(CacheMismatchError, match="preprocess"):
        open_cache(tmp_path / "c", teacher, "kdsam_tiny")


def test_cache_skips_bad_files(world):
    sig = json.loads((world["cache"] / "signature.json").read_text())
    cache = EmbeddingCache(world["cache"], sig, create=False)
    split = read_splits(world["split"])
    listed = [i for v in split.values() for i in v]
    assert "synth/img000|0" in cache  # empty mask: fine for distillation
    for bad in ("synth/img900", "synth/img901"):
        assert bad in listed and cache_key(bad) not in cache


def test_embedding_shape_mismatch_is_a_clear_error_before_training(world, tmp_path):
    from kdsam_train.distill import check_shapes

    sig = json.loads((world["cache"] / "signature.json").read_text())
    sig["embedding_shape"] = [256, 64, 64]
    fake = EmbeddingCache(tmp_path / "fake", sig)
    with pytest.raises(KDSAMError, match=r"does not match the teacher's \(256, 64, 64\)"):
        check_shapes(build_model("kdsam_tiny"), fake)
    (tmp_path / "fake2").mkdir()
    shutil.copy(tmp_path / "fake" / "signature.json", tmp_path / "fake2" / "signature.json")
    assert cli.main(distill_args(world, tmp_path / "r", 2) [:3] + ["--cache-dir", str(tmp_path / "fake2")]
                    + distill_args(world, tmp_path / "r", 2)[5:]) == 2
    assert not (tmp_path / "r" / "train_state.pt").exists()


def test_distill_runs_and_learns(world, tmp_path):
    assert cli.main(distill_args(world, tmp_path / "d", 8)) == 0
    rows = (tmp_path / "d" / "log.csv").read_text().splitlines()[1:]
    mse = [float(r.split(",")[2]) for r in rows]
    assert len(mse) == 8 and all(np.isfinite(mse))
    assert min(mse[-3:]) < mse[0]
    meta = read_metadata(tmp_path / "d" / "student_phase1.safetensors")
    assert meta["phase"] == 1 and meta["steps"] == 8 and meta["perceptual"] == "decoder"
    # the split file is named portably (outside the repository: its absolute path) with its hash
    td = meta["training_data"]
    assert td["split_file"] == str(world["split"].resolve()) and td["split"] == "train"
    assert td["split_file_sha256"] == hashlib.sha256(world["split"].read_bytes()).hexdigest()
    from kdsam_train.config import DEFAULT_SPLIT_FILE
    from kdsam_train.splits import split_record
    assert split_record(DEFAULT_SPLIT_FILE)["split_file"] == "training/splits/shared_data_v1.json"


def test_embed_prior_is_the_teacher_mean_and_travels_with_the_weights(world, tmp_path):
    """--embed-prior: the fixed buffer is the mean teacher embedding of the training items, is not
    trained, is saved in the checkpoint (config prior=True) and is added to the output."""
    assert cli.main(distill_args(world, tmp_path / "p", 3, embed_prior="true")) == 0
    ckpt = tmp_path / "p" / "student_phase1.safetensors"
    state = load_file(ckpt)
    cache = EmbeddingCache(world["cache"], json.loads((world["cache"] / "signature.json").read_text()), create=False)
    keys = [cache_key(i) for i in read_splits(world["split"])["train"] if cache_key(i) in cache]
    mean = torch.stack([cache.get(k).float() for k in keys]).mean(0)
    assert torch.allclose(state["image_encoder.prior"], mean, atol=1e-5)  # set once, never trained
    model = build_model("kdsam_tiny", ckpt)
    assert model.config["prior"] is True and torch.equal(model.image_encoder.prior, state["image_encoder.prior"])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        with_prior = model.encode(x)
        model.image_encoder.prior.zero_()
        assert torch.allclose(with_prior - model.encode(x), mean, atol=1e-5)
    # without the option the checkpoint has no buffer and its config no key (older checkpoints load)
    assert "prior" not in build_model("kdsam_tiny").config
    assert not any(k.endswith("prior") for k in build_model("kdsam_tiny").state_dict())


def test_init_encoder_warm_starts_from_a_checkpoint_and_refuses_another_student(world, tmp_path):
    """--init-encoder: the run starts from that checkpoint's encoder (prior included, not re-initialised
    from the cache) and records it, also at another input size; a checkpoint of another architecture
    (prior, neck) is an error before step 1."""
    assert cli.main(distill_args(world, tmp_path / "a", 3, embed_prior="true", perceptual="none")) == 0
    src = tmp_path / "a" / "student_phase1.safetensors"
    src_bytes = src.read_bytes()
    # lr 0: the warm-started run must end where the source encoder was. It is stopped after step 1
    # and resumed; the source it started from is recorded as it was when loaded, even if the file
    # has been replaced before the resumed run exports the checkpoint.
    b_args = distill_args(world, tmp_path / "b", 2, embed_prior="true", perceptual="none", lr=0, init_encoder=src)
    assert cli.main([*b_args, "--stop-at-step", "1"]) == 0
    src.write_bytes(b"replaced after the warm start")
    assert cli.main(b_args) == 0
    src.write_bytes(src_bytes)
    a, b = load_file(src), load_file(tmp_path / "b" / "student_phase1.safetensors")
    # every weight and the prior (BatchNorm's running statistics move in train mode even at lr 0)
    enc = [k for k in a if k.startswith("image_encoder.") and "running_" not in k and "num_batches" not in k]
    assert "image_encoder.prior" in enc and all(torch.equal(a[k], b[k]) for k in enc)
    # without it the same lr-0 run ends at the fresh initialisation, not at the source's trained weights
    assert cli.main(distill_args(world, tmp_path / "c", 2, embed_prior="true", perceptual="none", lr=0)) == 0
    c = load_file(tmp_path / "c" / "student_phase1.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in enc)
    meta = read_metadata(tmp_path / "b" / "student_phase1.safetensors")
    assert meta["init_encoder"]["checkpoint"] == str(src)
    assert meta["init_encoder"]["sha256"] == hashlib.sha256(src_bytes).hexdigest()
    assert meta["steps"] == 2
    # phase 2 carries the lineage on into the final weights
    assert cli.main(["finetune", *common(world), "--student-checkpoint", str(tmp_path / "b" / "student_phase1.safetensors"),
                     "--teacher", "kdsam_tiny", "--teacher-checkpoint", str(world["teacher"]),
                     "--embed-cache-dir", str(tmp_path / "ec"), "--run-dir", str(tmp_path / "f"), "--steps", "1",
                     "--batch-size", "2", "--threads", "1"]) == 0
    final = read_metadata(tmp_path / "f" / "student_final.safetensors")
    assert final["phase1_init_encoder"] == meta["init_encoder"] and final["phase1_steps"] == 2
    # a student without the prior buffer does not fit this one
    assert cli.main(distill_args(world, tmp_path / "x", 2, embed_prior="false", perceptual="none",
                                 init_encoder=src)) == 2
    assert not (tmp_path / "x" / "train_state.pt").exists()
    # another input size is the same network: trained on at 128 px from the 64 px encoder, lr 0
    assert cli.main(distill_args(world, tmp_path / "s", 1, embed_prior="true", perceptual="none", lr=0,
                                 init_encoder=src, img_size=128)) == 0
    s128 = load_file(tmp_path / "s" / "student_phase1.safetensors")
    assert all(torch.equal(a[k], s128[k]) for k in enc)
    meta128 = read_metadata(tmp_path / "s" / "student_phase1.safetensors")
    assert meta128["config"]["img_size"] == 128 and meta128["init_encoder"]["img_size"] == 64
    # another neck is not
    assert cli.main(distill_args(world, tmp_path / "n", 1, embed_prior="true", perceptual="none",
                                 init_encoder=src, neck="simple")) == 2
    assert not (tmp_path / "n" / "train_state.pt").exists()


def test_backbone_weights_start_the_resnet_body_from_a_torchvision_file(world, tmp_path, monkeypatch):
    """--backbone-weights: a torchvision ResNet state dict (as torch.save writes it; its fc ignored) is
    the body's start, recorded with its SHA-256 and carried into phase 2; 'imagenet' finds it in the
    torch hub cache under torchvision's file name; another ResNet's state, a missing file and the
    option beside --init-encoder are each one error before step 1."""
    from torchvision.models import resnet

    from kdsam_train.imagenet import RESNET_FILES

    torch.manual_seed(123)
    body = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1])  # the tiny student's body, as torchvision names it
    src = tmp_path / "tiny_imagenet.pth"
    torch.save(body.state_dict(), src)
    args = distill_args(world, tmp_path / "a", 2, embed_prior="true", perceptual="none", lr=0, backbone_weights=src)
    assert cli.main([*args, "--stop-at-step", "1"]) == 0  # the record must survive a resume
    assert cli.main(args) == 0
    out = load_file(tmp_path / "a" / "student_phase1.safetensors")
    names = {"conv1.weight": "stem.0.weight", "bn1.weight": "stem.1.weight", "layer1.0.conv1.weight":
             "stages.0.0.conv1.weight", "layer4.0.downsample.0.weight": "stages.3.0.downsample.0.weight"}
    for tv, ours in names.items():  # lr 0: the weights are the file's (BatchNorm statistics move in train mode)
        assert torch.equal(out["image_encoder." + ours], body.state_dict()[tv])
    meta = read_metadata(tmp_path / "a" / "student_phase1.safetensors")
    assert meta["backbone_init"] == {"file": str(src), "sha256": hashlib.sha256(src.read_bytes()).hexdigest()}
    # without it, the same run starts elsewhere
    assert cli.main(distill_args(world, tmp_path / "r", 1, embed_prior="true", perceptual="none", lr=0)) == 0
    assert not torch.equal(load_file(tmp_path / "r" / "student_phase1.safetensors")["image_encoder.stem.0.weight"],
                           body.state_dict()["conv1.weight"])
    # phase 2 names it among the encoder's lineage
    assert cli.main(["finetune", *common(world), "--student-checkpoint", str(tmp_path / "a" / "student_phase1.safetensors"),
                     "--teacher", "kdsam_tiny", "--teacher-checkpoint", str(world["teacher"]),
                     "--embed-cache-dir", str(tmp_path / "ec"), "--run-dir", str(tmp_path / "f"), "--steps", "1",
                     "--batch-size", "2", "--threads", "1"]) == 0
    assert read_metadata(tmp_path / "f" / "student_final.safetensors")["phase1_backbone_init"] == meta["backbone_init"]

    # errors, each before a first step
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(resnet.resnet18(weights=None).state_dict(), resnet18)
    missing = tmp_path / "nope.pth"
    for run, extra in (("x1", {"backbone_weights": resnet18}), ("x2", {"backbone_weights": missing}),
                       ("x3", {"backbone_weights": src, "init_encoder": tmp_path / "a" / "student_phase1.safetensors"})):
        assert cli.main(distill_args(world, tmp_path / run, 1, embed_prior="true", perceptual="none", **extra)) == 2
        assert not (tmp_path / run / "train_state.pt").exists()
    from kdsam_train.imagenet import init_backbone

    tiny = build_model("kdsam_tiny").image_encoder
    with pytest.raises(KDSAMError, match="does not fit the torchvision ResNet body architecture: 48 unexpected"):
        init_backbone(tiny, "tiny", str(resnet18))
    # the real student's body takes torchvision's resnet50 state (fc and all) key for key
    r50 = resnet.resnet50(weights=None)
    torch.save(r50.state_dict(), tmp_path / "r50.pth")
    student = build_model("kdsam", img_size=256).image_encoder
    init_backbone(student, "resnet50", str(tmp_path / "r50.pth"))
    assert torch.equal(student.stages[3][2].conv3.weight, r50.layer4[2].conv3.weight)
    # 'imagenet': torchvision's file name in the hub cache, and a message naming it where it is not
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(KDSAMError, match=r"resnet50-11ad3fa6\.pth.*Pass --backbone-weights PATH"):
        init_backbone(student, "resnet50", "imagenet")
    with pytest.raises(KDSAMError, match="no ImageNet weights for the backbone 'tiny'"):
        init_backbone(tiny, "tiny", "imagenet")
    monkeypatch.setitem(RESNET_FILES, "tiny", ("tiny-0000.pth",))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(src, tmp_path / "hub" / "checkpoints" / "tiny-0000.pth")
    record = init_backbone(tiny, "tiny", "imagenet")
    assert record["file"] == str(tmp_path / "hub" / "checkpoints" / "tiny-0000.pth")
    assert torch.equal(tiny.stem[0].weight, body.conv1.weight)


def test_diagnose_tells_a_collapsed_student_from_one_that_follows_the_teacher(world, tmp_path):
    from kdsam_train.diagnose import embedding_stats

    g = torch.Generator().manual_seed(0)
    t = torch.randn(8, 8, 16, 16, generator=g)
    same = embedding_stats(t * 2 + 1, t)  # follows the teacher up to scale and offset
    assert same["residual_cos"] == pytest.approx(1.0) and same["variance_ratio"] == pytest.approx(4.0)
    flat = embedding_stats(t.mean(0, keepdim=True) + 1e-9 * torch.randn(t.shape, generator=g), t)  # ~one embedding
    assert abs(flat["residual_cos"]) < 0.05 and flat["variance_ratio"] < 1e-9
    assert flat["mse"] == pytest.approx(flat["mean_baseline_mse"], rel=1e-6)
    # the command on a trained checkpoint and the teacher cache
    assert cli.main(distill_args(world, tmp_path / "d", 2)) == 0
    out = tmp_path / "diag"
    assert cli.main(["diagnose", *common(world), "--split", "train", "--cache-dir", str(world["cache"]),
                     "--students", f"s={tmp_path / 'd' / 'student_phase1.safetensors'}", "--out", str(out),
                     "--threads", "1"]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    st = res["students"]["s"]["stats"]["all"]
    assert st["n"] >= 2 and 0 <= st["variance_ratio"] and -1 <= st["residual_cos"] <= 1
    assert f"| s | all | {st['n']} | {st['mse']:.5f} |" in out.with_suffix(".md").read_text()


def test_interrupted_run_resumes_to_identical_state(world, tmp_path):
    assert cli.main(distill_args(world, tmp_path / "full", 6)) == 0
    assert cli.main(distill_args(world, tmp_path / "cut", 6, stop_at_step=3)) == 0  # "killed" after step 3
    state = torch.load(tmp_path / "cut" / "train_state.pt", weights_only=True)
    assert state["step"] == 3
    assert cli.main(distill_args(world, tmp_path / "cut", 6)) == 0
    a = load_file(tmp_path / "full" / "student_phase1.safetensors")
    b = load_file(tmp_path / "cut" / "student_phase1.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "log.csv").read_text().count("\n") == (tmp_path / "cut" / "log.csv").read_text().count("\n")


def test_kill_9_during_training_then_resume(world, tmp_path):
    """A real SIGKILL: the checkpoint on disk is whole and the run continues from it."""
    run = tmp_path / "k"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen([sys.executable, "-m", "kdsam_train.cli", *distill_args(world, run, 400)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        t0 = time.time()
        while not (run / "train_state.pt").exists() and time.time() - t0 < 40:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.kill()
        proc.wait()
    step = torch.load(run / "train_state.pt", weights_only=True)["step"]
    assert 2 <= step < 400 and step % 2 == 0
    assert cli.main(distill_args(world, run, step + 2)) == 0
    rows = (run / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, step + 3))


def test_finetune_and_evaluate(world, tmp_path):
    assert cli.main(distill_args(world, tmp_path / "d", 2)) == 0
    ft = ["finetune", *common(world), "--student-checkpoint", str(tmp_path / "d" / "student_phase1.safetensors"),
          "--teacher", "kdsam_tiny", "--teacher-checkpoint", str(world["teacher"]), "--embed-cache-dir",
          str(tmp_path / "sc"), "--run-dir", str(tmp_path / "f"), "--steps", "6", "--batch-size", "4",
          "--max-correction-clicks", "2", "--threads", "1"]
    assert cli.main(ft) == 0
    meta = read_metadata(tmp_path / "f" / "student_final.safetensors")
    assert meta["phase"] == 2 and meta["steps"] == 6
    train_ids = read_splits(world["split"])["train"]
    bad_in_train = {"synth/img000": "empty mask", "synth/img900": "unreadable", "synth/img901": "size mismatch"}
    expected = {r for i, r in bad_in_train.items() if i in train_ids}
    assert set(meta["skipped"]["by_reason"]) == expected  # counted, not crashed
    # the frozen encoder did not move
    p1 = load_file(tmp_path / "d" / "student_phase1.safetensors")
    p2 = load_file(tmp_path / "f" / "student_final.safetensors")
    assert all(torch.equal(p1[k], p2[k]) for k in p1 if k.startswith("image_encoder."))
    assert any(not torch.equal(p1[k], p2[k]) for k in p1 if k.startswith("mask_decoder."))
    # coupled baseline trains the encoder too
    assert cli.main(ft[:-6] + ["--run-dir", str(tmp_path / "c"), "--steps", "2", "--coupled", "true",
                               "--augment", "true", "--threads", "1"]) == 0
    p3 = load_file(tmp_path / "c" / "student_final.safetensors")
    assert any(not torch.equal(p1[k], p3[k]) for k in p1 if k.startswith("image_encoder.") and "weight" in k)

    out = tmp_path / "ev" / "test"
    assert cli.main(["evaluate", *common(world), "--split", "train", "--models",
                     f"student={tmp_path / 'f' / 'student_final.safetensors'}",
                     f"teacher=kdsam_tiny:{world['teacher']}@{world['cache']}", "--out", str(out),
                     "--threads", "1"]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    md = out.with_suffix(".md").read_text()
    assert "| synth | box |" in md and "student Dice" in md and "teacher HD95" in md
    per = res["per_image"]
    ids = {m: {r["id"] for r in per if r["model"] == m} for m in ("student", "teacher")}
    assert ids["student"] == ids["teacher"] and len(ids["student"]) == len(train_ids) - len(expected)
    protos = {r["protocol"] for r in per}
    assert protos == {"box", "box_jitter", "click", "clicks_1", "clicks_3", "clicks_5"}
    s = res["summary"]["student"]["all"]["box"]
    assert 0 <= s["dice"] <= 1 and s["n"] == len(ids["student"])
    assert res["skipped"]["skipped"] == len(expected)
    # the image-blindness control: same images and prompts, an all-black image's embedding
    blank = tmp_path / "ev" / "blank"
    assert cli.main(["evaluate", *common(world), "--split", "train", "--models",
                     f"teacher=kdsam_tiny:{world['teacher']}@{world['cache']}", "--protocols", "box", "click",
                     "--blank-control", "true", "--out", str(blank), "--threads", "1"]) == 0
    rb = json.loads(blank.with_suffix(".json").read_text())
    assert set(rb["summary"]) == {"teacher", "teacher|blank"}
    real = {(r["id"], r["protocol"]): r["dice"] for r in rb["per_image"] if r["model"] == "teacher"}
    ctrl = {(r["id"], r["protocol"]): r["dice"] for r in rb["per_image"] if r["model"] == "teacher|blank"}
    assert real.keys() == ctrl.keys() and len(real) == 2 * len(ids["teacher"])
    assert all(real[k] == pytest.approx(r["dice"]) for r in per if r["model"] == "teacher"
               for k in [(r["id"], r["protocol"])] if k in real)  # the real run is unchanged by the control
    t = rb["summary"]["teacher"]["all"]["box"]["dice"] - rb["summary"]["teacher|blank"]["all"]["box"]["dice"]
    assert f"| all | box | {real_fmt(rb, 'teacher')} | {real_fmt(rb, 'teacher|blank')} | {t:+.4f} |" \
        in blank.with_suffix(".md").read_text()

    from kdsam_train.report import targets_table

    table = targets_table(res)
    assert "| synth |" in table and "| all |" in table
    assert f"{res['summary']['teacher']['synth']['box']['dice']:.4f}" in table
    box = {m: {r["id"]: r["dice"] for r in per if r["model"] == m and r["protocol"] == "box"} for m in ids}
    d = np.array([box["student"][i] - box["teacher"][i] for i in box["student"]])
    assert f"| {d.mean():+.4f} ± {d.std():.4f}; {int((d >= 0).sum())}/{d.size} |" in table
    # the teacher taken from another run on the same images and prompts (the blank-control run above)
    alone = {**res, "summary": {"student": res["summary"]["student"]},
             "per_image": [r for r in per if r["model"] == "student"]}
    assert res["seed"] == rb["seed"] == 0
    cross = targets_table(alone, teacher_result=rb)
    assert f"| all | {d.size} | {s['dice']:.4f} | {real_fmt(rb, 'teacher')} |" in cross
    assert real_fmt(rb, "teacher") == real_fmt(res, "teacher")  # the same teacher on the same images
    assert f"{d.mean():+.4f} ± {d.std():.4f}" in cross
    # another student as the "teacher" (an earlier version), named in the header
    named = targets_table(alone, teacher="student", teacher_result=res, names=("v5", "v4"))
    assert named.startswith("| dataset | n | box Dice v5 | box Dice v4 | paper KD SAM | box v5 >= v4 |")
    assert f"| all | {d.size} | {s['dice']:.4f} | {s['dice']:.4f} |" in named and "+0.0000 ± 0.0000" in named
    with pytest.raises(ValueError, match="split_file_sha256"):
        targets_table(alone, teacher_result={**rb, "split_file_sha256": "0" * 64})
    with pytest.raises(ValueError, match="other images: 0 only in the student's, 1 only in the teacher's"):
        targets_table({**alone, "per_image": [r for r in alone["per_image"] if r["id"] != sorted(ids["student"])[0]]},
                      teacher_result=rb)
    with pytest.raises(ValueError, match="no model 'teacher'"):
        targets_table(alone)
    from kdsam_train import report
    table_file = tmp_path / "targets.md"
    assert report.main([str(out.with_suffix(".json")), "-o", str(table_file)]) == 0
    assert table_file.read_text() == table
    # a failing report writes nothing: the table made before stays
    assert report.main([str(out.with_suffix(".json")), "--teacher-result", str(tmp_path / "missing.json"),
                        "-o", str(table_file)]) == 2
    assert table_file.read_text() == table


def test_finetune_augmented_copies_and_lineage_from_a_phase2_checkpoint(world, tmp_path):
    """embed_copies: each copy's cached embedding is the frozen encoder's on the augmented image and
    its target the equally augmented mask; a phase-2 run from a phase-2 checkpoint keeps the
    encoder and records the original phase-1 file, naming the file it read as encoder_from."""
    from kdsam_core.checkpoint import file_sha256
    from kdsam_core.model.build import load_model
    from kdsam_train.augment import augment, copy_seed, modality_of
    from kdsam_train.data import SkipLog
    from kdsam_train.finetune import Targets, mask_to_frame
    from kdsam_train.splits import select

    assert cli.main(distill_args(world, tmp_path / "d", 2, perceptual="none")) == 0
    p1 = tmp_path / "d" / "student_phase1.safetensors"
    ft = ["finetune", *common(world), "--teacher", "kdsam_tiny", "--teacher-checkpoint", str(world["teacher"]),
          "--steps", "3", "--batch-size", "4", "--max-correction-clicks", "1", "--threads", "1"]
    assert cli.main([*ft, "--student-checkpoint", str(p1), "--embed-cache-dir", str(tmp_path / "sc"),
                     "--run-dir", str(tmp_path / "f"), "--embed-copies", "2", "--aug-seed", "5",
                     "--p-exact-box", "0.5"]) == 0
    meta = read_metadata(tmp_path / "f" / "student_final.safetensors")
    assert meta["embed_copies"] == 2 and meta["aug_seed"] == 5 and meta["prompts"]["p_exact_box"] == 0.5
    cache_sig = json.loads((tmp_path / "sc" / "signature.json").read_text())
    assert cache_sig["copies"] == 2 and meta["encoder_weights_sha256"] == cache_sig["weights_sha256"]
    cache = EmbeddingCache(tmp_path / "sc", cache_sig, create=False)
    samples = select(discover(world["data"]), read_splits(world["split"])["train"])
    usable = [s for s in samples if s.id not in ("synth/img000", "synth/img900", "synth/img901")]
    assert cache.keys() >= {cache_key(s.id, c) for s in usable for c in (0, 1)}
    model = load_model(p1).eval()
    s = usable[0]
    image, mask = load_pair(s, require_mask=True)
    aug_image, aug_mask = augment(image, mask, modality_of(s.dataset), np.random.default_rng(copy_seed(5, s.id, 1)))
    with torch.no_grad():
        emb = model.encode(preprocess(aug_image, model.preprocess))[0]
    assert torch.allclose(cache.get(cache_key(s.id, 1)).float(), emb, atol=2e-2, rtol=1e-2)
    assert not torch.allclose(cache.get(cache_key(s.id, 0)).float(), emb, atol=2e-2, rtol=1e-2)
    frame = 4 * model.embedding_shape[1]
    targets = Targets(samples, model.img_size, frame, SkipLog(), aug_seed=5)
    i = samples.index(s)
    assert np.array_equal(targets.get(i, 1), mask_to_frame(aug_mask, model.img_size, frame))
    assert np.array_equal(targets.get(i, 0), mask_to_frame(mask, model.img_size, frame))
    # a bad sample (empty mask, size mismatch) is counted once, not once per copy
    bad = [samples.index(x) for x in samples if x.id in ("synth/img000", "synth/img900", "synth/img901")]
    assert bad  # the fixture's split puts some of them in train
    assert all(targets.get(j, c) is None for j in bad for c in (0, 1, 0))
    assert targets.skips.total == len(bad)

    # phase 2 again, from the phase-2 weights: the encoder and its phase-1 lineage carry over
    p2 = tmp_path / "f" / "student_final.safetensors"
    assert cli.main([*ft, "--student-checkpoint", str(p2), "--embed-cache-dir", str(tmp_path / "sc2"),
                     "--run-dir", str(tmp_path / "g")]) == 0
    again = read_metadata(tmp_path / "g" / "student_final.safetensors")
    assert again["phase1_checkpoint"] == str(p1) and again["phase1_sha256"] == file_sha256(p1)
    assert again["phase1_steps"] == 2 and again["encoder_from"] == {"checkpoint": str(p2), "sha256": file_sha256(p2),
                                                                    "phase": 2}
    assert again["encoder_weights_sha256"] == meta["encoder_weights_sha256"]
    a, b = load_file(p1), load_file(tmp_path / "g" / "student_final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("image_encoder."))
    # the coupled baseline augments on the fly; cached copies are refused before training
    assert cli.main([*ft, "--student-checkpoint", str(p1), "--run-dir", str(tmp_path / "c"), "--coupled", "true",
                     "--embed-copies", "2"]) == 2
    assert not (tmp_path / "c" / "train_state.pt").exists()
    # the shipped v7 recipe: coupled from a phase-2 checkpoint, its decoder kept (init_decoder
    # student; lr 0 so the weights read are the weights written), its lineage carried over
    assert cli.main([*ft, "--student-checkpoint", str(p2), "--run-dir", str(tmp_path / "r"), "--coupled", "true",
                     "--augment", "true", "--init-decoder", "student", "--steps", "2", "--lr", "0",
                     "--encoder-lr", "0"]) == 0
    refined = read_metadata(tmp_path / "r" / "student_final.safetensors")
    assert refined["coupled"] is True and refined["init_decoder"] == "student"
    assert refined["encoder_from"] == {"checkpoint": str(p2), "sha256": file_sha256(p2), "phase": 2}
    assert refined["phase1_checkpoint"] == str(p1) and refined["phase1_sha256"] == file_sha256(p1)
    c = load_file(tmp_path / "r" / "student_final.safetensors")
    b = load_file(p2)
    assert all(torch.equal(b[k], c[k]) for k in b if k.startswith(("mask_decoder.", "prompt_encoder.")))
    teacher = load_file(world["teacher"])  # not re-initialised from the teacher's decoder
    assert any(not torch.equal(teacher[k], c[k]) for k in c if k.startswith("mask_decoder."))


def test_exact_box_share_gives_the_tight_box():
    """p_exact_box 1: every box prompt is the mask's tight box; 0: boxes are jittered."""
    from kdsam_train.config import FinetuneConfig
    from kdsam_train.finetune import simulate_and_loss
    from kdsam_train.prompts import box_from_mask

    seen = []

    class Recorder:
        def decode(self, emb, *, points=None, boxes=None, multimask_output=True):
            seen.append(None if boxes is None else boxes[0].numpy().copy())
            m = 3 if multimask_output else 1
            return emb.mean() + torch.zeros(1, m, 32, 32, requires_grad=True), torch.zeros(1, m)

    gt = np.zeros((32, 32), bool)
    gt[8:20, 5:25] = True
    emb = torch.zeros(1, 4, 8, 8)
    for p_exact, tight in ((1.0, True), (0.0, False)):
        seen.clear()
        cfg = FinetuneConfig(p_box=1.0, p_exact_box=p_exact, box_jitter=0.2)
        for k in range(5):
            simulate_and_loss(Recorder(), emb, gt, np.random.default_rng(k), cfg, 1.0)
        exact = [np.array_equal(b, box_from_mask(gt)) for b in seen]
        assert len(seen) == 5
        assert all(exact) if tight else not any(exact)


def real_fmt(res: dict, label: str) -> str:
    return f"{res['summary'][label]['all']['box']['dice']:.4f}"


def test_blank_control_embeds_a_black_image_not_the_cached_one(world):
    """The control's embedding is the model's own on an all-black image, never the cached one."""
    from kdsam_train.evaluate import EvalModel
    m = EvalModel(f"teacher=kdsam_tiny:{world['teacher']}@{world['cache']}", torch.device("cpu"))
    sid = next(k for k in read_splits(world["split"])["train"] if m.cache and cache_key(k) in m.cache)
    img = (np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)
    cached = m.embed(sid, img)
    assert torch.equal(cached[0], m.cache.get(cache_key(sid)).float())
    black = m.embed(None, np.zeros_like(img))
    direct = m.model.encode(preprocess(np.zeros_like(img), m.model.preprocess))
    assert torch.allclose(black, direct) and not torch.allclose(black, cached, atol=1e-3)


def test_ddp_two_processes_gloo(world, tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks train, rank 0 writes one checkpoint."""
    run = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "kdsam_train.cli", *distill_args(world, run, 4)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = read_metadata(run / "student_phase1.safetensors")
    assert meta["steps"] == 4 and meta["batch_size"] == 6  # 3 per rank x 2 ranks
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2  # per-rank RNG states saved
    assert (run / "log.csv").read_text().count("\n") == 5  # rank 0 alone logs


def test_yaml_config_and_overrides(tmp_path):
    from kdsam_train.config import DistillConfig, resolve

    y = tmp_path / "c.yaml"
    y.write_text("steps: 77\nlr: 0.5\nperceptual: none\n")
    args = cli.build_parser().parse_args(["distill", "--config", str(y), "--lr", "0.25"])
    cfg = resolve(DistillConfig, args)
    assert (cfg.steps, cfg.lr, cfg.perceptual, cfg.batch_size) == (77, 0.25, "none", 8)
    y.write_text("stepz: 1\n")
    with pytest.raises(ValueError, match="stepz"):
        resolve(DistillConfig, cli.build_parser().parse_args(["distill", "--config", str(y)]))


def test_vgg_perceptual_without_weights_says_so(tmp_path, monkeypatch):
    from kdsam_train.losses import build_perceptual

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(KDSAMError, match="ImageNet VGG16 weights"):
        build_perceptual("vgg", None, 32)
    with pytest.raises(KDSAMError, match="does not exist"):
        build_perceptual("vgg", None, 32, str(tmp_path / "nope.pth"))


def test_amp_bf16_runs_the_encoder_in_bf16_and_keeps_fp32_weights(world, tmp_path, caplog):
    """--amp bf16: the student's forward under bf16 autocast (its first-step MSE close to, but not
    bit-equal to, the fp32 run's on the same batch), fp32 weights out, recorded in the metadata;
    an unknown mode, and amp on the decoder-only phase 2, are clear errors before any step."""
    from kdsam_train import runtime as R

    with R.autocast(torch.device("cpu"), "bf16"):
        y = torch.nn.functional.conv2d(torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3))
    assert y.dtype == torch.bfloat16
    args = dict(perceptual="none")
    assert cli.main(distill_args(world, tmp_path / "fp32", 3, **args)) == 0
    assert cli.main(distill_args(world, tmp_path / "bf16", 3, amp="bf16", **args)) == 0
    first = [float((tmp_path / r / "log.csv").read_text().splitlines()[1].split(",")[2]) for r in ("fp32", "bf16")]
    assert first[0] != first[1] and abs(first[1] - first[0]) < 0.02 * first[0]
    out = tmp_path / "bf16" / "student_phase1.safetensors"
    assert read_metadata(out)["amp"] == "bf16" and read_metadata(tmp_path / "fp32" / "student_phase1.safetensors")[
        "amp"] == "none"
    assert all(v.dtype == torch.float32 for v in load_file(out).values() if v.is_floating_point())

    caplog.clear()
    assert cli.main(distill_args(world, tmp_path / "bad", 2, amp="fp8")) == 2
    assert "amp must be one of none, bf16, not 'fp8'" in caplog.text
    assert not (tmp_path / "bad" / "train_state.pt").exists()
    ft = ["finetune", *common(world), "--student-checkpoint", str(out), "--teacher", "kdsam_tiny",
          "--teacher-checkpoint", str(world["teacher"]), "--embed-cache-dir", str(tmp_path / "sc"),
          "--steps", "2", "--batch-size", "3", "--max-correction-clicks", "1", "--threads", "1", "--amp", "bf16"]
    assert cli.main(ft + ["--run-dir", str(tmp_path / "dec")]) == 2
    assert "for the coupled run's encoder" in caplog.text
    assert not (tmp_path / "sc").exists()  # refused before the embedding cache was filled
    assert cli.main(ft + ["--run-dir", str(tmp_path / "cpl"), "--coupled", "true"]) == 0
    meta = read_metadata(tmp_path / "cpl" / "student_final.safetensors")
    assert meta["coupled"] and meta["amp"] == "bf16"

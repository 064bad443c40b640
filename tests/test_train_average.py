"""``kdsam-train average``: a weight average (model soup) of checkpoints of one architecture.

The output holds the weighted mean of every floating-point tensor, integer buffers from the
first input, and metadata naming each input by path, SHA-256 and weight; it loads as a model.
Inputs of another architecture or other tensors, bad weights and an existing output are one
clear error, and nothing is written.
"""

import pytest
import torch
from safetensors.torch import load_file

from kdsam_core.checkpoint import file_sha256, read_metadata, save_checkpoint
from kdsam_core.errors import CheckpointError
from kdsam_core.model.build import build_model, checkpoint_metadata, load_model
from kdsam_train.average import average_checkpoints
from kdsam_train.cli import main


def _ckpt(path, seed, **meta):
    torch.manual_seed(seed)
    m = build_model("kdsam_tiny")
    sd = m.state_dict()
    ints = [k for k, v in sd.items() if not v.is_floating_point()]
    for k in ints:  # make the integer buffers differ between inputs
        sd[k] = sd[k] + seed
    save_checkpoint(sd, path, checkpoint_metadata(m, phase=2, steps=10 * seed, **meta))
    return path, sd


def test_average_is_the_weighted_mean_and_loads(tmp_path):
    a, sa = _ckpt(tmp_path / "a.safetensors", 1, teacher={"name": "t"})
    b, sb = _ckpt(tmp_path / "b.safetensors", 2, teacher={"name": "t"})
    out = average_checkpoints([a, b], tmp_path / "soup.safetensors", [3, 1])
    got = load_file(str(out))
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    ints = [k for k, v in sa.items() if not v.is_floating_point()]
    assert floats and ints
    for k in floats:
        torch.testing.assert_close(got[k], 0.75 * sa[k] + 0.25 * sb[k])
    assert not torch.equal(got[floats[0]], sa[floats[0]])  # the inputs differ, so the mean is new
    for k in ints:
        assert torch.equal(got[k], sa[k])
    meta = read_metadata(out)
    assert [e["sha256"] for e in meta["averaged"]] == [file_sha256(a), file_sha256(b)]
    assert [e["weight"] for e in meta["averaged"]] == [0.75, 0.25]
    assert [e["steps"] for e in meta["averaged"]] == [10, 20]
    assert sorted(meta["averaged_not"]["tensors"]) == sorted(ints)
    assert meta["teacher"] == {"name": "t"} and meta["phase"] == 2
    model = load_model(out)
    torch.testing.assert_close(model.state_dict()[floats[0]], got[floats[0]])


def test_uniform_by_default_and_through_the_cli(tmp_path):
    a, sa = _ckpt(tmp_path / "a.safetensors", 1)
    b, sb = _ckpt(tmp_path / "b.safetensors", 2)
    out = tmp_path / "soup.safetensors"
    assert main(["average", "--models", str(a), str(b), "--out", str(out)]) == 0
    got = load_file(str(out))
    k = next(k for k, v in sa.items() if v.is_floating_point())
    torch.testing.assert_close(got[k], (sa[k] + sb[k]) / 2)
    assert [e["weight"] for e in read_metadata(out)["averaged"]] == [0.5, 0.5]


def test_existing_output_is_never_overwritten(tmp_path, caplog):
    a, _ = _ckpt(tmp_path / "a.safetensors", 1)
    b, _ = _ckpt(tmp_path / "b.safetensors", 2)
    out = tmp_path / "soup.safetensors"
    out.write_bytes(b"keep me")
    assert main(["average", "--models", str(a), str(b), "--out", str(out)]) == 2
    assert "already exists" in caplog.text
    assert out.read_bytes() == b"keep me"


def test_another_architecture_is_refused(tmp_path):
    a, sa = _ckpt(tmp_path / "a.safetensors", 1)
    meta = read_metadata(a)
    meta["config"] = dict(meta["config"], img_size=meta["config"]["img_size"] * 2)
    b = save_checkpoint(sa, tmp_path / "b.safetensors", meta)
    with pytest.raises(CheckpointError, match="another architecture.*'config' differs"):
        average_checkpoints([a, b], tmp_path / "soup.safetensors")
    assert not (tmp_path / "soup.safetensors").exists()


def test_other_tensors_are_refused(tmp_path):
    a, sa = _ckpt(tmp_path / "a.safetensors", 1)
    meta = read_metadata(a)
    k = next(iter(sa))
    b = save_checkpoint({kk: v for kk, v in sa.items() if kk != k}, tmp_path / "b.safetensors", meta)
    with pytest.raises(CheckpointError, match="different tensors"):
        average_checkpoints([a, b], tmp_path / "soup.safetensors")
    c = save_checkpoint(dict(sa, **{k: torch.zeros(3, 3)}), tmp_path / "c.safetensors", meta)
    with pytest.raises(CheckpointError, match=f"differ in tensor {k}"):
        average_checkpoints([a, c], tmp_path / "soup.safetensors")


@pytest.mark.parametrize("argv, words", [
    (["--weights", "1"], "1 weights given for 2 checkpoints"),
    (["--weights", "1", "-1"], "must be positive"),
    (["--weights", "1", "x"], "--weights takes numbers"),
])
def test_bad_weights_are_one_clear_error(tmp_path, caplog, argv, words):
    a, _ = _ckpt(tmp_path / "a.safetensors", 1)
    b, _ = _ckpt(tmp_path / "b.safetensors", 2)
    out = tmp_path / "soup.safetensors"
    assert main(["average", "--models", str(a), str(b), "--out", str(out), *argv]) == 2
    assert words in caplog.text
    assert not out.exists()


def test_one_checkpoint_is_not_an_average(tmp_path):
    a, _ = _ckpt(tmp_path / "a.safetensors", 1)
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([a], tmp_path / "soup.safetensors")

import json
import pickle

import pytest
import torch

from kdsam_core.checkpoint import default_checkpoint, load_state_dict, read_metadata, save_checkpoint
from kdsam_core.errors import CheckpointError, NoWeightsError
from kdsam_core.model import build_model, checkpoint_metadata, load_model


def _save(model, path, **extra):
    return save_checkpoint(model.state_dict(), path, checkpoint_metadata(model, **extra))


def test_round_trip_restores_weights_and_metadata(tmp_path, tiny_model):
    path = _save(tiny_model, tmp_path / "m.safetensors", teacher="lite_medsam", metrics={"dice": 0.5})
    meta = read_metadata(path)
    assert meta["model"] == "kdsam_tiny" and meta["teacher"] == "lite_medsam"
    assert meta["preprocess"]["img_size"] == 64 and meta["format_version"] == 1 and "kdsam_version" in meta
    loaded = load_model(path)
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert loaded.metadata["metrics"] == {"dice": 0.5}


def test_existing_checkpoint_is_not_overwritten(tmp_path, tiny_model):
    path = _save(tiny_model, tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="already exists"):
        _save(tiny_model, path)
    assert path.read_bytes() == before


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_model):
    path = _save(tiny_model, tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="holds a 'kdsam_tiny' model"):
        build_model("kdsam", path)
    with pytest.raises(CheckpointError, match="another configuration"):
        build_model("kdsam_tiny", path, img_size=128)
    # raw tensors of the tiny model into LiteMedSAM: the mismatch is named
    with pytest.raises(CheckpointError, match="does not fit the lite_medsam architecture"):
        build_model("lite_medsam", path)


def test_pth_loads_only_through_weights_only(tmp_path, tiny_model):
    good = tmp_path / "sd.pth"
    torch.save({"model": tiny_model.state_dict()}, good)
    assert set(load_state_dict(good)) == set(tiny_model.state_dict())

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "evil.pth"
    with open(bad, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        load_state_dict(bad)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_metadata(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_metadata(junk)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="without KD SAM metadata"):
        load_model(plain)


def test_no_default_weights_is_said_plainly(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSAM_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(NoWeightsError, match="No trained KD SAM weights are installed"):
        default_checkpoint()
    (tmp_path / "kdsam_default.safetensors").write_bytes(b"x")
    assert default_checkpoint() == tmp_path / "kdsam_default.safetensors"


def test_metadata_is_json(tmp_path, tiny_model):
    path = _save(tiny_model, tmp_path / "m.safetensors", training_data={"kvasir": 10})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["kdsam"])["training_data"] == {"kvasir": 10}

"""kdsam_core.atomic: every file the project writes is replaced whole, with normal permissions."""

import os
import stat

import numpy as np
import pytest
import torch

from kdsam_core.atomic import atomic_path, write_text
from kdsam_core.checkpoint import read_metadata, save_checkpoint
from kdsam_core.io import Volume, save_mask


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_get_open_permissions_not_mkstemp_ones(tmp_path, umask_022):
    ckpt = save_checkpoint({"w": torch.zeros(2)}, tmp_path / "m.safetensors", {"arch": "x"})
    mask = save_mask(np.ones((4, 5), bool), tmp_path / "m.nii.gz",
                     reference=Volume(np.zeros((1, 4, 5), np.float32), spacing=(1.0, 1.0, 1.0)))
    text = write_text(tmp_path / "a" / "b.json", "{}")
    for p in (ckpt, mask, text):
        assert _mode(p) == 0o644, p
    assert read_metadata(ckpt)["arch"] == "x"
    assert text.read_text() == "{}"


def test_an_error_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_the_temporary_keeps_the_format_suffix_for_writers_that_pick_by_name(tmp_path):
    with atomic_path(tmp_path / "mask.nii.gz") as tmp:
        assert tmp.endswith(".nii.gz") and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, "w").close()
    with atomic_path(tmp_path / "noext") as tmp:
        assert tmp.endswith(".tmp")
        open(tmp, "w").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "noext"]

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from kdsam_core.checkpoint import save_checkpoint
from kdsam_core.cli import main
from kdsam_core.model import checkpoint_metadata

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples"


@pytest.fixture()
def ckpt(tmp_path, tiny_model):
    return str(save_checkpoint(tiny_model.state_dict(), tmp_path / "tiny.safetensors",
                               checkpoint_metadata(tiny_model, teacher="none (test)")))


def test_without_trained_weights_the_command_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDSAM_WEIGHTS_DIR", str(tmp_path / "none"))
    rc = main(["segment", str(SAMPLES / "CT_small.dcm"), "-p", "60,60", "-o", str(tmp_path / "m.nii.gz")])
    assert rc == 2
    assert "No trained KD SAM weights are installed" in capsys.readouterr().err
    assert not (tmp_path / "m.nii.gz").exists()


def test_segment_dicom_sample_to_nifti_with_geometry(tmp_path, ckpt, capsys):
    out = tmp_path / "m.nii.gz"
    rc = main(["segment", str(SAMPLES / "CT_small.dcm"), "-p", "60,60", "-p", "10,10,0", "-o", str(out),
               "-c", ckpt, "--device", "cpu"])
    assert rc == 0 and "wrote" in capsys.readouterr().out
    img = sitk.ReadImage(str(out))
    assert img.GetSize() == (128, 128, 1)
    assert img.GetSpacing()[:2] == pytest.approx((0.661468, 0.661468), rel=1e-5)
    assert set(np.unique(sitk.GetArrayFromImage(img))) <= {0, 1}


def test_segment_ultrasound_png_and_refuse_overwrite(tmp_path, ckpt, capsys):
    out = tmp_path / "us.png"
    args = ["segment", str(SAMPLES / "US1_UNCR.dcm"), "-b", "200,150,400,300", "-o", str(out), "-c", ckpt]
    assert main(args) == 0
    before = out.read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(args + ["--overwrite"]) == 0


def test_propagate_through_a_volume(tmp_path, ckpt, capsys):
    arr = np.zeros((5, 32, 32), np.int16)
    arr[:, 8:24, 8:24] = 500
    f = tmp_path / "vol.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(f))
    rc = main(["segment", str(f), "-b", "8,8,23,23", "--slice", "2", "--propagate", "-o", str(tmp_path / "o.nrrd"),
               "-c", ckpt])
    assert rc == 0
    assert sitk.ReadImage(str(tmp_path / "o.nrrd")).GetSize() == (32, 32, 5)


@pytest.mark.parametrize("extra, message", [
    (["-p", "500,5"], "outside the 128 x 128 image"),
    (["-p", "5,5", "--slice", "3"], "--slice 3 is outside"),
    ([], "at least one prompt"),
])
def test_user_mistakes_give_one_line(tmp_path, ckpt, capsys, extra, message):
    rc = main(["segment", str(SAMPLES / "CT_small.dcm"), *extra, "-o", str(tmp_path / "m.nii.gz"), "-c", ckpt])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
    assert err.startswith("kdsam: error:")


def test_bad_point_syntax_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        main(["segment", "x.png", "-p", "1;2", "-o", "y.png"])
    assert "a point is x,y" in capsys.readouterr().err


def test_missing_and_foreign_checkpoint(tmp_path, capsys):
    rc = main(["segment", str(SAMPLES / "CT_small.dcm"), "-p", "5,5", "-o", str(tmp_path / "a.png"),
               "-c", str(tmp_path / "missing.safetensors")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    foreign = tmp_path / "foreign.pth"
    import torch

    torch.save({"w": torch.zeros(3)}, foreign)
    rc = main(["segment", str(SAMPLES / "CT_small.dcm"), "-p", "5,5", "-o", str(tmp_path / "a.png"),
               "-m", "lite_medsam", "-c", str(foreign)])
    assert rc == 2 and "does not fit the lite_medsam architecture" in capsys.readouterr().err


def test_several_series_are_listed(tmp_path, capsys):
    import pydicom
    from pydicom.uid import generate_uid

    for n in range(2):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / f"{n}.dcm")
    rc = main(["segment", str(tmp_path), "-p", "5,5", "-o", str(tmp_path / "o.nii.gz")])
    assert rc == 2 and "holds 2 DICOM series; pick one with --series" in capsys.readouterr().err
    assert main(["series", str(tmp_path)]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_info_prints_metadata_and_parameters(ckpt, capsys):
    assert main(["info", ckpt]) == 0
    out = capsys.readouterr().out
    assert '"model": "kdsam_tiny"' in out and "parameters:" in out and "total" in out


def test_models_lists_parameter_counts(capsys):
    assert main(["models", "kdsam_tiny", "lite_medsam"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[0] == "kdsam_tiny" and out[2].split()[-1] == "9.79M"
    assert main(["models", "nope"]) == 2


def test_onnx_backend_from_the_command_line(tmp_path, ckpt, monkeypatch, capsys):
    monkeypatch.setenv("KDSAM_ONNX_DIR", str(tmp_path / "onnx"))
    out = tmp_path / "m.png"
    rc = main(["segment", str(SAMPLES / "CT_small.dcm"), "-p", "60,60", "-o", str(out), "-c", ckpt,
               "--backend", "onnx"])
    assert rc == 0 and out.exists()
    assert any((tmp_path / "onnx").rglob("*.onnx"))

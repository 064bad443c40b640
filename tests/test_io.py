import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from kdsam_core.errors import InputError, SeriesChoiceError
from kdsam_core.io import list_dicom_series, load_volume, save_mask, window_to_uint8


def _series(folder, n=4, uid=None, desc="test"):
    """n copies of pydicom's CT_small.dcm as one series, 5 mm apart, slice k filled with value 100*k."""
    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription = desc
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.1, -179.0, -75.7 + 5.0 * k]
        arr = np.full((128, 128), 100 * k, np.int16)
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"{uid[-6:]}_{k}.dcm")
    return uid


def test_dicom_series_folder_keeps_order_and_geometry(tmp_path):
    _series(tmp_path / "s", n=4)
    v = load_volume(tmp_path / "s")
    assert v.array.shape == (4, 128, 128)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    slope, inter = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    np.testing.assert_allclose(v.array[:, 0, 0], [inter + slope * 100 * k for k in range(4)])
    assert v.spacing[2] == pytest.approx(5.0) and v.spacing[0] == pytest.approx(0.661468, rel=1e-4)
    assert v.origin == pytest.approx((-158.1, -179.0, -75.7), abs=1e-3)
    assert v.modality == "CT" and len(v.dicom_files) == 4


def test_several_series_are_listed_and_one_can_be_picked(tmp_path):
    a = _series(tmp_path / "two", n=2, desc="first")
    b = _series(tmp_path / "two", n=3, desc="second")
    with pytest.raises(SeriesChoiceError, match="holds 2 DICOM series") as err:
        load_volume(tmp_path / "two")
    assert {s[0] for s in err.value.series} == {a, b}
    assert {s[0]: s[2] for s in list_dicom_series(tmp_path / "two")} == {a: 2, b: 3}
    assert load_volume(tmp_path / "two", series_uid=b).array.shape[0] == 3
    with pytest.raises(InputError, match="is not in"):
        load_volume(tmp_path / "two", series_uid="1.2.3")


def test_empty_folder_corrupt_and_unsupported_files(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DICOM series"):
        load_volume(tmp_path / "empty")
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    with pytest.raises(InputError, match="bad.dcm"):
        load_volume(bad)
    png = tmp_path / "broken.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(InputError, match="not a readable image"):
        load_volume(png)
    with pytest.raises(InputError, match="unsupported file type"):
        (tmp_path / "x.xyz").write_text("x")
        load_volume(tmp_path / "x.xyz")
    with pytest.raises(InputError, match="does not exist"):
        load_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "zero.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        load_volume(tmp_path / "zero.nii.gz")


@pytest.mark.parametrize("name, shape, rgb", [
    ("US1_UNCR.dcm", (1, 480, 640, 3), True),            # RGB ultrasound (pydicom-data)
    ("examples_ybr_color.dcm", (30, 240, 320, 3), True),  # YBR_FULL_422 ultrasound cine
    ("examples_palette.dcm", (1, 350, 800, 3), True),     # palette colour ultrasound
    ("emri_small.dcm", (10, 64, 64), False),              # multi-frame MR
    ("MR_small.dcm", (1, 64, 64), False),
])
def test_dicom_files_incl_ultrasound_colour(name, shape, rgb):
    v = load_volume(get_testdata_file(name))
    assert v.array.shape == shape and v.is_rgb == rgb
    if rgb:
        assert v.array.dtype == np.uint8


def test_ybr_is_converted_to_rgb():
    v = load_volume(get_testdata_file("SC_ybr_full_422_uncompressed.dcm"))
    ref = load_volume(get_testdata_file("SC_rgb.dcm") or get_testdata_file("SC_rgb_jpeg_dcmtk.dcm"))
    assert v.is_rgb
    # the test image has pure red/green/blue bars: after conversion a red pixel is red
    px = v.array[0, 5, 50].astype(int)
    assert abs(px.astype(int) - ref.array[0, 5, 50].astype(int)).max() < 16


def test_dicom_window_is_used():
    v = load_volume(get_testdata_file("MR_small.dcm"))
    assert v.window == (600.0, 1600.0)
    rgb = window_to_uint8(v.slice(0), v.window)
    s = v.slice(0).astype(float)
    expected = np.clip((s - (600 - 800)) * 255 / 1600 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb[..., 0], expected)


def test_percentile_window_and_nan():
    a = np.arange(100, dtype=np.float32).reshape(10, 10)
    a[0, 0] = np.nan
    rgb = window_to_uint8(a, None, percentiles=(0, 100))
    assert rgb.shape == (10, 10, 3) and rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    with pytest.raises(InputError, match="window width must be positive"):
        window_to_uint8(a, (10, 0))


def test_nifti_nrrd_mha_round_trip_with_geometry(tmp_path):
    arr = np.random.default_rng(0).integers(0, 1000, (5, 12, 9)).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 0.7, 2.5))
    img.SetOrigin((10.0, -20.0, 30.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    for sfx in (".nii.gz", ".nrrd", ".mha"):
        f = tmp_path / f"vol{sfx}"
        sitk.WriteImage(img, str(f))
        v = load_volume(f)
        np.testing.assert_array_equal(v.array, arr)
        assert v.spacing == pytest.approx((0.5, 0.7, 2.5))
        assert v.origin == pytest.approx((10.0, -20.0, 30.0))
        assert v.direction == pytest.approx((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
        mask = v.empty_mask()
        mask[2, 3:6, 4:7] = 1
        out = save_mask(mask, tmp_path / f"mask{sfx}", v)
        back = sitk.ReadImage(str(out))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), mask)
        assert back.GetSpacing() == pytest.approx(img.GetSpacing())
        assert back.GetOrigin() == pytest.approx(img.GetOrigin())
        assert back.GetDirection() == pytest.approx(img.GetDirection())


def test_4d_volume_is_refused(tmp_path):
    img = sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16), isVector=False)
    f = tmp_path / "4d.nii.gz"
    sitk.WriteImage(img, str(f))
    with pytest.raises(InputError, match="4D"):
        load_volume(f)


def test_png_jpeg_tiff(tmp_path):
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "b.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "c.jpg")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "d.tif")
    assert load_volume(tmp_path / "a.png").array.shape == (1, 20, 30, 3)
    np.testing.assert_array_equal(load_volume(tmp_path / "b.png").array[0], rgb)
    assert load_volume(tmp_path / "c.jpg").array.shape == (1, 20, 30)
    np.testing.assert_array_equal(load_volume(tmp_path / "d.tif").array[0], rgb[..., 0])


def test_slices_along_each_axis():
    from kdsam_core.io import Volume

    v = Volume(array=np.arange(2 * 3 * 4).reshape(2, 3, 4))
    assert v.slice(1, 0).shape == (3, 4) and v.slice(2, 1).shape == (2, 4) and v.slice(3, 2).shape == (2, 3)
    assert v.slice(2, 1)[1, 3] == v.array[1, 2, 3]
    m = v.empty_mask()
    v.set_mask_slice(m, 3, 2, np.array([[1, 0, 0], [0, 0, 1]]), label=2)
    assert m[0, 0, 3] == 2 and m[1, 2, 3] == 2 and m.sum() == 4
    with pytest.raises(InputError, match="outside the volume"):
        v.slice(4, 2)


def test_mask_output_is_never_overwritten_and_png_and_seg(tmp_path):
    v = load_volume(get_testdata_file("CT_small.dcm"))
    mask = v.empty_mask()
    mask[0, 30:50, 40:70] = 1
    png = save_mask(mask, tmp_path / "m.png", v)
    from PIL import Image

    assert np.asarray(Image.open(png)).max() == 255
    before = png.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        save_mask(np.zeros_like(mask), png, v)
    assert png.read_bytes() == before
    seg = save_mask(mask, tmp_path / "m_seg.dcm", v)
    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG" and ds.ReferencedSeriesSequence[0].SeriesInstanceUID == v.series_uid
    with pytest.raises(InputError, match="does not match the image grid"):
        save_mask(np.zeros((2, 3, 4), np.uint8), tmp_path / "x.nii.gz", v)


def test_dicom_seg_that_highdicom_refuses_is_a_named_error(tmp_path):
    v = load_volume(get_testdata_file("emri_small.dcm"))  # multi-frame MR without a Frame of Reference UID
    mask = v.empty_mask()
    mask[:, 10:20, 10:20] = 1
    with pytest.raises(InputError, match="cannot write a DICOM SEG"):
        save_mask(mask, tmp_path / "seg.dcm", v)
    assert not (tmp_path / "seg.dcm").exists()

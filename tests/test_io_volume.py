"""Volume I/O: NIfTI / MetaImage / DICOM geometry, bad inputs, ``medsci info``."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medsci.cli import main
from medsci.errors import InputError
from medsci.io.volume import describe, read_volume, write_nifti


def _oblique_affine() -> np.ndarray:
    # Values exactly representable in float32 (NIfTI stores the sform as float32).
    return np.array([[-0.75, 0.25, 0.0, 90.5],
                     [0.0, -1.0, 0.5, 120.25],
                     [0.125, 0.0, 2.5, -60.0],
                     [0.0, 0.0, 0.0, 1.0]])


def _ramp(shape=(5, 6, 7)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def test_nifti_roundtrip_keeps_affine_data_and_header(tmp_path):
    data = _ramp()
    hdr = nib.Nifti1Header()
    hdr["descrip"] = b"medsci test"
    hdr.set_sform(np.eye(4), code=2)  # codes must survive, the matrices must be replaced
    hdr.set_qform(np.eye(4), code=1)
    out = write_nifti(tmp_path / "sub" / "v.nii.gz", data, _oblique_affine(), header=hdr)
    assert out == tmp_path / "sub" / "v.nii.gz"
    assert [p.name for p in out.parent.iterdir()] == ["v.nii.gz"]  # no temp files left behind

    vol = read_volume(out)
    np.testing.assert_array_equal(vol.affine, _oblique_affine())
    np.testing.assert_array_equal(vol.array, data)
    assert vol.array.dtype == np.float32
    raw = nib.load(out)
    assert raw.header["descrip"].item() == b"medsci test"
    assert int(raw.header["sform_code"]) == 2 and int(raw.header["qform_code"]) == 1
    assert vol.orientation == "".join(nib.aff2axcodes(_oblique_affine()))
    np.testing.assert_allclose(vol.spacing, np.linalg.norm(_oblique_affine()[:3, :3], axis=0))


def test_write_nifti_dtype_and_default_codes(tmp_path):
    seg = np.zeros((4, 4, 4), dtype=np.int64)
    seg[1, 2, 3] = 3
    p = write_nifti(tmp_path / "seg.nii.gz", seg, np.diag([2.0, 2.0, 2.0, 1.0]), dtype=np.uint8)
    img = nib.load(p)
    assert img.get_data_dtype() == np.uint8
    assert int(img.header["sform_code"]) > 0  # an affine readers will actually use
    assert np.asanyarray(img.dataobj)[1, 2, 3] == 3


def test_mha_with_direction_matches_nifti_world_positions(tmp_path):
    data = _ramp((5, 6, 7))
    # sitk arrays are (k, j, i): transpose so file index (i, j, k) holds data[i, j, k].
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]])  # rotation + flip of k
    img.SetDirection(direction.ravel().tolist())
    img.SetSpacing((0.9, 1.1, 2.0))
    img.SetOrigin((-10.0, 20.0, 5.0))
    sitk.WriteImage(img, str(tmp_path / "v.mha"))

    vol = read_volume(tmp_path / "v.mha")
    assert vol.array.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.array, data)
    idx = (3, 1, 4)
    lps = np.array(img.TransformIndexToPhysicalPoint(idx))  # ITK's own answer, LPS
    ras_expected = lps * np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose((vol.affine @ np.r_[idx, 1.0])[:3], ras_expected, atol=1e-9)

    # Same data saved as NIfTI: same voxel, same world position, same value.
    nii = write_nifti(tmp_path / "v.nii.gz", vol.array, vol.affine)
    nimg = nib.load(nii)
    np.testing.assert_allclose((nimg.affine @ np.r_[idx, 1.0])[:3], ras_expected, atol=1e-4)
    assert np.asanyarray(nimg.dataobj)[idx] == data[idx]
    assert read_volume(nii).orientation == vol.orientation


def test_dicom_series_reads_shape_spacing_values(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.integers(-200, 1200, size=(4, 12, 10), dtype=np.int16)  # sitk order (k, j, i)
    image = sitk.GetImageFromArray(vol)
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((1.0, 2.0, 3.0))
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(vol.shape[0]):
        sl = image[:, :, k]
        sl.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1.1")  # one series
        sl.SetMetaData("0020|000d", "1.2.826.0.1.3680043.2.1125.1.2")
        sl.SetMetaData("0008|0060", "MR")
        sl.SetMetaData("0020|0037", "1\\0\\0\\0\\1\\0")
        sl.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k)))))
        sl.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(sl)

    got = read_volume(folder)
    assert got.meta["format"] == "dicom"
    assert got.array.shape == (10, 12, 4)
    np.testing.assert_allclose(got.spacing, (0.8, 0.7, 2.5), atol=1e-6)
    np.testing.assert_array_equal(got.array, vol.transpose(2, 1, 0))
    # LPS origin (1, 2, 3) -> RAS (-1, -2, 3)
    np.testing.assert_allclose(got.affine[:3, 3], [-1.0, -2.0, 3.0], atol=1e-6)


def test_singleton_fourth_axis_is_squeezed(tmp_path):
    p = tmp_path / "v4.nii.gz"
    nib.save(nib.Nifti1Image(_ramp((3, 4, 5))[..., None], np.eye(4)), p)
    assert read_volume(p).array.shape == (3, 4, 5)


def _bad_inputs(tmp_path):
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((20, 20, 20)).astype(np.float32), np.eye(4)), good)
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(raw[: len(raw) // 2])
    flat = tmp_path / "flat2d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), flat)
    four_d = tmp_path / "timeseries.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 3), np.float32), np.eye(4)), four_d)
    nan = tmp_path / "nan.nii.gz"
    arr = np.ones((4, 4, 4), np.float32)
    arr[1, 1, 1] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), nan)
    inf = tmp_path / "inf.mha"
    arr[1, 1, 1] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(inf))
    empty_dir = tmp_path / "empty_dicom"
    empty_dir.mkdir()
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    return [tmp_path / "missing.nii.gz", truncated, flat, four_d, nan, inf, empty_dir, garbage, txt]


def test_bad_inputs_raise_input_error_naming_the_file(tmp_path):
    for path in _bad_inputs(tmp_path):
        with pytest.raises(InputError) as info:
            read_volume(path)
        msg = str(info.value)
        assert path.name in msg, msg
        assert "\n" not in msg


def test_describe_reports_geometry_and_stats(tmp_path):
    data = _ramp((2, 3, 4))
    vol = read_volume(write_nifti(tmp_path / "d.nii.gz", data, np.diag([-2.0, -2.0, 3.0, 1.0])))
    d = describe(vol)
    assert d["shape"] == [2, 3, 4]
    assert d["spacing"] == [2.0, 2.0, 3.0]
    assert d["orientation"] == "LPS"
    assert d["min"] == 0.0 and d["max"] == 23.0 and d["mean"] == pytest.approx(11.5)
    assert d["dtype"] == "float32" and d["format"] == "nifti"


def test_info_cli_prints_json(tmp_path, capsys):
    p = write_nifti(tmp_path / "x.nii.gz", _ramp((2, 2, 2)), np.eye(4))
    assert main(["info", str(p)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["shape"] == [2, 2, 2] and out["max"] == 7.0 and out["orientation"] == "RAS"


def test_info_cli_bad_file_one_line_error(tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.nii.gz" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

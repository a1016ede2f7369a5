"""Radiograph I/O: PNG / DICOM / NIfTI round trips, derived-DICOM tags, and refusals of bad inputs."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation,
                         ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage,
                         generate_uid)

from medsci.errors import InputError, MedsciError
from medsci.io import radiograph as rio
from medsci.io.radiograph import RADIOGRAPH_SUFFIXES, Radiograph, read_radiograph, write_radiograph

NOTE = "SYNTHETIC: rotated 12.5 deg about the beam axis by medsci; not an acquired image"
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242"
SOP_UID = "1.2.826.0.1.3680043.8.498.4243"
SERIES_UID = "1.2.826.0.1.3680043.8.498.4244"


def _ramp12(h: int = 32, w: int = 40) -> np.ndarray:
    """uint16 stored values spanning exactly 0..4095 (12 bits), row 0 / col 0 = 0, last pixel = 4095."""
    v = np.linspace(0, 4095, h * w).round().astype(np.uint16).reshape(h, w)
    v[5, 7] = 1000  # a known value
    return v


def _make_dicom(path, stored: np.ndarray, *, photometric="MONOCHROME2", slope=None, intercept=None,
                frames: int = 1, pixels: bool = True, implicit: bool = False, modality="CR",
                bits_stored: int = 12, signed: bool = False, extra: dict | None = None):
    ds = Dataset()
    sop_class = (ComputedRadiographyImageStorage if modality == "CR"
                 else DigitalXRayImageStorageForPresentation)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, SOP_UID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, SERIES_UID
    ds.PatientID, ds.PatientName, ds.Modality = "P-0042", "Doe^Jane", modality
    ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = "CHEST PA", 3, 1
    ds.ImagerPixelSpacing = ["0.15", "0.125"]
    if pixels:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = photometric
        ds.Rows, ds.Columns = stored.shape[-2:]
        ds.BitsAllocated = 16
        ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        if frames > 1:
            ds.NumberOfFrames = frames
        ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = str(slope), str(intercept), "US"
    for kw, val in (extra or {}).items():
        setattr(ds, kw, val)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = sop_class, SOP_UID
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _refused(path, *fragments):
    with pytest.raises(InputError) as info:
        read_radiograph(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def _only_file(folder, name):
    """The output is there and no temporary file was left beside it."""
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
    assert (folder / name).is_file()


# --- PNG -------------------------------------------------------------------------------------------

def test_png_8bit_round_trip(tmp_path):
    grey = (np.arange(24 * 20).reshape(24, 20) % 256).astype(np.uint8)
    grey[3, 4] = 51
    src = tmp_path / "in.png"
    Image.fromarray(grey, mode="L").save(src)
    r = read_radiograph(src)
    assert (r.format, r.bit_depth, r.rgb, r.spacing, r.source) == ("png", 8, False, None, src)
    assert r.pixels.dtype == np.float32 and r.pixels.shape == (24, 20)
    assert r.pixels[3, 4] == pytest.approx(0.2) and r.pixels[0, 0] == 0.0
    np.testing.assert_allclose(r.pixels, grey / 255.0, atol=1e-7)

    out_dir = tmp_path / "out"
    new = r.pixels[::-1].copy()
    new[0, 0] = 1.7  # clipped to 1
    assert write_radiograph(out_dir / "rot.png", r, new, NOTE) == out_dir / "rot.png"
    _only_file(out_dir, "rot.png")
    with Image.open(out_dir / "rot.png") as im:
        assert im.mode == "L"
        assert im.info["Description"] == NOTE and im.info["Software"] == "medsci"
        back = np.asarray(im)
    expect = grey[::-1].copy()
    expect[0, 0] = 255
    np.testing.assert_array_equal(back, expect)
    r2 = read_radiograph(out_dir / "rot.png")
    assert r2.bit_depth == 8 and r2.pixels[20, 4] == pytest.approx(0.2)


def test_png_16bit_round_trip(tmp_path):
    grey = (np.arange(30 * 17, dtype=np.uint32).reshape(30, 17) * 97 % 65536).astype(np.uint16)
    grey[2, 3], grey[4, 5] = 13107, 65535
    src = tmp_path / "in16.png"
    Image.fromarray(grey).save(src)
    r = read_radiograph(src)
    assert (r.format, r.bit_depth, r.rgb) == ("png", 16, False)
    assert r.pixels[2, 3] == pytest.approx(0.2) and r.pixels[4, 5] == 1.0
    write_radiograph(tmp_path / "o.png", r, np.rot90(r.pixels), NOTE)
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "I;16" and im.info["Description"] == NOTE
        back = np.asarray(im)
    np.testing.assert_array_equal(back, np.rot90(grey))  # exact at 16 bits, new shape (17, 30)


def test_png_rgb_is_converted_with_luma_and_written_as_rgb(tmp_path):
    rgb = np.zeros((20, 18, 3), dtype=np.uint8)
    rgb[..., :] = 100  # equal channels
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 255, 0)
    rgb[2, 2] = (0, 0, 255)
    rgb[10:] = (np.arange(18, dtype=np.uint8) * 10)[None, :, None]  # grey levels enough for a radiograph
    src = tmp_path / "rgb.png"
    Image.fromarray(rgb, mode="RGB").save(src)
    r = read_radiograph(src)
    assert r.rgb is True and r.bit_depth == 8 and r.pixels.shape == (20, 18)
    assert r.pixels[0, 0] == pytest.approx(0.299, abs=1e-6)
    assert r.pixels[1, 1] == pytest.approx(0.587, abs=1e-6)
    assert r.pixels[2, 2] == pytest.approx(0.114, abs=1e-6)
    assert r.pixels[5, 5] == pytest.approx(100 / 255, abs=1e-7)
    write_radiograph(tmp_path / "o.png", r, r.pixels, NOTE)
    with Image.open(tmp_path / "o.png") as im:
        assert im.mode == "RGB" and im.info["Description"] == NOTE
        back = np.asarray(im)
    assert (back[..., 0] == back[..., 1]).all() and (back[..., 0] == back[..., 2]).all()
    assert back[0, 0, 0] == round(0.299 * 255) and back[5, 5, 0] == 100


def test_png_rgb_16bit_keeps_16_bits(tmp_path):
    rgb = np.zeros((16, 20, 3), dtype=np.uint16)
    rgb[..., :] = 20000
    rgb[0, 0] = (65535, 65535, 65535)
    rgb[3, 3] = (0, 0, 0)
    rgb[8:] = (np.arange(20, dtype=np.uint16) * 3000)[None, :, None]  # grey levels enough for a radiograph
    src = tmp_path / "rgb16.png"
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(src))
    r = read_radiograph(src)
    assert r.rgb is True and r.bit_depth == 16
    assert r.pixels[5, 5] == pytest.approx(20000 / 65535, abs=1e-7)
    write_radiograph(tmp_path / "o.png", r, r.pixels.T, "note \u00e9\u4e2d")  # non-Latin-1: iTXt
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "o.png")))
    assert back.dtype == np.uint16 and back.shape == (20, 16, 3)
    np.testing.assert_array_equal(back[..., 0], rgb[..., 0].T)
    np.testing.assert_array_equal(back[..., 2], rgb[..., 0].T)
    with Image.open(tmp_path / "o.png") as im:
        assert im.info["Description"] == "note \u00e9\u4e2d"


# --- DICOM -----------------------------------------------------------------------------------------

def _check_derived(out, note=NOTE, modality="CR", photometric="MONOCHROME2"):
    ds = pydicom.dcmread(out)
    assert ds.SOPInstanceUID != SOP_UID and ds.SeriesInstanceUID != SERIES_UID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert ds.SeriesDescription == "SYNTHETIC CHEST PA"
    assert ds.DerivationDescription == note and ds.ImageComments == note
    assert ds.BurnedInAnnotation == "NO"
    assert (ds.PatientID, ds.StudyInstanceUID, ds.Modality) == ("P-0042", STUDY_UID, modality)
    assert ds.PhotometricInterpretation == photometric and ds.PixelRepresentation == 0
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == SOP_UID
    return ds


def test_dicom_cr_monochrome2_with_rescale_round_trip(tmp_path):
    stored = _ramp12()
    src = _make_dicom(tmp_path / "cr.dcm", stored, slope=2, intercept=-1024)
    r = read_radiograph(src)
    assert (r.format, r.bit_depth, r.rgb) == ("dicom", 12, False)
    assert r.spacing == (0.15, 0.125)
    assert r.pixels.shape == (32, 40) and r.pixels.dtype == np.float32
    assert r.pixels[0, 0] == 0.0 and r.pixels[-1, -1] == 1.0
    assert r.pixels[5, 7] == pytest.approx(1000 / 4095, abs=1e-7)
    assert (r.meta["value_min"], r.meta["value_max"]) == (-1024.0, 2 * 4095 - 1024.0)
    assert "PixelData" not in r.meta["dataset"]  # decoded pixels are not kept twice

    new = r.pixels[:, ::-1].copy()
    new[10, 10] = 0.5
    out = write_radiograph(tmp_path / "o" / "rot.dcm", r, new, NOTE)
    _only_file(tmp_path / "o", "rot.dcm")
    ds = _check_derived(out)
    # The input's stored range and rescale are kept: a mirrored image stores the mirrored values.
    assert float(ds.RescaleSlope) == 2.0 and float(ds.RescaleIntercept) == -1024.0
    expect = stored[:, ::-1].copy()
    expect[10, 10] = round(0.5 * 4095)
    np.testing.assert_array_equal(ds.pixel_array, expect)
    back = read_radiograph(out)
    assert np.abs(back.pixels - new).max() <= 1 / 4095
    assert back.spacing == (0.15, 0.125)
    # Deterministic UIDs from the input's SOP instance, the note and the pixels; another note, others.
    out2 = write_radiograph(tmp_path / "again.dcm", r, new, NOTE)
    out3 = write_radiograph(tmp_path / "other.dcm", r, new, NOTE + " (seed 2)")
    ds2, ds3 = pydicom.dcmread(out2), pydicom.dcmread(out3)
    assert ds2.SOPInstanceUID == ds.SOPInstanceUID and ds2.SeriesInstanceUID == ds.SeriesInstanceUID
    assert ds3.SOPInstanceUID != ds.SOPInstanceUID


def test_dicom_monochrome1_is_inverted_on_reading_and_written_back_as_monochrome1(tmp_path):
    stored = _ramp12()
    src = _make_dicom(tmp_path / "mono1.dcm", stored, photometric="MONOCHROME1", slope=0.5, intercept=10,
                      implicit=True, extra={"WindowCenter": "500", "WindowWidth": "800"}, modality="DX")
    r = read_radiograph(src)
    assert r.meta["monochrome1"] and r.spacing == (0.15, 0.125)
    assert r.pixels[0, 0] == 1.0 and r.pixels[-1, -1] == 0.0  # stored 0 is white under MONOCHROME1
    assert r.pixels[5, 7] == pytest.approx(1 - 1000 / 4095, abs=1e-7)
    out = write_radiograph(tmp_path / "rot.dcm", r, r.pixels, NOTE)
    ds = _check_derived(out, modality="DX", photometric="MONOCHROME1")
    # The input's polarity, stored values, rescale, window and bit depth come back unchanged (issue 26).
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PresentationLUTShape == "INVERSE"
    np.testing.assert_array_equal(ds.pixel_array, stored)
    assert ds.BitsStored == 12 and ds.BitsAllocated == 16
    assert float(ds.RescaleSlope) == 0.5 and float(ds.RescaleIntercept) == 10.0
    assert float(ds.WindowCenter) == 500.0
    back = read_radiograph(out)
    assert back.meta["monochrome1"]
    assert np.abs(back.pixels - r.pixels).max() <= 1 / 4095
    # A brighter (MONOCHROME2 convention) output pixel is a lower stored value under MONOCHROME1.
    brighter = r.pixels.copy()
    brighter[5, 7] += 0.1
    ds2 = pydicom.dcmread(write_radiograph(tmp_path / "b.dcm", r, brighter, NOTE))
    assert int(ds2.pixel_array[5, 7]) == 1000 - round(0.1 * 4095)


def test_dicom_signed_stored_values_are_written_unsigned_with_same_values(tmp_path):
    stored = _ramp12().astype(np.int32) - 2048  # -2048..2047
    src = _make_dicom(tmp_path / "s.dcm", stored, signed=True, slope=1, intercept=0, modality="DX")
    r = read_radiograph(src)
    assert r.pixels[5, 7] == pytest.approx(1000 / 4095, abs=1e-7)
    out = write_radiograph(tmp_path / "o.dcm", r, r.pixels, NOTE)
    ds = _check_derived(out, modality="DX")
    assert ds.pixel_array.min() == 0 and ds.pixel_array.max() == 4095
    assert float(ds.RescaleIntercept) == -2048.0  # modality values unchanged
    np.testing.assert_array_equal(ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept), stored)
    assert ds.PresentationLUTShape == "IDENTITY"


def test_dicom_modality_lut_sequence_becomes_linear_rescale(tmp_path):
    stored = _ramp12()
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    lut.ModalityLUTType = "US"
    table = np.sqrt(np.arange(4096) / 4095.0) * 60000
    lut.add_new(0x00283006, "OW", table.round().astype("<u2").tobytes())  # LUTData
    src = _make_dicom(tmp_path / "lut.dcm", stored, extra={"ModalityLUTSequence": [lut]})
    r = read_radiograph(src)
    assert not r.meta["linear"]
    assert r.pixels[5, 7] == pytest.approx(round(table[1000]) / 60000, abs=1e-6)
    out = write_radiograph(tmp_path / "o.dcm", r, r.pixels, NOTE)
    ds = pydicom.dcmread(out)
    assert "ModalityLUTSequence" not in ds and "RescaleSlope" in ds
    assert np.abs(read_radiograph(out).pixels - r.pixels).max() <= 1 / 4095


def test_dicom_without_suffix_is_recognised_by_magic(tmp_path):
    src = _make_dicom(tmp_path / "IM0001", _ramp12())
    r = read_radiograph(src)
    assert r.format == "dicom" and r.pixels[5, 7] == pytest.approx(1000 / 4095, abs=1e-7)
    write_radiograph(tmp_path / "IM0002", r, r.pixels, NOTE)
    assert read_radiograph(tmp_path / "IM0002").format == "dicom"
    with pytest.raises(InputError, match="does not match"):
        write_radiograph(tmp_path / "o.png", r, r.pixels, NOTE)


def test_dicom_rgb_secondary_capture(tmp_path):
    rgb = np.zeros((20, 24, 3), dtype=np.uint8)
    rgb[..., :] = np.arange(24, dtype=np.uint8)[None, :, None] * 10
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = STUDY_UID, generate_uid()
    ds.Modality, ds.PatientID = "OT", "P"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.Rows, ds.Columns = 20, 24
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(tmp_path / "sc.dcm", ds, enforce_file_format=True)
    r = read_radiograph(tmp_path / "sc.dcm")
    assert r.rgb and r.bit_depth == 8 and r.pixels[0, 23] == 1.0 and r.pixels[0, 0] == 0.0
    out = pydicom.dcmread(write_radiograph(tmp_path / "o.dcm", r, r.pixels, NOTE))
    assert out.SamplesPerPixel == 1 and out.PhotometricInterpretation == "MONOCHROME2"
    assert "PlanarConfiguration" not in out and out.pixel_array[0, 23] == 255
    assert np.abs(read_radiograph(tmp_path / "o.dcm").pixels - r.pixels).max() <= 0.5 / 255 + 1e-7


def test_dicom_non_ascii_note_switches_to_utf8(tmp_path):
    r = read_radiograph(_make_dicom(tmp_path / "cr.dcm", _ramp12(), slope=1, intercept=0))
    note = "synthétique — rotation 5°"
    ds = pydicom.dcmread(write_radiograph(tmp_path / "o.dcm", r, r.pixels, note))
    assert ds.SpecificCharacterSet == "ISO_IR 192" and ds.ImageComments == note
    assert str(ds.PatientName) == "Doe^Jane"
    long_note = "x" * 2000
    ds = pydicom.dcmread(write_radiograph(tmp_path / "o2.dcm", r, r.pixels, long_note))
    assert ds.DerivationDescription == "x" * 1024 and ds.ImageComments == long_note


# --- NIfTI -----------------------------------------------------------------------------------------

def _affine():
    aff = np.diag([0.5, 0.75, 2.0, 1.0])
    aff[:3, 3] = [-10.0, 20.0, 5.0]
    return aff


def test_nifti_2d_round_trip(tmp_path):
    data = np.arange(20 * 24, dtype=np.float32).reshape(20, 24) * 0.5 - 100  # (i, j) = (col, row)
    data[3, 7] = 20.0
    nib.save(nib.Nifti1Image(data, _affine()), tmp_path / "in.nii.gz")
    r = read_radiograph(tmp_path / "in.nii.gz")
    assert (r.format, r.bit_depth, r.rgb) == ("nifti", 32, False)
    assert r.pixels.shape == (24, 20)  # rows = j, columns = i
    assert r.spacing == (0.75, 0.5)
    lo, hi = -100.0, 20 * 24 * 0.5 - 100 - 0.5
    assert (r.meta["value_min"], r.meta["value_max"]) == (lo, hi)
    assert r.pixels[7, 3] == pytest.approx((20 - lo) / (hi - lo), abs=1e-6)
    new = r.pixels[::-1].copy()
    write_radiograph(tmp_path / "o.nii.gz", r, new, NOTE)
    _only_file(tmp_path, "o.nii.gz")
    img = nib.load(tmp_path / "o.nii.gz")
    assert img.shape == (20, 24) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, _affine())
    assert img.header["descrip"].item().decode() == NOTE[:79]
    np.testing.assert_allclose(img.get_fdata(), lo + new.T * (hi - lo), atol=1e-4)
    assert np.abs(read_radiograph(tmp_path / "o.nii.gz").pixels - new).max() < 1e-5


def test_nifti_3d_with_singleton_axis(tmp_path):
    data = np.zeros((20, 1, 18), dtype=np.int16)
    data[:, 0, :] = np.arange(20 * 18).reshape(20, 18)
    nib.save(nib.Nifti1Image(data, _affine()), tmp_path / "in.nii")
    r = read_radiograph(tmp_path / "in.nii")
    assert r.pixels.shape == (18, 20) and r.bit_depth == 16 and r.spacing == (2.0, 0.5)
    assert r.pixels[0, 1] == pytest.approx(18 / (20 * 18 - 1), abs=1e-7)  # data[1, 0, 0] = 18
    short = "rotated"
    write_radiograph(tmp_path / "o.nii", r, r.pixels, short)
    img = nib.load(tmp_path / "o.nii")
    assert img.shape == (20, 1, 18) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, _affine())
    assert short in img.header["descrip"].item().decode()
    np.testing.assert_allclose(img.get_fdata(), data, atol=1e-3)


# --- refusals --------------------------------------------------------------------------------------

def test_refuses_alpha_pngs(tmp_path):
    rgba = np.full((20, 20, 4), 200, dtype=np.uint8)
    rgba[0, 0, 0] = 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    _refused(tmp_path / "rgba.png", "has an alpha channel")
    la = np.full((20, 20, 2), 200, dtype=np.uint8)
    la[0, 0, 0] = 0
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    _refused(tmp_path / "la.png", "has an alpha channel")


def test_refuses_dicom_without_pixel_data_and_multi_frame(tmp_path):
    _make_dicom(tmp_path / "nopix.dcm", _ramp12(), pixels=False)
    _refused(tmp_path / "nopix.dcm", "DICOM has no pixel data")
    frames = np.stack([_ramp12(), _ramp12()[::-1]])
    _make_dicom(tmp_path / "mf.dcm", frames, frames=2)
    _refused(tmp_path / "mf.dcm", "is not a single 2D image")


def test_refuses_3d_and_nan_nifti(tmp_path):
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((20, 20, 5)).astype(np.float32), np.eye(4)),
             tmp_path / "vol.nii.gz")
    _refused(tmp_path / "vol.nii.gz", "is not a single 2D image")
    nan = np.random.default_rng(1).random((20, 20)).astype(np.float32)
    nan[4, 4] = np.nan
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii")
    _refused(tmp_path / "nan.nii", "NaN/Inf")


def test_refuses_constant_images(tmp_path):
    Image.fromarray(np.full((20, 20), 7, dtype=np.uint8)).save(tmp_path / "flat.png")
    _refused(tmp_path / "flat.png", "is constant: nothing to rotate")
    _make_dicom(tmp_path / "flat.dcm", np.full((20, 20), 300, dtype=np.uint16))
    _refused(tmp_path / "flat.dcm", "is constant: nothing to rotate")
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), tmp_path / "flat.nii")
    _refused(tmp_path / "flat.nii", "is constant: nothing to rotate")


def test_refuses_truncated_and_garbage_files(tmp_path):
    grey = np.random.default_rng(2).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "ok.png")
    raw = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    _refused(tmp_path / "cut.png", "truncated")
    (tmp_path / "junk.png").write_bytes(b"not a png at all" * 10)
    _refused(tmp_path / "junk.png", "not a PNG file")
    (tmp_path / "junk.dcm").write_bytes(np.random.default_rng(3).bytes(4096))
    _refused(tmp_path / "junk.dcm", "DICOM")
    # DICM marker present, bytes after it garbage
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + np.random.default_rng(4).bytes(600))
    _refused(tmp_path / "bad.dcm")
    src = _make_dicom(tmp_path / "cr.dcm", _ramp12())
    data = src.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 500])
    _refused(tmp_path / "cut.dcm", "DICOM")
    nib.save(nib.Nifti1Image(np.random.default_rng(5).random((40, 40)).astype(np.float32), np.eye(4)),
             tmp_path / "n.nii.gz")
    blob = (tmp_path / "n.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(blob[: len(blob) // 2])
    _refused(tmp_path / "cut.nii.gz", "cannot read NIfTI")


def test_refuses_missing_unknown_and_badly_sized(tmp_path):
    _refused(tmp_path / "nope.png", "file not found")
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 200)
    _refused(tmp_path / "x.jpg", "unsupported radiograph format '.jpg'")
    _refused(tmp_path, "is a folder")
    (tmp_path / "empty.png").write_bytes(b"")
    _refused(tmp_path / "empty.png", "empty")
    small = np.arange(10 * 40, dtype=np.uint8).reshape(10, 40)
    Image.fromarray(small).save(tmp_path / "small.png")
    _refused(tmp_path / "small.png", "too small")
    big = np.zeros((16, 8193), dtype=np.uint8)
    big[0, 0] = 1
    Image.fromarray(big).save(tmp_path / "big.png")
    _refused(tmp_path / "big.png", "too large")


def test_refuses_output_equal_to_input_and_leaves_input_alone(tmp_path):
    grey = (np.arange(400).reshape(20, 20) % 256).astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(grey).save(src)
    before = src.read_bytes()
    r = read_radiograph(src)
    for target in (src, tmp_path / "." / "in.png"):
        with pytest.raises(InputError, match="output path is the input file") as info:
            write_radiograph(target, r, r.pixels[::-1], NOTE)
        assert "in.png" in str(info.value)
    assert src.read_bytes() == before
    with pytest.raises(InputError, match="does not match"):
        write_radiograph(tmp_path / "o.nii", r, r.pixels, NOTE)
    with pytest.raises(MedsciError, match="400 NaN/Inf value"):  # one line for the user, not a traceback
        write_radiograph(tmp_path / "o.png", r, np.full((20, 20), np.nan), NOTE)
    assert not (tmp_path / "o.png").exists()


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch):
    r = read_radiograph(_make_dicom(tmp_path / "cr.dcm", _ramp12()))

    def broken(filename, dataset, *a, **k):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom, "dcmwrite", broken)
    out_dir = tmp_path / "out"
    with pytest.raises(MedsciError, match="rot.dcm: cannot write the output"):  # one line naming the output
        write_radiograph(out_dir / "rot.dcm", r, r.pixels, NOTE)
    assert list(out_dir.iterdir()) == []


def test_api_surface():
    assert set(RADIOGRAPH_SUFFIXES) == {".png", ".dcm", ".dicom", ".nii", ".nii.gz"}
    assert {"pixels", "format", "bit_depth", "rgb", "spacing", "source", "meta"} <= set(
        Radiograph.__dataclass_fields__)
    assert rio.MIN_SIDE == 16 and rio.MAX_SIDE == 8192

"""DICOM series: discovery, modality mapping, reading, and the derived synthetic series round trip."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medsci.errors import InputError
from medsci.io.dicom import DicomSeries, find_series, is_dicom_folder, read_series, write_derived_series
from medsci.io.volume import read_volume
from medsci.mri.contrasts import DEFAULT_MAPPING, classify_series, load_mapping

SHAPE = (12, 10, 6)
STUDY_UID = "1.2.826.0.1.3680043.8.498.111"
FOR_UID = "1.2.826.0.1.3680043.8.498.222"


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    ca, sa, cb, sb, cc, sc = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(c), np.sin(c)
    rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    rz = np.array([[cc, -sc, 0], [sc, cc, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _affine(kind: str = "oblique") -> np.ndarray:
    """Voxel -> RAS affine with non-isotropic spacing; 'flip_k' is left-handed, 'flip_i' too."""
    aff = np.eye(4)
    aff[:3, :3] = _rotation(0.3, -0.2, 0.5) @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = [-40.25, 12.5, 30.75]
    if kind == "flip_k":
        aff[:3, 2] *= -1
    elif kind == "flip_i":
        aff[:3, 0] *= -1
    elif kind == "axial":
        aff[:3, :3] = np.diag([-0.9, -1.1, 2.5])  # LPS-aligned: normal +z
    return aff


def _volume(shape=SHAPE) -> np.ndarray:
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (100.0 * i + 10.0 * j + k + 0.5 * np.sin(i * j)).astype(np.float32)  # distinct along every axis


def _write_source(folder, desc, *, affine=None, shape=SHAPE, positions=None, name="slice{k}", agent=None,
                  iops=None, series_uid=None, volume=None):
    """A plain acquired MR series written with pydicom directly (the clinician's input); ``volume``: its
    voxel values (non-negative, stored as integers) instead of a test pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    aff = _affine("axial") if affine is None else affine
    lps = np.diag([-1.0, -1.0, 1.0])
    m, origin = lps @ aff[:3, :3], lps @ aff[:3, 3]
    sp = np.linalg.norm(m, axis=0)
    series_uid = series_uid or generate_uid(entropy_srcs=[desc, str(folder)])
    if volume is not None:
        shape = volume.shape
    pixels = (np.arange(np.prod(shape)) % 4000).reshape(shape).astype("<u2") if volume is None else \
        np.clip(np.rint(volume), 0, 65535).astype("<u2")
    for k in range(shape[2]):
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid(entropy_srcs=[series_uid, str(k)])
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "P001", "19700101", "F"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = STUDY_UID, "20240102", "101500", "7"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyDescription = "A42", "", "BRAIN"
        ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 3, desc
        ds.Modality, ds.FrameOfReferenceUID, ds.ImageType = "MR", FOR_UID, ["ORIGINAL", "PRIMARY", "M"]
        if agent:
            ds.ContrastBolusAgent = agent
        ds.InstanceNumber = shape[2] - k  # deliberately not the spatial order
        iop = np.concatenate([m[:, 0] / sp[0], m[:, 1] / sp[1]]) if iops is None else iops[k]
        pos = origin + k * m[:, 2] if positions is None else positions[k]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in iop]
        ds.ImagePositionPatient = [round(float(v), 6) for v in pos]
        ds.PixelSpacing, ds.SliceThickness = [round(sp[1], 6), round(sp[0], 6)], round(sp[2], 6)
        ds.Rows, ds.Columns, ds.SamplesPerPixel = shape[1], shape[0], 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels[:, :, k].T.tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        pydicom.dcmwrite(folder / name.format(k=k), ds, enforce_file_format=True)
    return series_uid


def _assert_same_world(arr_a, aff_a, arr_b, aff_b, *, val_tol):
    """b is a's voxel grid up to axis flips/permutation; compare affines (mm) and voxel values."""
    t = np.linalg.inv(aff_a) @ aff_b  # b index -> a index: a signed permutation with integer shift
    t_int = np.rint(t)
    assert np.abs(aff_a @ t_int - aff_b).max() < 1e-4
    assert sorted(arr_a.shape) == sorted(arr_b.shape)
    b_in_a = nib.orientations.apply_orientation(arr_b, nib.orientations.io_orientation(t_int))
    assert b_in_a.shape == arr_a.shape
    assert np.abs(b_in_a.astype(np.float64) - arr_a).max() <= val_tol


@pytest.fixture
def case(tmp_path):
    """A case folder as a clinician drops it: series in sub-folders, files without suffix, clutter."""
    root = tmp_path / "case"
    t1 = _write_source(root / "s1", "t1_mprage_sag_p2_iso", name="IMG{k:03d}")
    flair = _write_source(root / "s2" / "deep", "AX T2 FLAIR", affine=_affine(), name="{k}.dcm")
    loc_iops = [[1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1]]
    _write_source(root / "s3", "localizer", shape=(12, 10, 3), iops=loc_iops, positions=[[0, 0, 0]] * 3)
    (root / "notes.txt").write_text("not dicom")
    (root / ".DS_Store").write_bytes(b"\0" * 200)
    return root, t1, flair


def test_find_series_groups_sorts_and_classifies(case):
    root, t1_uid, flair_uid = case
    series = find_series(root)
    assert len(series) == 3
    by_uid = {s.series_uid: s for s in series}
    t1, flair = by_uid[t1_uid], by_uid[flair_uid]
    assert t1.folder == root / "s1" and flair.folder == root / "s2" / "deep"
    assert len(t1.files) == 6 and t1.tags["Modality"] == "MR" and t1.description == "t1_mprage_sag_p2_iso"
    # sorted along the slice normal, not by InstanceNumber or name
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in t1.files]
    assert z == sorted(z)
    chosen, notes = classify_series(series)
    assert chosen == {"t1n": t1, "t2f": flair}
    assert any("localizer" in n for n in notes)
    assert is_dicom_folder(root) and not is_dicom_folder(root / "s3" / "nothing")


@pytest.mark.parametrize("desc, expected", [
    ("AX T2 FLAIR", "t2f"), ("t1_mprage_sag_p2_iso", "t1n"), ("T1 POST GD", "t1c"), ("T2 TSE AX", "t2w"),
    ("Sag T1 pre", "t1n"), ("FLAIR", "t2f"), ("t2_blade_tra", "t2w"), ("t2_tirm_tra_dark-fluid", "t2f"),
    ("T1+C AX", "t1c"), ("t1_mprage_ce", "t1c"), ("T1 precontrast", "t1n"), ("Ax T1 FLAIR", "t1n"),
    ("MPRAGE GD", "t1c"), ("AX T2*", None), ("t2_swi_tra", None), ("localizer", None),
    ("ep2d_diff_3scan_trace", None), ("T1 map", None),
])
def test_default_mapping(desc, expected):
    s = DicomSeries("1.2.3", [], desc, {"SeriesDescription": desc, "Modality": "MR"}, None)
    chosen, notes = classify_series([s])
    assert chosen == ({expected: s} if expected else {})
    assert len(notes) == (0 if expected else 1)


def test_contrast_agent_tag_and_custom_mapping(tmp_path):
    tags = {"SeriesDescription": "T1 SE AX", "ContrastBolusAgent": "Gadovist", "Modality": "MR"}
    s = DicomSeries("1.2.3", [], "T1 SE AX", tags, tmp_path)
    assert classify_series([s])[0] == {"t1c": s}
    yml = tmp_path / "map.yaml"
    yml.write_text("t2w: ['^weird_t2$']\nt1n: mine\n", encoding="utf-8")
    mapping = load_mapping(yml)
    assert mapping == {"t2w": ["^weird_t2$"], "t1n": ["mine"]}
    w = DicomSeries("1.2.4", [], "WEIRD_T2", {"SeriesDescription": "WEIRD_T2"}, tmp_path)
    assert classify_series([w], mapping)[0] == {"t2w": w}
    for text, what in [("t3x: [a]\n", "unknown modality"), ("t1n: ['(']\n", "bad regular expression"),
                       ("- a\n", "YAML mapping")]:
        yml.write_text(text, encoding="utf-8")
        with pytest.raises(InputError, match=what):
            load_mapping(yml)
    assert set(DEFAULT_MAPPING) == {"t1n", "t1c", "t2w", "t2f"}


def test_derived_reformat_beside_original_is_left_out():
    def series(uid, desc, image_type):
        return DicomSeries(uid, [], desc, {"SeriesDescription": desc, "ImageType": image_type}, None)

    orig = series("1.1", "T1 POST GD", "ORIGINAL\\PRIMARY\\M")
    mpr = series("1.2", "T1 POST GD MPR COR", "DERIVED\\SECONDARY\\MPR")
    chosen, notes = classify_series([mpr, orig])
    assert chosen == {"t1c": orig} and any("MPR COR" in n for n in notes)


def test_two_flair_series_refused(tmp_path):
    _write_source(tmp_path / "a", "AX T2 FLAIR")
    _write_source(tmp_path / "b", "FLAIR 3D SAG")
    with pytest.raises(InputError, match="mixing series") as err:
        classify_series(find_series(tmp_path))
    assert "'AX T2 FLAIR'" in str(err.value) and "'FLAIR 3D SAG'" in str(err.value)


@pytest.mark.parametrize("kind", ["oblique", "flip_k", "flip_i"])
def test_derived_series_roundtrip(tmp_path, kind):
    aff = _affine(kind)
    _write_source(tmp_path / "src", "T1 POST GD", affine=aff)
    (source,) = find_series(tmp_path / "src")
    x = _volume()
    out = tmp_path / "out" / "t2f"
    files = write_derived_series(x, aff, source, out, modality="t2f",
                                 series_description="SYNTHETIC t2f (medsci)", uid_seed="case1/t2f")
    assert [f.name for f in files] == [f"IM{k:06d}.dcm" for k in range(1, 7)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["t2f"]  # no temp folder left behind
    tol = 1e-3 * float(x.max() - x.min())
    (derived,) = find_series(out)
    vol = read_series(derived)
    _assert_same_world(x, aff, vol.array, vol.affine, val_tol=tol)
    assert vol.meta["dicom"]["series_uid"] == derived.series_uid
    # SimpleITK's own folder reading (GDCM sorting) agrees
    ref = read_volume(out)
    _assert_same_world(x, aff, ref.array, ref.affine, val_tol=tol)
    # first slice position by hand: voxel (0,0,0) in RAS -> LPS negates x and y
    ipp = [float(v) for v in pydicom.dcmread(files[0]).ImagePositionPatient]
    np.testing.assert_allclose(ipp, [-aff[0, 3], -aff[1, 3], aff[2, 3]], atol=1e-6)


def test_derived_series_tags_and_reproducibility(tmp_path):
    uid = _write_source(tmp_path / "case" / "t1", "T1 POST GD", affine=_affine())
    (source,) = find_series(tmp_path / "case")
    kw = dict(modality="t2f", series_description="SYNTHETIC t2f (medsci)", uid_seed="case1/t2f")
    a = write_derived_series(_volume(), _affine(), source, tmp_path / "a", **kw)
    b = write_derived_series(_volume(), _affine(), source, tmp_path / "b", **kw)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    ds, src = pydicom.dcmread(a[2]), pydicom.dcmread(source.files[0])
    assert ds.SeriesInstanceUID != uid and ds.StudyInstanceUID == STUDY_UID and ds.PatientID == "P001"
    assert ds.FrameOfReferenceUID == FOR_UID and ds.PatientName == "Doe^Jane" and ds.StudyDate == "20240102"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "SYNTHETIC"] and "SYNTHETIC" in ds.SeriesDescription
    assert "diffusion model" in ds.DerivationDescription and ds.BurnedInAnnotation == "NO"
    assert ds.SOPClassUID == MRImageStorage and ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert a[0].read_bytes()[128:132] == b"DICM" and ds.InstanceNumber == 3 and ds.ContentDate == "20240102"
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
    src_sop = pydicom.dcmread(source.files[2]).SOPInstanceUID  # same grid: slice k <- source slice k
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src_sop
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in a}) == 6 and src.Modality == ds.Modality == "MR"
    # a rerun replaces its own previous series; another seed gives other UIDs
    c = write_derived_series(_volume() * 2, _affine(), source, tmp_path / "a", **{**kw, "uid_seed": "other"})
    assert pydicom.dcmread(c[0]).SeriesInstanceUID != ds.SeriesInstanceUID
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "case"]
    # our own output inside the case folder is not mistaken for an acquisition
    write_derived_series(_volume(), _affine(), source, tmp_path / "case" / "synth", **kw)
    chosen, notes = classify_series(find_series(tmp_path / "case"))
    assert chosen == {"t1c": source} and any("synthetic" in n for n in notes)
    (tmp_path / "a" / "readme.txt").write_text("mine")
    with pytest.raises(InputError, match="holds other files"):
        write_derived_series(_volume(), _affine(), source, tmp_path / "a", **kw)


def test_corrupt_and_missing_dicom(tmp_path):
    rng = np.random.default_rng(0)
    garbage = rng.bytes(128) + b"DICM" + rng.bytes(2000)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x1").write_bytes(garbage)
    with pytest.raises(InputError, match="none could be read"):
        find_series(bad)
    _write_source(bad / "ok", "T2 TSE AX")
    assert [len(s.files) for s in find_series(bad)] == [6]  # the corrupt file is skipped
    truncated = sorted((bad / "ok").iterdir())[2]
    truncated.write_bytes(truncated.read_bytes()[:-100])  # header intact, pixel data cut short
    with pytest.raises(InputError, match="cannot read DICOM series"):
        read_series(find_series(bad)[0])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("hello")
    with pytest.raises(InputError, match="no DICOM"):
        find_series(empty)
    assert not is_dicom_folder(empty)
    with pytest.raises(InputError, match="not found"):
        find_series(tmp_path / "nope")


def test_read_series_refuses_bad_geometry(tmp_path):
    z = [0.0, 2.5, 5.0, 7.5, 11.0, 13.5]  # one gap of 3.5 mm: a missing/shifted slice
    _write_source(tmp_path / "gap", "T2 TSE AX", positions=[[0.0, 0.0, v] for v in z])
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_series(find_series(tmp_path / "gap")[0])
    _write_source(tmp_path / "one", "T2 TSE AX", shape=(12, 10, 1))
    with pytest.raises(InputError, match="at least 2"):
        read_series(find_series(tmp_path / "one")[0])
    iops = [[1, 0, 0, 0, 1, 0]] * 5 + [[1, 0, 0, 0, 0.8, 0.6]]
    _write_source(tmp_path / "mixed", "T2 TSE AX", iops=iops)
    with pytest.raises(InputError, match="orientations"):
        read_series(find_series(tmp_path / "mixed")[0])

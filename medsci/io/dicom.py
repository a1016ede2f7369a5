"""DICOM for MRI cases: find the series in a dropped folder, read one as a 3D volume, and write a synthesized
volume back as a clearly *derived* MR series. Which contrast a series holds is :mod:`medsci.mri.contrasts`.

Geometry follows :mod:`medsci.io.voxels`: arrays in (i, j, k) = (column, row, slice) order with a
voxel -> RAS+ affine, while DICOM stores LPS, so positions and directions are converted both ways.
pydicom only reads headers (fast, no pixel decoding) and writes; pixels are read by SimpleITK/GDCM as
volume.py does for DICOM folders, so both paths give the same arrays and affines.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsci.errors import InputError, check_plain_text
from medsci.io.atomic import refuse_non_finite
from medsci.io.paths import regular_file
from medsci.io.voxels import LPS_TO_RAS, Volume, check_declared_size, check_physical_size, from_sitk, one_line

log = logging.getLogger(__name__)

_TAGS = ("SeriesDescription", "ProtocolName", "SequenceName", "ScanningSequence", "ContrastBolusAgent",
         "Modality", "SeriesNumber", "ImageType")
# Copied from the source so the derived series files into the same patient/study/frame of reference.
_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
           "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "StudyDescription",
           "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition")
_IM_NAME = re.compile(r"IM\d{6}\.dcm")


@dataclass
class DicomSeries:
    """One series found on disk: its files (ascending along the slice normal) and identifying tags."""

    series_uid: str
    files: list[Path]
    description: str
    tags: dict
    folder: Path


def _iter_visible(folder: Path):
    # Hidden names are skipped: atomic writers (ours included) keep temporary files/folders as ".name".
    # Anything but a regular file (a named pipe would block the read forever) is refused, naming it.
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (regular_file(Path(root, f)) for f in sorted(files) if not f.startswith("."))


def _has_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder: Path) -> bool:
    """True if any visible file in ``folder`` or below is a DICOM file (``DICM`` at byte 128)."""
    folder = Path(folder)
    return folder.is_dir() and any(_has_magic(p) for p in _iter_visible(folder))


def _str(ds, kw: str) -> str:
    val = ds.get(kw)
    if val is None:
        return ""
    if isinstance(val, (list, tuple)) or type(val).__name__ == "MultiValue":
        return "\\".join(str(v) for v in val)
    return str(val).strip()


def _header(path: Path, keep_ds: bool = False) -> dict | None:
    """Header fields of one file, or None if it is not (readable) DICOM. Never raises."""
    import pydicom

    def count(ds, kw):
        val = ds.get(kw)
        return 0 if val is None else int(val)  # multi-valued or non-numeric: TypeError, so "not readable"

    def floats(ds, kw, n):
        val = ds.get(kw)
        return np.array([float(v) for v in val]) if val is not None and len(val) == n else None

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about every oddity; we report one line
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=False)
            # Values decode lazily: touch everything now so a corrupt file fails here, not later.
            # The dataset itself is dropped unless asked for: vendor headers can be large.
            return {"path": Path(path), "ds": ds if keep_ds else None, "uid": _str(ds, "SeriesInstanceUID"),
                    "tags": {kw: _str(ds, kw) for kw in _TAGS},
                    "sop": (_str(ds, "SOPClassUID"), _str(ds, "SOPInstanceUID")),
                    "iop": floats(ds, "ImageOrientationPatient", 6),
                    "ipp": floats(ds, "ImagePositionPatient", 3),
                    "size": (count(ds, "Rows"), count(ds, "Columns")), "frames": int(ds.get("NumberOfFrames") or 1),
                    "number": int(ds.get("InstanceNumber") or 0)}
    except Exception:  # noqa: BLE001 - pydicom raises many types on garbage; the caller reports it
        return None


def _sorted(recs: list[dict]) -> list[dict]:
    # Ascending along the slice normal (also what ITK's ForceOrthogonalDirection assumes); files without
    # geometry fall back to InstanceNumber, then the name.
    if all(r["iop"] is not None and r["ipp"] is not None for r in recs):
        n = np.cross(recs[0]["iop"][:3], recs[0]["iop"][3:])
        return sorted(recs, key=lambda r: (float(r["ipp"] @ n), r["number"], str(r["path"])))
    return sorted(recs, key=lambda r: (r["number"], str(r["path"])))


def find_series(folder: Path) -> list[DicomSeries]:
    """The DICOM image series in ``folder`` (recursively), grouped by SeriesInstanceUID."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("DICOM folder not found", folder)
    groups: dict[str, list[dict]] = {}
    n_bad = 0
    for path in _iter_visible(folder):
        rec = _header(path)
        if rec is None or not rec["uid"]:  # garbage after a DICM magic may still "parse", without UIDs
            if _has_magic(path):
                n_bad += 1
                log.warning("%s: skipping unreadable DICOM file", path)
        elif rec["size"][0]:  # non-image objects (SR, DICOMDIR, ...) have no Rows
            groups.setdefault(rec["uid"], []).append(rec)
    if not groups:
        if n_bad:
            raise InputError(f"{n_bad} DICOM file(s) found but none could be read (corrupt or truncated?)",
                             folder)
        raise InputError("no DICOM image files found in folder", folder)
    out = []
    for uid, recs in groups.items():
        files, tags = [r["path"] for r in _sorted(recs)], recs[0]["tags"]
        out.append(DicomSeries(uid, files, tags["SeriesDescription"], dict(tags),
                               Path(os.path.commonpath([str(p.parent) for p in files]))))
    number = lambda s: int(s.tags["SeriesNumber"]) if s.tags["SeriesNumber"].lstrip("-").isdigit() else 0
    return sorted(out, key=lambda s: (number(s), s.series_uid))


def read_series(series: DicomSeries) -> Volume:
    """Read one series as a 3D volume, refusing geometry that a voxel grid cannot represent."""
    import SimpleITK as sitk

    where, label = series.folder, repr(series.description or series.series_uid)
    recs = [_header(p) for p in series.files]
    bad = [p for p, r in zip(series.files, recs) if r is None or not all(r["size"])]
    if bad:
        raise InputError("not a readable DICOM image", bad[0])
    if len(recs) < 2:
        raise InputError(f"series {label} has {len(recs)} slice(s); a 3D volume needs at least 2", where)
    if any(r["frames"] > 1 for r in recs):
        raise InputError(f"series {label} is multi-frame (enhanced) DICOM, which is not supported; "
                         "export it as classic single-frame images", where)
    if len({r["size"] for r in recs}) > 1:
        raise InputError(f"series {label} mixes image sizes {sorted({r['size'] for r in recs})}", where)
    if any(r["iop"] is None or r["ipp"] is None for r in recs):
        raise InputError(f"series {label} lacks ImageOrientation/PositionPatient on some files", where)
    if max(np.abs(r["iop"] - recs[0]["iop"]).max() for r in recs) > 1e-4:
        raise InputError(f"series {label} mixes slice orientations", where)
    recs = _sorted(recs)
    n = np.cross(recs[0]["iop"][:3], recs[0]["iop"][3:])
    offsets = np.array([r["ipp"] for r in recs]) - recs[0]["ipp"]
    gaps = np.diff(offsets @ n)
    mean = float(gaps.mean())
    if gaps.min() < 1e-3:
        raise InputError(f"series {label} has several images per slice position (echoes, time points?); "
                         "split it into one image per position", where)
    if np.abs(gaps - mean).max() > 0.01 * mean:
        raise InputError(f"series {label} has non-uniform slice spacing ({gaps.min():.4g} to "
                         f"{gaps.max():.4g} mm; missing slices?)", where)
    if np.linalg.norm(offsets - np.outer(offsets @ n, n), axis=1).max() > 0.01 * mean:
        raise InputError(f"series {label} has slices shifted within their plane (gantry tilt); "
                         "not supported", where)
    # Rows/Columns are read from headers: refuse absurd sizes before ITK allocates them (4 bytes a voxel:
    # ITK may hand rescaled pixels back as float32).
    rows, cols = (int(v) for v in recs[0]["size"])
    check_declared_size((cols, rows, len(recs)), 4, where, sum(r["path"].stat().st_size for r in recs),
                        what=f"series {label}")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(r["path"]) for r in recs])
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        img = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read DICOM series {label} ({one_line(err)})", where) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    info = {"series_uid": series.series_uid, "description": series.description, "n_files": len(recs)}
    vol = from_sitk(img, where, "dicom", {"dicom": info})
    check_physical_size(vol.array.shape, vol.affine, where)  # as read_volume does for files
    return vol


def _ds(value: float) -> str:
    """A float as a DICOM DS string (16 characters at most, as precise as they allow)."""
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(value) + 0.0)  # + 0.0 turns -0.0 into 0.0


def write_derived_series(array: np.ndarray, affine: np.ndarray, source: DicomSeries, out_dir: Path, *,
                         modality: str, series_description: str, series_number: int | None = None,
                         uid_seed: str) -> list[Path]:
    """Write ``array`` (on the voxel grid ``affine``) as a derived MR series in the study of ``source``.

    Byte-reproducible: UIDs come from ``uid_seed`` and dates from the source. The folder appears whole or
    not at all (written beside ``out_dir`` under a hidden name, then renamed).
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    import medsci

    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    refuse_non_finite(array, out_dir)
    for text, what in ((series_description, "series description"), (modality, "modality")):
        check_plain_text(text, what, out_dir)
    m = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, :3]  # the flip is its own inverse
    origin = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    spacing = np.linalg.norm(m, axis=0)
    row, col, slc = (m / spacing).T  # i runs along a DICOM row, j down a column, k across slices
    normal = np.cross(row, col)
    if abs(row @ col) > 1e-4 or abs(abs(slc @ normal) - 1.0) > 1e-4:
        raise ValueError("DICOM needs an orthogonal voxel grid; the affine is sheared")
    out_dir = Path(out_dir)
    # Only a previous run's series may be replaced, never a folder holding anything else.
    if out_dir.exists() and (not out_dir.is_dir() or any(not _IM_NAME.fullmatch(p.name)
                                                         for p in out_dir.iterdir())):
        raise InputError("output folder exists and holds other files; refusing to replace it", out_dir)
    src = [_header(p, keep_ds=i == 0) for i, p in enumerate(source.files)]
    if not src or any(r is None for r in src):
        raise InputError(f"source series {source.description!r} is no longer readable", source.folder)
    first = src[0]["ds"]
    seed = [uid_seed, source.series_uid]
    lo, hi = float(array.min()), float(array.max())
    # Stored = (value - intercept) / slope over the full uint16 range; computed with the slope/intercept
    # as *written* (16-character DS) so readers invert exactly what was quantised.
    slope, inter = _ds((hi - lo) / 65535.0 if hi > lo else 1.0), _ds(lo)
    stored = np.clip(np.rint((array - float(inter)) / float(slope)), 0, 65535).astype("<u2")
    p_lo, p_hi = np.percentile(array, [0.5, 99.5])
    date = _str(first, "ContentDate") or _str(first, "SeriesDate") or _str(first, "StudyDate")
    time = _str(first, "ContentTime") or _str(first, "SeriesTime") or _str(first, "StudyTime")

    base = Dataset()
    for kw in _COPIED:  # type-2 attributes must be present even when empty
        setattr(base, kw, _str(first, kw))
    for kw in ("StudyInstanceUID", "FrameOfReferenceUID"):  # type 1: never empty
        setattr(base, kw, getattr(base, kw) or generate_uid(entropy_srcs=seed + [kw]))
    ref = Dataset()
    ref.SeriesInstanceUID = source.series_uid
    ref.ReferencedInstanceSequence = [_sop_ref(r["sop"]) for r in src]
    for kw, val in {
        "SpecificCharacterSet": "ISO_IR 192",  # UTF-8 holds any name the source may have had
        "ImageType": ["DERIVED", "SECONDARY", "SYNTHETIC"], "SOPClassUID": MRImageStorage, "Modality": "MR",
        "SeriesInstanceUID": generate_uid(entropy_srcs=seed + ["series"]), "SeriesNumber": series_number,
        "SeriesDescription": series_description, "SeriesDate": date, "ContentDate": date,
        "SeriesTime": time, "ContentTime": time, "Manufacturer": "medsci",
        "SoftwareVersions": f"medsci {medsci.__version__}", "BurnedInAnnotation": "NO",
        "DerivationDescription": f"{modality} synthesized by a diffusion model (medsci) from the other "
                                 "contrasts of this study; NOT an acquired image",
        # MR Image module, type 1: RM = research mode, the honest value for a synthetic image; the
        # type-2 acquisition parameters are present but empty (None).
        "ScanningSequence": "RM", "SequenceVariant": "NONE", "ScanOptions": None, "MRAcquisitionType": None,
        "RepetitionTime": None, "EchoTime": None, "EchoTrainLength": None,
        "ReferencedSeriesSequence": [ref],
        "ImageOrientationPatient": [_ds(v) for v in (*row, *col)],
        "PixelSpacing": [_ds(spacing[1]), _ds(spacing[0])],  # DICOM: between rows, then between columns
        "SliceThickness": _ds(spacing[2]), "SpacingBetweenSlices": _ds(spacing[2]),
        "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2",
        "Rows": array.shape[1], "Columns": array.shape[0],
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0,
        "RescaleIntercept": inter, "RescaleSlope": slope, "RescaleType": "US",
        "WindowCenter": _ds((p_lo + p_hi) / 2), "WindowWidth": _ds(max(p_hi - p_lo, 1.0)),  # width >= 1
    }.items():
        setattr(base, kw, val)

    positions = origin + np.outer(np.arange(array.shape[2]), m[:, 2])
    src_pos = np.array([r["ipp"] if r["ipp"] is not None else np.full(3, np.inf) for r in src])
    names = [f"IM{k + 1:06d}.dcm" for k in range(array.shape[2])]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".part", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the series is meant to be shared
        for k, (pos, name) in enumerate(zip(positions, names)):
            ds = copy.deepcopy(base)
            ds.SOPInstanceUID = generate_uid(entropy_srcs=seed + ["sop", str(k)])
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in pos]
            ds.SliceLocation = _ds(pos @ normal)
            near = int(np.argmin(np.linalg.norm(src_pos - pos, axis=1)))
            if len(src) == array.shape[2] and np.linalg.norm(src_pos[near] - pos) < 0.01:
                ds.SourceImageSequence = [_sop_ref(src[near]["sop"])]  # the source slice at this position
            ds.PixelData = stored[:, :, k].T.tobytes()  # (rows = j, columns = i)
            ds.file_meta = meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            pydicom.dcmwrite(tmp / name, ds, enforce_file_format=True)
        old = None
        if out_dir.exists():  # a previous run's series (checked above): swap it out, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / name for name in names]


def _sop_ref(sop: tuple[str, str]):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop
    return item

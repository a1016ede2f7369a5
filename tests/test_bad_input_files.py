"""The "Files and readers" half of the bad-input catalogue (docs/bad-input.md): one test per row.

Every row runs the real entry point (``medsci.cli.main`` in-process; a few through the installed ``medsci``
console script) on one kind of bad file and checks what the user gets: the exit code, a one-line message
naming the file and the reason, no traceback, and for batch commands that the good cases of the batch still
produced their outputs. ``test_catalogue_rows_match_tests`` keeps the table and the tests in step.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import segyio
import SimpleITK as sitk

from catalogue import assert_promised, promised_messages, row_registry, section_rows, without_folders
from helpers import tiny_synthesis
from medsci.cli import main
from test_dicom import _write_source
from test_radiograph_io import _make_dicom

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "docs" / "bad-input.md"
TEST_CONFIG = ROOT / "configs" / "test.yaml"
SEIS_SHAPE = (6, 5, 16)
SEIS_TINY = {
    "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                       "num_head_channels": 8}, "patch": [8, 8, 16]},
    "sample": {"steps": 1, "seed": 0},
}


# ------------------------------------------------------------------------------------------ shared inputs
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Good inputs the rows start from: seismic checkpoint (untrained: only its loading is tested), survey,
    synthesis checkpoint (1 training step) with a spare good case, longitudinal demo subjects."""
    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.networks import build_network
    from medsci.io.segy import create_segy
    from medsci.tasks.longitudinal.demo import write_demo_subjects
    from medsci.tasks.seismic.config import SeismicConfig
    from medsci.tasks.seismic.pipeline import checkpoint_config

    root = tmp_path_factory.mktemp("bad_input_assets")
    ckcfg = checkpoint_config(SeismicConfig.from_dict(SEIS_TINY))
    net = build_network(ckcfg["model"])
    seis_ck = save_checkpoint(root / "seismic_model", ckcfg, net, ema=net)
    cube = np.random.default_rng(0).standard_normal(SEIS_SHAPE).astype(np.float32)
    survey = create_segy(root / "survey.segy", cube)

    raw, ids, _, syn_ck = tiny_synthesis(root)

    subjects = root / "subjects"
    write_demo_subjects(subjects, n=1, seed=1, shape=(16, 24, 16), spacing=(12.0, 12.0, 12.0))
    return {"root": root, "seis_ck": seis_ck, "survey": survey, "raw": raw, "ids": ids, "syn_ck": syn_ck,
            "subject": subjects / "sub-000"}


# ------------------------------------------------------------------------------------------ builders
def _nii(path: Path, data, affine=None, cls=nib.Nifti1Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(cls(np.asarray(data) if not isinstance(data, np.ndarray) else data,
                 np.eye(4) if affine is None else affine), str(path))
    return path


def _ramp(shape=(8, 8, 8)) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _good_nii(tmp: Path, name: str = "scan.nii.gz") -> Path:
    return _nii(tmp / name, _ramp())


def _huge_header(path: Path, cls=nib.Nifti2Image, shape=(100000, 100000, 100000)) -> Path:
    hdr = cls(np.zeros((2, 2, 2), np.float32), np.eye(4)).header.copy()
    hdr.set_data_shape(shape)
    hdr.set_data_offset(len(hdr.binaryblock) + 4)
    path.write_bytes(hdr.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


def _mha(path: Path, array: np.ndarray, vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path))
    return path


def _segy_raw(tmp: Path, name: str, survey: Path) -> Path:
    dest = tmp / name
    shutil.copyfile(survey, dest)
    return dest


def _segy_patch(path: Path, offset: int, fmt: str, value) -> Path:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(struct.pack(fmt, value))
    return path


def _png(path: Path, width: int, height: int, depth: int, colour: int, raw_rows: bytes,
         extra: list[tuple[bytes, bytes]] = ()) -> Path:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    body = [chunk(b"IHDR", ihdr)] + [chunk(k, d) for k, d in extra]
    body += [chunk(b"IDAT", zlib.compress(raw_rows)), chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(body))
    return path


def _grey_rows(w: int, h: int, bytes_per_pixel: int) -> bytes:
    row = bytes(range(w * bytes_per_pixel)) if w * bytes_per_pixel < 256 else bytes(w * bytes_per_pixel)
    return b"".join(b"\x00" + row for _ in range(h))


def _subject(tmp: Path, subject: Path, name: str, table: str | bytes | None) -> Path:
    """A copy of a demo subject whose sessions.tsv is replaced by ``table`` (None: removed)."""
    dest = tmp / name
    shutil.copytree(subject, dest)
    tsv = dest / "sessions.tsv"
    if table is None:
        tsv.unlink()
    elif isinstance(table, bytes):
        tsv.write_bytes(table)
    else:
        tsv.write_text(table, encoding="utf-8")
    return dest


def _sessions(subject: Path) -> list[tuple[str, str]]:
    lines = (subject / "sessions.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    i_sid, i_t = header.index("session_id"), header.index("time_days")
    return [(ln.split("\t")[i_sid], ln.split("\t")[i_t]) for ln in lines[1:] if ln.strip()]


def _brats_case(tmp: Path, raw: Path, src: str, name: str, drop: tuple[str, ...] = ()) -> Path:
    dest = tmp / name
    dest.mkdir(parents=True)
    for mod in ("t1n", "t1c", "t2w", "t2f"):
        if mod not in drop:
            shutil.copyfile(raw / src / f"{src}-{mod}.nii.gz", dest / f"{name}-{mod}.nii.gz")
    return dest


def _digests(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    argv: list[str]
    code: int
    name: str  # must appear in the message (the file or folder at fault)
    reason: str  # row-specific reason, as a substring of the message
    check: Callable[[], None] | None = None  # batch rows: the good cases' outputs
    subprocess: bool = False  # through the installed console script
    untouched: Path | None = None  # input tree whose bytes must not change


ROWS, row = row_registry()


def _info(path: Path, reason: str, **kw) -> Row:
    return Row(["info", str(path)], 2, path.name, reason, **kw)


# --- NIfTI through `medsci info` ---------------------------------------------------------------------
@row("R01")
def _(tmp, a):
    p = tmp / "empty.nii.gz"
    p.write_bytes(b"")
    return _info(p, "cannot read NIfTI file", subprocess=True)


@row("R02")
def _(tmp, a):
    good = _good_nii(tmp, "whole.nii.gz").read_bytes()
    p = tmp / "truncated.nii.gz"
    p.write_bytes(good[: len(good) // 2])
    return _info(p, "cannot read NIfTI file")


@row("R03")
def _(tmp, a):
    p = tmp / "random.nii"
    p.write_bytes(np.random.default_rng(1).bytes(2000))
    return _info(p, "cannot read NIfTI file")


@row("R04")
def _(tmp, a):
    p = tmp / "garbage.nii.gz"
    p.write_bytes(gzip.compress(b"not a NIfTI header " * 40))
    return _info(p, "cannot read NIfTI file")


@row("R05")
def _(tmp, a):
    return _info(_nii(tmp / "flat2d.nii.gz", np.ones((8, 8), np.float32)), "expected a 3D volume")


@row("R06")
def _(tmp, a):
    return _info(_nii(tmp / "series4d.nii.gz", np.ones((4, 4, 4, 3), np.float32)), "expected a 3D volume")


@row("R07")
def _(tmp, a):
    return _info(_nii(tmp / "five.nii.gz", np.ones((4, 4, 4, 2, 2), np.float32)), "expected a 3D volume")


@row("R08")
def _(tmp, a):
    arr = _ramp()
    arr[1, 2, 3] = np.nan
    return _info(_nii(tmp / "nan.nii.gz", arr), "1 NaN/Inf voxels")


@row("R09")
def _(tmp, a):
    arr = _ramp()
    arr[0, 0, 0], arr[7, 7, 7] = np.inf, -np.inf
    return _info(_nii(tmp / "inf.nii", arr), "2 NaN/Inf voxels")


def _sform_row(path: Path, axis: str, values) -> Path:
    """A NIfTI whose only affine (the sform) has ``values`` as row ``axis`` (nibabel refuses to save it)."""
    hdr = nib.load(_nii(path, _ramp())).header.copy()
    hdr["qform_code"], hdr["sform_code"] = 0, 1
    hdr[f"srow_{axis}"] = values
    hdr.set_data_offset(352)
    path.write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + _ramp().tobytes()))
    return path


@row("R10")
def _(tmp, a):
    p = _sform_row(tmp / "singular.nii.gz", "z", [0.0, 0.0, 0.0, 0.0])  # a zero voxel size along k
    return _info(p, "affine is singular or not finite")


@row("R11")
def _(tmp, a):
    return _info(_sform_row(tmp / "nanaffine.nii.gz", "x", [np.nan, 0, 0, 0]), "affine is singular or not finite")


@row("R12")
def _(tmp, a):
    return _info(_huge_header(tmp / "huge.nii"), "more than the 8 GiB medsci reads", subprocess=True)


@row("R13")
def _(tmp, a):
    # Under the 8 GiB cap, but the file holds 64 bytes of the 4 GB it declares.
    return _info(_huge_header(tmp / "big1.nii", nib.Nifti1Image, (1000, 1000, 1000)), "file is truncated")


@row("R14")
def _(tmp, a):
    rgb = np.zeros((4, 4, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return _info(_nii(tmp / "colour.nii.gz", rgb), "RGB colour NIfTI image")


@row("R15")
def _(tmp, a):
    return _info(_nii(tmp / "complex.nii.gz", (_ramp() + 1j * _ramp()).astype(np.complex64)),
                 "complex-valued NIfTI data")


@row("R16")
def _(tmp, a):
    p = tmp / "folder.nii.gz"
    p.mkdir()
    return _info(p, "is a folder; expected a volume file")


@row("R17")
def _(tmp, a):
    return _info(tmp / "absent.nii.gz", "file not found")


@row("R18")
def _(tmp, a):
    p = tmp / "scan.img"
    p.write_bytes(b"\0" * 100)
    return _info(p, "unsupported volume format '.img'")


@row("R19")
def _(tmp, a):
    return _info(_nii(tmp / "zerodim.nii.gz", np.zeros((4, 0, 4), np.float32)), "declares an empty image")


@row("R88")
def _(tmp, a):
    p = tmp / "pipe.nii"
    os.mkfifo(p)  # reading it would block forever
    return _info(p, "not a regular file")


# --- MetaImage / NRRD through `medsci info` ----------------------------------------------------------
@row("R20")
def _(tmp, a):
    p = tmp / "random.mha"
    p.write_bytes(np.random.default_rng(2).bytes(1500))
    return _info(p, "cannot read metaimage file")


@row("R21")
def _(tmp, a):
    good = _mha(tmp / "whole.mha", _ramp()).read_bytes()
    p = tmp / "cut.mha"
    p.write_bytes(good[:-700])
    return _info(p, "cannot read metaimage file")


@row("R22")
def _(tmp, a):
    p = tmp / "detached.mhd"
    p.write_text("ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_FLOAT\n"
                 "ElementDataFile = missing.raw\n")
    return _info(p, "cannot read metaimage file")


@row("R23")
def _(tmp, a):
    return _info(_mha(tmp / "slice2d.mha", np.ones((8, 8), np.float32)), "expected a 3D volume")


@row("R24")
def _(tmp, a):
    return _info(_mha(tmp / "vector.nrrd", np.ones((4, 4, 4, 3), np.float32), vector=True),
                 "expected a scalar volume, got 3 components")


@row("R25")
def _(tmp, a):
    p = tmp / "huge.nrrd"
    p.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 100000 100000 100000\nendian: little\n"
                 "encoding: raw\n\n")
    return _info(p, "more than the 8 GiB medsci reads")


@row("R26")
def _(tmp, a):
    arr = _ramp()
    arr[2, 2, 2] = np.nan
    return _info(_mha(tmp / "nan.nrrd", arr), "1 NaN/Inf voxels")


@row("R27")
def _(tmp, a):
    img = sitk.Image([4, 4, 4], sitk.sitkComplexFloat32)
    p = tmp / "complex.mha"
    sitk.WriteImage(img, str(p))
    return _info(p, "expected a scalar volume, got 2 components")  # ITK stores complex as 2 components


# --- DICOM series folders through `medsci info` ------------------------------------------------------
@row("R28")
def _(tmp, a):
    folder = tmp / "notdicom"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return _info(folder, "no DICOM image files found")


@row("R29")
def _(tmp, a):
    folder = tmp / "mixed_sizes"
    uid = _write_source(folder, "T1 AX", shape=(8, 8, 4))
    _write_source(folder, "T1 AX", shape=(10, 8, 4), series_uid=uid, name="big{k}")
    return _info(folder, "mixes image sizes")


@row("R30")
def _(tmp, a):
    folder = tmp / "gap"
    _write_source(folder, "T1 AX", shape=(8, 8, 6))
    (folder / "slice3").unlink()
    return _info(folder, "non-uniform slice spacing")


@row("R31")
def _(tmp, a):
    folder = tmp / "oneslice"
    _write_source(folder, "T1 AX", shape=(8, 8, 6))
    for k in range(1, 6):
        (folder / f"slice{k}").unlink()
    return _info(folder, "has 1 slice(s); a 3D volume needs at least 2")


@row("R32")
def _(tmp, a):
    folder = tmp / "corrupt"
    folder.mkdir()
    (folder / "IM1.dcm").write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(3).bytes(300))
    return _info(folder, "none could be read", subprocess=True)


@row("R33")
def _(tmp, a):
    folder = tmp / "two_series"
    _write_source(folder / "a", "T1 AX", shape=(8, 8, 3))
    _write_source(folder / "b", "T2 AX", shape=(8, 8, 3))
    return _info(folder, "folder holds 2 DICOM series")


# --- SEG-Y through `medsci interpolate` (the survey is read before the model) --------------------------
def _interp(a, tmp: Path, survey: Path, reason: str, **kw) -> Row:
    out = tmp / ("out.npy" if survey.suffix == ".npy" else "out.segy")
    return Row(["interpolate", "--checkpoint", str(a["seis_ck"]), "--input", str(survey), "--output", str(out)],
               2, survey.name, reason, **kw)


@row("R34")
def _(tmp, a):
    p = tmp / "random.segy"
    p.write_bytes(np.random.default_rng(4).bytes(5000))
    return _interp(a, tmp, p, "not a readable SEG-Y file")


@row("R35")
def _(tmp, a):
    p = tmp / "textonly.segy"
    p.write_bytes(a["survey"].read_bytes()[:3200])
    return _interp(a, tmp, p, "file is too short for SEG-Y (3200 bytes")


@row("R36")
def _(tmp, a):
    data = a["survey"].read_bytes()
    p = tmp / "cut.segy"
    p.write_bytes(data[: len(data) - 100])
    return _interp(a, tmp, p, "not a readable SEG-Y file")


@row("R37")
def _(tmp, a):
    p = tmp / "headers_only.segy"
    p.write_bytes(a["survey"].read_bytes()[:3600])  # text + binary header, zero traces
    return _interp(a, tmp, p, "no traces or no samples (only the 3600 header bytes)")


@row("R38")
def _(tmp, a):
    p = _segy_patch(_segy_raw(tmp, "format99.segy", a["survey"]), 3224, ">h", 99)  # sample format code
    return _interp(a, tmp, p, "unknown sample format code 99")


@row("R39")
def _(tmp, a):
    p = _segy_raw(tmp, "irregular.segy", a["survey"])
    with segyio.open(str(p), "r+", ignore_geometry=True) as f:
        f.header[3] = {segyio.TraceField.CROSSLINE_3D: 99}  # one trace off the grid
    return _interp(a, tmp, p, "do not form a regular inline/crossline grid")


@row("R40")
def _(tmp, a):
    p = _segy_raw(tmp, "nan.segy", a["survey"])
    with segyio.open(str(p), "r+", ignore_geometry=True) as f:
        trace = f.trace[2].copy()
        trace[5] = np.nan
        f.trace[2] = trace
    return _interp(a, tmp, p, "NaN or infinite samples")


@row("R41")
def _(tmp, a):
    p = tmp / "empty.sgy"
    p.write_bytes(b"")
    return _interp(a, tmp, p, "file is too short for SEG-Y (0 bytes")


def _npy_header(path: Path, shape, descr: str = "<f4") -> Path:
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": descr, "fortran_order": False, "shape": shape})
        fh.write(b"\0" * 64)
    return path


@row("R83")
def _(tmp, a):
    p = _npy_header(tmp / "huge.npy", (100000, 100000, 100000))
    return _interp(a, tmp, p, "more than the 8 GiB medsci reads")


@row("R84")
def _(tmp, a):
    p = tmp / "complex.npy"
    np.save(p, np.ones(SEIS_SHAPE, np.complex64))
    return _interp(a, tmp, p, "is complex-valued (complex64)")


@row("R85")
def _(tmp, a):
    p = tmp / "flat.npy"
    np.save(p, np.ones(SEIS_SHAPE[:2], np.float32))
    return _interp(a, tmp, p, "expected a numeric (inline, crossline, time) array, got shape (6, 5)")


@row("R86")
def _(tmp, a):
    mask = tmp / "pickled_mask.npy"
    np.save(mask, np.array([{"observed": 1}], dtype=object), allow_pickle=True)
    spec = _interp(a, tmp, a["survey"], "holds Python objects (it would have to be unpickled)")
    spec.argv += ["--mask", str(mask)]
    spec.name = mask.name
    return spec


# --- radiographs through `medsci rotate` (the image is read before the model) ---------------------------
def _rotate(tmp: Path, image: Path, reason: str, **kw) -> Row:
    out = tmp / ("out" + "".join(image.suffixes))
    return Row(["rotate", "--checkpoint", str(tmp / "no_model"), "--input", str(image), "--angles", "0,0,5",
                "--output", str(out)], 2, image.name, reason, **kw)


@row("R42")
def _(tmp, a):
    p = _png(tmp / "rgba16.png", 20, 20, 16, 6, _grey_rows(20, 20, 8))
    return _rotate(tmp, p, "has an alpha channel")


@row("R43")
def _(tmp, a):
    plte = bytes(range(48))
    p = _png(tmp / "palette_trns.png", 20, 20, 8, 3, _grey_rows(20, 20, 1),
             extra=[(b"PLTE", plte), (b"tRNS", b"\x00")])
    return _rotate(tmp, p, "tRNS transparency chunk")


@row("R44")
def _(tmp, a):
    p = _png(tmp / "zero.png", 0, 20, 8, 0, b"")
    return _rotate(tmp, p, "image is empty (20x0 pixels)")


@row("R45")
def _(tmp, a):
    data = _png(tmp / "whole.png", 20, 20, 8, 0, _grey_rows(20, 20, 1)).read_bytes()
    p = tmp / "cut.png"
    p.write_bytes(data[:-30])
    return _rotate(tmp, p, "PNG file is truncated")


@row("R46")
def _(tmp, a):
    p = tmp / "random.png"
    p.write_bytes(np.random.default_rng(5).bytes(800))
    return _rotate(tmp, p, "not a PNG file (bad signature)")


@row("R47")
def _(tmp, a):
    p = tmp / "empty.png"
    p.write_bytes(b"")
    return _rotate(tmp, p, "file is empty")


@row("R48")
def _(tmp, a):
    p = _png(tmp / "tiny.png", 8, 8, 16, 0, _grey_rows(8, 8, 2))
    return _rotate(tmp, p, "image is too small (8x8 pixels")


@row("R49")
def _(tmp, a):
    p = _make_dicom(tmp / "nopixels.dcm", np.zeros((20, 20), np.uint16), pixels=False)
    return _rotate(tmp, p, "DICOM has no pixel data")


@row("R50")
def _(tmp, a):
    stored = np.tile(np.arange(20 * 20, dtype=np.uint16).reshape(20, 20), (3, 1, 1))
    p = _make_dicom(tmp / "multiframe.dcm", stored, frames=3)
    return _rotate(tmp, p, "is not a single 2D image (3 frames)")


@row("R51")
def _(tmp, a):
    return _rotate(tmp, _nii(tmp / "cube.nii.gz", np.ones((20, 20, 20), np.float32)), "is not a single 2D image")


@row("R52")
def _(tmp, a):
    p = tmp / "dir.png"
    p.mkdir()
    return _rotate(tmp, p, "is a folder; expected a radiograph file")


@row("R87")
def _(tmp, a):
    p = _huge_header(tmp / "huge2d.nii", nib.Nifti1Image, (30000, 30000, 1))
    return _rotate(tmp, p, "file is truncated: the header declares shape (30000, 30000, 1)")


@row("R89")
def _(tmp, a):
    p = tmp / "pipe.png"
    os.mkfifo(p)  # open() of a FIFO waits for a writer: it would hang
    return _rotate(tmp, p, "not a regular file")


# --- sessions.tsv through `medsci preprocess longitudinal` (a batch) and `medsci forecast` -----------
def _lon_batch(tmp: Path, a, bad: Path, reason: str) -> Row:
    """The bad subject next to a good one: the good one must still be preprocessed."""
    out = tmp / "prep"
    good = tmp / "good-sub"
    shutil.copytree(a["subject"], good)

    def check():
        assert (out / "good-sub.npz").is_file()
        assert not (out / f"{bad.name}.npz").exists()
    return Row(["preprocess", "longitudinal", "--config", str(TEST_CONFIG), "--subjects", str(good), str(bad),
                "--out", str(out)], 1, bad.name, reason, check=check)


def _forecast(tmp: Path, bad: Path, reason: str) -> Row:
    """`medsci forecast` reads the subject before the model: a bad table is refused at once."""
    return Row(["forecast", "--checkpoint", str(tmp / "no_model"), "--subject", str(bad), "--time", "900",
                "--output", str(tmp / "f.nii.gz")], 2, bad.name, reason)


def _table(rows: list[tuple[str, str]], header: str = "session_id\ttime_days") -> str:
    return header + "\n" + "".join(f"{s}\t{t}\n" for s, t in rows)


@row("R53")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "dup-sub", _table(s + [s[0]]))
    return _lon_batch(tmp, a, bad, "duplicate session_id")


@row("R54")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "nocol-sub", "session_id\tage\n" + "".join(f"{x}\t30\n" for x, _ in s))
    return _forecast(tmp, bad, "missing column time_days")


@row("R55")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "text-sub", _table([(s[0][0], "day one")] + s[1:]))
    return _forecast(tmp, bad, "non-numeric time_days 'day one'")


@row("R56")
def _(tmp, a):
    bad = _subject(tmp, a["subject"], "empty-sub", "")
    return _forecast(tmp, bad, "sessions table is empty")


@row("R57")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "comma-sub", "session_id,time_days\n" + "".join(f"{x},{t}\n" for x, t in s))
    return _forecast(tmp, bad, "(columns must be tab-separated)")


@row("R58")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "gone-sub", _table(s + [("ses-99", "9999")]))
    return _forecast(tmp, bad, "no volume for session 'ses-99'")


@row("R59")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "inf-sub", _table([(s[0][0], "inf")] + s[1:]))
    return _forecast(tmp, bad, "non-finite time_days 'inf'")


@row("R60")
def _(tmp, a):
    s = _sessions(a["subject"])
    bad = _subject(tmp, a["subject"], "one-sub", _table(s[:1]))
    return _forecast(tmp, bad, "needs at least two sessions")


@row("R61")
def _(tmp, a):
    """Handled: a BOM and rows out of time order are read (sorted by time), not refused."""
    s = _sessions(a["subject"])
    subj = _subject(tmp, a["subject"], "bom-sub", b"\xef\xbb\xbf" + _table(s[::-1]).encode())
    out = tmp / "prep"

    def check():
        from medsci.tasks.longitudinal.preprocess import load_subject

        times = load_subject(out / "bom-sub.npz")["times"]
        assert list(times) == sorted(float(t) for _, t in s)
    return Row(["preprocess", "longitudinal", "--config", str(TEST_CONFIG), "--subjects", str(subj),
                "--out", str(out)], 0, "bom-sub", "sessions", check=check)


@row("R62")
def _(tmp, a):
    bad = _subject(tmp, a["subject"], "notsv-sub", None)
    return _forecast(tmp, bad, "no sessions.tsv and no ses-* session folders")


# --- checkpoint folders through `medsci interpolate` (a complete survey: only the model is loaded) ----
def _ck(tmp: Path, a, name: str) -> Path:
    dest = tmp / name
    shutil.copytree(a["seis_ck"], dest)
    return dest


def _interp_ck(tmp: Path, a, ck: Path, name: str, reason: str, **kw) -> Row:
    return Row(["interpolate", "--checkpoint", str(ck), "--input", str(a["survey"]), "--output",
                str(tmp / "out.npy")], 2, name, reason, **kw)


class _Boom:
    """Unpickling this would create the file named in ``MARK``: proof that nothing was unpickled."""

    def __reduce__(self):
        return (Path.touch, (Path(os.environ["MEDSCI_TEST_PICKLE_MARK"]),))


@row("R63")
def _(tmp, a):
    ck = _ck(tmp, a, "pickled")
    os.environ["MEDSCI_TEST_PICKLE_MARK"] = str(tmp / "UNPICKLED")
    (ck / "ema.safetensors").write_bytes(pickle.dumps({"weights": _Boom()}))

    def check():
        assert not (tmp / "UNPICKLED").exists()
    return _interp_ck(tmp, a, ck, "ema.safetensors", "not a valid safetensors file", check=check)


@row("R64")
def _(tmp, a):
    ck = _ck(tmp, a, "truncated")
    data = (ck / "ema.safetensors").read_bytes()
    (ck / "ema.safetensors").write_bytes(data[: len(data) // 2])
    return _interp_ck(tmp, a, ck, "ema.safetensors", "not a valid safetensors file")


@row("R65")
def _(tmp, a):
    from safetensors.torch import load_file, save_file

    ck = _ck(tmp, a, "reshaped")
    state = load_file(str(ck / "ema.safetensors"))
    key = next(k for k, v in state.items() if v.ndim == 4 or v.ndim == 5)
    state[key] = state[key][:1].clone()
    save_file(state, str(ck / "ema.safetensors"))
    return _interp_ck(tmp, a, ck, "ema.safetensors", "in the network (1 tensor(s) differ)")


def _rewrite_config(ck: Path, change) -> None:
    """Edit a copied checkpoint's config.json in place: ``change`` mutates the parsed dict."""
    cfg = json.loads((ck / "config.json").read_text(encoding="utf-8"))
    change(cfg)
    (ck / "config.json").write_text(json.dumps(cfg), encoding="utf-8")


def _unlink(*names: str):
    return lambda ck: [(ck / name).unlink() for name in names]


def _config_text(text: str):
    return lambda ck: (ck / "config.json").write_text(text, encoding="utf-8")


def _broken_checkpoint(name: str, edit, named: str, reason: str):
    """The row of a copy of the checkpoint (folder ``name``) after ``edit``; the message names ``named``."""
    def make(tmp, a):
        ck = _ck(tmp, a, name)
        edit(ck)
        return _interp_ck(tmp, a, ck, named, reason)
    return make


# Checkpoint folders with one thing wrong: row -> (folder, edit, what the message names, reason).
_BROKEN_CHECKPOINTS = {
    "R66": ("noconfig", _unlink("config.json"), "noconfig", "not a medsci checkpoint folder (no config.json)"),
    "R67": ("badjson", _config_text("{not json"), "config.json", "unreadable checkpoint config"),
    "R68": ("othertask", lambda ck: _rewrite_config(ck, lambda cfg: cfg.update(task="mri-synthesis")), "othertask",
            "checkpoint is for task 'mri-synthesis'"),
    "R69": ("noweights", _unlink("ema.safetensors", "model.safetensors"), "model.safetensors",
            "checkpoint has no weights file"),
    "R70": ("listconfig", _config_text("[1, 2, 3]"), "config.json", "checkpoint config is not a JSON object"),
    "R71": ("mangled", lambda ck: _rewrite_config(ck, lambda cfg: cfg.pop("model")), "mangled",
            "checkpoint config lacks or mangles"),
}
for _rid, _spec in _BROKEN_CHECKPOINTS.items():
    row(_rid)(_broken_checkpoint(*_spec))


# --- BraTS case folders through `medsci preprocess synthesis --all` (a batch) --------------------------
def _prep_batch(tmp: Path, a, bad_name: str, reason: str, extra: tuple[str, ...] = ()) -> Row:
    root = tmp / "cases"
    src = a["ids"][0]
    _brats_case(root, a["raw"], src, "good")
    out = tmp / "prep"

    def check():
        assert (out / "good.npz").is_file() and (out / "good.json").is_file()
        assert not (out / f"{bad_name}.npz").exists()
    return Row(["preprocess", "synthesis", "--all", "--case-dir", str(root), "--out", str(out),
                "--config", str(TEST_CONFIG), *extra], 1, bad_name, reason, check=check, untouched=root)


@row("R72")
def _(tmp, a):
    case = _brats_case(tmp / "cases", a["raw"], a["ids"][0], "both")
    shutil.copyfile(case / "both-t1n.nii.gz", tmp / "x.nii.gz")
    nib.save(nib.load(tmp / "x.nii.gz"), case / "both-t1n.nii")
    return _prep_batch(tmp, a, "both", "both both-t1n.nii.gz and both-t1n.nii exist for t1n")


@row("R73")
def _(tmp, a):
    _brats_case(tmp / "cases", a["raw"], a["ids"][0], "partial", drop=("t2f",))
    return _prep_batch(tmp, a, "partial", "case partial is missing 1 modalities (t2f)", ("--max-missing", "0"))


@row("R74")
def _(tmp, a):
    case = _brats_case(tmp / "cases", a["raw"], a["ids"][0], "grids")
    img = nib.load(case / "grids-t2w.nii.gz")
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj)[:-2], img.affine), case / "grids-t2w.nii.gz")
    return _prep_batch(tmp, a, "grids-t2w.nii.gz", "all modalities must share one grid")


@row("R75")
def _(tmp, a):
    case = _brats_case(tmp / "cases", a["raw"], a["ids"][0], "broken")
    (case / "broken-t1c.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    return _prep_batch(tmp, a, "broken-t1c.nii.gz", "cannot read NIfTI file")


@row("R76")
def _(tmp, a):
    case = _brats_case(tmp / "cases", a["raw"], a["ids"][0], "cplx")
    img = nib.load(case / "cplx-t2w.nii.gz")
    data = np.asanyarray(img.dataobj).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, img.affine), case / "cplx-t2w.nii.gz")
    return _prep_batch(tmp, a, "cplx-t2w.nii.gz", "complex-valued NIfTI data")


# --- clinical folders through `medsci synthesize` (a batch) -----------------------------------------
def _syn_batch(tmp: Path, a, bad_name: str, reason: str) -> Row:
    root = tmp / "drop"
    _brats_case(root, a["raw"], a["ids"][1], "good", drop=("t2f",))
    out = tmp / "out"

    def check():
        assert (out / "good" / "good_t2f_SYNTHETIC.nii.gz").is_file()
        assert not (out / bad_name).joinpath(f"{bad_name}_t2f_SYNTHETIC.nii.gz").exists()
        record = json.loads((out / bad_name / f"{bad_name}.json").read_text(encoding="utf-8"))
        assert record["status"] == "refused" and reason in record["reason"]
    return Row(["synthesize", "--checkpoint", str(a["syn_ck"]), "--input", str(root), "--output", str(out),
                "--no-progress", "--no-qc", "--steps", "1", "--n-samples", "1"], 1, bad_name, reason,
               check=check, untouched=root)


@row("R77")
def _(tmp, a):
    case = _brats_case(tmp / "drop", a["raw"], a["ids"][0], "twice", drop=("t2f",))
    nib.save(nib.load(case / "twice-t1n.nii.gz"), case / "twice-t1n.nii")
    return _syn_batch(tmp, a, "twice", "two files for t1n")


@row("R78")
def _(tmp, a):
    case = _brats_case(tmp / "drop", a["raw"], a["ids"][0], "shifted", drop=("t2f",))
    img = nib.load(case / "shifted-t2w.nii.gz")
    aff = img.affine.copy()
    aff[:3, 3] += 500.0
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), aff), case / "shifted-t2w.nii.gz")
    return _syn_batch(tmp, a, "shifted", "do not overlap in space")


@row("R79")
def _(tmp, a):
    case = _brats_case(tmp / "drop", a["raw"], a["ids"][0], "rgbcase", drop=("t2f",))
    img = nib.load(case / "rgbcase-t1c.nii.gz")
    rgb = np.zeros(img.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, img.affine), case / "rgbcase-t1c.nii.gz")
    return _syn_batch(tmp, a, "rgbcase", "RGB colour NIfTI image")


# --- `medsci metrics` on two volumes ----------------------------------------------------------------
@row("R80")
def _(tmp, a):
    target = _good_nii(tmp, "target.nii.gz")
    aff = np.eye(4)
    aff[0, 3] = 50.0
    pred = _nii(tmp / "moved.nii.gz", _ramp(), aff)  # identical voxels, 50 mm away
    return Row(["metrics", "--pred", str(pred), "--target", str(target)], 2, "moved.nii.gz",
               "affines differ by up to 50 mm")


@row("R81")
def _(tmp, a):
    target = _good_nii(tmp, "target.nii.gz")
    pred = _nii(tmp / "smaller.nii.gz", np.ones((8, 8, 7), np.float32))
    return Row(["metrics", "--pred", str(pred), "--target", str(target)], 2, "smaller.nii.gz",
               "does not match target")


@row("R82")
def _(tmp, a):
    target = _good_nii(tmp, "target.nii.gz")
    aff = np.diag([2.0, 1.0, 1.0, 1.0])
    mask = _nii(tmp / "mask2mm.nii.gz", np.ones((8, 8, 8), np.float32), aff)
    return Row(["metrics", "--pred", str(target), "--target", str(target), "--mask", str(mask)], 2,
               "mask2mm.nii.gz", "voxel grid differs from target")


# ------------------------------------------------------------------------------------------ the tests
def _console(argv: list[str]) -> tuple[int, str]:
    exe = Path(sys.executable).with_name("medsci")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("rid", sorted(ROWS), ids=sorted(ROWS))
def test_bad_input_row(rid, assets, tmp_path, capsys):
    spec = ROWS[rid](tmp_path, assets)
    before = _digests(spec.untouched) if spec.untouched is not None else None
    if spec.subprocess:
        code, output = _console(spec.argv)
    else:
        code = main(spec.argv)
        captured = capsys.readouterr()
        output = captured.out + captured.err
    assert "Traceback" not in output, output
    assert code == spec.code, output
    assert spec.name in output and spec.reason in output, output
    if spec.code == 2:  # refused: one line naming the file and the reason
        lines = [ln for ln in output.splitlines() if spec.reason in ln]
        assert len(lines) == 1 and spec.name in lines[0], output
    # the message the catalogue promises, with the test's folders cut off as the table writes paths
    shown = output.replace(f"{tmp_path}{os.sep}", "").replace(f"{assets['root']}{os.sep}", "")
    assert_row_message(section_rows("Files and readers", "R")[rid], shown)
    if spec.check is not None:
        spec.check()
    if before is not None:
        assert _digests(spec.untouched) == before  # inputs untouched


def assert_row_message(cell: str, output: str) -> None:
    """:func:`assert_promised`, and for a row whose message is not a ``medsci ...`` one (a batch's per-case line
    ``<case>: refused: ...``, the line of a handled input) each backticked text of the row."""
    if promised_messages(cell):
        return assert_promised(cell, output)
    for text in re.findall(r"`([^`]+)`", cell):
        assert text in without_folders(output), f"promised {text!r}\ngot {without_folders(output)!r}"


def _catalogue_ids() -> list[str]:
    text = CATALOGUE.read_text(encoding="utf-8")
    section = text.split("## Files and readers", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\|\s*(R\d+)\s*\|", section, flags=re.M)


def test_catalogue_rows_match_tests():
    ids = _catalogue_ids()
    assert len(ids) == len(set(ids)), "a row id appears twice in docs/bad-input.md"
    assert sorted(ids) == sorted(ROWS), (sorted(set(ids) ^ set(ROWS)), "rows without tests or tests without rows")
    assert len(ids) >= 45

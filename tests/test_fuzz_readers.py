"""Fuzzing every file reader: random bytes and mutated valid files (bytes flipped, cut, inserted) either read
as a valid result or raise medsci's own error (MedsciError: InputError / ConfigError); any other exception,
or an example running past the deadline, fails. Derandomized, so CI sees the same examples every run."""

from __future__ import annotations

import gzip
import importlib
import io
import itertools
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medsci.errors import MedsciError

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_N", 40)), deadline=10000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
_counter = itertools.count()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    # Imports (torch above all) take seconds: done here, not inside an example's deadline.
    for module in ("torch", "pydicom", "PIL.Image", "medsci.diffusion.checkpoint", "medsci.io.radiograph",
                   "medsci.io.segy", "medsci.tasks.longitudinal.layout"):
        importlib.import_module(module)
    return tmp_path_factory.mktemp("fuzz")


def _fresh(work: Path, name: str) -> Path:
    """A new empty folder per example, so no example sees another's files."""
    folder = work / f"ex{next(_counter)}"
    folder.mkdir()
    return folder / name


# --- mutations ----------------------------------------------------------------------------------------
_OPS = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "zero"]), st.floats(0, 1),
                          st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)


def _mutate(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, where, payload in ops:
        pos = min(int(where * len(buf)), max(len(buf) - 1, 0))
        if op == "flip" and buf:
            buf[pos] ^= payload[0] or 0xFF
        elif op == "cut":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = payload
        elif op == "zero" and buf:
            buf[pos:pos + len(payload)] = bytes(len(buf[pos:pos + len(payload)]))
    return bytes(buf)


def _header_heavy(data: bytes, header: int):
    """Mutations aimed at the first ``header`` bytes half of the time: that is where readers decide sizes."""
    return st.one_of(
        _OPS,
        st.lists(st.tuples(st.sampled_from(["flip", "zero"]), st.floats(0, header / max(len(data), 1)),
                           st.binary(min_size=1, max_size=4)), min_size=1, max_size=4),
    )


def _reads_or_refuses(read, path: Path):
    try:
        return read(path)
    except MedsciError as err:
        assert str(err).strip() and "\n" not in str(err)
        return None


def _read_bytes(work: Path, name: str, blob: bytes, read):
    """Write ``blob`` as a fresh file called ``name`` and read it: a result or medsci's own one-line error."""
    path = _fresh(work, name)
    path.write_bytes(blob)
    return _reads_or_refuses(read, path)


# --- valid seeds ----------------------------------------------------------------------------------------
def _nifti_bytes(gz: bool) -> bytes:
    img = nib.Nifti1Image(np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3), np.diag([2.0, 2.0, 3.0, 1.0]))
    raw = img.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def _itk_bytes(work: Path, suffix: str) -> bytes:
    path = work / f"seed{suffix}"
    if not path.exists():
        sitk.WriteImage(sitk.GetImageFromArray(np.arange(60, dtype=np.int16).reshape(3, 5, 4)), str(path))
    return path.read_bytes()


def _png_bytes() -> bytes:
    from medsci.io.radiograph import _png_bytes as encode

    return encode((np.arange(20 * 18) % 251).reshape(20, 18).astype(np.uint8), 8, {"Software": "seed"})


def _segy_bytes(work: Path) -> bytes:
    from medsci.io.segy import create_segy

    path = work / "seed.segy"
    if not path.exists():
        create_segy(path, np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32))
    return path.read_bytes()


def _dicom_slices(work: Path) -> list[bytes]:
    from test_dicom import _write_source

    folder = work / "seed_dicom"
    if not folder.exists():
        _write_source(folder, "T1 AX", shape=(6, 5, 3))
    return [p.read_bytes() for p in sorted(folder.iterdir())]


def _cr_bytes(work: Path) -> bytes:
    from test_radiograph_io import _make_dicom

    path = work / "seed_cr.dcm"
    if not path.exists():
        _make_dicom(path, (np.arange(20 * 18) * 9 % 4096).reshape(20, 18).astype(np.uint16))
    return path.read_bytes()


def _safetensors_bytes() -> bytes:
    import torch
    from safetensors.torch import save

    torch.manual_seed(0)
    return save({k: v.contiguous() for k, v in torch.nn.Linear(3, 2).state_dict().items()})


SESSIONS = "session_id\ttime_days\tage\nses-00\t0\t40\nses-01\t120.5\t40.3\nses-02\t400\tn/a\n"


def _checked_reader(reader: str, sane):
    """The reader ``module:function`` (imported when called) wrapped so that its result must pass ``sane``."""
    def read(path):
        module, _, name = reader.partition(":")
        out = getattr(importlib.import_module(module), name)(path)
        assert sane(out), f"{reader}({path}) returned {out!r}"
        return out
    return read


# --- NIfTI / MHA / NRRD / DICOM folders (medsci.io.volume.read_volume) -------------------------------
_read_volume = _checked_reader("medsci.io.volume:read_volume",
                               lambda vol: vol.array.ndim == 3 and np.isfinite(vol.affine).all())


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@FUZZ
@given(data=st.data())
def test_nifti_mutated(work, suffix, data):
    seed = _nifti_bytes(suffix == ".nii.gz")
    ops = data.draw(_header_heavy(seed, 352 if suffix == ".nii" else 40))
    _read_bytes(work, "v" + suffix, _mutate(seed, ops), _read_volume)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
@FUZZ
@given(blob=st.binary(max_size=2048))
def test_volume_random_bytes(work, suffix, blob):
    _read_bytes(work, "r" + suffix, blob, _read_volume)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
@FUZZ
@given(data=st.data())
def test_itk_mutated(work, suffix, data):
    seed = _itk_bytes(work, suffix)
    ops = data.draw(_header_heavy(seed, len(seed) - 120))
    _read_bytes(work, "v" + suffix, _mutate(seed, ops), _read_volume)


@FUZZ
@given(data=st.data())
def test_dicom_series_mutated(work, data):
    slices = _dicom_slices(work)
    which = data.draw(st.integers(0, len(slices) - 1))
    ops = data.draw(_OPS)
    folder = _fresh(work, "series")
    folder.mkdir()
    for k, blob in enumerate(slices):
        (folder / f"s{k}.dcm").write_bytes(_mutate(blob, ops) if k == which else blob)
    _reads_or_refuses(_read_volume, folder)


# --- SEG-Y ------------------------------------------------------------------------------------------
_read_segy = _checked_reader("medsci.io.segy:read_segy",
                             lambda cube: cube.data.ndim == 3 and np.isfinite(cube.data).all())


@FUZZ
@given(data=st.data())
def test_segy_mutated(work, data):
    seed = _segy_bytes(work)
    ops = data.draw(_header_heavy(seed, 3600 + 240))
    _read_bytes(work, "s.segy", _mutate(seed, ops), _read_segy)


@FUZZ
@given(blob=st.binary(max_size=6000))
def test_segy_random_bytes(work, blob):
    _read_bytes(work, "r.segy", blob, _read_segy)


@FUZZ
@given(data=st.data())
def test_npy_cube_mutated(work, data):
    from medsci.io.segy import read_cube

    buf = io.BytesIO()
    np.save(buf, np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4))
    seed = buf.getvalue()
    _read_bytes(work, "c.npy", _mutate(seed, data.draw(_header_heavy(seed, 128))), read_cube)


# --- radiographs: PNG, DICOM CR, NIfTI --------------------------------------------------------------
_read_radiograph = _checked_reader("medsci.io.radiograph:read_radiograph",
                                   lambda image: image.pixels.ndim == 2 and np.isfinite(image.pixels).all())


@pytest.mark.parametrize("kind", ["png", "dcm"])
@FUZZ
@given(data=st.data())
def test_radiograph_mutated(work, kind, data):
    seed = _png_bytes() if kind == "png" else _cr_bytes(work)
    ops = data.draw(_header_heavy(seed, 33 if kind == "png" else 400))
    _read_bytes(work, "x." + kind, _mutate(seed, ops), _read_radiograph)


@pytest.mark.parametrize("suffix", [".png", ".dcm", ".nii.gz"])
@FUZZ
@given(blob=st.binary(max_size=2048))
def test_radiograph_random_bytes(work, suffix, blob):
    _read_bytes(work, "r" + suffix, blob, _read_radiograph)


# --- sessions.tsv -------------------------------------------------------------------------------------
def _subject_with(work: Path, table: bytes) -> Path:
    folder = _fresh(work, "sub-01")
    folder.mkdir()
    vol = work / "seed_session.nii.gz"
    if not vol.exists():
        vol.write_bytes(_nifti_bytes(True))
    for sid in ("ses-00", "ses-01", "ses-02"):
        shutil.copyfile(vol, folder / f"{sid}.nii.gz")
    (folder / "sessions.tsv").write_bytes(table)
    return folder


def _read_subject(folder):
    from medsci.tasks.longitudinal.layout import read_subject

    subject = read_subject(folder)
    assert len(subject.sessions) >= 2 and subject.times == sorted(subject.times)
    return subject


@FUZZ
@given(data=st.data())
def test_sessions_tsv_mutated(work, data):
    seed = SESSIONS.encode()
    ops = data.draw(_OPS)
    _reads_or_refuses(_read_subject, _subject_with(work, _mutate(seed, ops)))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("\t\n,.-+eE0123456789 ses_idtimeagn/\ufeff\x00")), max_size=200))
def test_sessions_tsv_random_text(work, text):
    _reads_or_refuses(_read_subject, _subject_with(work, text.encode("utf-8")))


@FUZZ
@given(blob=st.binary(max_size=400))
def test_sessions_tsv_random_bytes(work, blob):
    _reads_or_refuses(_read_subject, _subject_with(work, blob))


# --- checkpoints: safetensors weights and config.json -----------------------------------------------
def _load_weights(path):
    import torch

    from medsci.diffusion.checkpoint import load_weights

    torch.manual_seed(0)
    return load_weights(path.parent, torch.nn.Linear(3, 2), use_ema=False)


@FUZZ
@given(data=st.data())
def test_safetensors_mutated(work, data):
    seed = _safetensors_bytes()
    ops = data.draw(_header_heavy(seed, 8 + int.from_bytes(seed[:8], "little")))
    _read_bytes(work, "model.safetensors", _mutate(seed, ops), _load_weights)


@FUZZ
@given(blob=st.binary(max_size=1024))
def test_safetensors_random_bytes(work, blob):
    _read_bytes(work, "model.safetensors", blob, _load_weights)


@FUZZ
@given(data=st.data())
def test_checkpoint_config_mutated(work, data):
    from medsci.diffusion.checkpoint import read_checkpoint_config

    seed = b'{"task": "seismic-interpolation", "model": {"channels": [8, 16]}, "step": 4}'
    _read_bytes(work, "config.json", _mutate(seed, data.draw(_OPS)),
                lambda p: read_checkpoint_config(p.parent, "seismic-interpolation"))


def test_mutations_change_the_file():
    """The mutation strategy is not a no-op (a fuzz test that mutates nothing would pass vacuously)."""
    seed = _nifti_bytes(False)
    assert _mutate(seed, [("cut", 0.5, b"x")]) == seed[: len(seed) // 2]
    assert _mutate(seed, [("flip", 0.0, b"\x01")])[0] == seed[0] ^ 1
    assert len(_mutate(seed, [("insert", 0.1, b"abc")])) == len(seed) + 3
    assert io.BytesIO(seed).read(4) != _mutate(seed, [("zero", 0.0, b"abcd")])[:4]

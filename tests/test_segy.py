"""SEG-Y I/O (medsci.io.segy) and the synthetic seismic demo data (medsci.tasks.seismic.demo)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import segyio

from medsci.tasks.seismic.demo import FIRST_CROSSLINE, FIRST_INLINE, make_seismic_cube, write_seismic_dataset
from medsci.errors import InputError
from medsci.io.segy import read_cube, read_segy, write_cube, write_segy_like

SHAPE = (6, 5, 24)  # il != xl != t so any axis mix-up changes a shape


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _raw_traces(path: Path, n_t: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Independent of segyio: file bytes, per-trace 240-byte headers, big-endian float32 samples."""
    blob = path.read_bytes()
    body = np.frombuffer(blob, dtype=np.uint8, offset=3600).reshape(-1, 240 + 4 * n_t)
    return blob[:3600], body[:, :240], body[:, 240:].copy().view(">f4")


def _write_traces(path: Path, traces: np.ndarray, il: np.ndarray, xl: np.ndarray,
                  sorting: int | None = None, ilines=None, xlines=None, offsets=None) -> Path:
    """A small format-5 file with traces in exactly the given order and the given il/xl header words."""
    spec = segyio.spec()
    spec.format = 5
    spec.samples = np.arange(traces.shape[1]) * 4.0
    if sorting is None:
        spec.tracecount = len(traces)  # unstructured: no geometry claimed
    else:
        spec.sorting, spec.ilines, spec.xlines, spec.offsets = sorting, ilines, xlines, offsets or [1]
    tf = segyio.TraceField
    with segyio.create(str(path), spec) as f:
        for k, trace in enumerate(traces):
            f.header[k] = {tf.INLINE_3D: int(il[k]), tf.CROSSLINE_3D: int(xl[k]),
                           tf.TRACE_SAMPLE_COUNT: traces.shape[1], tf.TRACE_SAMPLE_INTERVAL: 4000}
            f.trace[k] = trace.astype(np.float32)
    return path


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    return write_seismic_dataset(tmp_path / "demo", cubes=1, seed=3, shape=SHAPE)[0]


# ----------------------------------------------------------------------------------------------- reading

def test_read_demo_cube_matches_raw_bytes(demo_file: Path):
    cube = read_segy(demo_file)
    n_il, n_xl, n_t = SHAPE
    assert cube.data.shape == SHAPE and cube.data.dtype == np.float32
    np.testing.assert_array_equal(cube.ilines, np.arange(n_il) + FIRST_INLINE)
    np.testing.assert_array_equal(cube.xlines, np.arange(n_xl) + FIRST_CROSSLINE)
    assert cube.sample_interval_ms == 4.0 and cube.source == demo_file
    # Inline-sorted: trace k is (il = k // n_xl, xl = k % n_xl).
    _, _, samples = _raw_traces(demo_file, n_t)
    np.testing.assert_array_equal(cube.data, samples.reshape(n_il, n_xl, n_t))


def test_crossline_sorted_file_reads_as_il_xl_t(tmp_path: Path):
    n_il, n_xl, n_t = SHAPE
    cube = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    ilines, xlines = np.arange(n_il) + 10, np.arange(n_xl) + 50
    # Crossline-sorted: crossline is the slow axis, so trace k is (il = k % n_il, xl = k // n_il).
    traces = cube.transpose(1, 0, 2).reshape(-1, n_t)
    path = _write_traces(tmp_path / "xsort.sgy", traces, np.tile(ilines, n_xl), np.repeat(xlines, n_il),
                         sorting=segyio.TraceSortingFormat.CROSSLINE_SORTING, ilines=ilines, xlines=xlines)
    got = read_segy(path)
    np.testing.assert_array_equal(got.data, cube)
    np.testing.assert_array_equal(got.ilines, ilines)
    np.testing.assert_array_equal(got.xlines, xlines)

    # Writing back keeps the crossline trace order of the template.
    new = -2.0 * cube
    dest = write_segy_like(path, tmp_path / "out.sgy", new)
    _, _, samples = _raw_traces(dest, n_t)
    np.testing.assert_array_equal(samples, new.transpose(1, 0, 2).reshape(-1, n_t))
    np.testing.assert_array_equal(read_segy(dest).data, new)


def test_truncated_file_is_input_error(demo_file: Path, tmp_path: Path):
    cut = tmp_path / "cut.segy"
    cut.write_bytes(demo_file.read_bytes()[:-37])
    with pytest.raises(InputError) as err:
        read_segy(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_not_segy_is_input_error(tmp_path: Path):
    bogus = tmp_path / "notes.segy"
    bogus.write_text("this is not seismic\n" * 20)
    with pytest.raises(InputError, match="notes.segy"):
        read_segy(bogus)
    with pytest.raises(InputError, match="not found"):
        read_segy(tmp_path / "missing.segy")


def test_shuffled_traces_need_geometry(tmp_path: Path):
    n_il, n_xl, n_t = SHAPE
    cube = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    perm = np.random.default_rng(2).permutation(n_il * n_xl)
    il = np.repeat(np.arange(n_il) + 1, n_xl)[perm]
    xl = np.tile(np.arange(n_xl) + 1, n_il)[perm]
    traces = cube.reshape(-1, n_t)[perm]
    path = _write_traces(tmp_path / "shuffled.segy", traces, il, xl)
    with pytest.raises(InputError, match="geometry") as err:
        read_segy(path)
    assert str(path) in str(err.value)
    got = read_segy(path, geometry=(n_il, n_xl))  # file order, reshaped
    np.testing.assert_array_equal(got.data, traces.reshape(SHAPE))
    with pytest.raises(InputError, match="needs"):
        read_segy(path, geometry=(n_il + 1, n_xl))


def test_duplicate_il_xl_need_geometry(tmp_path: Path):
    n_il, n_xl, n_t = SHAPE
    traces = np.random.default_rng(3).normal(size=(n_il * n_xl, n_t)).astype(np.float32)
    ones = np.ones(n_il * n_xl, dtype=int)
    path = _write_traces(tmp_path / "dup.segy", traces, ones, ones)
    with pytest.raises(InputError, match="geometry"):
        read_segy(path)
    got = read_segy(path, geometry=(n_xl, n_il))
    np.testing.assert_array_equal(got.data, traces.reshape(n_xl, n_il, n_t))


def test_prestack_file_refused(tmp_path: Path):
    n_il, n_xl, n_t = 3, 2, 8
    n_off = 2
    traces = np.arange(n_il * n_xl * n_off * n_t, dtype=np.float32).reshape(-1, n_t)
    spec = segyio.spec()
    spec.format, spec.samples = 5, np.arange(n_t) * 4.0
    spec.sorting, spec.ilines, spec.xlines, spec.offsets = 2, [1, 2, 3], [1, 2], [100, 200]
    path = tmp_path / "gathers.sgy"
    with segyio.create(str(path), spec) as f:
        k = 0
        for i in spec.ilines:
            for x in spec.xlines:
                for o in spec.offsets:
                    f.header[k] = {189: i, 193: x, 37: o}
                    f.trace[k] = traces[k]
                    k += 1
    with pytest.raises(InputError, match="prestack.*geometry"):
        read_segy(path)


# ----------------------------------------------------------------------------------------------- writing

def test_write_like_round_trip_keeps_every_header_byte(demo_file: Path, tmp_path: Path):
    before = _sha(demo_file)
    cube = read_segy(demo_file)
    new = (0.5 - cube.data[::-1]).astype(np.float32)
    dest = write_segy_like(demo_file, tmp_path / "out" / "recon.segy", new)
    assert _sha(demo_file) == before  # template untouched
    np.testing.assert_array_equal(read_segy(dest).data, new)

    n_t = SHAPE[2]
    head_t, trh_t, samples_t = _raw_traces(demo_file, n_t)
    head_d, trh_d, samples_d = _raw_traces(dest, n_t)
    assert head_d == head_t  # textual + binary header
    np.testing.assert_array_equal(trh_d, trh_t)  # every trace header byte
    assert dest.stat().st_size == demo_file.stat().st_size
    np.testing.assert_array_equal(samples_d, new.reshape(-1, n_t))
    assert not np.array_equal(samples_d, samples_t)
    with segyio.open(dest) as fd, segyio.open(demo_file) as ft:
        assert fd.text[0] == ft.text[0] and dict(fd.bin) == dict(ft.bin)
        assert all(dict(fd.header[k]) == dict(ft.header[k]) for k in range(fd.tracecount))
    assert not list(dest.parent.glob(".*"))  # no temp file left behind


def test_write_like_refuses_bad_shape_and_self(demo_file: Path, tmp_path: Path):
    before = _sha(demo_file)
    with pytest.raises(InputError, match="shape"):
        write_segy_like(demo_file, tmp_path / "x.segy", np.zeros((SHAPE[1], SHAPE[0], SHAPE[2])))
    with pytest.raises(InputError, match="template"):
        write_segy_like(demo_file, demo_file, np.zeros(SHAPE))
    assert not (tmp_path / "x.segy").exists()
    assert _sha(demo_file) == before


def test_read_write_cube_dispatch(demo_file: Path, tmp_path: Path):
    cube = read_cube(demo_file)
    npy = write_cube(tmp_path / "c.npy", cube.data)
    back = read_cube(npy, sample_interval_ms=2.0)
    np.testing.assert_array_equal(back.data, cube.data)
    assert back.sample_interval_ms == 2.0
    seg = write_cube(tmp_path / "c.sgy", cube.data * 2, template=demo_file)
    np.testing.assert_array_equal(read_cube(seg).data, cube.data * 2)
    with pytest.raises(InputError, match="template"):
        write_cube(tmp_path / "d.segy", cube.data)
    with pytest.raises(InputError, match="suffix"):
        read_cube(tmp_path / "c.txt")
    np.save(tmp_path / "flat.npy", np.zeros((4, 5)))
    with pytest.raises(InputError, match="flat.npy"):
        read_cube(tmp_path / "flat.npy")


# --------------------------------------------------------------------------------------------- demo data

def _neighbour_corr(cube: np.ndarray, axis: int) -> float:
    a = np.moveaxis(cube, axis, 0)
    x, y = a[:-1] - a[:-1].mean(-1, keepdims=True), a[1:] - a[1:].mean(-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    return float(((x * y).sum(-1) / den).mean())


def test_demo_dataset_files_headers_and_json(tmp_path: Path):
    shape = (8, 7, 64)
    paths = write_seismic_dataset(tmp_path, cubes=2, seed=5, shape=shape, sample_interval_ms=2.0)
    assert [p.name for p in paths] == ["cube_000.segy", "cube_001.segy"]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["synthetic"] is True and meta["seed"] == 5 and meta["shape"] == list(shape)
    assert "make_seismic_cube" in meta["generator"]
    with segyio.open(paths[0]) as f:
        assert f.sorting == segyio.TraceSortingFormat.INLINE_SORTING
        assert f.bin[segyio.BinField.Format] == 5 and f.dtype == np.float32
        assert f.bin[segyio.BinField.Interval] == 2000 and f.bin[segyio.BinField.Samples] == 64
        assert "synthetic" in f.text[0].decode("ascii").lower() and "medsci" in f.text[0].decode("ascii")
        h = f.header[7 * 2 + 3]  # inline index 2, crossline index 3
        assert h[segyio.TraceField.INLINE_3D] == FIRST_INLINE + 2
        assert h[segyio.TraceField.CROSSLINE_3D] == FIRST_CROSSLINE + 3
        assert h[segyio.TraceField.TRACE_SAMPLE_COUNT] == 64
        assert h[segyio.TraceField.TRACE_SAMPLE_INTERVAL] == 2000
        scalar = h[segyio.TraceField.SourceGroupScalar]
        assert scalar == -100
        # Coordinates: 25 m bins, crosslines along x, inlines along y.
        assert h[segyio.TraceField.CDP_X] / 100 == 500000.0 + 3 * 25.0
        assert h[segyio.TraceField.CDP_Y] / 100 == 6000000.0 + 2 * 25.0
    cube = read_segy(paths[1])
    assert cube.data.shape == shape and cube.sample_interval_ms == 2.0


def test_demo_is_deterministic_per_case(tmp_path: Path):
    a = write_seismic_dataset(tmp_path / "a", cubes=2, seed=1, shape=(6, 6, 32))
    b = write_seismic_dataset(tmp_path / "b", cubes=3, seed=1, shape=(6, 6, 32))
    c = write_seismic_dataset(tmp_path / "c", cubes=1, seed=2, shape=(6, 6, 32))
    assert a[0].read_bytes() == b[0].read_bytes() and a[1].read_bytes() == b[1].read_bytes()
    assert a[0].read_bytes() != c[0].read_bytes() and a[0].read_bytes() != a[1].read_bytes()


def test_demo_cube_is_laterally_coherent():
    cube = make_seismic_cube((24, 20, 96), np.random.default_rng(11))
    assert cube.dtype == np.float32 and cube.shape == (24, 20, 96)
    assert np.abs(cube).max() == pytest.approx(1.0)
    assert cube.std() > 0.05
    # Neighbouring traces share reflectors: high correlation along both lateral axes.
    assert _neighbour_corr(cube, 0) > 0.5 and _neighbour_corr(cube, 1) > 0.5
    # ... which is lateral structure, not a global property of the traces: shuffling trace positions
    # breaks it.
    shuffled = cube.reshape(-1, 96)[np.random.default_rng(0).permutation(24 * 20)].reshape(cube.shape)
    assert _neighbour_corr(shuffled, 0) < _neighbour_corr(cube, 0) - 0.2

"""``medsci interpolate`` end to end on a tiny SEG-Y survey, and its refusals of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import segyio

from helpers import inputs_untouched
from medsci.cli import main
from medsci.tasks.seismic.demo import write_seismic_dataset
from medsci.io.segy import read_segy, write_segy_like

SHAPE = (10, 9, 16)  # il != xl so an axis mix-up changes the shape
TINY = {
    "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                       "num_head_channels": 8}, "patch": [8, 8, 16]},
    "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 2, "seed": 0},
    "sample": {"steps": 2, "seed": 0},
    "inference": {"sw_batch_size": 8},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from medsci.tasks.seismic.config import SeismicConfig
    from medsci.tasks.seismic.pipeline import train_seismic

    root = tmp_path_factory.mktemp("seis_cli")
    full = write_seismic_dataset(root / "demo", cubes=2, seed=4, shape=SHAPE)
    ck = train_seismic(SeismicConfig.from_dict(TINY), full, root / "model", "cpu", progress=False)
    cube = read_segy(full[1]).data
    dead = np.zeros(SHAPE[:2], bool)
    dead[[1, 4, 4, 7, 9], [0, 2, 3, 8, 5]] = True
    survey = write_segy_like(full[1], root / "survey.segy", np.where(dead[..., None], 0.0, cube))
    return {"root": root, "ck": str(ck), "survey": survey, "dead": dead, "truth": cube}


def _run(capsys, *argv) -> tuple[int, str]:
    with inputs_untouched(argv):
        rc = main(["interpolate", *map(str, argv)])
    return rc, capsys.readouterr().err


def _headers_and_samples(path: Path, n_t: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    blob = path.read_bytes()
    body = np.frombuffer(blob, dtype=np.uint8, offset=3600).reshape(-1, 240 + 4 * n_t)
    return blob[:3600], body[:, :240], body[:, 240:]


def test_interpolate_segy_keeps_headers_and_observed_samples(setup, tmp_path, capsys):
    out = tmp_path / "filled.segy"
    report = tmp_path / "report.json"
    rc, err = _run(capsys, "--checkpoint", setup["ck"], "--input", setup["survey"], "--output", out,
                   "--report", report)
    assert rc == 0, err
    head_in, trace_hdr_in, samples_in = _headers_and_samples(setup["survey"], SHAPE[2])
    head_out, trace_hdr_out, samples_out = _headers_and_samples(out, SHAPE[2])
    assert head_in == head_out and np.array_equal(trace_hdr_in, trace_hdr_out)
    dead = setup["dead"].ravel()  # the demo file is inline-sorted: trace k = (k // n_xl, k % n_xl)
    assert np.array_equal(samples_in[~dead], samples_out[~dead])  # observed traces byte-identical
    filled = read_segy(out).data
    assert (np.abs(filled[setup["dead"]]).max(axis=1) > 0).all()  # every dead trace got data
    assert out.stat().st_size == setup["survey"].stat().st_size
    import json

    rep = json.loads(report.read_text())
    assert rep["missing_traces"] == 5 and rep["network_evaluations_per_window"] == 2 and rep["windows"] == 4


def test_interpolate_with_mask_to_npy_is_deterministic(setup, tmp_path, capsys):
    mask = np.ones(SHAPE[:2], dtype=np.uint8)
    mask[::3, :] = 0  # whole inlines missing, given explicitly (they are not dead in the input)
    mask_path = tmp_path / "mask.npy"
    np.save(mask_path, mask)
    truth_file = setup["root"] / "demo" / "cube_001.segy"
    outs = []
    for name in ("a.npy", "b.npy"):
        rc, err = _run(capsys, "--checkpoint", setup["ck"], "--input", truth_file, "--output", tmp_path / name,
                       "--mask", mask_path, "--steps", "3", "--jumps", "1", "--seed", "5")
        assert rc == 0, err
        outs.append(np.load(tmp_path / name))
    assert outs[0].shape == SHAPE and outs[0].dtype == np.float32
    assert np.array_equal(outs[0], outs[1])
    keep = mask.astype(bool)
    assert np.array_equal(outs[0][keep], setup["truth"][keep])
    assert not np.array_equal(outs[0][~keep], setup["truth"][~keep])  # missing lines were reconstructed


def _assert_refused(capsys, tmp_path, argv, out, *needles):
    rc, err = _run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp left


def test_truncated_segy_refused(setup, tmp_path, capsys):
    bad = tmp_path / "truncated.segy"
    bad.write_bytes(setup["survey"].read_bytes()[:-700])
    out = tmp_path / "out.segy"
    _assert_refused(capsys, tmp_path, ["--checkpoint", setup["ck"], "--input", bad, "--output", out], out, bad)


def test_segy_without_geometry_refused(setup, tmp_path, capsys):
    bad = tmp_path / "nogeom.segy"
    spec = segyio.spec()
    spec.format, spec.samples, spec.tracecount = 5, np.arange(SHAPE[2]) * 4.0, 6
    with segyio.create(str(bad), spec) as f:
        for k in range(6):  # every trace claims the same (il, xl): no grid
            f.header[k] = {segyio.TraceField.INLINE_3D: 1, segyio.TraceField.CROSSLINE_3D: 1}
            f.trace[k] = np.ones(SHAPE[2], np.float32)
    out = tmp_path / "out.segy"
    _assert_refused(capsys, tmp_path, ["--checkpoint", setup["ck"], "--input", bad, "--output", out], out, bad,
                    "geometry")


def test_mask_shape_mismatch_refused(setup, tmp_path, capsys):
    mask_path = tmp_path / "small.npy"
    np.save(mask_path, np.ones((SHAPE[0], SHAPE[1] - 1), bool))
    out = tmp_path / "out.npy"
    _assert_refused(capsys, tmp_path, ["--checkpoint", setup["ck"], "--input", setup["survey"], "--output", out,
                                       "--mask", mask_path], out, mask_path, "does not match")


def test_all_missing_refused(setup, tmp_path, capsys):
    silent = write_segy_like(setup["survey"], tmp_path / "silent.segy", np.zeros(SHAPE, np.float32))
    out = tmp_path / "out.segy"
    _assert_refused(capsys, tmp_path, ["--checkpoint", setup["ck"], "--input", silent, "--output", out], out,
                    silent, "all-missing")


def test_bad_checkpoint_and_output_refused(setup, tmp_path, capsys):
    out = tmp_path / "out.segy"
    _assert_refused(capsys, tmp_path, ["--checkpoint", tmp_path, "--input", setup["survey"], "--output", out],
                    out, "checkpoint")
    npy = tmp_path / "cube.npy"
    np.save(npy, setup["truth"])
    _assert_refused(capsys, tmp_path, ["--checkpoint", setup["ck"], "--input", npy, "--output", out], out,
                    "SEG-Y input")
    before = setup["survey"].read_bytes()
    _assert_refused(capsys, tmp_path, ["--checkpoint", setup["ck"], "--input", setup["survey"], "--output",
                                       setup["survey"]], tmp_path / "never", "overwrite")
    assert setup["survey"].read_bytes() == before


def test_interpolate_records_an_mssa_rank_the_survey_window_cannot_reduce(setup, tmp_path, capsys):
    """Issue 25, bad input: on a survey too thin for MSSA's rank (rank 16, full rank 2 x 3 = 6 for 4 x 6 traces)
    the first guess is MSSA's linear start; the user is told so on stderr and in the report, and the output is
    finite."""
    import json
    import shutil

    ck = tmp_path / "model"  # the module's model with an MSSA first guess: one guess channel all the same
    shutil.copytree(setup["ck"], ck)
    ckcfg = json.loads((ck / "config.json").read_text())
    ckcfg.update(condition="mssa", condition_channels=["observed", "mask", "mssa"])
    (ck / "config.json").write_text(json.dumps(ckcfg))
    thin = setup["truth"][:4, :6]
    survey = tmp_path / "thin.npy"
    np.save(survey, np.where(setup["dead"][:4, :6, None], np.float32(0), thin))  # dead traces (1, 0) and (4, 2)
    out, report = tmp_path / "filled.npy", tmp_path / "report.json"
    rc, err = _run(capsys, "--checkpoint", ck, "--input", survey, "--output", out, "--report", report)
    assert rc == 0, err
    note = "MSSA rank 16 is not below the full rank 6 of the block Hankel matrix of a 4 x 6 trace window"
    assert f"{survey}: warning: {note}" in err
    assert any(note in w for w in json.loads(report.read_text())["warnings"])
    assert np.isfinite(np.load(out)).all()

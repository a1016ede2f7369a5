"""The "Longitudinal: times, subjects and the workflow" section of the bad-input catalogue (docs/bad-input.md).

Each row runs the real entry point (``medsci.cli.main`` in-process; the workflow rows through ``snakemake -n``)
on tiny demo subjects and a 1-step checkpoint, and checks the exit code, that there is no traceback, and the
message the row promises (``tests/catalogue.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from catalogue import assert_promised, section_rows
from helpers import tree_checksums
from medsci.cli import main

REPO = Path(__file__).resolve().parents[1]
TITLE, PREFIX = "Longitudinal: times, subjects and the workflow", "L"
ROWS = section_rows(TITLE, PREFIX)
SHAPE, SPACING = (16, 24, 16), (12.0, 12.0, 12.0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Three tiny demo subjects (seed 1) and a 1-step checkpoint trained on the first two."""
    from medsci.tasks.longitudinal.config import LongitudinalConfig
    from medsci.tasks.longitudinal.demo import write_demo_subjects
    from medsci.tasks.longitudinal.layout import read_subject
    from medsci.tasks.longitudinal.pipeline import train_longitudinal
    from medsci.tasks.longitudinal.preprocess import preprocess_subject, save_subject

    root = tmp_path_factory.mktemp("lon_bad")
    write_demo_subjects(root / "raw", n=3, seed=1, shape=SHAPE, spacing=SPACING)
    cfg = LongitudinalConfig.from_dict({
        "preprocess": {"shape": list(SHAPE), "spacing": list(SPACING)},
        "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                           "num_head_channels": 8}, "schedule": {"num_train_timesteps": 20}, "frame_patch": 8,
                  "context_dim": 16, "context_layers": 1, "context_heads": 2, "max_frames": 4},
        "train": {"steps": 1, "batch_size": 1, "warmup_steps": 0, "checkpoint_every": 1},
        "sample": {"steps": 1}}, "longitudinal")
    paths = []
    for i in range(2):
        paths.append(root / f"sub-{i:03d}.npz")
        save_subject(paths[-1], preprocess_subject(read_subject(root / "raw" / f"sub-{i:03d}"), cfg.preprocess))
    ck = train_longitudinal(cfg, paths, root / "model", "cpu", progress=False)
    return {"root": root, "ck": ck, "subject": root / "raw" / "sub-002", "other": root / "raw" / "sub-000"}


def _subject(tmp: Path, a, name: str = "sub-002") -> Path:
    folder = tmp / name
    shutil.copytree(a["subject"], folder)
    return folder


def _times(folder: Path) -> list[tuple[str, float]]:
    lines = (folder / "sessions.tsv").read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    i, j = head.index("session_id"), head.index("time_days")
    return [(ln.split("\t")[i], float(ln.split("\t")[j])) for ln in lines[1:] if ln.strip()]


def _rewrite_times(folder: Path, scale: float) -> float:
    rows = _times(folder)
    (folder / "sessions.tsv").write_text("session_id\ttime_days\n" + "".join(
        f"{s}\t{t * scale:.6g}\n" for s, t in rows), encoding="utf-8")
    return max(t for _, t in rows) * scale


def _forecast(a, subject: Path, times, output: Path, *extra, ck=None) -> list[str]:
    return ["forecast", "--checkpoint", str(ck or a["ck"]), "--subject", str(subject), "--time",
            *[f"{t:g}" for t in times], "--output", str(output), *extra]


def _run(rid: str, argv: list[str], code: int, capsys) -> str:
    got = main(argv)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    assert got == code, output
    assert_promised(ROWS[rid], output)
    return output


@pytest.fixture
def no_model(monkeypatch):
    """Refusals that read headers and config.json only must come before the weights load."""
    import medsci.tasks.longitudinal.pipeline as pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")
    monkeypatch.setattr(pipeline, "load_model", forbidden)


# ------------------------------------------------------------------------------------------ times
def test_L1_session_times_in_years(assets, tmp_path, capsys, no_model):
    folder = _subject(tmp_path, assets)
    last = _rewrite_times(folder, 1 / 365.25)
    _run("L1", _forecast(assets, folder, [last + 0.5], tmp_path / "f.nii.gz"), 2, capsys)
    assert not (tmp_path / "f.nii.gz").exists()


def test_L2_session_times_in_hours(assets, tmp_path, capsys, no_model):
    folder = _subject(tmp_path, assets)
    last = _rewrite_times(folder, 24.0)
    _run("L2", _forecast(assets, folder, [last + 2400], tmp_path / "f.nii.gz"), 2, capsys)


def test_L3_absurd_horizon(assets, tmp_path, capsys, no_model):
    _run("L3", _forecast(assets, _subject(tmp_path, assets), [1e9], tmp_path / "f.nii.gz"), 2, capsys)


def test_L4_duplicate_times(assets, tmp_path, capsys, no_model):
    last = max(t for _, t in _times(assets["subject"]))
    _run("L4", _forecast(assets, _subject(tmp_path, assets), [last + 100, last + 100], tmp_path / "f.nii.gz"), 2,
         capsys)
    assert not list(tmp_path.glob("f*"))


def test_L5_nii_output_stays_nii(assets, tmp_path, capsys):
    folder = _subject(tmp_path, assets)
    before = tree_checksums(folder)
    last = max(t for _, t in _times(folder))
    _run("L5", _forecast(assets, folder, [last + 100], tmp_path / "pred.nii"), 0, capsys)
    assert (tmp_path / "pred.nii").is_file() and not (tmp_path / "pred.nii.gz").exists()
    assert nib.load(tmp_path / "pred.nii").shape == nib.load(folder / "ses-00.nii.gz").shape
    assert json.loads((tmp_path / "pred.nii.json").read_text(encoding="utf-8"))["warnings"] == []
    assert tree_checksums(folder) == before


def test_L6_checkpoint_without_training_times(assets, tmp_path, capsys):
    old = tmp_path / "old_model"
    shutil.copytree(assets["ck"], old)
    config = json.loads((old / "config.json").read_text(encoding="utf-8"))
    del config["training_times"]
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    folder = _subject(tmp_path, assets)
    last = max(t for _, t in _times(folder))
    out = _run("L6", _forecast(assets, folder, [last + 100], tmp_path / "f.nii.gz", ck=old), 0, capsys)
    assert out.count("not checked") == 1  # printed once
    rec = json.loads((tmp_path / "f.nii.gz.json").read_text(encoding="utf-8"))
    assert rec["warnings"] and "training_times" in rec["warnings"][0]


# ------------------------------------------------------------------------------------------ sessions
def test_L7_last_session_of_another_subject(assets, tmp_path, capsys):
    """Between the refusal and the same-subject thresholds: forecast with the warning printed once and recorded."""
    folder = _subject(tmp_path, assets)
    last = _times(folder)[-1][0]
    other_last = _times(assets["other"])[-1][0]
    shutil.copyfile(assets["other"] / f"{other_last}.nii.gz", folder / f"{last}.nii.gz")
    t = max(t for _, t in _times(folder))
    out = _run("L7", _forecast(assets, folder, [t + 100], tmp_path / "f.nii.gz"), 0, capsys)
    assert out.count("does not look like the same subject") == 1
    rec = json.loads((tmp_path / "f.nii.gz.json").read_text(encoding="utf-8"))
    assert "does not look like the same subject" in rec["warnings"][0]


def test_L14_last_session_far_from_this_head(assets, tmp_path, capsys):
    """Below the refusal threshold (another subject's scan, noisy): refused, unless overridden."""
    folder = _subject(tmp_path, assets)
    last = folder / f"{_times(folder)[-1][0]}.nii.gz"
    other = nib.load(str(assets["other"] / f"{_times(assets['other'])[-1][0]}.nii.gz"))
    data = other.get_fdata(dtype=np.float32)
    data = data + np.random.default_rng(0).normal(0, 0.6 * data.std(), data.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, nib.load(str(last)).affine), str(last))
    t = max(t for _, t in _times(folder))
    _run("L14", _forecast(assets, folder, [t + 100], tmp_path / "f.nii.gz"), 2, capsys)
    assert not (tmp_path / "f.nii.gz").exists()
    assert main(_forecast(assets, folder, [t + 100], tmp_path / "f.nii.gz", "--allow-other-subject")) == 0
    assert capsys.readouterr().err.count("does not look like the same subject") == 1


def _mirrored(tmp: Path, a) -> Path:
    """The test subject with its last session mirrored left-right by its header (the voxels unchanged)."""
    folder = _subject(tmp, a)
    last = folder / f"{_times(folder)[-1][0]}.nii.gz"
    img = nib.load(last)
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = img.shape[0] - 1  # mirrored about the grid's centre: the head stays where it was
    nib.save(nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine @ flip), str(last))
    return folder


def test_L8_last_session_mirrored_by_its_header(assets, tmp_path, capsys, no_model):
    folder = _mirrored(tmp_path, assets)
    t = max(t for _, t in _times(folder))
    _run("L8", _forecast(assets, folder, [t + 100], tmp_path / "f.nii.gz"), 2, capsys)


def test_L13_preprocess_refuses_a_mirrored_session(assets, tmp_path, capsys):
    """The same handedness check in `medsci preprocess longitudinal` (a batch: the good subject is still done)."""
    bad, good = _mirrored(tmp_path, assets), tmp_path / "sub-000"
    shutil.copytree(assets["other"], good)
    _run("L13", ["preprocess", "longitudinal", "--config", str(REPO / "configs" / "test.yaml"), "--subjects",
                 str(good), str(bad), "--out", str(tmp_path / "prep")], 1, capsys)
    assert (tmp_path / "prep" / "sub-000.npz").is_file() and not (tmp_path / "prep" / "sub-002.npz").exists()


def test_L9_other_voxel_size_refused_from_the_headers(assets, tmp_path, capsys, no_model, monkeypatch):
    from medsci.tasks.longitudinal.demo import write_demo_subjects
    import medsci.tasks.longitudinal.preprocess as preprocess

    monkeypatch.setattr(preprocess, "preprocess_subject", lambda *a, **k: pytest.fail("registered first"))
    write_demo_subjects(tmp_path / "fine", n=1, seed=3, shape=(48, 72, 48), spacing=(4.0, 4.0, 4.0))
    folder = tmp_path / "fine" / "sub-000"
    t = max(t for _, t in _times(folder))
    _run("L9", _forecast(assets, folder, [t + 100], tmp_path / "f.nii.gz"), 2, capsys)


def test_L15_sessions_table_is_a_named_pipe(assets, tmp_path, capsys, no_model):
    """Opening a FIFO waits for a writer: it is refused by its name before it is opened, not reported missing."""
    folder = _subject(tmp_path, assets)
    t = max(t for _, t in _times(folder))
    (folder / "sessions.tsv").unlink()
    os.mkfifo(folder / "sessions.tsv")
    out = _run("L15", _forecast(assets, folder, [t + 100], tmp_path / "f.nii.gz"), 2, capsys)
    assert "no sessions.tsv" not in out and not (tmp_path / "f.nii.gz").exists()


def test_L16_session_volume_is_a_named_pipe(assets, tmp_path, capsys, no_model):
    folder = _subject(tmp_path, assets)
    rows = _times(folder)
    assert rows[1][0] == "ses-01"
    (folder / "ses-01.nii.gz").unlink()
    os.mkfifo(folder / "ses-01.nii.gz")
    out = _run("L16", _forecast(assets, folder, [rows[-1][1] + 100], tmp_path / "f.nii.gz"), 2, capsys)
    assert "no volume for session" not in out


# ------------------------------------------------------------------------------------------ workflow
def _workflow(tmp: Path, raw: Path) -> subprocess.CompletedProcess:
    data = yaml.safe_load((REPO / "configs" / "test.yaml").read_text(encoding="utf-8"))
    data["defaults"] = str(REPO / "configs" / data["defaults"])
    data["longitudinal"]["data"]["raw_dir"] = str(raw)
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(cfg),
                           "--config", f"results={tmp / 'results'}", "--",
                           str(tmp / "results" / "test" / "longitudinal" / "evaluation" / "summary.json")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def _raw(tmp: Path, a, bad: int) -> Path:
    raw = tmp / "raw"
    for i in range(3):
        shutil.copytree(a["root"] / "raw" / f"sub-{i:03d}", raw / f"sub-{i:03d}")
    for i in range(bad):
        (raw / f"sub-{i:03d}" / "sessions.tsv").write_text("session_id\tdays\nses-00\t0\n", encoding="utf-8")
    return raw


def test_L10_workflow_names_a_refused_subject(assets, tmp_path):
    r = _workflow(tmp_path, _raw(tmp_path, assets, bad=1))
    assert r.returncode == 0, r.stdout + r.stderr
    assert_promised(ROWS["L10"], r.stdout + r.stderr)


def test_L11_workflow_with_every_subject_refused(assets, tmp_path):
    r = _workflow(tmp_path, _raw(tmp_path, assets, bad=3))
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "IndexError" not in out and "InputFunctionException" not in out, out
    assert_promised(ROWS["L11"], out)


def test_L12_evaluation_report_records_refused_subjects(tmp_path, capsys):
    """`medsci evaluate longitudinal --data RAW` (what the workflow runs) names the refused subjects."""
    from medsci.tasks.longitudinal.commands import refused_subjects
    from medsci.tasks.longitudinal.report import markdown, summarise

    raw = tmp_path / "raw"
    (raw / "sub-bad").mkdir(parents=True)
    (raw / "sub-bad" / "sessions.tsv").write_text("session_id\tdays\nses-00\t0\n", encoding="utf-8")
    refused = refused_subjects(raw)
    assert_promised(ROWS["L12"], capsys.readouterr().err)
    s = summarise([], {}, {}, refused=refused)
    assert s["refused_subjects"][0]["folder"].endswith("sub-bad") and "sub-bad" in markdown(s)


# ------------------------------------------------------------------------------------------ baselines
def test_baseline_extrapolation_is_capped_and_reported():
    from medsci.tasks.longitudinal.baselines import (MAX_EXTRAPOLATION, deformation_extrapolation,
                                                     extrapolation_factor, linear_extrapolation)
    from medsci.tasks.longitudinal.report import markdown, summarise

    rng = np.random.default_rng(0)
    a = rng.random((12, 12, 12)).astype(np.float32)
    b = a + 0.01 * rng.standard_normal(a.shape).astype(np.float32)
    times = [0.0, 300.0, 304.0]  # the last two sessions 4 days apart, the target 198 days later: 49.5 intervals
    assert extrapolation_factor(times, 502.0) == (49.5, MAX_EXTRAPOLATION)
    capped = linear_extrapolation([a, a, b], times, 502.0)
    at_cap = linear_extrapolation([a, a, b], times, 304.0 + 4 * MAX_EXTRAPOLATION)
    np.testing.assert_allclose(capped, at_cap)
    assert np.abs(capped - b).max() <= MAX_EXTRAPOLATION * np.abs(b - a).max() + 1e-6
    np.testing.assert_allclose(deformation_extrapolation([a, a, b], times, 502.0),
                               deformation_extrapolation([a, a, b], times, 304.0 + 4 * MAX_EXTRAPOLATION))
    s = summarise([], {}, {}, clamped=[{"subject": "sub-x", "session": 3, "asked": 49.5, "used": 3.0}])
    assert s["baseline_extrapolation"]["clamped"][0]["asked"] == 49.5
    assert "capped at 3 last intervals for: sub-x session 3 (49.5 intervals ahead)" in markdown(s)


def test_catalogue_rows_match_tests():
    tests = {name.split("_")[1] for name in globals() if name.startswith("test_L")}
    assert sorted(ROWS) == sorted(tests), sorted(set(ROWS) ^ tests)

"""The "Clinical studies: alignment and grids" section of the bad-input catalogue (docs/bad-input.md).

Clinical studies as they come from a scanner: contrasts whose headers do not line up (a shifted origin, a
left-right flip, head motion between DICOM series), series on coarser or thicker grids, and reruns of DICOM
batches. Each test runs ``medsci synthesize`` in-process on tiny demo cases (36 x 40 x 30 voxels) with a
1-step checkpoint and checks the exit code, the promised message, no traceback, and the case record.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from catalogue import assert_promised, section_rows
from helpers import tiny_synthesis
from medsci.cli import main
from test_dicom import _write_source

ROOT = Path(__file__).resolve().parents[1]
SECTION = ("Clinical studies: alignment and grids", "C")
ROWS = section_rows(*SECTION)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Two demo cases and a synthesis checkpoint trained for one step (only its geometry matters here)."""
    raw, ids, cfg, ck = tiny_synthesis(tmp_path_factory.mktemp("clinical_assets"), "model")
    return {"raw": raw, "ids": ids, "ck": ck, "spacing": cfg.preprocess.spacing}


def _case(a, dest: Path, name: str, src: int = 0, drop: str = "t2f") -> Path:
    """A demo case without ``drop``: ``dest/name/name-<mod>.nii.gz``."""
    case = dest / name
    case.mkdir(parents=True)
    sid = a["ids"][src]
    for mod in ("t1n", "t1c", "t2w", "t2f"):
        if mod != drop:
            shutil.copyfile(a["raw"] / sid / f"{sid}-{mod}.nii.gz", case / f"{name}-{mod}.nii.gz")
    return case


def _edit(path: Path, affine=None, data=None) -> None:
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) if data is None else data,
                             img.affine if affine is None else affine), path)


def _run(a, drop: Path, out: Path, *extra: str) -> int:
    return main(["synthesize", "--checkpoint", str(a["ck"]), "--input", str(drop), "--output", str(out),
                 "--no-progress", "--no-qc", "--steps", "1", "--n-samples", "1", *extra])


def _record(out: Path, case: str) -> dict:
    return json.loads((out / case / f"{case}.json").read_text(encoding="utf-8"))


def _check(rid: str, code: int, capsys, want: int) -> str:
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert code == want, output
    assert "Traceback" not in output
    assert_promised(ROWS[rid], output)
    return output


def _shift_x(path: Path, mm: float) -> None:
    aff = nib.load(path).affine.copy()
    aff[0, 3] += mm  # world x (RAS): left-right
    _edit(path, affine=aff)


def _flip_header(path: Path) -> None:
    """The header mirrored left-right about the volume's centre: same voxels, a mirrored world image."""
    img = nib.load(path)
    aff = img.affine.copy()
    centre = aff[:3, :3] @ ((np.array(img.shape) - 1) / 2.0) + aff[:3, 3]
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = 2.0 * centre[0]
    _edit(path, affine=flip @ aff)


def _motion(affine: np.ndarray, degrees=(2.0, -2.0, 1.5), mm=(2.0, -1.0, 1.0)) -> np.ndarray:
    """``affine`` moved rigidly (rotation about the volume's centre, then a shift): a head that moved."""
    from scipy.spatial.transform import Rotation

    centre = affine[:3, :3] @ (np.array([35, 39, 29]) / 2.0) + affine[:3, 3]
    move = np.eye(4)
    move[:3, :3] = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix()
    move[:3, 3] = centre - move[:3, :3] @ centre + np.array(mm)
    return move @ affine


def test_shifted_header_is_refused_without_registration(assets, tmp_path, capsys):
    """C1: a t2w whose header is 40 mm off in x ran with exit 0 and no warning (correlation -0.11)."""
    drop = tmp_path / "drop"
    _case(assets, drop, "good", src=1)
    case = _case(assets, drop, "shift40")
    _shift_x(case / "shift40-t2w.nii.gz", 40.0)
    code = _run(assets, drop, tmp_path / "out")
    _check("C1", code, capsys, 1)
    assert (tmp_path / "out" / "good" / "good_t2f_SYNTHETIC.nii.gz").is_file()
    record = _record(tmp_path / "out", "shift40")
    assert record["status"] == "refused"
    assert record["contrasts"] == {m: f"shift40-{m}.nii.gz" for m in ("t1n", "t1c", "t2w")}


def test_shifted_header_is_corrected_by_registration(assets, tmp_path, capsys):
    """C2: with --register the 40 mm shift is found, undone, reported and recorded."""
    drop = tmp_path / "drop"
    case = _case(assets, drop, "shift40")
    _shift_x(case / "shift40-t2w.nii.gz", 40.0)
    code = _run(assets, drop, tmp_path / "out", "--register")
    _check("C2", code, capsys, 0)
    reg = _record(tmp_path / "out", "shift40")["registration"]
    t2w = reg["contrasts"]["t2w"]
    assert reg["registered"] and reg["reference"] == "t1n" and t2w["applied"]
    assert abs(t2w["shift_mm"][0] - 40.0) < 2.0 and t2w["nmi_after"] > t2w["nmi_before"] + 0.1
    summary = (tmp_path / "out" / "summary.csv").read_text(encoding="utf-8")
    assert "t2w: moved" in summary and "shift40-t2w.nii.gz" in summary


def test_left_right_flipped_header_is_refused(assets, tmp_path, capsys):
    """C3: a t2w with a left-right mirrored header (correlation 0.18 before) is refused, registration or not."""
    drop = tmp_path / "drop"
    case = _case(assets, drop, "flipped")
    _flip_header(case / "flipped-t2w.nii.gz")
    code = _run(assets, drop, tmp_path / "out")
    _check("C3", code, capsys, 1)
    assert _record(tmp_path / "out", "flipped")["status"] == "refused"
    assert _run(assets, drop, tmp_path / "out2", "--register") == 1
    assert "looks left-right flipped" in _record(tmp_path / "out2", "flipped")["reason"]


def _dicom_case(a, dest: Path, moved: dict | None = None) -> None:
    sid = a["ids"][0]
    for n, (mod, desc) in enumerate((("t1n", "T1 pre"), ("t1c", "T1 POST GD"), ("t2w", "T2 TSE AX"),
                                     ("localizer", "Localizer"))):
        img = nib.load(a["raw"] / sid / f"{sid}-{'t1n' if mod == 'localizer' else mod}.nii.gz")
        affine = img.affine if mod not in (moved or {}) else moved[mod](img.affine)
        _write_source(dest / desc.replace(" ", "_"), desc, affine=affine,
                      volume=np.asarray(img.dataobj, dtype=np.float32), name="IM{k:04d}",
                      series_uid=f"1.2.826.0.1.3680043.8.498.{n + 1}")


def test_dicom_motion_between_series_is_registered_and_recorded(assets, tmp_path, capsys):
    """C4: 2-3 degrees and 2 mm of head motion between DICOM series: registered by default, reported."""
    drop = tmp_path / "drop"
    _dicom_case(assets, drop / "moved", {"t2w": _motion})
    code = _run(assets, drop, tmp_path / "out")
    _check("C4", code, capsys, 0)
    record = _record(tmp_path / "out", "moved")
    t2w = record["registration"]["contrasts"]["t2w"]
    assert record["registration"]["registered"] and t2w["applied"]
    assert 2.0 < t2w["rotation_deg"] < 5.0 and t2w["nmi_after"] > t2w["nmi_before"]
    assert record["contrasts"]["t2w"].startswith("series 'T2 TSE AX'")
    assert any("Localizer" in note for note in record["ignored"])
    assert "T2 TSE AX" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def _thicker_slices(path: Path, thickness: float) -> None:
    """The contrast resampled in place to slices ``thickness`` mm apart (a coarser acquisition)."""
    from medsci.preprocessing.geometry import resample_to_spacing

    img = nib.load(path)
    spacing = list(img.header.get_zooms()[:3])
    spacing[2] = thickness
    arr, aff = resample_to_spacing(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine, spacing, "bilinear")
    nib.save(nib.Nifti1Image(arr[0], aff), path)


def test_a_coarse_contrast_other_than_the_first_is_refused(assets, tmp_path, capsys):
    """C5: a t2w on slices 2.5x thicker than the model's was upsampled without a word (only the first contrast
    was checked)."""
    drop = tmp_path / "drop"
    _case(assets, drop, "good", src=1)
    case = _case(assets, drop, "thick")
    _thicker_slices(case / "thick-t2w.nii.gz", 2.5 * assets["spacing"][2])
    code = _run(assets, drop, tmp_path / "out")
    _check("C5", code, capsys, 1)
    assert (tmp_path / "out" / "good" / "good_t2f_SYNTHETIC.nii.gz").is_file()


def test_the_brain_mask_comes_from_the_reference_contrast(assets, tmp_path, capsys):
    """C6: a t2w on a thicker (allowed) grid grew the union mask by 7-27 %: voxels where the other contrasts
    are 0 collapsed their clip window. The mask is now the reference's: the synthesis stays inside its brain."""
    drop = tmp_path / "drop"
    case = _case(assets, drop, "thick")
    _thicker_slices(case / "thick-t2w.nii.gz", 1.8 * assets["spacing"][2])
    code = _run(assets, drop, tmp_path / "out")
    _check("C6", code, capsys, 0)
    made = np.asarray(nib.load(tmp_path / "out" / "thick" / "thick_t2f_SYNTHETIC.nii.gz").dataobj)
    brain = np.asarray(nib.load(case / "thick-t1n.nii.gz").dataobj) > 0
    assert (made[~brain] != 0).sum() == 0 and (made[brain] != 0).mean() > 0.9


def test_a_dicom_batch_rerun_skips_cases_done(assets, tmp_path, capsys):
    """C7: a rerun of a DICOM batch recomputed every case (the skip check wanted the _DICOM folder to be a
    file); a NIfTI rerun skipped."""
    drop = tmp_path / "drop"
    _dicom_case(assets, drop / "patient")
    out = tmp_path / "out"
    assert _run(assets, drop, out) == 0
    made = out / "patient" / "patient_t2f_SYNTHETIC.nii.gz"
    stamp = made.stat().st_mtime_ns
    capsys.readouterr()
    code = _run(assets, drop, out)
    _check("C7", code, capsys, 0)
    assert made.stat().st_mtime_ns == stamp


def test_catalogue_rows_match_tests():
    """Every row of the section has a test (its docstring starts with the row id) and every test a row."""
    assert sorted(ROWS, key=lambda r: int(r[1:])) == [f"C{i}" for i in range(1, len(ROWS) + 1)] and len(ROWS) >= 10
    ids = [fn.__doc__.split(":", 1)[0] for name, fn in globals().items()
           if name.startswith("test_") and fn is not test_catalogue_rows_match_tests]
    assert sorted(ids) == sorted(ROWS), (sorted(set(ids) ^ set(ROWS)), "rows without tests or tests without rows")


def test_colliding_case_ids_first_in_the_batch_are_refused_alone(assets, tmp_path, capsys):
    """C8: refused before its inputs were read, a case must neither crash the batch nor report the contrasts of
    the case before it."""
    drop = tmp_path / "drop"
    for name in ("Case", "case", "good"):
        _case(assets, drop, name)
    code = _run(assets, drop, tmp_path / "out")
    _check("C8", code, capsys, 1)
    assert (tmp_path / "out" / "good" / "good_t2f_SYNTHETIC.nii.gz").is_file()
    for name in ("Case", "case"):
        record = _record(tmp_path / "out", name)
        assert record["status"] == "refused" and not record["contrasts"], record


# ------------------------------------------------------------------------------------------ training domain
def _unseen_case(dest: Path, name: str) -> Path:
    """A demo case of another seed than the checkpoint's training cases, without t2f: in the model's domain."""
    from medsci.tasks.synthesis.demo import write_brats_dataset

    (src,) = write_brats_dataset(dest.parent / f"{name}_src", cases=1, seed=7, shape=(36, 40, 30))
    case = dest / name
    case.mkdir(parents=True)
    for mod in ("t1n", "t1c", "t2w"):
        shutil.copyfile(src / f"{src.name}-{mod}.nii.gz", case / f"{name}-{mod}.nii.gz")
    return case


def _domain_warnings(record: dict) -> list[str]:
    return [w for w in record["warnings"] if "training data" in w or "training domain" in w]


def test_an_inverted_contrast_is_out_of_the_training_domain(assets, tmp_path, capsys):
    """C9: a t2w with its in-brain intensities inverted (a T1-like T2) was synthesised without a word; now the
    case record, summary.csv and report.html warn that it lies outside the training data. A case the model has
    not seen but from the same kind of data passes; a checkpoint without training_data is not checked."""
    drop = tmp_path / "drop"
    _unseen_case(drop, "good")
    case = _case(assets, drop, "inverted")
    path = case / "inverted-t2w.nii.gz"
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    brain = data > 0
    _edit(path, data=np.where(brain, 1.01 * data.max() - data, 0).astype(np.float32))
    out = tmp_path / "out"
    output = _check("C9", _run(assets, drop, out), capsys, 0)
    assert output.count("outside the training data") == 2  # intensities and the t1n-t2w relation, once each
    assert _domain_warnings(_record(out, "good")) == []
    record = _record(out, "inverted")
    assert record["status"] == "done" and len(_domain_warnings(record)) == 2
    assert "outside the training data" in (out / "summary.csv").read_text(encoding="utf-8")
    assert "outside the training data" in (out / "report.html").read_text(encoding="utf-8")
    training = json.loads((assets["ck"] / "config.json").read_text(encoding="utf-8"))["training_data"]
    assert training["cases"] == 2 and training["correlation"]["t1n-t2w"][1] < -0.5  # T1 and T2 anti-correlate
    from medsci.tasks.synthesis.domain import domain_warnings

    image, mask = np.ones((4, 4, 4, 4), np.float32), np.ones((4, 4, 4), bool)
    assert domain_warnings({"intensity": [1]}, image, mask, ["t1n"], {}) == [
        "training domain not checked: the checkpoint's training_data in config.json is not readable"]

    old = tmp_path / "old_model"
    shutil.copytree(assets["ck"], old)
    config = json.loads((old / "config.json").read_text(encoding="utf-8"))
    del config["training_data"]
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    code = main(["synthesize", "--checkpoint", str(old), "--input", str(drop), "--output", str(tmp_path / "old"),
                 "--no-progress", "--no-qc", "--steps", "1", "--n-samples", "1"])
    output = capsys.readouterr().err
    assert code == 0 and "training d" not in output and "Traceback" not in output, output
    assert _domain_warnings(_record(tmp_path / "old", "inverted")) == []


def test_a_brain_far_smaller_than_the_training_brains_is_out_of_the_domain(assets, tmp_path, capsys):
    """C10: voxel sizes 0.6x the true ones in every header (a brain of 0.22x the volume) were synthesised without
    a word; the record now warns that the brain volume lies far outside the training brains'."""
    drop = tmp_path / "drop"
    case = _case(assets, drop, "small")
    for mod in ("t1n", "t1c", "t2w"):
        path = case / f"small-{mod}.nii.gz"
        affine = nib.load(path).affine.copy()
        affine[:3, :3] *= 0.6
        _edit(path, affine=affine)
    out = tmp_path / "out"
    _check("C10", _run(assets, drop, out), capsys, 0)
    record = _record(out, "small")
    assert record["status"] == "done" and any("brain volume" in w for w in _domain_warnings(record))

"""`medsci synthesize` on clinical folders: geometry (resampling to the model's spacing and back), refusals
with reasons, DICOM in and out, reruns by checksum, permissions, and byte-identical reruns."""

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsci.cli import main
from helpers import tree_checksums
from medsci.preprocessing.geometry import resample_to_grid, resample_to_spacing
from test_dicom import _write_source
from test_synthesis import trained  # noqa: F401  (the tiny trained checkpoint, built once per module)


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _copy_case(trained, case: str, dest: Path, drop: str = "t2f", spacing=None) -> Path:  # noqa: F811
    """A raw demo case without ``drop`` (and its labels), optionally resampled to ``spacing`` mm."""
    dest.mkdir(parents=True)
    for mod in ("t1n", "t1c", "t2w", "t2f"):
        if mod == drop:
            continue
        img = nib.load(trained["raw"] / case / f"{case}-{mod}.nii.gz")
        if spacing is None:
            nib.save(img, dest / f"{dest.name}-{mod}.nii.gz")
            continue
        arr, aff = resample_to_spacing(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine, spacing, "bilinear")
        nib.save(nib.Nifti1Image(arr[0], aff), dest / f"{dest.name}-{mod}.nii.gz")
    return dest


def _synth(out: Path, case: str, target: str = "t2f") -> nib.Nifti1Image:
    return nib.load(out / case / f"{case}_{target}_SYNTHETIC.nii.gz")


def _rows(out: Path) -> dict:
    return {r["case_id"]: r for r in csv.DictReader((out / "summary.csv").open(encoding="utf-8"))}


def test_a_case_at_another_spacing_is_resampled_and_mapped_back(trained, tmp_path):  # noqa: F811
    """The model was trained at ~6.7 mm: a 2x finer copy of a case must give nearly the same synthesis, filling
    the brain, not a crop of the middle of the head (what inference did before it resampled)."""
    case = trained["ids"][3]
    drop = tmp_path / "in"
    _copy_case(trained, case, drop / "native")
    native_spacing = nib.load(drop / "native" / "native-t1n.nii.gz").header.get_zooms()
    _copy_case(trained, case, drop / "fine", spacing=[s / 2 for s in native_spacing])
    out = tmp_path / "out"
    inputs, model = tree_checksums(drop), tree_checksums(trained["model"])
    assert main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop), "--output", str(out),
                 "--no-progress"]) == 0
    assert tree_checksums(drop) == inputs and tree_checksums(trained["model"]) == model
    coarse, fine = _synth(out, "native"), _synth(out, "fine")
    ref = nib.load(drop / "fine" / "fine-t1n.nii.gz")
    assert fine.shape == ref.shape and np.allclose(fine.affine, ref.affine, atol=1e-5)
    brain_fine = np.asarray(ref.dataobj) > 0
    assert (np.asarray(fine.dataobj)[brain_fine] > 0).mean() > 0.97  # fills the brain
    back = resample_to_grid(np.asarray(fine.dataobj, dtype=np.float32), fine.affine, coarse.affine, coarse.shape,
                            "bilinear")
    brain = np.asarray(nib.load(drop / "native" / "native-t1n.nii.gz").dataobj) > 0
    a, b = np.asarray(coarse.dataobj)[brain], back[brain]
    assert np.corrcoef(a, b)[0, 1] > 0.98  # measured 0.999
    assert np.abs(a - b).mean() < 0.05 * a.mean()  # measured 1.6 %
    rows = _rows(out)
    assert rows["fine"]["warnings"].startswith("the synthesis has the model's resolution")
    assert rows["native"]["warnings"] == ""
    assert b"SYNTHETIC t2f" in fine.header["descrip"].tobytes()


def test_batch_refuses_bad_cases_with_reasons_and_reruns_by_checksum(trained, tmp_path, capsys):  # noqa: F811
    ids, raw = trained["ids"], trained["raw"]
    drop = tmp_path / "in"
    good = _copy_case(trained, ids[3], drop / "good", drop="t1c")
    _copy_case(trained, ids[2], drop / "two-missing", drop="t2f")
    (drop / "two-missing" / "two-missing-t2w.nii.gz").unlink()
    shutil.copytree(raw / ids[1], drop / "complete")
    _copy_case(trained, ids[2], drop / "coarse", spacing=(20.0, 20.0, 20.0))  # 3x the model's voxels
    apart = _copy_case(trained, ids[2], drop / "apart")
    img = nib.load(apart / "apart-t2w.nii.gz")
    shifted = img.affine.copy()
    shifted[:3, 3] += 500.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted), apart / "apart-t2w.nii.gz")
    broken = _copy_case(trained, ids[2], drop / "broken")
    (broken / "broken-t1n.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    _copy_case(trained, ids[2], drop / "dup a")
    _copy_case(trained, ids[2], drop / "dup_a")
    before = tree_checksums(drop)

    out = tmp_path / "out"
    old_umask = os.umask(0o027)
    try:
        code = main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop), "--output", str(out),
                     "--no-progress"])
    finally:
        os.umask(old_umask)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    rows = _rows(out)
    assert rows["good"]["status"] == "done" and rows["good"]["target"] == "t1c"
    reasons = {cid: r["reason"] for cid, r in rows.items() if r["status"] == "refused"}
    assert set(reasons) == {"two-missing", "complete", "coarse", "apart", "broken", "dup_a"}
    assert "t2w and t2f are missing" in reasons["two-missing"]
    assert "nothing to synthesise" in reasons["complete"]
    assert "coarser than the model" in reasons["coarse"]
    assert "do not overlap in space" in reasons["apart"]
    assert "cannot read NIfTI" in reasons["broken"]
    assert "duplicate case id" in reasons["dup_a"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "SYNTHETIC" in page and "do not overlap in space" in page and "data:image/png;base64," in page
    made = out / "good" / "good_t1c_SYNTHETIC.nii.gz"
    assert (out / "good" / "good_t1c_SYNTHETIC_std.nii.gz").is_file() and (out / "good" / "good_qc.png").is_file()
    assert made.stat().st_mode & 0o777 == 0o640  # the umask's permissions, not mkstemp's 0600
    assert tree_checksums(drop) == before  # inputs untouched
    assert not any(p.name.endswith(".nii.gz") and "SYNTHETIC" in p.name for p in drop.rglob("*"))

    # A rerun skips the finished case; a changed input is redone.
    stamp = made.stat().st_mtime_ns
    assert main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop), "--output", str(out),
                 "--case", "good", "--no-progress"]) == 0
    assert made.stat().st_mtime_ns == stamp and "done earlier" in capsys.readouterr().out
    img = nib.load(good / "good-t2w.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1.5, img.affine), good / "good-t2w.nii.gz")
    assert main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop), "--output", str(out),
                 "--case", "good", "--no-progress"]) == 0
    assert made.stat().st_mtime_ns != stamp

    # The output may not live inside the input.
    assert main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop),
                 "--output", str(drop / "results")]) == 2
    assert "inside the input folder" in capsys.readouterr().err and not (drop / "results").exists()
    before["good/good-t2w.nii.gz"] = (tree_checksums(good)["good-t2w.nii.gz"][0], before["good/good-t2w.nii.gz"][1])
    assert tree_checksums(drop) == before  # only the file this test changed on purpose


def _as_dicom(trained, case: str, dest: Path, descriptions: dict) -> None:  # noqa: F811
    for mod, desc in descriptions.items():
        img = nib.load(trained["raw"] / case / f"{case}-{mod}.nii.gz")
        _write_source(dest / desc.replace(" ", "_"), desc, affine=img.affine,
                      volume=np.asarray(img.dataobj, dtype=np.float32), name="IM{k:04d}")


def test_dicom_case_gets_a_derived_synthetic_series_and_reruns_are_byte_identical(trained, tmp_path):  # noqa: F811
    import pydicom

    from medsci.io.dicom import find_series, read_series

    case = trained["ids"][3]
    drop = tmp_path / "in"
    _as_dicom(trained, case, drop / "patient1", {"t1n": "Sag T1 pre", "t1c": "T1 POST GD", "t2w": "T2 TSE AX"})
    _as_dicom(trained, case, drop / "mixed", {"t1n": "T1 pre", "t1c": "T1 POST GD", "t2w": "T1 POST GAD"})
    outs = [tmp_path / "out1", tmp_path / "out2"]
    inputs = tree_checksums(drop)
    for out in outs:
        assert main(["synthesize", "--checkpoint", str(trained["model"]), "--input", str(drop), "--output",
                     str(out), "--no-progress"]) == 1  # the mixed folder is refused
    assert tree_checksums(drop) == inputs
    rows = _rows(outs[0])
    assert rows["patient1"]["status"] == "done" and rows["patient1"]["target"] == "t2f"
    assert rows["mixed"]["status"] == "refused" and "mixing series" in rows["mixed"]["reason"]

    series_dir = outs[0] / "patient1" / "patient1_t2f_SYNTHETIC_DICOM"
    (derived,) = find_series(series_dir)
    (source,) = [s for s in find_series(drop / "patient1") if s.description == "Sag T1 pre"]
    vol = read_series(derived)
    nifti = _synth(outs[0], "patient1")
    ref = read_series(source)
    np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-4)
    np.testing.assert_allclose(nifti.affine, ref.affine, atol=1e-4)
    data = np.asarray(nifti.dataobj)
    assert np.abs(vol.array - data).max() <= 1e-4 * max(float(data.max()), 1.0)
    ds = pydicom.dcmread(derived.files[0])
    src = pydicom.dcmread(source.files[0])
    assert "DERIVED" in ds.ImageType and "SYNTHETIC" in ds.SeriesDescription
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.PatientID == src.PatientID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID

    def digests(out):
        return {str(p.relative_to(out)): _digest(p) for p in sorted(out.rglob("*"))
                if p.is_file() and p.suffix != ".json" and p.name not in ("summary.csv", "report.html")}

    first, second = digests(outs[0]), digests(outs[1])
    assert len(first) > 20 and first == second  # same inputs, checkpoint, seed -> same bytes (NIfTI, DICOM, PNG)


def test_a_model_for_other_contrasts_or_without_recorded_spacing_refuses_the_case(trained, tmp_path):  # noqa: F811
    drop = tmp_path / "in"
    _copy_case(trained, trained["ids"][3], drop / "p1")
    for name, edit, reason in (
        ("t1c-only", lambda cfg: cfg.update(targets=["t1c"]), "the model synthesises t1c, not t2f"),
        ("no-geometry", lambda cfg: (cfg.pop("geometry"), cfg["preprocess"].update(spacing=None)),
         "does not record the voxel spacing"),
    ):
        model = tmp_path / name
        shutil.copytree(trained["model"], model)
        cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
        edit(cfg)
        (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
        out = tmp_path / f"out-{name}"
        inputs = tree_checksums(drop), tree_checksums(model)
        assert main(["synthesize", "--checkpoint", str(model), "--input", str(drop), "--output", str(out),
                     "--no-progress"]) == 1
        assert (tree_checksums(drop), tree_checksums(model)) == inputs
        row = _rows(out)["p1"]
        assert row["status"] == "refused" and reason in row["reason"]
        assert not list(out.rglob("*.nii.gz"))

"""The "Plausibility of radiographs, cubes, metrics and labels" section of the bad-input catalogue
(docs/bad-input.md): inputs that read fine but cannot be what the verb expects (issue 27). One test per row
through the real entry point (``medsci.cli.main`` in-process): exit code, no traceback, the promised message;
``test_catalogue_rows_match_tests`` keeps the table and the tests in step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from catalogue import assert_promised, row_registry, section_rows
from medsci.cli import main
from test_bad_input_files import _grey_rows, _png
from test_radiograph_io import _make_dicom

TITLE, PREFIX = "Plausibility of radiographs, cubes, metrics and labels", "P"
RAMP12 = (np.arange(20 * 20).reshape(20, 20) * 10).astype(np.uint16)  # a 12-bit grey ramp


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """An untrained 16x16 rotation checkpoint (only a run to the end is tested) and one BraTS-like case."""
    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.networks import build_network
    from medsci.tasks.rotation.pipeline import checkpoint_config
    from medsci.tasks.synthesis.demo import write_brats_dataset
    from test_rotation import _small_cfg

    root = tmp_path_factory.mktemp("plausibility_assets")
    ckcfg = checkpoint_config(_small_cfg())
    net = build_network(ckcfg["model"])
    rot_ck = save_checkpoint(root / "rotation_model", ckcfg, net, ema=net)
    raw = root / "brats"
    write_brats_dataset(raw, cases=1, seed=3, shape=(36, 40, 30))
    return {"rot_ck": rot_ck, "case": next(p for p in raw.iterdir() if p.is_dir())}


@dataclass
class Row:
    argv: list[str]
    code: int
    check: Callable[[str], None] | None = None  # what else the row promises (outputs, records)


ROWS, row = row_registry()


# --- radiographs through `medsci rotate` ------------------------------------------------------------------
def _rotate(tmp: Path, a: dict, image: Path, out: str = "out.png") -> list[str]:
    return ["rotate", "--checkpoint", str(a["rot_ck"]), "--input", str(image), "--angles", "0,0,5",
            "--output", str(tmp / out)]


@row("P01")
def _(tmp, a):  # an axial CT slice as DICOM: its Modality says so
    return Row(_rotate(tmp, a, _make_dicom(tmp / "ct.dcm", RAMP12, modality="CT"), "out.dcm"), 2)


@row("P02")
def _(tmp, a):  # a 1-bit PNG (a mask, a scanned line drawing)
    rows = b"".join(b"\x00" + bytes([0b10101010, 0b11001100, 0b11110000]) for _ in range(20))
    return Row(_rotate(tmp, a, _png(tmp / "bits.png", 20, 20, 1, 0, rows)), 2)


@row("P03")
def _(tmp, a):  # an axial CT slice in HU as NIfTI: air around a round body with a bone
    g = np.mgrid[:32, :32] - 15.5
    r = np.hypot(*g)
    hu = np.where(r < 12, 40.0, -1000.0) + np.where(r < 3, 660.0, 0.0) + g[0]  # a little texture
    path = tmp / "axial.nii.gz"
    nib.save(nib.Nifti1Image(hu[:, :, None].astype(np.float32), np.eye(4)), str(path))
    return Row(_rotate(tmp, a, path, "out.nii.gz"), 2)


@row("P04")
def _(tmp, a):  # an angiography frame: an X-ray projection, but not a plain radiograph
    src = _make_dicom(tmp / "xa.dcm", RAMP12, modality="XA", extra={"ImagerPixelSpacing": ["22.4", "22.4"]})

    def check(output):
        record = json.loads((tmp / "out.dcm.json").read_text())
        assert any("DICOM modality 'XA'" in w for w in record["warnings"]), record["warnings"]
        import pydicom

        assert "DICOM modality 'XA'" in pydicom.dcmread(tmp / "out.dcm").ImageComments
        assert output.count("DICOM modality 'XA'") == 1  # printed once
    return Row(_rotate(tmp, a, src, "out.dcm"), 0, check)


@row("P10")
def _(tmp, a):  # a 20 px image of 0.15 mm (3 mm across) on a model of 448 mm views: a wrong spacing or a detail crop
    return Row(_rotate(tmp, a, _make_dicom(tmp / "small.dcm", RAMP12, extra={"ImagerPixelSpacing": ["0.15", "0.15"]}),
                       "out.dcm"), 2)


@row("P11")
def _(tmp, a):  # 224 mm across (a hand or a child's chest on an adult chest model): rotated, warned
    src = _make_dicom(tmp / "hand.dcm", RAMP12, extra={"ImagerPixelSpacing": ["11.2", "11.2"]})

    def check(output):
        record = json.loads((tmp / "out.dcm.json").read_text())
        assert any("224x224 mm, 50 %" in w for w in record["warnings"]), record["warnings"]
        assert record["resampling"]["padded_model_pixels"] == {"top": 4, "bottom": 4, "left": 4, "right": 4}
    return Row(_rotate(tmp, a, src, "out.dcm"), 0, check)


@row("P12")
def _(tmp, a):  # a lateral chest view on a model of frontal views: rotated, warned in the JSON and the DICOM
    src = _make_dicom(tmp / "lat.dcm", RAMP12, extra={"ImagerPixelSpacing": ["22.4", "22.4"], "ViewPosition": "LL"})

    def check(output):
        record = json.loads((tmp / "out.dcm.json").read_text())
        assert any(w.startswith("ViewPosition 'LL'") for w in record["warnings"]), record["warnings"]
        import pydicom

        assert "ViewPosition 'LL'" in pydicom.dcmread(tmp / "out.dcm").ImageComments
    return Row(_rotate(tmp, a, src, "out.dcm"), 0, check)


@row("P13")
def _(tmp, a):  # --strict: a knee radiograph is refused before anything is written
    src = _make_dicom(tmp / "knee.dcm", RAMP12, extra={"ImagerPixelSpacing": ["22.4", "22.4"],
                                                       "BodyPartExamined": "KNEE"})

    def check(output):
        assert not (tmp / "out.dcm").exists() and not (tmp / "out.dcm.json").exists()
    return Row([*_rotate(tmp, a, src, "out.dcm"), "--strict"], 2, check)


# --- a .npy cube through `medsci interpolate` ----------------------------------------------------------------
@row("P05")
def _(tmp, a):  # a (time, crossline, inline) array: refused before the model is loaded
    from medsci.tasks.seismic.demo import make_seismic_cube

    cube = make_seismic_cube((12, 10, 48), np.random.default_rng(0))
    path = tmp / "txi.npy"
    np.save(path, np.ascontiguousarray(cube.transpose(2, 1, 0)))
    return Row(["interpolate", "--checkpoint", str(tmp / "no_model"), "--input", str(path), "--output",
                str(tmp / "out.npy")], 2)


# --- `medsci metrics` ---------------------------------------------------------------------------------------
@row("P06")
def _(tmp, a):  # volumes smaller than the 11-voxel SSIM window: SSIM n/a, the other metrics reported
    vol = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    for name, data in (("small.nii.gz", vol), ("pred.nii.gz", vol + 1)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp / name))

    def check(output):
        result = json.loads(output[output.index("{"):output.rindex("}") + 1])
        assert result["ssim"] is None and "11 voxels" in result["ssim_note"] and result["mse"] == 1.0
    return Row(["metrics", "--pred", str(tmp / "pred.nii.gz"), "--target", str(tmp / "small.nii.gz")], 0, check)


# --- segmentations through `medsci preprocess synthesis` ---------------------------------------------------
def _case_with_seg(tmp: Path, a: dict, name: str, relabel: Callable[[np.ndarray], np.ndarray]) -> Path:
    import shutil

    src = a["case"]
    dest = tmp / "cases" / name
    dest.mkdir(parents=True)
    for f in src.iterdir():
        target = dest / f.name.replace(src.name, name)
        if f.name.endswith("-seg.nii.gz"):
            img = nib.load(f)
            nib.save(nib.Nifti1Image(relabel(np.asarray(img.dataobj)).astype(np.uint8), img.affine), str(target))
        else:
            shutil.copyfile(f, target)
    return dest


def _preprocess(tmp: Path, case: Path) -> list[str]:
    return ["preprocess", "synthesis", "--case-dir", str(case), "--out", str(tmp / "prep")]


@row("P07")
def _(tmp, a):  # a 255 "segmentation" (a binary mask saved as 0/255)
    return Row(_preprocess(tmp, _case_with_seg(tmp, a, "mask255", lambda s: np.where(s > 0, 255, 0))), 2)


@row("P08")
def _(tmp, a):  # BraTS-2021 numbering: enhancing tumour 4, no 3: mapped to 3 with a note
    case = _case_with_seg(tmp, a, "brats21", lambda s: np.where(s == 3, 4, s))

    def check(output):
        sidecar = json.loads((tmp / "prep" / "brats21.json").read_text())
        assert any("label 4" in w for w in sidecar["warnings"]), sidecar["warnings"]
        assert "4" not in sidecar["seg_voxels"] and "3" in sidecar["seg_voxels"]
        with np.load(tmp / "prep" / "brats21.npz") as z:
            assert set(np.unique(z["seg"]).tolist()) <= {0, 1, 2, 3}
    return Row(_preprocess(tmp, case), 0, check)


@row("P09")
def _(tmp, a):  # labels 3 and 4 together: which one is the enhancing tumour cannot be told
    def relabel(s):
        s = s.copy()
        s[tuple(np.argwhere(s == 3)[0])] = 4
        return s
    return Row(_preprocess(tmp, _case_with_seg(tmp, a, "mixed34", relabel)), 2)


# ------------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("rid", sorted(ROWS), ids=sorted(ROWS))
def test_plausibility_row(rid, assets, tmp_path, capsys):
    spec = ROWS[rid](tmp_path, assets)
    code = main(spec.argv)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    assert code == spec.code, output
    assert_promised(section_rows(TITLE, PREFIX)[rid], output)
    if spec.code == 2:
        assert len([ln for ln in output.splitlines() if ": error: " in ln]) == 1, output
    if spec.check is not None:
        spec.check(output)


def test_catalogue_rows_match_tests():
    assert sorted(section_rows(TITLE, PREFIX)) == sorted(ROWS)


def test_plausible_inputs_pass_the_checks(tmp_path):
    """What the checks must not refuse: a plain CR ramp, demo DRRs' NIfTI, a cube in (il, xl, t) order."""
    from medsci.io.radiograph import read_radiograph
    from medsci.io.segy import check_axis_order
    from medsci.tasks.seismic.demo import make_seismic_cube

    assert read_radiograph(_make_dicom(tmp_path / "cr.dcm", RAMP12)).warnings == []
    assert read_radiograph(_png(tmp_path / "g.png", 20, 20, 8, 0, _grey_rows(20, 20, 1))).warnings == []
    for seed in range(4):
        check_axis_order(make_seismic_cube((12, 10, 48), np.random.default_rng(seed)), tmp_path / "c.npy")
    check_axis_order(np.random.default_rng(0).standard_normal((40, 30, 20)), tmp_path / "noise.npy")

"""MRI preprocessing: config, masks, masked percentiles, crop/pad, exact way back, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medsci.cli import main
from medsci.errors import ConfigError, InputError
from medsci.mri.cases import MODALITIES, load_case
from medsci.mri.preprocessing.bench import bench_preprocessing
from medsci.mri.preprocessing.stage import (PreprocessConfig, load_preprocessed, preprocess_case, save_native,
                                            summarize_preprocessed, to_native)

SHAPE = (52, 30, 22)
TARGET = (32, 40, 32)  # axis 0 crops the grid, axes 1 and 2 pad it


def _lps_affine() -> np.ndarray:
    aff = np.diag([-1.25, -1.0, 1.5, 1.0])
    aff[:3, 3] = [30.0, 15.0, -10.0]
    return aff


def _brain(shape=SHAPE, centre=(30, 14, 10), radii=(12, 11, 8)) -> np.ndarray:
    g = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum(((gi - c) / r) ** 2 for gi, c, r in zip(g, centre, radii)) <= 1.0


def _smooth(rng, shape=SHAPE) -> np.ndarray:
    sm = ndimage.gaussian_filter(rng.random(shape), 2.5)
    return (sm - sm.min()) / (sm.max() - sm.min())


def _make_case(root: Path, case_id: str = "c1", mods=("t1n", "t1c", "t2w"), seed: int = 0, hole=False,
               seg=True, background=None, brain=None, affine=None) -> dict[str, np.ndarray]:
    """Write a BraTS-layout case; returns the native arrays written."""
    rng = np.random.default_rng(seed)
    brain = _brain() if brain is None else brain
    affine = _lps_affine() if affine is None else affine
    folder = root / case_id
    folder.mkdir(parents=True, exist_ok=True)
    inside = brain.copy()
    if hole:  # an enclosed 3x3x3 dark hole in every modality: filled by the brain mask
        inside[29:32, 13:16, 9:12] = False
    written = {}
    for i, mod in enumerate(mods):
        x = np.where(inside, 200.0 + 800.0 * _smooth(rng, brain.shape) + 50 * i, 0.0).astype(np.float32)
        if background is not None:
            x = np.where(brain, x, background).astype(np.float32)
        img = nib.Nifti1Image(x, affine)
        img.header["descrip"] = f"{case_id} {mod}".encode()
        nib.save(img, folder / f"{case_id}-{mod}.nii.gz")
        written[mod] = x
    if seg:
        g = np.ogrid[tuple(slice(0, s) for s in brain.shape)]
        labels = (brain & (g[0] > 32)).astype(np.uint8) * 2
        labels[brain & (g[0] > 36)] = 1
        nib.save(nib.Nifti1Image(labels, affine), folder / f"{case_id}-seg.nii.gz")
        written["seg"] = labels
    return written


# ------------------------------------------------------------------------------------------------ config
def test_config_validation_and_dict_roundtrip():
    cfg = PreprocessConfig.from_dict({"shape": [32, 40, 32], "spacing": 1.5, "clip_percentiles": [1, 99]})
    assert cfg.shape == (32, 40, 32) and cfg.spacing == (1.5, 1.5, 1.5) and cfg.clip_percentiles == (1.0, 99.0)
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert PreprocessConfig(spacing=np.float32(2)).spacing == (2.0, 2.0, 2.0)  # numpy scalars are scalars too
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match="divisible by 8"):
        PreprocessConfig(shape=(32, 36, 32))
    PreprocessConfig(shape=(32, 36, 32), divisor=4)
    with pytest.raises(ConfigError, match="unknown key.*spacingg.*synthesis.preprocess"):
        PreprocessConfig.from_dict({"shape": [8, 8, 8], "spacingg": 1}, "synthesis.preprocess")
    for bad in ({"orientation": "RAR"}, {"orientation": "XYZ"}, {"clip_percentiles": [99, 1]},
                {"spacing": [1, -1, 1]}, {"shape": [8, 8]}):
        with pytest.raises(ConfigError):
            PreprocessConfig.from_dict(bad)


def test_config_module_stays_light():
    # Task config modules import PreprocessConfig and `medsci --help` must stay fast.
    code = ("import sys, medsci.mri.preprocessing.config; "
            "print(sorted({'numpy', 'SimpleITK', 'nibabel', 'torch', 'monai', 'scipy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------ exact round trip
def _permuted_affine() -> np.ndarray:
    # i -> anterior, j -> superior, k -> left ("ASL"): reaching RAS needs a 3-cycle plus a flip.
    aff = np.zeros((4, 4))
    aff[1, 0], aff[2, 1], aff[0, 2], aff[3, 3] = 1.0, 1.5, -1.25, 1.0
    aff[:3, 3] = [5.0, -20.0, 7.0]
    return aff


@pytest.mark.parametrize("affine", [_lps_affine(), _permuted_affine()], ids=["LPS", "ASL"])
def test_roundtrip_crop_and_pad_is_exact(tmp_path, affine):
    native = _make_case(tmp_path / "cases", hole=True, affine=affine)
    case = load_case(tmp_path / "cases" / "c1")
    side = preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "out")
    arrays, side2 = load_preprocessed(tmp_path / "out" / "c1.npz")
    assert side2 == json.loads(json.dumps(side))
    assert side["native"]["orientation"] == "".join(nib.aff2axcodes(affine))
    assert nib.aff2axcodes(np.array(side["reoriented"]["affine"])) == ("R", "A", "S")
    start, grid = np.array(side["crop"]["start"]), np.array(side["resampled"]["shape"])
    assert any(side["crop"]["pad_before"]) and (np.any(start > 0) or np.any(start + TARGET < grid))
    assert not side["crop"]["brain_cropped"]
    # The brain's world centroid is the same seen from the output grid and from the native grid.
    out_idx = np.argwhere(arrays["mask"] > 0) + start
    world_out = (np.array(side["reoriented"]["affine"]) @ np.c_[out_idx, np.ones(len(out_idx))].T)[:3]
    nat_idx = np.argwhere(ndimage.binary_fill_holes(native["t1n"] > 0))
    world_nat = (affine @ np.c_[nat_idx, np.ones(len(nat_idx))].T)[:3]
    np.testing.assert_allclose(world_out.mean(axis=1), world_nat.mean(axis=1), atol=1e-6)
    assert arrays["image"].shape == (4, *TARGET) and arrays["image"].dtype == np.float32
    assert arrays["mask"].dtype == np.uint8 and arrays["seg"].dtype == np.uint8

    # Independent mask: union > 0 with holes filled by scipy.
    ref_mask = ndimage.binary_fill_holes(np.any([native[m] > 0 for m in ("t1n", "t1c", "t2w")], axis=0))
    back_mask = to_native(arrays["mask"], side).array
    np.testing.assert_array_equal(back_mask.astype(bool), ref_mask)
    np.testing.assert_array_equal(to_native(arrays["seg"], side).array, native["seg"])

    for mod in ("t1n", "t1c", "t2w"):
        # Percentiles computed two voxels inside the filled mask (hole zeros included), as numpy computes them.
        lo, hi = np.percentile(native[mod][ndimage.binary_erosion(ref_mask, iterations=2)], [0.5, 99.5])
        assert side["scaling"][mod]["lo"] == pytest.approx(lo, rel=1e-6)
        assert side["scaling"][mod]["hi"] == pytest.approx(hi, rel=1e-6)
        vol = to_native(arrays["image"][MODALITIES.index(mod)], side, mod, mask=arrays["mask"])
        assert vol.array.shape == SHAPE
        np.testing.assert_array_equal(vol.affine, affine)
        x = native[mod]
        unclipped = ref_mask & (x > lo) & (x < hi)
        assert unclipped.sum() > 0.9 * ref_mask.sum()
        np.testing.assert_allclose(vol.array[unclipped], x[unclipped], rtol=1e-4)
        assert np.all(vol.array[~ref_mask] == 0)
        # Clipped voxels come back at the clip bounds.
        np.testing.assert_allclose(vol.array[ref_mask & (x >= hi)], hi, rtol=1e-5)


def test_roundtrip_with_resampling_restores_geometry(tmp_path):
    native = _make_case(tmp_path / "cases")
    case = load_case(tmp_path / "cases" / "c1")
    side = preprocess_case(case, PreprocessConfig(shape=TARGET, spacing=(1.5, 1.5, 1.5)), tmp_path / "out")
    assert side["resampled"]["applied"] and side["resampled"]["shape"] != list(SHAPE)
    np.testing.assert_allclose(side["resampled"]["spacing"], 1.5)
    arrays, side = load_preprocessed(tmp_path / "out" / "c1.npz")
    vol = to_native(arrays["image"][0], side, "t1n", mask=arrays["mask"])
    assert vol.array.shape == SHAPE
    np.testing.assert_array_equal(vol.affine, nib.load(case.files["t1n"]).affine)
    core = ndimage.binary_erosion(_brain(), iterations=2)  # away from the blurred brain border
    rel = np.abs(vol.array[core] - native["t1n"][core]) / native["t1n"][core]
    assert np.median(rel) < 0.01 and rel.max() < 0.08
    seg = to_native(arrays["seg"], side).array
    assert seg.dtype == np.uint8 and set(np.unique(seg)) <= {0, 1, 2}
    for label in (1, 2):
        a, b = seg == label, native["seg"] == label
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85


def test_missing_modality_zero_filled_and_synthesized_scale_kept(tmp_path):
    _make_case(tmp_path / "cases", mods=("t1n", "t2w"), seg=False)
    case = load_case(tmp_path / "cases" / "c1")
    side = preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "out")
    assert side["available"] == ["t1n", "t2w"] and side["missing"] == ["t1c", "t2f"]
    arrays, side = load_preprocessed(tmp_path / "out" / "c1.npz")
    assert "seg" not in arrays
    for mod in ("t1c", "t2f"):
        assert not arrays["image"][MODALITIES.index(mod)].any()
    assert arrays["image"][MODALITIES.index("t2w")].max() == pytest.approx(1.0)
    synth = np.where(arrays["mask"] > 0, 0.5, 0.0).astype(np.float32)
    back = to_native(synth, side, "t2f").array
    assert set(np.unique(back)) == {0.0, 0.5}  # a missing modality stays on the [0, 1] scale

    out = save_native(synth, side, tmp_path / "native" / "c1-t2f.nii.gz", "t2f", mask=arrays["mask"])
    img = nib.load(out)
    np.testing.assert_array_equal(img.affine, nib.load(case.files["t1n"]).affine)
    assert img.get_data_dtype() == np.float32
    assert side["reference"]["modality"] == "t1n"
    assert img.header["descrip"].item() == b"c1 t1n"  # the reference file's header is reused
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), back)
    with pytest.raises(InputError, match="overwrite an input"):
        save_native(synth, side, case.files["t1n"], "t1n")


def test_scaling_ignores_extreme_voxels_outside_the_mask(tmp_path):
    _make_case(tmp_path / "plain", seg=False)
    # Same brain, but the background holds extreme values below the threshold (outside the mask).
    native = _make_case(tmp_path / "noisy", seg=False, background=-5000.0)
    cfg = PreprocessConfig(shape=TARGET)
    a = preprocess_case(load_case(tmp_path / "plain" / "c1"), cfg, tmp_path / "o1")
    b = preprocess_case(load_case(tmp_path / "noisy" / "c1"), cfg, tmp_path / "o2")
    assert a["scaling"] == b["scaling"]
    whole_volume_lo = np.percentile(native["t1n"], 0.5)  # what an unmasked percentile would give
    assert whole_volume_lo == -5000.0 and a["scaling"]["t1n"]["lo"] > 150
    ia = load_preprocessed(tmp_path / "o1" / "c1.npz")[0]["image"]
    ib = load_preprocessed(tmp_path / "o2" / "c1.npz")[0]["image"]
    np.testing.assert_array_equal(ia, ib)  # and the background is zero either way


def test_crop_is_centred_on_the_brain(tmp_path):
    shape = (60, 60, 40)
    brain = _brain(shape, centre=(15, 44, 12), radii=(8, 7, 6))  # far off the volume centre
    _make_case(tmp_path / "cases", brain=brain, affine=np.eye(4), seg=False)
    side = preprocess_case(load_case(tmp_path / "cases" / "c1"),
                           PreprocessConfig(shape=(24, 24, 16), orientation="RAS"), tmp_path / "out")
    arrays, _ = load_preprocessed(tmp_path / "out" / "c1.npz")
    mask = arrays["mask"].astype(bool)
    assert mask.sum() == brain.sum()  # whole brain inside the window
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        bbox_centre = (idx[0] + idx[-1] + 1) / 2
        assert abs(bbox_centre - mask.shape[axis] / 2) <= 0.5
    assert side["bbox"] == {"start": [7, 37, 6], "stop": [24, 52, 19]}


def test_reoriented_output_matches_ras_flip(tmp_path):
    native = _make_case(tmp_path / "cases", seg=False)
    preprocess_case(load_case(tmp_path / "cases" / "c1"), PreprocessConfig(shape=(56, 32, 24)), tmp_path / "out")
    arrays, side = load_preprocessed(tmp_path / "out" / "c1.npz")
    # LPS -> RAS flips the first two axes; the output is that array cropped/padded and scaled.
    ras = native["t1n"][::-1, ::-1, :]
    lo, hi = side["scaling"]["t1n"]["lo"], side["scaling"]["t1n"]["hi"]
    start = side["crop"]["start"]
    i, j, k = 30, 14, 10  # a brain voxel of the output
    expected = np.clip((ras[i + start[0], j + start[1], k + start[2]] - lo) / (hi - lo), 0, 1)
    assert arrays["image"][0][i, j, k] == pytest.approx(expected, rel=1e-5)
    assert side["native"]["orientation"] == "LPS" and side["reoriented"]["orientation"] == "RAS"


def test_outputs_are_deterministic(tmp_path):
    _make_case(tmp_path / "cases")
    case = load_case(tmp_path / "cases" / "c1")
    preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "a")
    preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "b")
    for name in ("c1.npz", "c1.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["c1.json", "c1.npz"]


def test_bad_case_inputs(tmp_path):
    _make_case(tmp_path / "cases", seg=False)
    folder = tmp_path / "cases" / "c1"
    other = nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4))
    nib.save(other, folder / "c1-t2f.nii.gz")
    with pytest.raises(InputError, match="shape") as info:
        preprocess_case(load_case(folder), PreprocessConfig(shape=TARGET), tmp_path / "out")
    assert "c1-t2f.nii.gz" in str(info.value)
    (folder / "c1-t2f.nii.gz").unlink()
    empty = np.zeros(SHAPE, np.float32)
    for mod in ("t1n", "t1c", "t2w"):
        nib.save(nib.Nifti1Image(empty, _lps_affine()), folder / f"c1-{mod}.nii.gz")
    with pytest.raises(InputError, match="no voxel above"):
        preprocess_case(load_case(folder), PreprocessConfig(shape=TARGET), tmp_path / "out")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(InputError) as info:
        load_preprocessed(tmp_path / "junk.npz")
    assert "junk.npz" in str(info.value)


def test_n4_reduces_a_multiplicative_bias(tmp_path):
    shape = (40, 40, 32)
    brain = _brain(shape, centre=(20, 20, 16), radii=(16, 16, 12))
    folder = tmp_path / "cases" / "b1"
    folder.mkdir(parents=True)
    g = np.ogrid[:40, :40, :32]
    bias = np.exp(0.5 * (g[0] - 20) / 20.0 + 0.0 * g[1] + 0.0 * g[2])
    x = np.where(brain, 500.0 * bias, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(x, np.eye(4)), folder / "b1-t1n.nii.gz")
    case = load_case(folder)
    cvs = {}
    for n4 in (False, True):
        preprocess_case(case, PreprocessConfig(shape=(40, 40, 32), n4=n4, clip_percentiles=(0, 100)),
                        tmp_path / f"out{n4}")
        arrays, side = load_preprocessed(tmp_path / f"out{n4}" / "b1.npz")
        core = ndimage.binary_erosion(arrays["mask"].astype(bool), iterations=2)
        back = to_native(arrays["image"][0], side, "t1n").array
        core_native = to_native(core.astype(np.uint8), side).array.astype(bool)
        vals = back[core_native]
        cvs[n4] = vals.std() / vals.mean()
    assert cvs[False] > 0.1 and cvs[True] < 0.1 * cvs[False]


def test_summarize_and_bench(tmp_path):
    _make_case(tmp_path / "cases", "c1")
    _make_case(tmp_path / "cases", "c2", mods=("t1n",), seg=False, seed=3)
    cfg = PreprocessConfig(shape=TARGET)
    for cid in ("c1", "c2"):
        preprocess_case(load_case(tmp_path / "cases" / cid), cfg, tmp_path / "pre")
    s = summarize_preprocessed(tmp_path / "pre")
    assert s["n_cases"] == 2 and s["shapes"] == [[4, *TARGET]]
    assert s["missing_counts"] == {"t1n": 0, "t1c": 1, "t2w": 1, "t2f": 2}
    arrays = [load_preprocessed(tmp_path / "pre" / f"{c}.npz")[0] for c in ("c1", "c2")]
    pooled = np.concatenate([a["image"][0][a["mask"] > 0] for a in arrays])
    assert s["intensity_inside_mask"]["t1n"]["mean"] == pytest.approx(pooled.mean(), rel=1e-6)
    assert s["intensity_inside_mask"]["t1n"]["cases"] == 2
    c1 = s["cases"][0]
    assert c1["tumour_voxels"] == int((arrays[0]["seg"] > 0).sum()) and set(c1["seg_voxels"]) == {"1", "2"}

    r = bench_preprocessing(tmp_path / "bench", shape=(40, 40, 30), target_shape=(32, 32, 24), repeats=1)
    assert set(r) >= {"preprocess_s", "io_floor_s", "ratio", "peak_rss_mb"}
    assert r["ratio"] == pytest.approx(r["preprocess_s"] / r["io_floor_s"], rel=1e-2)
    assert (tmp_path / "bench" / "preprocessed" / "bench.npz").is_file()


# --------------------------------------------------------------------------------------------------- CLI
def test_cli_preprocess_single_case_and_summarize(tmp_path, capsys):
    _make_case(tmp_path / "cases")
    rc = main(["preprocess", "synthesis", "--case-dir", str(tmp_path / "cases" / "c1"), "--out", str(tmp_path / "out"),
               "--shape", "32", "40", "32", "--clip", "1", "99"])
    assert rc == 0
    side = json.loads((tmp_path / "out" / "c1.json").read_text())
    assert side["config"]["clip_percentiles"] == [1.0, 99.0] and side["shape"] == [32, 40, 32]
    assert main(["summarize", str(tmp_path / "out"), "--out", str(tmp_path / "summary.json")]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["n_cases"] == 1
    capsys.readouterr()


def test_cli_preprocess_all_continues_past_a_bad_case(tmp_path, capsys):
    _make_case(tmp_path / "cases", "a1")
    _make_case(tmp_path / "cases", "b2")
    _make_case(tmp_path / "cases", "c3", seg=False)
    bad = tmp_path / "cases" / "b2" / "b2-t1c.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    rc = main(["preprocess", "synthesis", "--all", "--case-dir", str(tmp_path / "cases"), "--out", str(tmp_path / "out"),
               "--shape", "32", "40", "32"])
    out, err = capsys.readouterr()
    assert rc != 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npz")) == ["a1.npz", "c3.npz"]
    assert "b2-t1c.nii.gz" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    _make_case(tmp_path / "cases")
    bad = tmp_path / "cases" / "c1" / "c1-t2w.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08 broken")
    rc = main(["preprocess", "synthesis", "--case-dir", str(tmp_path / "cases" / "c1"), "--out", str(tmp_path / "out"),
               "--shape", "32", "40", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and "c1-t2w.nii.gz" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = main(["preprocess", "synthesis", "--case-dir", str(tmp_path / "cases" / "c1"), "--out", str(tmp_path / "out"),
               "--shape", "30", "40", "32"])
    err = capsys.readouterr().err
    assert rc == 2 and "divisible" in err and len(err.strip().splitlines()) == 1
    rc = main(["summarize", str(tmp_path / "nothing"), "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing" in err and not (tmp_path / "s.json").exists()


def test_cli_generic_layout_and_config(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "subj" / "s01"
    folder.mkdir(parents=True)
    x = np.where(_brain(), 300.0, 0.0).astype(np.float32)
    nib.save(nib.Nifti1Image(x, _lps_affine()), folder / "s01_T1.nii.gz")
    nib.save(nib.Nifti1Image(x * 2, _lps_affine()), folder / "s01_FLAIR.nii.gz")

    # medsci.config is written elsewhere: stand in a module with the agreed load_config interface.
    fake = types.ModuleType("medsci.config")
    fake.load_config = lambda path: types.SimpleNamespace(  # type: ignore[attr-defined]
        synthesis=types.SimpleNamespace(preprocess=PreprocessConfig(shape=(24, 24, 24), clip_percentiles=(2, 98))))
    monkeypatch.setitem(sys.modules, "medsci.config", fake)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("synthesis: {}\n")
    rc = main(["preprocess", "synthesis", "--case-dir", str(folder), "--out", str(tmp_path / "out"), "--config", str(cfg_file),
               "--layout", "generic", "--pattern", "t1n={case}_T1.nii.gz", "--pattern", "t2f=*FLAIR*",
               "--shape", "32", "32", "24"])
    assert rc == 0, capsys.readouterr().err
    side = json.loads((tmp_path / "out" / "s01.json").read_text())
    assert side["available"] == ["t1n", "t2f"]
    assert side["shape"] == [32, 32, 24] and side["config"]["clip_percentiles"] == [2.0, 98.0]
    rc = main(["preprocess", "synthesis", "--case-dir", str(folder), "--out", str(tmp_path / "out"),
               "--layout", "generic", "--pattern", "t1n"])
    assert rc == 2 and "MOD=GLOB" in capsys.readouterr().err


# ------------------------------------------------------------------------------- fit to the model grid
def test_spacing_within_tolerance_is_kept_and_misfits_are_refused_or_noted(tmp_path):
    """Native voxels 1.25 x 1.0 x 1.5 mm; brain 25 x 23 x 17 voxels."""
    _make_case(tmp_path / "cases", seg=False)
    case = load_case(tmp_path / "cases" / "c1")
    # 2 % off the native spacing: no resampling (it would only blur), nothing to warn about.
    side = preprocess_case(case, PreprocessConfig(shape=TARGET, spacing=(1.25 * 1.02, 1.0, 1.5)), tmp_path / "a")
    assert not side["resampled"]["applied"] and side["warnings"] == []
    assert side["fit"]["brain_cut_fraction"] == 0.0 and not side["fit"]["fov_touches_brain"]
    # Finer model voxels: resampled, and the output is said to have the model's resolution only.
    side = preprocess_case(case, PreprocessConfig(shape=(48, 40, 40), spacing=(0.8, 0.8, 0.8)), tmp_path / "b")
    assert side["resampled"]["applied"] and side["resampled"]["spacing"] == pytest.approx([0.8] * 3)
    assert any("coarser than the model" in w for w in side["warnings"])
    # Voxels more than twice the model's: refused with the sizes named.
    with pytest.raises(InputError, match=r"1\.25x1x1\.5 mm are more than 2x coarser"):
        preprocess_case(case, PreprocessConfig(shape=TARGET, spacing=(0.5, 0.5, 0.7)), tmp_path / "c")
    # A grid smaller than the brain: refused, not silently cropped (what training and inference used to do).
    with pytest.raises(InputError, match=r"does not fit the model grid .* of it would be cut off"):
        preprocess_case(case, PreprocessConfig(shape=(16, 16, 16)), tmp_path / "d")
    # A little cut is allowed but noted.
    side = preprocess_case(case, PreprocessConfig(shape=(24, 24, 24), max_brain_cut=0.2), tmp_path / "e")
    assert 0 < side["fit"]["brain_cut_fraction"] < 0.2 and "outside the model grid" in side["warnings"][0]


def test_brain_at_the_edge_of_the_scan_is_noted(tmp_path):
    _make_case(tmp_path / "cases", seg=False, brain=_brain(centre=(11, 14, 10)))  # touches i = 0
    side = preprocess_case(load_case(tmp_path / "cases" / "c1"), PreprocessConfig(shape=TARGET), tmp_path / "o")
    assert side["fit"]["fov_touches_brain"] and "field of view may cut it" in side["warnings"][-1]


def test_contrasts_on_other_grids_are_aligned_in_scanner_space_or_refused(tmp_path):
    native = _make_case(tmp_path / "cases", seg=False)
    case = load_case(tmp_path / "cases" / "c1")
    from medsci.io.volume import read_volume
    from medsci.preprocessing.geometry import resample_to_spacing

    vols = {m: read_volume(case.files[m]) for m in ("t1n", "t1c", "t2w")}
    # t2w resampled to 2 mm: same anatomy in scanner space, another grid.
    arr, aff = resample_to_spacing(vols["t2w"].array[None].astype(np.float32), vols["t2w"].affine, (2.0, 2.0, 2.0),
                                   "bilinear")
    vols["t2w"] = type(vols["t2w"])(array=arr[0], affine=aff, source=vols["t2w"].source)
    with pytest.raises(InputError, match="all modalities must share one grid"):
        preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "a", volumes=vols)
    side = preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "b", volumes=vols, align=True)
    assert "t2w was resampled onto the t1n grid" in side["warnings"]
    arrays, _ = load_preprocessed(tmp_path / "b" / "c1.npz")
    t2w = arrays["image"][2][arrays["mask"] > 0]
    assert t2w.mean() > 0.2  # the aligned contrast fills the brain
    shifted = dict(vols)
    moved = vols["t2w"].affine.copy()
    moved[:3, 3] += 300.0
    shifted["t2w"] = type(vols["t2w"])(array=vols["t2w"].array, affine=moved, source=vols["t2w"].source)
    with pytest.raises(InputError, match="do not overlap in space"):
        preprocess_case(case, PreprocessConfig(shape=TARGET), tmp_path / "c", volumes=shifted, align=True)
    assert native  # the written case itself is untouched by any of this


def test_a_head_that_is_not_skull_stripped_is_refused(tmp_path):
    # A noisy background everywhere: the "mask" would be the whole scan.
    _make_case(tmp_path / "cases", seg=False, background=5.0)
    with pytest.raises(InputError, match="100 % of the scan .* skull-stripped"):
        preprocess_case(load_case(tmp_path / "cases" / "c1"), PreprocessConfig(shape=TARGET), tmp_path / "o")

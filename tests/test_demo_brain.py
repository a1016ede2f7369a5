"""Synthetic BraTS-like demo data: layout, geometry, determinism, tissue contrast, nonlinearity, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsci.cli import main
from medsci.tasks.synthesis import demo as brain
from medsci.tasks.synthesis.demo import (
    CSF,
    DGM,
    ED,
    ET,
    GM,
    MODALITIES,
    NCR,
    VENT,
    WM,
    synthesize_case,
    write_brats_dataset,
)
from medsci.errors import InputError

SHAPE = (40, 44, 36)
SUFFIXES = (*MODALITIES, "seg")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("brats") / "demo"
    write_brats_dataset(out, cases=2, seed=0, shape=SHAPE)
    return out


@pytest.fixture(scope="module")
def cases() -> list:
    return [synthesize_case(0, i, SHAPE) for i in range(3)]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_dataset_json(dataset: Path) -> None:
    ids = ["BraTS-DEMO-00000-000", "BraTS-DEMO-00001-000"]
    expected = {"dataset.json"} | {f"{c}/{c}-{s}.nii.gz" for c in ids for s in SUFFIXES}
    assert set(_files(dataset)) == expected  # nothing else (no temp files left behind)
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["synthetic"] is True
    assert meta["generator"] == "medsci demo-data synthesis"
    assert meta["seed"] == 0 and meta["shape"] == list(SHAPE) and meta["cases"] == ids
    assert meta["labels"] == {"1": "necrotic core", "2": "oedema", "3": "enhancing tumour"}
    assert meta["modalities"] == ["t1n", "t1c", "t2w", "t2f"]
    np.testing.assert_allclose(meta["spacing"], [240 / 40, 240 / 44, 155 / 36])


def test_nifti_geometry_and_header(dataset: Path) -> None:
    case = "BraTS-DEMO-00001-000"
    spacing = np.array([240 / 40, 240 / 44, 155 / 36])
    for suffix in SUFFIXES:
        img = nib.load(dataset / case / f"{case}-{suffix}.nii.gz")
        assert img.shape == SHAPE
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        np.testing.assert_allclose(img.affine[:3, :3], np.diag(spacing * [-1, -1, 1]), rtol=1e-6)
        centre = img.affine @ np.array([*(np.array(SHAPE) - 1) / 2.0, 1.0])
        np.testing.assert_allclose(centre[:3], 0.0, atol=1e-4)  # centred at world 0 (float32 header)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        assert img.header["descrip"].item().decode() == "medsci synthetic demo data"
        assert img.get_data_dtype() == (np.uint8 if suffix == "seg" else np.int16)
        # Stored without scaling: the values on disk are the values generated.
        assert np.asanyarray(img.dataobj).dtype == img.get_data_dtype()


def test_files_hold_the_generated_case(dataset: Path) -> None:
    case = synthesize_case(0, 1, SHAPE)
    folder = dataset / case.case_id
    for name in MODALITIES:
        data = np.asanyarray(nib.load(folder / f"{case.case_id}-{name}.nii.gz").dataobj)
        np.testing.assert_array_equal(data, case.images[name])
    seg = np.asanyarray(nib.load(folder / f"{case.case_id}-seg.nii.gz").dataobj)
    np.testing.assert_array_equal(seg, case.seg)


def test_background_zero_labels_present(cases) -> None:
    for case in cases:
        brain_mask = case.tissue > 0
        assert 0.05 < brain_mask.mean() < 0.5
        for name in MODALITIES:
            img = case.images[name]
            assert np.all(img[~brain_mask] == 0)
            assert np.all(img[brain_mask] > 0)  # nonzero == brain in every modality, as in BraTS
            assert img.max() < 6000
        assert set(np.unique(case.seg)) == {0, 1, 2, 3}
        assert np.all(case.seg[~brain_mask] == 0)
        # Labels follow the tissue classes: 1 necrosis, 2 oedema, 3 enhancing.
        np.testing.assert_array_equal(case.seg == 1, case.tissue == NCR)
        np.testing.assert_array_equal(case.seg == 2, case.tissue == ED)
        np.testing.assert_array_equal(case.seg == 3, case.tissue == ET)


def test_same_seed_same_bytes_and_case_independence(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_brats_dataset(again, cases=2, seed=0, shape=SHAPE)
    assert _files(again) == _files(dataset)

    # Case 0 does not depend on how many cases the set has.
    single = tmp_path / "single"
    write_brats_dataset(single, cases=1, seed=0, shape=SHAPE)
    case = "BraTS-DEMO-00000-000"
    for suffix in SUFFIXES:
        name = f"{case}/{case}-{suffix}.nii.gz"
        assert (single / name).read_bytes() == (dataset / name).read_bytes()


def test_different_seed_or_case_gives_different_data(cases) -> None:
    other = synthesize_case(1, 0, SHAPE)
    for name in MODALITIES:
        assert not np.array_equal(other.images[name], cases[0].images[name])
        assert not np.array_equal(cases[1].images[name], cases[0].images[name])
    assert not np.array_equal(other.seg, cases[0].seg)


def test_tissue_contrasts(cases) -> None:
    for case in cases:
        t = case.tissue

        def mean(name: str, *classes: int) -> float:
            return float(case.images[name][np.isin(t, classes)].mean())

        # T1: WM > GM > CSF; necrosis dark.
        assert mean("t1n", WM) > mean("t1n", GM) > mean("t1n", CSF, VENT)
        assert mean("t1n", NCR) < mean("t1n", WM)
        # T2: CSF brightest, oedema bright, WM darkest of the normal tissues.
        assert mean("t2w", VENT) > mean("t2w", WM)
        assert mean("t2w", CSF, VENT) > mean("t2w", GM) > mean("t2w", WM)
        assert mean("t2w", ED) > mean("t2w", GM)
        # FLAIR: CSF suppressed, oedema brightest, WM < GM.
        assert mean("t2f", ED) > max(mean("t2f", c) for c in (WM, GM, DGM, CSF, VENT))
        assert mean("t2f", CSF, VENT) < mean("t2f", GM)
        assert mean("t2f", WM) < mean("t2f", GM)
        # Gadolinium: relative to WM the enhancing rim is much brighter after contrast.
        ratio_t1c = mean("t1c", ET) / mean("t1c", WM)
        ratio_t1n = mean("t1n", ET) / mean("t1n", WM)
        assert ratio_t1c > 1.25 * ratio_t1n and ratio_t1c > 1.2


def test_flair_is_not_a_linear_function_of_the_other_contrasts(cases) -> None:
    case = cases[0]
    inside = case.tissue > 0

    def z(name: str) -> np.ndarray:
        v = case.images[name][inside].astype(np.float64)
        return (v - v.mean()) / v.std()

    y = z("t2f")
    design = np.column_stack([z("t1n"), z("t1c"), z("t2w"), np.ones(y.size)])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    r2_linear = 1.0 - np.var(y - design @ coef) / np.var(y)
    # A per-tissue lookup (mean FLAIR of each tissue class) explains most of the variance.
    labels = case.tissue[inside]
    means = np.bincount(labels, weights=y) / np.maximum(np.bincount(labels), 1)
    r2_lookup = 1.0 - np.var(y - means[labels]) / np.var(y)
    assert r2_linear < 0.9
    assert r2_lookup > 0.6
    assert r2_lookup > r2_linear + 0.15


@pytest.mark.parametrize("sigma", [2.0, 4.5])  # filtered white noise / separable lattice route
def test_gaussian_field_statistics(sigma: float) -> None:
    axes = [np.arange(n, dtype=np.float64) for n in (24, 16, 16)]  # 1 mm voxels
    rng = np.random.default_rng(7)
    fields = np.stack([brain._gaussian_field(rng, axes, sigma) for _ in range(200)])
    assert fields.shape == (200, 24, 16, 16) and fields.dtype == np.float32
    # Unit variance everywhere (the true mean is 0, so E[f^2] is the variance).
    second_moment = float(np.mean(fields.astype(np.float64) ** 2))
    assert abs(second_moment - 1.0) < 0.12
    # White noise convolved with a Gaussian of width s has correlation exp(-d^2 / (4 s^2)).
    lag = int(round(sigma))
    corr = float(np.mean(fields[:, :-lag] * fields[:, lag:])) / second_moment
    assert abs(corr - np.exp(-(lag**2) / (4 * sigma**2))) < 0.03


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="number of cases"):
        write_brats_dataset(tmp_path / "a", cases=0, shape=SHAPE)
    with pytest.raises(InputError, match="shape"):
        write_brats_dataset(tmp_path / "a", cases=1, shape=(40, 44))
    with pytest.raises(InputError, match="spacing"):
        write_brats_dataset(tmp_path / "a", cases=1, shape=SHAPE, spacing=(1.0, 0.0, 1.0))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a folder") as err:
        write_brats_dataset(blocker, cases=1, shape=SHAPE)
    assert str(blocker) in str(err.value)
    assert blocker.read_text() == "x"
    assert not (tmp_path / "a").exists()


def test_cli_synthesis(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["demo-data", "synthesis", str(out), "--cases", "1", "--seed", "3", "--shape", *map(str, SHAPE)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "1 " in printed[0] and str(out) in printed[0]
    reference = tmp_path / "ref"
    write_brats_dataset(reference, cases=1, seed=3, shape=SHAPE)
    assert _files(out) == _files(reference)
    assert json.loads((out / "dataset.json").read_text())["seed"] == 3


def test_cli_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["demo-data", "synthesis", str(tmp_path / "x"), "--cases", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "number of cases" in err[0]

"""Synthetic chest CTs for the rotation demo: determinism, geometry, anatomy in HU, NIfTI output, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medsci.errors import InputError
from medsci.tasks.rotation.demo import chest_ct, write_demo_cts

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def cts() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {seed: chest_ct(seed) for seed in SEEDS}


def world_grid(volume: np.ndarray, affine: np.ndarray):
    """World (x, y, z) mm of every voxel centre, broadcastable, computed from the affine alone."""
    i, j, k = (np.arange(n) for n in volume.shape)
    assert np.allclose(affine[:3, :3], np.diag(np.diag(affine)[:3]))  # axis-aligned, as promised
    return (affine[0, 0] * i + affine[0, 3])[:, None, None], (affine[1, 1] * j + affine[1, 3])[None, :, None], \
        (affine[2, 2] * k + affine[2, 3])[None, None, :]


def body_width(volume: np.ndarray, affine: np.ndarray) -> float:
    """Left-right extent (mm) of the body on the row nearest y = 0, with sub-voxel edges (-550 HU crossing)."""
    x = affine[0, 0] * np.arange(volume.shape[0]) + affine[0, 3]
    y = affine[1, 1] * np.arange(volume.shape[1]) + affine[1, 3]
    row = volume.mean(axis=2)[:, np.argmin(np.abs(y))]  # the body is a cylinder along z: average the noise
    thr = -550.0
    inside = np.nonzero(row > thr)[0]
    lo, hi = inside.min(), inside.max()
    assert lo > 0 and hi < len(row) - 1, "body touches the edge of the field of view"
    x_lo = x[lo - 1] + (thr - row[lo - 1]) / (row[lo] - row[lo - 1]) * (x[lo] - x[lo - 1])
    x_hi = x[hi] + (thr - row[hi]) / (row[hi + 1] - row[hi]) * (x[hi + 1] - x[hi])
    return float(x_hi - x_lo)


def test_same_seed_same_bytes_and_different_seeds_differ(cts):
    volume, affine = chest_ct(0)
    assert volume.dtype == np.float32 and volume.shape == (64, 64, 64)
    assert affine.dtype == np.float64 and affine.shape == (4, 4)
    assert volume.tobytes() == cts[0][0].tobytes()
    assert np.array_equal(affine, cts[0][1])
    assert np.all(np.isfinite(volume))
    assert not np.array_equal(cts[0][0], cts[1][0])
    # Different subjects, not just different noise: the anatomy (smoothed HU) differs by far more than noise.
    assert np.abs(cts[0][0] - cts[1][0]).mean() > 30.0


def test_affine_centres_the_grid_with_the_spacing_on_its_diagonal():
    for shape, spacing in [((64, 64, 64), (5.0, 5.0, 5.0)), ((48, 40, 33), (6.0, 7.5, 9.0))]:
        volume, affine = chest_ct(5, shape, spacing)
        assert volume.shape == shape
        assert np.array_equal(np.diag(affine), [*spacing, 1.0])
        off_diagonal = affine[:3, :3] - np.diag(spacing)
        assert np.array_equal(off_diagonal, np.zeros((3, 3))) and np.array_equal(affine[3], [0, 0, 0, 1])
        centre = (np.asarray(shape) - 1) / 2.0
        assert np.allclose(affine @ [*centre, 1.0], [0, 0, 0, 1], atol=1e-9)
        assert nib.aff2axcodes(affine) == ("R", "A", "S")


def test_air_lungs_and_chest_wall_have_plausible_hu(cts):
    for seed, (volume, affine) in cts.items():
        x, y, z = world_grid(volume, affine)
        for corner in [(0, 0, 0), (-1, -1, -1), (0, -1, 0), (-1, 0, -1)]:
            assert abs(volume[corner] + 1000.0) < 50.0, (seed, corner)
        # Upper posterior lung fields, both sides, well inside the rib cage and away from heart and hila.
        for side in (1, -1):
            box = (side * x >= 50) & (side * x <= 80) & (y >= -40) & (y <= 0) & (z >= 40) & (z <= 80)
            assert volume[box].mean() < -600.0, (seed, side)
        # Inside the body outline: a subcutaneous fat shell (~-100 HU) and mostly soft tissue (~40 HU).
        body = volume[np.broadcast_to((volume > -500).any(axis=2)[:, :, None], volume.shape)]
        assert ((body > -130) & (body < -70)).mean() > 0.04, seed
        assert ((body > 0) & (body < 100)).mean() > 0.35, seed
        noise = volume[:4, :4, :].std()  # pure air: only the noise
        assert 5.0 < noise < 15.0


def test_bone_is_mostly_posterior_spine_and_ribs(cts):
    for seed, (volume, affine) in cts.items():
        x, y, z = world_grid(volume, affine)
        bone = volume > 500.0
        voxel_ml = float(np.prod(np.diag(affine)[:3])) / 1000.0
        assert bone.sum() * voxel_ml > 100.0, seed  # spine, ribs, clavicles: hundreds of millilitres
        ys = np.broadcast_to(y, volume.shape)[bone]
        xs = np.broadcast_to(x, volume.shape)[bone]
        assert (ys < 0).mean() > 0.7, seed  # spine and posterior ribs dominate
        assert (np.abs(xs) < 30).mean() > 0.35, seed  # much of it on the midline (vertebrae)
        assert (np.abs(xs) > 60).mean() > 0.1, seed  # and some far lateral (ribs)
        assert volume.max() < 1200.0


def test_heart_left_of_midline_and_right_lung_larger(cts):
    for seed, (volume, affine) in cts.items():
        x, y, z = world_grid(volume, affine)
        xs = np.broadcast_to(x, volume.shape)
        # Soft tissue in the anterior chest between the domes and the great vessels: heart + symmetric wall.
        soft = (volume > 0) & (volume < 100) & (y > 0) & (z >= 0) & (z <= 40) & (np.abs(x) < 100)
        assert xs[soft].mean() < -5.0, seed  # RAS+: the patient's left is -x
        inside_body = (volume > -500).any(axis=2)[:, :, None]
        lung = (volume < -600) & inside_body & (z > -20)  # above both diaphragm domes
        right, left = np.count_nonzero(lung & (x > 0)), np.count_nonzero(lung & (x < 0))
        assert right > 1.1 * left > 0, seed


def test_ap_projection_looks_like_a_chest(cts):
    for seed, (volume, affine) in cts.items():
        x, _, z = world_grid(volume, affine)
        attenuation = np.clip(volume + 1000.0, 0.0, None).sum(axis=1)  # AP line integrals, (x, z)
        x1, z1 = x[:, 0, 0], z[0, 0, :]
        rows = (z1 >= 20) & (z1 <= 80)
        spine = attenuation[np.abs(x1) < 10][:, rows].mean()
        for side in (1, -1):
            lung = attenuation[(side * x1 > 55) & (side * x1 < 75)][:, rows].mean()
            assert lung < 0.8 * spine, (seed, side)  # dark lung fields beside a bright mediastinum
        below = attenuation[(np.abs(x1) > 55) & (np.abs(x1) < 75)][:, z1 < -110].mean()
        assert below > attenuation[(np.abs(x1) > 55) & (np.abs(x1) < 75)][:, rows].mean()  # abdomen denser


def test_same_anatomy_at_another_spacing():
    coarse, coarse_affine = chest_ct(7, (64, 64, 64), (5.0, 5.0, 5.0))
    fine, fine_affine = chest_ct(7, (128, 128, 128), (2.5, 2.5, 2.5))
    w_coarse, w_fine = body_width(coarse, coarse_affine), body_width(fine, fine_affine)
    assert 250.0 < w_coarse < 310.0
    assert abs(w_coarse - w_fine) < 5.0  # one coarse voxel
    # The fine grid averaged 2x2x2 is the coarse grid's anatomy: mean HU and projections agree.
    pooled = fine.reshape(64, 2, 64, 2, 64, 2).mean(axis=(1, 3, 5))
    assert abs(float(pooled.mean()) - float(coarse.mean())) < 5.0
    assert np.abs(pooled - coarse).mean() < 40.0
    # AP line integrals of (HU + 1000) in mm: the fine projection pooled 2x2 matches the coarse one.
    drr_coarse = (coarse + 1000.0).sum(axis=1) * 5.0
    drr_fine = ((fine + 1000.0).sum(axis=1) * 2.5).reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.abs(drr_coarse - drr_fine).mean() < 0.02 * drr_coarse.mean()


def test_write_demo_cts_round_trip_and_determinism(tmp_path):
    paths = write_demo_cts(tmp_path / "a", n=2, seed=3)
    assert [p.name for p in paths] == ["ct_000.nii.gz", "ct_001.nii.gz"]
    assert all(p.parent == tmp_path / "a" for p in paths)
    again = write_demo_cts(tmp_path / "b", n=3, seed=3)  # CT i does not depend on n
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again[:2]]
    other = write_demo_cts(tmp_path / "c", n=1, seed=4)
    img0, img1, img_other = (nib.load(str(p)) for p in (paths[0], paths[1], other[0]))
    data0 = np.asanyarray(img0.dataobj)
    assert not np.array_equal(data0, np.asanyarray(img1.dataobj))
    assert not np.array_equal(data0, np.asanyarray(img_other.dataobj))
    assert img0.get_data_dtype() == np.float32 and data0.shape == (64, 64, 64)
    assert int(img0.header["sform_code"]) > 0 and int(img0.header["qform_code"]) > 0
    assert b"synthetic" in bytes(img0.header["descrip"])
    _, affine = chest_ct(7)  # the geometry depends only on shape and spacing
    assert np.array_equal(img0.affine, affine)
    assert np.allclose(img0.header.get_qform(), affine) and np.allclose(img0.header.get_sform(), affine)


def test_written_file_reads_back_exactly(tmp_path):
    from medsci.tasks.rotation import demo

    path = write_demo_cts(tmp_path, n=1, seed=11, shape=(32, 40, 24), spacing=(8.0, 6.0, 10.0))[0]
    volume, affine = chest_ct(demo._case_seed(11, 0), (32, 40, 24), (8.0, 6.0, 10.0))
    img = nib.load(str(path))
    assert np.asanyarray(img.dataobj).tobytes() == volume.tobytes()
    assert np.array_equal(img.affine, affine)


def test_existing_folder_files_are_replaced_and_others_kept(tmp_path):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    stale = tmp_path / "ct_000.nii.gz"
    stale.write_bytes(b"old")
    paths = write_demo_cts(tmp_path, n=1, seed=0, shape=(16, 16, 16))
    assert paths == [stale] and stale.read_bytes() != b"old"
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct_000.nii.gz", "notes.txt"]  # no temp files left
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        write_demo_cts(not_a_folder, n=1)


@pytest.mark.parametrize("kwargs", [
    {"n": 0}, {"n": -2}, {"n": 1.5}, {"n": True},
    {"seed": -1}, {"seed": 1.0}, {"seed": "0"},
    {"spacing": (5.0, 0.0, 5.0)}, {"spacing": (5.0, -1.0, 5.0)}, {"spacing": (5.0, float("nan"), 5.0)},
    {"spacing": (5.0, 5.0)},
    {"shape": (15, 64, 64)}, {"shape": (64, 64, 513)}, {"shape": (64, 64)}, {"shape": (64, 64, 32.5)},
])
def test_bad_arguments_raise_input_error(tmp_path, kwargs):
    with pytest.raises(InputError) as info:
        write_demo_cts(tmp_path / "out", **{"n": 1, **kwargs})
    assert "\n" not in str(info.value) and str(tmp_path / "out") in str(info.value)
    assert not (tmp_path / "out").exists()  # nothing written before the arguments are checked
    if "n" not in kwargs:
        chest_kwargs = dict(kwargs)
        seed = chest_kwargs.pop("seed", 0)
        with pytest.raises(InputError):
            chest_ct(seed, **chest_kwargs)


# ------------------------------------------------------------------------------------ CTs unlike the generator
def test_each_change_unlike_the_generator_does_what_it_says():
    from medsci.tasks.rotation.demo import add_noise, broaden, crop_apices, enhance_mediastinum, rescale_voxels

    hu, aff = chest_ct(3, (32, 32, 32), (10.0, 10.0, 10.0))
    rng = np.random.default_rng(0)
    noisy, _ = add_noise(hu, aff, rng, 40.0)
    assert np.std(noisy - hu) == pytest.approx(40.0, rel=0.05)
    enhanced, _ = enhance_mediastinum(hu, aff, rng, 250.0)
    changed = enhanced != hu
    assert changed.any() and np.allclose((enhanced - hu)[changed], 250.0)
    assert not changed[:4].any() and not changed[-4:].any()  # only the central part of the cross-section
    cropped, _ = crop_apices(hu, aff, rng, 0.25)
    assert (cropped[:, :, -8:] == -1000.0).all() and np.array_equal(cropped[:, :, :24], hu[:, :, :24])
    flipped = aff.copy()
    flipped[2, 2] = -10.0  # superior at index 0: the top quarter is then the first 8 slices
    cropped_flipped, _ = crop_apices(hu, flipped, rng, 0.25)
    assert (cropped_flipped[:, :, :8] == -1000.0).all() and np.array_equal(cropped_flipped[:, :, 8:], hu[:, :, 8:])
    wide, _ = broaden(hu, aff, rng, 1.2)
    body = lambda v: int((v[:, 16, 16] > -500).sum())  # noqa: E731 - body width along x at the centre
    assert body(wide) >= body(hu) + 3 and wide.shape == hu.shape
    _, small = rescale_voxels(hu, aff, rng, 0.8)
    assert np.allclose(np.diag(small)[:3], 8.0)
    centre = lambda a: a[:3, :3] @ np.full(3, 15.5) + a[:3, 3]  # noqa: E731
    assert np.allclose(centre(small), centre(aff))


def test_variety_is_reproducible_and_zero_keeps_the_generator_bytes(tmp_path):
    from medsci.tasks.rotation.demo import vary_ct

    hu, aff = chest_ct(5, (24, 24, 24), (13.0, 13.0, 13.0))
    same, same_aff, made = vary_ct(hu, aff, np.random.default_rng(7), 0.0)
    assert made == {} and same is hu and same_aff is aff
    a = vary_ct(hu, aff, np.random.default_rng(7), 1.0)
    b = vary_ct(hu, aff, np.random.default_rng(7), 1.0)
    assert set(a[2]) == {"noise", "contrast", "apices cropped", "habitus", "voxel size"} and a[2] == b[2]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    plain = write_demo_cts(tmp_path / "plain", n=3, seed=0, shape=(24, 24, 24), spacing=(13.0,) * 3)
    varied = write_demo_cts(tmp_path / "varied", n=3, seed=0, shape=(24, 24, 24), spacing=(13.0,) * 3, variety=1.0)
    again = write_demo_cts(tmp_path / "again", n=3, seed=0, shape=(24, 24, 24), spacing=(13.0,) * 3, variety=1.0)
    for p, v, g in zip(plain, varied, again):
        assert p.read_bytes() != v.read_bytes() and v.read_bytes() == g.read_bytes()
        assert not np.allclose(nib.load(v).affine, nib.load(p).affine)  # voxel size changed with probability 1

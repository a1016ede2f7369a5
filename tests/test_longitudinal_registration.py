"""Session registration and next-session baselines (medsci.preprocessing.registration / .baselines).

Phantoms are rendered analytically in world (RAS mm) coordinates, so "the same object moved by M" is exact:
no interpolation blur in the ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest

from medsci.errors import InputError
from medsci.tasks.longitudinal.baselines import (BASELINES, copy_last, deformation_extrapolation, demons_field,
                                                 linear_extrapolation, warp)
from medsci.preprocessing.registration import (RigidResult, check_similarity, foreground_mask,
                                                    masked_correlation, register_to, to_sitk, transform_to_ras)

SHAPE = (32, 32, 32)
SPACING = 4.0


# ---------------------------------------------------------------------------------------------- phantoms
def head_items(rng, half=(56.0, 60.0, 52.0), n=12):
    """A head-like ellipsoid with ``n`` smooth inner blobs of either sign: (centre, radii, value) in mm."""
    half = np.asarray(half)
    items = [(np.zeros(3), 0.72 * half, 1.0)]
    for _ in range(n):
        items.append((rng.uniform(-0.4, 0.4, 3) * half, rng.uniform(0.12, 0.32, 3) * half, rng.uniform(-0.5, 0.6)))
    return items


def render(items, world: np.ndarray) -> np.ndarray:
    """Sum of soft ellipsoids evaluated at world points (..., 3)."""
    out = np.zeros(world.shape[:-1])
    for centre, radii, value in items:
        r = np.sqrt((((world - centre) / radii) ** 2).sum(-1))
        out += value / (1.0 + np.exp((r - 1.0) * 8.0))
    return out.astype(np.float32)


def world_of(shape, affine: np.ndarray) -> np.ndarray:
    idx = np.stack(np.indices(shape), -1).astype(np.float64)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def centred_affine(shape=SHAPE, spacing=SPACING, offset=(3.0, -5.0, 7.0)) -> np.ndarray:
    A = np.diag([spacing, spacing, spacing, 1.0])
    A[:3, 3] = -spacing * (np.array(shape) - 1) / 2 + np.asarray(offset)
    return A


def rigid(deg_z: float, shift) -> np.ndarray:
    th = np.deg2rad(deg_z)
    M = np.eye(4)
    M[:3, :3] = [[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0], [0.0, 0.0, 1.0]]
    M[:3, 3] = shift
    return M


def moved_render(items, world: np.ndarray, M: np.ndarray) -> np.ndarray:
    """The object moved by M (RAS, x -> M x): value at y is the object's value at M^-1 y."""
    Mi = np.linalg.inv(M)
    return render(items, world @ Mi[:3, :3].T + Mi[:3, 3])


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> float:
    Q = R1[:3, :3].T @ R2[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(Q) - 1.0) / 2.0, -1.0, 1.0))))


# Moving = fixed rotated by 5 degrees about z and shifted by 6 mm (|(4, -4, 2)| = 6).
TRUE_MOTION = rigid(5.0, (4.0, -4.0, 2.0))


@pytest.fixture(scope="module")
def pair():
    A = centred_affine()
    items = head_items(np.random.default_rng(3))
    world = world_of(SHAPE, A)
    return A, items, render(items, world), moved_render(items, world, TRUE_MOTION)


@pytest.fixture(scope="module")
def rigid_result(pair) -> RigidResult:
    A, _, fixed, moving = pair
    return register_to(fixed, A, moving, A, kind="rigid", seed=0)


# ------------------------------------------------------------------------------------------ registration
def test_rigid_registration_recovers_known_motion(pair, rigid_result):
    A, _, fixed, moving = pair
    res = rigid_result
    assert res.transform.GetName() == "Euler3DTransform"
    assert res.moved.shape == fixed.shape and res.moved.dtype == np.float32
    assert masked_correlation(fixed, moving, foreground_mask(fixed)) < 0.95  # there was something to correct
    assert res.similarity > 0.98
    assert res.similarity == pytest.approx(masked_correlation(fixed, res.moved, foreground_mask(fixed)))

    # The transform maps fixed-world points to moving-world points: here exactly the motion applied.
    R = transform_to_ras(res.transform)
    assert rotation_angle_deg(R, TRUE_MOTION) < 1.0
    angle_z = np.degrees(np.arctan2(R[1, 0], R[0, 0]))
    assert angle_z == pytest.approx(5.0, abs=1.0)
    assert np.linalg.norm(R[:3, 3] - TRUE_MOTION[:3, 3]) < 1.5
    centre = A[:3, :3] @ ((np.array(SHAPE) - 1) / 2) + A[:3, 3]
    assert np.linalg.norm((R - TRUE_MOTION)[:3, :3] @ centre + (R - TRUE_MOTION)[:3, 3]) < 1.5


def test_ras_matrix_gives_the_aligned_affine_for_the_preprocessing_resampler(pair, rigid_result):
    # inv(M) @ moving_affine places the moving volume in the fixed world: the MONAI resampler used by the
    # MRI preprocessing then reproduces `moved` (one interpolation, no SimpleITK).
    from medsci.preprocessing.geometry import resample_to_grid

    A, _, fixed, moving = pair
    M = transform_to_ras(rigid_result.transform)
    out = resample_to_grid(moving, np.linalg.inv(M) @ A, A, SHAPE, "bilinear", padding_mode="zeros")
    fg = foreground_mask(fixed)
    assert np.abs(out - rigid_result.moved)[fg].max() < 1e-3


def test_registration_is_reproducible_and_restores_itk_threads(pair, rigid_result):
    import SimpleITK as sitk

    A, _, fixed, moving = pair
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    again = register_to(fixed, A, moving, A, kind="rigid", seed=0)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    assert again.moved.tobytes() == rigid_result.moved.tobytes()
    assert again.transform.GetParameters() == rigid_result.transform.GetParameters()
    assert again.similarity == rigid_result.similarity
    other = register_to(fixed, A, moving, A, kind="rigid", seed=7)  # another sample, the same answer
    assert rotation_angle_deg(transform_to_ras(other.transform), TRUE_MOTION) < 1.0


def test_unrelated_or_inverted_content_is_rejected(pair):
    A, _, fixed, _ = pair
    world = world_of(SHAPE, A)
    # Unrelated content: blobs scattered over the whole field of view, no head.
    rng = np.random.default_rng(11)
    noise_items = [(rng.uniform(-50, 50, 3), rng.uniform(4, 10, 3), rng.uniform(0.2, 1.0)) for _ in range(40)]
    unrelated = render(noise_items, world)
    # Another contrast: the same anatomy with inverted intensities (the squared correlation metric and
    # mutual information still align it; the signed Pearson similarity does not accept it).
    inverted = (fixed.max() - fixed).astype(np.float32)
    for moving, metric in ((unrelated, "correlation"), (inverted, "correlation"), (inverted, "mattes")):
        res = register_to(fixed, A, moving, A, metric=metric)
        assert -1.0 <= res.similarity < 0.5
        with pytest.raises(InputError) as err:
            check_similarity(res.similarity, 0.5, "sub-01/ses-02/T1w.nii.gz")
        assert err.value.path == "sub-01/ses-02/T1w.nii.gz"
        assert "does not align with the first session" in str(err.value)
        assert f"similarity {res.similarity:.3f} < 0.500" in str(err.value)
        assert "another modality or anatomy?" in str(err.value)


def test_check_similarity_passes_good_and_rejects_nan():
    check_similarity(0.97, 0.5, "a.nii.gz")  # no error
    check_similarity(0.5, 0.5, "a.nii.gz")  # the threshold itself passes
    with pytest.raises(InputError):
        check_similarity(float("nan"), 0.5, "a.nii.gz")


def test_affine_kind_and_mattes_metric(pair):
    A, _, fixed, moving = pair
    res = register_to(fixed, A, moving, A, kind="affine", seed=0)
    assert res.transform.GetName() == "AffineTransform"
    assert -1.0 <= res.similarity <= 1.0 and res.similarity > 0.98
    M = transform_to_ras(res.transform)  # a rigid motion, recovered by the affine model too
    assert np.abs(M[:3, :3] - TRUE_MOTION[:3, :3]).max() < 0.05
    res_mi = register_to(fixed, A, moving, A, kind="rigid", metric="mattes")
    assert res_mi.similarity > 0.98
    assert rotation_angle_deg(transform_to_ras(res_mi.transform), TRUE_MOTION) < 1.0
    assert np.linalg.norm(transform_to_ras(res_mi.transform)[:3, 3] - TRUE_MOTION[:3, 3]) < 1.5
    with pytest.raises(ValueError):
        register_to(fixed, A, moving, A, kind="bspline")
    with pytest.raises(ValueError):
        register_to(fixed, A, moving, A, metric="ssd")


def test_to_sitk_is_the_inverse_of_the_reader_conversion():
    # medsci.io.volume reads ITK images into (i, j, k) + RAS affine; to_sitk must be its exact inverse,
    # including flipped and oblique grids.
    from medsci.io.voxels import from_sitk

    rng = np.random.default_rng(0)
    arr = rng.normal(size=(5, 6, 7)).astype(np.float32)
    th = np.deg2rad(20.0)
    rot = np.array([[np.cos(th), 0.0, np.sin(th)], [0.0, 1.0, 0.0], [-np.sin(th), 0.0, np.cos(th)]])
    for lin in (np.diag([1.5, 2.0, 3.0]), np.diag([-1.0, 1.2, -2.5]), rot @ np.diag([1.0, -2.0, 0.5])):
        affine = np.eye(4)
        affine[:3, :3] = lin
        affine[:3, 3] = (-10.0, 20.5, 3.25)
        img = to_sitk(arr, affine)
        back = from_sitk(img, None, "test")
        assert np.array_equal(back.array, arr)
        np.testing.assert_allclose(back.affine, affine, atol=1e-9)
        # Index (i, j, k) sits at the LPS point (-x, -y, z) of its RAS position.
        ras = affine @ np.array([4.0, 1.0, 6.0, 1.0])
        lps = img.TransformContinuousIndexToPhysicalPoint((4.0, 1.0, 6.0))
        np.testing.assert_allclose(lps, (-ras[0], -ras[1], ras[2]), atol=1e-9)
        assert img.GetPixel(4, 1, 6) == arr[4, 1, 6]


def test_same_object_on_different_grids_registers_with_no_motion():
    # The same physical object sampled on two grids: different origins (not a whole number of voxels apart)
    # and the moving grid stored with its first two axes flipped (as an LPS-ordered scan would be). Any
    # RAS/LPS or index-order slip shows up as a spurious motion.
    items = head_items(np.random.default_rng(5))
    A_fixed = centred_affine(offset=(3.0, -5.0, 7.0))
    A_moving = np.diag([-SPACING, -SPACING, SPACING, 1.0])
    A_moving[:3, 3] = (SPACING * 15.5 + 9.3, SPACING * 15.5 - 6.1, -SPACING * 15.5 + 2.7)
    fixed = render(items, world_of(SHAPE, A_fixed))
    moving = render(items, world_of(SHAPE, A_moving))
    assert masked_correlation(fixed, moving, foreground_mask(fixed)) < 0.9  # the arrays do differ
    res = register_to(fixed, A_fixed, moving, A_moving)
    M = transform_to_ras(res.transform)
    assert rotation_angle_deg(M, np.eye(4)) < 0.5
    assert np.linalg.norm(M[:3, 3]) < 0.5
    assert res.similarity > 0.99


# --------------------------------------------------------------------------------------------- baselines
def smooth_field(seed: int) -> np.ndarray:
    return render(head_items(np.random.default_rng(seed), half=(14.0, 14.0, 14.0)),
                  np.stack(np.indices((16, 16, 16)), -1).astype(np.float64) - 7.5)


def test_copy_last_and_linear_extrapolation():
    a = 0.5 + 0.4 * smooth_field(1)
    d = 0.05 * smooth_field(2)
    frames = [a, (a + d).astype(np.float32)]
    out = copy_last(frames, [0.0, 100.0], 200.0)
    assert out.dtype == np.float32 and np.array_equal(out, frames[-1]) and out is not frames[-1]

    lo, hi = float(frames[-1].min()), float(frames[-1].max())
    expected = a + 2 * d
    assert expected.min() >= lo - 0.1 * (hi - lo) and expected.max() <= hi + 0.1 * (hi - lo)  # inside the clip
    np.testing.assert_allclose(linear_extrapolation(frames, [0.0, 100.0], 200.0), expected, atol=1e-5)
    np.testing.assert_allclose(linear_extrapolation(frames, [0.0, 100.0], 150.0), a + 1.5 * d, atol=1e-5)
    assert linear_extrapolation(frames, [0.0, 100.0], 200.0).dtype == np.float32
    # Only the last two frames matter.
    np.testing.assert_allclose(linear_extrapolation([d, a, frames[1]], [-50.0, 0.0, 100.0], 200.0), expected,
                               atol=1e-5)
    # Far extrapolation is clipped to the last frame's range +- 10 %.
    far = linear_extrapolation(frames, [0.0, 100.0], 1e5)
    assert far.max() <= hi + 0.1 * (hi - lo) + 1e-6 and far.min() >= lo - 0.1 * (hi - lo) - 1e-6
    # One frame: copy the last.
    assert np.array_equal(linear_extrapolation([a], [0.0], 300.0), a)
    assert np.array_equal(deformation_extrapolation([a], [0.0], 300.0), a)
    assert set(BASELINES) == {"copy_last", "linear", "deformation"}


def test_baselines_validate_their_inputs():
    a = np.zeros((4, 4, 4), np.float32)
    for fn in BASELINES.values():
        with pytest.raises(ValueError):
            fn([a, a], [100.0, 100.0], 200.0)  # times not strictly increasing
        with pytest.raises(ValueError):
            fn([a, np.zeros((4, 4, 5), np.float32)], [0.0, 100.0], 200.0)
        with pytest.raises(ValueError):
            fn([a, a], [0.0], 200.0)
        with pytest.raises(ValueError):
            fn([], [], 200.0)


def sphere(r: float, shape=SHAPE, width: float = 0.7) -> np.ndarray:
    c = (np.array(shape) - 1) / 2
    dist = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(np.indices(shape).astype(np.float64), c)))
    return (1.0 / (1.0 + np.exp((dist - r) / width))).astype(np.float32)


@pytest.fixture(scope="module")
def growing():
    return sphere(6.0), sphere(7.0), sphere(8.0)


def test_demons_field_sign_convention(growing):
    # fixed = r7 sphere, moving = r6 sphere: last(x) ~ second_last(x + d(x)), so on the r7 boundary d points
    # inwards (towards where that boundary was, at r6), by about one voxel; components are along (i, j, k).
    r6, r7, _ = growing
    d = demons_field(r7, r6)
    assert d.shape == SHAPE + (3,)
    c = 15  # voxel 15/16 straddle the centre 15.5; the boundary at r = 6.5 from it
    for axis in range(3):
        plus = [c, c, c]
        plus[axis] = 22  # 6.5 voxels on the + side
        minus = [c, c, c]
        minus[axis] = 9  # 6.5 voxels on the - side
        assert d[tuple(plus)][axis] == pytest.approx(-1.0, abs=0.35)
        assert d[tuple(minus)][axis] == pytest.approx(1.0, abs=0.35)
    # mm, not voxels: on a 2 mm grid the same motion is about twice as long.
    d2 = demons_field(r7, r6, spacing=(2.0, 2.0, 2.0))
    assert d2[22, c, c][0] == pytest.approx(2 * d[22, c, c][0], rel=0.25)
    # warp() pulls back: out(x) = image(x + field(x)), e.g. a constant +1 voxel field along i shifts the
    # content by one voxel towards lower i.
    shift = np.zeros(SHAPE + (3,))
    shift[..., 0] = 1.0
    np.testing.assert_allclose(warp(r7, shift)[:-1], r7[1:], atol=1e-6)


def test_deformation_extrapolation_continues_the_growth(growing):
    r6, r7, r8 = growing
    pred = deformation_extrapolation([r6, r7], [0.0, 100.0], 200.0)
    assert pred.dtype == np.float32 and pred.shape == SHAPE
    volume = {name: int((x > 0.5).sum()) for name, x in (("r7", r7), ("r8", r8), ("pred", pred))}
    assert abs(volume["pred"] - volume["r8"]) < abs(volume["pred"] - volume["r7"])
    mae_deformation = float(np.abs(pred - r8).mean())
    mae_copy = float(np.abs(copy_last([r6, r7], [0.0, 100.0], 200.0) - r8).mean())
    assert mae_deformation < mae_copy
    # At the last time point the prediction is the last frame; before it the motion reverses.
    np.testing.assert_allclose(deformation_extrapolation([r6, r7], [0.0, 100.0], 100.0), r7, atol=1e-3)
    back = deformation_extrapolation([r6, r7], [0.0, 100.0], 0.0)
    assert abs(int((back > 0.5).sum()) - int((r6 > 0.5).sum())) < abs(int((back > 0.5).sum()) - volume["r7"])
    # A shrinking sphere keeps shrinking.
    shrink = deformation_extrapolation([r8, r7], [0.0, 100.0], 200.0)
    assert abs(int((shrink > 0.5).sum()) - int((r6 > 0.5).sum())) < abs(int((shrink > 0.5).sum()) - volume["r7"])
    # Deterministic.
    assert deformation_extrapolation([r6, r7], [0.0, 100.0], 200.0).tobytes() == pred.tobytes()

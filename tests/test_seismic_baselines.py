"""Classical trace-interpolation baselines (medsci.tasks.seismic.baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from medsci.tasks.seismic.demo import make_seismic_cube, ricker
from medsci.errors import InputError
from medsci.tasks.seismic.baselines import linear_interpolation, pocs_interpolation
from medsci.tasks.seismic.masks import apply_mask, block_traces, random_traces, regular_decimation


def snr_db(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> float:
    """SNR over the missing traces only: 10 log10(sum truth^2 / sum (truth - pred)^2)."""
    t, p = truth[~mask].astype(np.float64), pred[~mask].astype(np.float64)
    return float(10.0 * np.log10((t**2).sum() / ((t - p) ** 2).sum()))


@pytest.fixture(scope="module")
def demo_cube() -> np.ndarray:
    # cube_000 of `write_seismic_dataset(seed=0)`: folds, dips, faults and noise.
    return make_seismic_cube((32, 32, 128), np.random.default_rng([0, 0]))


def dipping_events(shape, rng, n_events=6, peak_hz=25.0, dt_s=0.004) -> np.ndarray:
    """Planar events dipping 0.4-0.8 samples/trace across inlines, Ricker evaluated at sub-sample times.

    Decimating every other inline leaves 0.8-1.6 samples of moveout between kept lines: still unaliased
    for a 25 Hz Ricker (|k| = p f < 0.25 cycles/trace up to ~80 Hz), but far from linear between lines.
    """
    il = np.arange(shape[0])[:, None, None] - shape[0] / 2
    xl = np.arange(shape[1])[None, :, None] - shape[1] / 2
    t = np.arange(shape[2])[None, None, :]
    out = np.zeros(shape)
    for _ in range(n_events):
        t0 = rng.uniform(0.1, 0.9) * shape[2]
        p_il = rng.uniform(0.4, 0.8) * rng.choice([-1, 1])
        p_xl = rng.uniform(-0.5, 0.5)
        arg = (np.pi * peak_hz * dt_s * (t - t0 - p_il * il - p_xl * xl)) ** 2
        out += rng.uniform(0.5, 1.0) * rng.choice([-1, 1]) * (1 - 2 * arg) * np.exp(-arg)
    return (out / np.abs(out).max()).astype(np.float32)


def test_random_missing_both_beat_zero_filling(demo_cube):
    mask = random_traces(demo_cube.shape, 0.5, np.random.default_rng(1))
    observed = apply_mask(demo_cube, mask)
    lin = linear_interpolation(observed, mask)
    pocs = pocs_interpolation(observed, mask)
    zero = snr_db(demo_cube, observed, mask)
    s_lin, s_pocs = snr_db(demo_cube, lin, mask), snr_db(demo_cube, pocs, mask)
    print(f"random 50%: zero-fill {zero:.2f} dB, linear {s_lin:.2f} dB, POCS {s_pocs:.2f} dB")
    assert zero == pytest.approx(0.0)
    assert s_lin > zero + 6.0 and s_pocs > zero + 6.0
    for pred in (lin, pocs):
        assert pred.dtype == np.float32 and np.isfinite(pred).all()
        np.testing.assert_array_equal(pred[mask], demo_cube[mask])  # bit-exact observed traces


def test_pocs_beats_linear_on_unaliased_decimation():
    cube = dipping_events((32, 32, 128), np.random.default_rng(0))
    mask = regular_decimation(cube.shape, 2, axis=0)
    observed = apply_mask(cube, mask)
    lin = linear_interpolation(observed, mask)
    pocs = pocs_interpolation(observed, mask)
    s_lin, s_pocs = snr_db(cube, lin, mask), snr_db(cube, pocs, mask)
    print(f"decimate x2 (unaliased dips): linear {s_lin:.2f} dB, POCS {s_pocs:.2f} dB")
    assert s_pocs > s_lin + 3.0
    np.testing.assert_array_equal(pocs[mask], cube[mask])
    np.testing.assert_array_equal(lin[mask], cube[mask])
    # Without the fan filter the zero-filled spectrum is alias-symmetric and POCS cannot leave zero-filling.
    no_fan = pocs_interpolation(observed, mask, max_dip=np.inf)
    assert abs(snr_db(cube, no_fan, mask)) < 0.5


def test_linear_on_lines_is_the_average_of_neighbour_lines(demo_cube):
    mask = regular_decimation(demo_cube.shape, 2, axis=1)  # crosslines 0, 2, 4, ... kept
    lin = linear_interpolation(apply_mask(demo_cube, mask), mask)
    expected = 0.5 * (demo_cube[:, 0:-2:2].astype(np.float64) + demo_cube[:, 2::2])
    np.testing.assert_allclose(lin[:, 1:-1:2], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(lin[:, -1], demo_cube[:, -2])  # beyond the last kept line: nearest
    # Block of whole inlines: straight line between the two bounding inlines.
    block = np.ones((10, 4), bool)
    block[3:7] = False
    cube = demo_cube[:10, :4]
    lin = linear_interpolation(apply_mask(cube, block), block)
    for i, w in zip(range(3, 7), (0.2, 0.4, 0.6, 0.8)):
        np.testing.assert_allclose(lin[i], (1 - w) * cube[2].astype(np.float64) + w * cube[7], atol=1e-6)


def test_linear_reproduces_planes_and_uses_nearest_outside_hull():
    il, xl, t = np.meshgrid(np.arange(12), np.arange(9), np.arange(5), indexing="ij")
    plane = (0.3 * il - 0.7 * xl + 0.1 * t + 2.0).astype(np.float32)
    mask = random_traces(plane.shape, 0.5, np.random.default_rng(3))
    mask[[0, 0, -1, -1], [0, -1, 0, -1]] = True  # corners observed: the hull covers the grid
    lin = linear_interpolation(apply_mask(plane, mask), mask)
    np.testing.assert_allclose(lin, plane, atol=1e-5)

    # One missing corner lies outside the hull of the rest: it takes its nearest observed trace.
    mask = np.ones((5, 5), bool)
    mask[0, 0] = False
    mask[1, 1] = False
    cube = np.random.default_rng(4).normal(size=(5, 5, 3)).astype(np.float32)
    lin = linear_interpolation(apply_mask(cube, mask), mask)
    nearest = np.array([[0, 1], [1, 0]])  # two equidistant candidates
    assert any(np.array_equal(lin[0, 0], cube[i, j]) for i, j in nearest)
    # Inside: a convex combination of its triangle's corners, so within the neighbours' range.
    neigh = cube[[0, 1, 2, 1, 0, 2, 2, 0], [1, 0, 1, 2, 2, 0, 2, 1]]
    assert (lin[1, 1] >= neigh.min(axis=0) - 1e-6).all() and (lin[1, 1] <= neigh.max(axis=0) + 1e-6).all()


def test_missing_trace_values_are_ignored(demo_cube):
    mask = block_traces(demo_cube.shape, 5, 1, np.random.default_rng(2))
    clean = apply_mask(demo_cube, mask)
    garbage = np.where(mask[..., None], demo_cube, 1e6).astype(np.float32)
    for method in (linear_interpolation, lambda o, m: pocs_interpolation(o, m, n_iter=10)):
        np.testing.assert_array_equal(method(garbage, mask), method(clean, mask))


def test_edge_cases(demo_cube):
    small = demo_cube[:6, :5, :16]
    full = np.ones((6, 5), bool)
    np.testing.assert_array_equal(linear_interpolation(small, full), small)
    np.testing.assert_array_equal(pocs_interpolation(small, full), small)
    with pytest.raises(InputError, match="all-missing"):
        pocs_interpolation(small, ~full)
    with pytest.raises(InputError, match="shape"):
        linear_interpolation(small, full.T)
    # A single observed inline: every inline becomes a copy of it.
    one = np.zeros((6, 5), bool)
    one[2] = True
    lin = linear_interpolation(apply_mask(small, one), one)
    np.testing.assert_array_equal(lin, np.broadcast_to(small[2], small.shape))


def test_ricker_is_zero_phase_unit_peak():
    w = ricker(30.0, 0.004)
    assert len(w) % 2 == 1 and w[len(w) // 2] == 1.0
    np.testing.assert_allclose(w, w[::-1])
    assert abs(w[0]) < 1e-4 and abs(w[-1]) < 1e-4

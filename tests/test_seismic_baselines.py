"""Classical trace-interpolation baselines (medsci.tasks.seismic.baselines)."""

from __future__ import annotations

import numpy as np
import pytest

from medsci.tasks.seismic.demo import make_seismic_cube, ricker
from medsci.errors import InputError
from medsci.tasks.seismic.baselines import (MSSA_RANK, _hankel_index, _time_windows, linear_interpolation,
                                            mssa_full_rank, mssa_interpolation, mssa_rank_note, pocs_interpolation)
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


# ---------------------------------------------------------------------------------------------------- MSSA
def plane_waves(shape, events, peak_hz=25.0, dt_s=0.004) -> np.ndarray:
    """Sum of planar Ricker events ``(t0, p_il, p_xl, amplitude)`` (samples, samples/trace), sub-sample times."""
    il = np.arange(shape[0])[:, None, None]
    xl = np.arange(shape[1])[None, :, None]
    t = np.arange(shape[2])[None, None, :]
    out = np.zeros(shape)
    for t0, p_il, p_xl, amp in events:
        arg = (np.pi * peak_hz * dt_s * (t - t0 - p_il * il - p_xl * xl)) ** 2
        out += amp * (1 - 2 * arg) * np.exp(-arg)
    return out.astype(np.float32)


TWO_EVENTS = [(20.0, 1.3, 0.7, 1.0), (50.0, -0.9, 1.1, -0.8)]  # far from linear between neighbours


def test_hankel_index_is_a_hankel_of_hankel_matrix():
    n_il, n_xl = 5, 4
    slice_ = np.arange(n_il * n_xl).reshape(n_il, n_xl)
    got = slice_.reshape(-1)[_hankel_index(n_il, n_xl)]

    def hankel(v):  # L x K with L = n // 2 + 1
        n = len(v)
        return np.array([[v[i + j] for j in range(n - n // 2)] for i in range(n // 2 + 1)])

    blocks = [hankel(row) for row in slice_]
    expected = np.block([[blocks[a + c] for c in range(n_il - n_il // 2)] for a in range(n_il // 2 + 1)])
    np.testing.assert_array_equal(got, expected)
    assert _hankel_index(1, 6).shape == (4, 3) and _hankel_index(1, 1).shape == (1, 1)


def test_time_windows_are_a_partition_of_unity():
    for n_t, window in ((463, 100), (100, 64), (50, 64), (10, 4)):
        total = np.zeros(n_t)
        for a, b, w in _time_windows(n_t, window):
            assert 0 <= a < b <= n_t and len(w) == b - a
            total[a:b] += w
        np.testing.assert_allclose(total, 1.0)


def test_mssa_recovers_plane_waves_far_better_than_linear():
    cube = plane_waves((8, 20, 80), TWO_EVENTS)
    mask = random_traces(cube.shape, 0.5, np.random.default_rng(0))
    observed = apply_mask(cube, mask)
    lin = linear_interpolation(observed, mask)
    mssa = mssa_interpolation(observed, mask, rank=2, n_iter=40, window=None)
    s_lin, s_mssa = snr_db(cube, lin, mask), snr_db(cube, mssa, mask)
    print(f"two plane waves, random 50%: linear {s_lin:.2f} dB, MSSA rank 2 {s_mssa:.2f} dB")
    assert s_mssa > s_lin + 10.0 and s_mssa > 20.0
    assert mssa.dtype == np.float32 and np.isfinite(mssa).all()
    np.testing.assert_array_equal(mssa[mask], cube[mask])  # bit-exact observed traces
    np.testing.assert_array_equal(mssa_interpolation(observed, mask, rank=2, n_iter=40, window=None), mssa)
    # Garbage in the missing traces changes nothing.
    garbage = np.where(mask[..., None], cube, 1e6).astype(np.float32)
    np.testing.assert_array_equal(mssa_interpolation(garbage, mask, rank=2, n_iter=40, window=None), mssa)
    # Rank 1 cannot hold two dips: the low-rank model, not the reinsertion, does the work.
    assert snr_db(cube, mssa_interpolation(observed, mask, rank=1, n_iter=40, window=None), mask) < s_mssa - 10.0


def test_mssa_defaults_on_plane_waves_and_thin_cubes():
    # Defaults (rank 16, 5 iterations from the linear first guess, 64-sample windows): measured 10.9 dB
    # against 6.1 dB for linear interpolation.
    big = plane_waves((10, 40, 96), TWO_EVENTS)
    mask = random_traces(big.shape, 0.5, np.random.default_rng(0))
    observed = apply_mask(big, mask)
    default = mssa_interpolation(observed, mask)
    assert snr_db(big, default, mask) > snr_db(big, linear_interpolation(observed, mask), mask) + 3.0
    np.testing.assert_array_equal(default[mask], big[mask])

    cube = plane_waves((8, 20, 80), TWO_EVENTS)

    # One inline: a 1-D Hankel matrix per frequency; both events are still one plane wave each.
    line = cube[3:4]
    one = random_traces(line.shape, 0.4, np.random.default_rng(1))
    rec = mssa_interpolation(apply_mask(line, one), one, rank=2, n_iter=40, window=None)
    assert snr_db(line, rec, one) > snr_db(line, linear_interpolation(apply_mask(line, one), one), one) + 3.0
    np.testing.assert_array_equal(rec[one], line[one])
    # One crossline, a single trace missing, a single observed trace: finite, observed kept.
    col = cube[:, 5:6]
    m = np.ones((8, 1), bool)
    m[4] = False
    rec = mssa_interpolation(apply_mask(col, m), m)
    assert np.isfinite(rec).all() and np.array_equal(rec[m], col[m])
    single = np.zeros((3, 2), bool)
    single[1, 1] = True
    rec = mssa_interpolation(apply_mask(cube[:3, :2], single), single)
    assert np.isfinite(rec).all() and np.array_equal(rec[1, 1], cube[1, 1])


def test_mssa_edge_cases():
    cube = plane_waves((4, 6, 32), TWO_EVENTS)
    full = np.ones((4, 6), bool)
    np.testing.assert_array_equal(mssa_interpolation(cube, full), cube)
    with pytest.raises(InputError, match="all-missing"):
        mssa_interpolation(cube, ~full)
    with pytest.raises(InputError, match="shape"):
        mssa_interpolation(cube, full.T)
    with pytest.raises(ValueError):
        mssa_interpolation(cube, full, rank=0)
    # An all-zero observation and an empty band: zeros in the missing traces.
    some = full.copy()
    some[1, 2] = False
    zeros = np.zeros_like(cube)
    np.testing.assert_array_equal(mssa_interpolation(zeros, some), zeros)
    rec = mssa_interpolation(apply_mask(cube, some), some, freq_band=(0.6, 0.7))
    np.testing.assert_array_equal(rec[1, 2], 0.0)


def test_mssa_of_huge_amplitudes_is_finite_and_scales_exactly():
    """Issue 25, bad input: samples above ~1e18 overflowed MSSA's complex64 products (numpy's LinAlgError
    "Eigenvalues did not converge" or NaN); MSSA now works on the samples over a power of two, which changes no bit
    of an ordinary result."""
    cube = plane_waves((4, 6, 32), TWO_EVENTS)
    mask = random_traces(cube.shape, 0.5, np.random.default_rng(0))
    observed = apply_mask(cube, mask)
    base = mssa_interpolation(observed, mask)
    for power in (70, -70):  # about 1e21 and 1e-21
        rec = mssa_interpolation(observed * np.float32(2.0**power), mask)
        assert np.isfinite(rec).all()
        np.testing.assert_array_equal(rec, base * np.float32(2.0**power))
    spiky = observed.copy()
    spiky[np.argwhere(mask)[0][0], np.argwhere(mask)[0][1], 5] = 1e25  # one wild sample in a unit-scale window
    assert np.isfinite(mssa_interpolation(spiky, mask)).all()
    nan = observed.copy()
    nan[np.argwhere(mask)[0][0], np.argwhere(mask)[0][1], 5] = np.nan
    with pytest.raises(InputError, match="observed traces contain NaN or infinite samples"):
        mssa_interpolation(nan, mask)


def test_pocs_of_huge_amplitudes_is_finite_and_scales_exactly():
    """Samples near 1e36 overflowed POCS's float32 FFT sums (inf, then NaN); it now works on the samples over a
    power of two, which changes no bit of an ordinary result."""
    cube = plane_waves((6, 8, 32), TWO_EVENTS)
    mask = random_traces(cube.shape, 0.5, np.random.default_rng(1))
    observed = apply_mask(cube, mask)
    base = pocs_interpolation(observed, mask, n_iter=10)
    for power in (120, -60):  # about 1.3e36 and 8.7e-19
        scale = np.float32(2.0**power)
        rec = pocs_interpolation(observed * scale, mask, n_iter=10)
        assert np.isfinite(rec).all()
        np.testing.assert_array_equal(rec, base * scale)


def test_mssa_rank_above_the_hankel_full_rank_is_clamped_and_noted():
    """A rank at or above the full rank of a thin window's block Hankel matrix is full rank: MSSA returns its
    linear start, finite, and the note callers print says so with the rank and the window."""
    assert mssa_full_rank(3, 7) == 8 and mssa_full_rank(10, 9) == 25 and mssa_full_rank(1, 1) == 1
    note = mssa_rank_note(3, 7)
    assert f"MSSA rank {MSSA_RANK} is not below the full rank 8" in note and "3 x 7 trace window" in note
    assert mssa_rank_note(10, 9) is None and mssa_rank_note(3, 7, rank=7) is None and mssa_rank_note(3, 7, 8)
    cube = plane_waves((3, 7, 40), TWO_EVENTS)
    mask = random_traces(cube.shape, 0.4, np.random.default_rng(2))
    observed = apply_mask(cube, mask)
    for rank in (8, 1000):
        rec = mssa_interpolation(observed, mask, rank=rank, window=None, freq_band=(0.0, 0.5))  # the whole band
        assert np.isfinite(rec).all()
        np.testing.assert_allclose(rec, linear_interpolation(observed, mask), atol=1e-5)


def test_a_first_guess_that_fails_is_a_clear_error_not_nan(monkeypatch):
    """Whatever goes wrong inside MSSA (a failed eigen-decomposition, NaN out of the rank reduction), the caller
    gets an InputError naming the rank and the window, never NaN in a first guess."""
    import medsci.tasks.seismic.baselines as baselines
    from medsci.tasks.seismic.conditioning import first_guess

    cube = plane_waves((4, 6, 32), TWO_EVENTS)
    mask = random_traces(cube.shape, 0.5, np.random.default_rng(0))
    observed = apply_mask(cube, mask)

    def failing(*args, **kwargs):
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    monkeypatch.setattr(baselines, "_rank_reduce", failing)
    with pytest.raises(InputError, match=r"MSSA \(rank 16, clamped to the full rank 6\) on a 4 x 6 x 32 window "
                                         r"failed \(Eigenvalues did not converge\)"):
        first_guess(observed, mask, "mssa")
    monkeypatch.setattr(baselines, "_rank_reduce", lambda data, *a, **k: np.full_like(data, np.nan))
    with pytest.raises(InputError, match=r"MSSA \(rank 16, clamped to the full rank 6\) on a 4 x 6 x 32 window "
                                         r"gave NaN or infinite samples"):
        first_guess(observed, mask, "mssa")
    # Samples of 1e36 (finite in float32) no longer overflow POCS's FFTs; a POCS that still gives inf is refused.
    huge = (observed / np.abs(observed).max() * 1e36).astype(np.float32)
    assert np.isfinite(first_guess(huge, mask, "pocs")).all()
    monkeypatch.setattr(baselines, "pocs_interpolation", lambda data, *a, **k: np.full_like(data, np.inf))
    with pytest.raises(InputError, match="the pocs first guess of a 4 x 6 x 32 window has NaN or infinite samples "
                                         r"\(observed samples up to 1e\+36 in model units\)"):
        first_guess(huge, mask, "pocs")


def test_evaluation_writes_mssa_rows_and_spectrum_figures(tmp_path):
    import csv
    import json

    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.config import SeismicConfig
    from medsci.tasks.seismic.evaluation import evaluate_heldout, mean_amplitude_spectrum, save_spectra

    cfg = SeismicConfig.from_dict({"evaluation": {"patterns": {"random": {"ratio_missing": 0.5}, "decimate": {}},
                                                  "unguided": False, "pocs_iterations": 3, "benchmark": []}})
    truth = plane_waves((6, 10, 48), TWO_EVENTS)
    for folder in ("data", "masks"):
        (tmp_path / folder).mkdir()
    write_cube(tmp_path / "data" / "c0.npy", truth)
    (tmp_path / "samples" / "c0").mkdir(parents=True)
    timing = {"seconds": 1.0, "network_evaluations": 2, "windows": 1, "empty_windows": 0}
    recs = {}
    for pattern in cfg.evaluation.patterns:
        mask = random_traces(truth.shape, 0.5, np.random.default_rng(7)) if pattern == "random" \
            else regular_decimation(truth.shape, 2, axis=0)
        np.save(tmp_path / "masks" / f"c0-{pattern}.npy", mask)
        np.save(tmp_path / "samples" / "c0" / f"c0-{pattern}-model.npy", truth * np.float32(0.9))
        recs[pattern] = {"model": timing}
    (tmp_path / "samples" / "c0" / "c0-timing.json").write_text(
        json.dumps({"reconstructions": recs, "device": "cpu", "sampler": "ddim"}), encoding="utf-8")
    out = tmp_path / "eval"
    text = evaluate_heldout(cfg, tmp_path / "data", ["c0"], ["t0"], tmp_path / "masks", tmp_path / "samples", out)

    with open(out / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["pattern"], r["method"]) for r in rows] == [
        (p, m) for p in ("random", "decimate") for m in ("model", "linear", "pocs", "mssa")]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["metrics"]["random"]) == {"model", "linear", "pocs", "mssa"}
    assert "| random | mssa |" in text and "| decimate | mssa |" in (out / "summary.md").read_text(encoding="utf-8")
    snr = {(r["pattern"], r["method"]): float(r["snr_missing"]) for r in rows}
    assert all(np.isfinite(v) for v in snr.values()) and snr[("random", "mssa")] > 3.0
    names = sorted(p.name for p in (out / "sections").iterdir())
    assert names == ["c0-decimate-spectrum.png", "c0-decimate.png", "c0-random-spectrum.png", "c0-random.png"]
    first = (out / "sections" / "c0-random-spectrum.png").read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and b"Software" not in first and b"matplotlib" not in first
    # Deterministic figure: the same inputs give the same bytes (no timestamp or version in the metadata).
    mask = np.load(tmp_path / "masks" / "c0-random.npy")
    preds = {"model": truth * np.float32(0.9), "linear": linear_interpolation(apply_mask(truth, mask), mask)}
    for name in ("a.png", "b.png"):
        save_spectra(tmp_path / name, "c0", "random", truth, mask, preds, 4.0)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()

    amp = mean_amplitude_spectrum(truth, mask)
    assert amp.shape == (25,) and np.isfinite(amp).all() and amp.max() > 0

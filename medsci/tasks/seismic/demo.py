"""Synthetic 3D post-stack seismic cubes, written as real SEG-Y, for demos and tests.

The model is a layered earth: random layer thicknesses and log-impedances define a 1-D log in relative
geologic time ``tau``; a smooth fold field, a regional dip and 1-3 planar normal faults map every
``(il, xl, t)`` position to its ``tau``; the log is looked up at ``tau`` (box-filtered over one sample so
dipping boundaries move by sub-sample amounts instead of staircasing), differentiated along time into
reflection coefficients, convolved with a Ricker wavelet and lightly noised. Axis order: (il, xl, t).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from medsci.io.atomic import write_json_atomic
from medsci.io.segy import create_segy

GENERATOR = "medsci.tasks.seismic.demo.make_seismic_cube"
GENERATOR_VERSION = 1
NOISE_RMS_FRACTION = 0.05  # noise RMS relative to signal RMS (~26 dB): weak but present, like real data
MAX_REGIONAL_DIP = 0.5  # samples per trace: enough that interpolating between lines is not trivial
FIRST_INLINE, FIRST_CROSSLINE = 100, 300  # realistic line numbers, and il != xl catches axis mix-ups


def ricker(peak_hz: float, dt_s: float) -> np.ndarray:
    """Zero-phase Ricker wavelet sampled at ``dt_s``, long enough that its tails are below 1e-4."""
    half = int(np.ceil(1.2 / (peak_hz * dt_s)))
    t = np.arange(-half, half + 1) * dt_s
    a = (np.pi * peak_hz * t) ** 2
    return (1.0 - 2.0 * a) * np.exp(-a)


def _layer_log(rng: np.random.Generator, tau_lo: float, tau_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Layer boundaries covering [tau_lo, tau_hi] and the cumulative integral of log-impedance at them."""
    span = tau_hi - tau_lo
    thick = rng.uniform(2.0, 12.0, size=int(np.ceil(span / 2.0)) + 2)  # enough layers for the worst case
    bounds = tau_lo + np.concatenate([[0.0], np.cumsum(thick)])
    # Impedance contrasts: a random walk in log-impedance with a mild compaction trend (reflectivity
    # r = d(ln Z)/2 is then a few percent, like real sedimentary sequences).
    log_z = np.cumsum(rng.normal(0.01, 0.08, size=len(thick)))
    cum = np.concatenate([[0.0], np.cumsum(log_z * thick)])
    return bounds, cum


def _tau_field(shape: tuple[int, int, int], rng: np.random.Generator, faults: tuple[int, int]) -> np.ndarray:
    """Relative geologic time at each (il, xl, t) sample, with t running over n_t + 1 samples."""
    n_il, n_xl, n_t = shape
    il = np.arange(n_il, dtype=np.float64)[:, None, None]
    xl = np.arange(n_xl, dtype=np.float64)[None, :, None]
    t = np.arange(n_t + 1, dtype=np.float64)[None, None, :]
    size = float(max(n_il, n_xl))

    # Folds: a few Gaussian anticlines (negative shift = shallower) and synclines, growing with depth
    # so that layers thicken into the synclines as in real growth structures.
    fold = np.zeros((n_il, n_xl, 1))
    for _ in range(int(rng.integers(2, 5))):
        amp = rng.uniform(2.0, 5.0) * rng.choice([-1.0, 1.0])
        c_il, c_xl = rng.uniform(-0.25, 1.25, size=2) * np.array([n_il, n_xl])
        sigma = rng.uniform(0.3, 0.6) * size
        fold += amp * np.exp(-((il - c_il) ** 2 + (xl - c_xl) ** 2) / (2.0 * sigma**2))
    depth_gain = 0.4 + 0.6 * t / n_t
    dip_il, dip_xl = rng.uniform(-MAX_REGIONAL_DIP, MAX_REGIONAL_DIP, size=2)  # samples per trace
    shift = fold * depth_gain + dip_il * (il - n_il / 2) + dip_xl * (xl - n_xl / 2)

    # Planar normal faults. d < 0 is the hanging wall (above the plane, which dips toward -normal);
    # it moved down, so its layers sit at later times: subtract the throw from tau there.
    fault_shift = np.zeros(np.broadcast_shapes(il.shape, xl.shape, t.shape))
    for _ in range(int(rng.integers(faults[0], faults[1] + 1))):
        phi = rng.uniform(0.0, np.pi)
        c_il, c_xl = rng.uniform(0.25, 0.75, size=2) * np.array([n_il, n_xl])
        lateral_per_sample = rng.uniform(0.05, 0.15) * rng.choice([-1.0, 1.0])
        throw = rng.uniform(3.0, 8.0)
        d = np.cos(phi) * (il - c_il) + np.sin(phi) * (xl - c_xl)
        d = d * np.sign(lateral_per_sample) + abs(lateral_per_sample) * (t - n_t / 2)
        fault_shift += throw * (d < 0)
    return t - shift - fault_shift


def make_seismic_cube(shape: tuple[int, int, int] = (32, 32, 128), rng: np.random.Generator | None = None,
                      sample_interval_ms: float = 4.0, faults: tuple[int, int] = (1, 3),
                      noise: float = NOISE_RMS_FRACTION) -> np.ndarray:
    """One synthetic cube ``(il, xl, t)``, float32, max |value| = 1. Deterministic given ``rng``'s state.

    ``faults`` is the inclusive range of the number of normal faults; ``noise`` the noise RMS relative to
    the signal RMS. ``faults=(0, 0), noise=0`` gives continuous, noise-free events (a clean benchmark).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    n_il, n_xl, n_t = (int(s) for s in shape)
    if min(n_il, n_xl, n_t) < 2:
        raise ValueError(f"shape {shape} too small: need at least 2 samples per axis")
    if not 0 <= faults[0] <= faults[1]:
        raise ValueError(f"faults range {faults} must be 0 <= low <= high")
    tau = _tau_field((n_il, n_xl, n_t), rng, faults)
    bounds, cum = _layer_log(rng, float(tau.min()) - 2.0, float(tau.max()) + 2.0)
    # Mean log-impedance over [tau - 1/2, tau + 1/2]: the integral of a piecewise-constant log is
    # piecewise linear, so np.interp gives the box-filtered (anti-aliased) value exactly.
    log_z = np.interp(tau + 0.5, bounds, cum) - np.interp(tau - 0.5, bounds, cum)
    refl = 0.5 * np.diff(log_z, axis=2)  # r = d(ln Z)/2, n_t samples

    peak_hz = rng.uniform(20.0, 40.0)
    wavelet = ricker(peak_hz, sample_interval_ms / 1000.0)
    # Direct convolution (not FFT) keeps the bytes identical across FFT backends.
    seis = ndimage.convolve1d(refl, wavelet, axis=2, mode="constant")
    rms = float(np.sqrt(np.mean(seis**2)))
    seis = seis + rng.normal(0.0, noise * rms, size=seis.shape)
    peak = float(np.abs(seis).max())
    if peak == 0.0:  # cannot happen with random contrasts, but never divide by zero
        peak = 1.0
    return (seis / peak).astype(np.float32)


def write_seismic_dataset(out_dir: str | Path, cubes: int = 8, seed: int = 0,
                          shape: tuple[int, int, int] = (32, 32, 128),
                          sample_interval_ms: float = 4.0) -> list[Path]:
    """Write ``cube_000.segy`` ... and ``dataset.json`` into ``out_dir``; return the cube paths.

    Cube ``i`` depends only on ``(seed, i, shape, sample_interval_ms)``, so adding cubes never changes
    the existing ones, and the same arguments give the same bytes.
    """
    out_dir = Path(out_dir)
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if cubes < 1:
        raise ValueError("cubes must be >= 1")
    paths: list[Path] = []
    for i in range(cubes):
        rng = np.random.default_rng([int(seed), i])
        data = make_seismic_cube(shape, rng, sample_interval_ms)
        path = out_dir / f"cube_{i:03d}.segy"
        create_segy(
            path, data, sample_interval_ms,
            ilines=np.arange(shape[0]) + FIRST_INLINE, xlines=np.arange(shape[1]) + FIRST_CROSSLINE,
            text_lines={1: "SYNTHETIC medsci demo data - not a real survey",
                        5: f"generator {GENERATOR} v{GENERATOR_VERSION} seed {seed} cube {i}"},
            origin_xy=(500000.0, 6000000.0), bin_size=(25.0, 25.0), coord_scalar=-100,
        )
        paths.append(path)
    write_json_atomic(out_dir / "dataset.json", {
        "synthetic": True,
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "shape": list(shape),
        "axes": ["inline", "crossline", "time"],
        "sample_interval_ms": float(sample_interval_ms),
        "cubes": [p.name for p in paths],
        "first_inline": FIRST_INLINE,
        "first_crossline": FIRST_CROSSLINE,
    })
    return paths

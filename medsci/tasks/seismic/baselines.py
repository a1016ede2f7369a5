"""Classical missing-trace interpolation baselines for ``(il, xl, t)`` cubes.

* :func:`linear_interpolation` - piecewise-linear in the (il, xl) plane (Delaunay, all time samples as one
  vector value), or 1-D along the decimated axis when whole lines are missing.
* :func:`pocs_interpolation` - projection onto convex sets with 3-D FFT (f-k-k) hard thresholding,
  padded against wrap-around, with a fan filter against the aliases of regular decimation.
* :func:`mssa_interpolation` - multichannel singular spectrum analysis (Cadzow rank reduction of block Hankel
  matrices per temporal frequency, Oropeza & Sacchi 2011) in tapered time windows.

Mask semantics as in :mod:`medsci.tasks.seismic.masks` (True = observed). All return float32 cubes whose
observed traces are bit-identical to the input.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import irfftn, next_fast_len, rfftn
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
from scipy.spatial import QhullError

from medsci.errors import InputError
from medsci.tasks.seismic.masks import check_mask


def _reinsert(observed: np.ndarray, mask: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Observed traces from the input (bit-exact), estimate elsewhere."""
    return np.where(mask[..., None], observed, estimate.astype(np.float32))


def _line_axis(mask: np.ndarray) -> int | None:
    """0 or 1 when the mask is made of whole inlines / crosslines (constant along the other axis)."""
    if (mask == mask[:, :1]).all():
        return 0  # each inline is fully observed or fully missing
    if (mask == mask[:1, :]).all():
        return 1
    return None


def _interp_lines(cube: np.ndarray, keep: np.ndarray, axis: int) -> np.ndarray:
    """1-D linear interpolation between observed lines along ``axis``; constant beyond the end lines."""
    data = np.moveaxis(cube, axis, 0).astype(np.float64)
    obs = np.flatnonzero(keep)
    n = len(keep)
    # Fractional position of every line among the observed ones (np.interp clamps at the ends).
    pos = np.interp(np.arange(n), obs, np.arange(len(obs), dtype=np.float64))
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(obs) - 1)
    w = (pos - lo)[:, None, None]
    out = (1.0 - w) * data[obs[lo]] + w * data[obs[hi]]
    return np.moveaxis(out, 0, axis)


def linear_interpolation(observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill missing traces by linear interpolation across observed trace positions.

    Scattered missing traces: Delaunay-linear in the (il, xl) plane with the whole trace as the value,
    nearest observed trace outside the convex hull. Whole missing lines (decimation, blocks): 1-D linear
    interpolation along the line axis, because a triangulation of full lines would mix in diagonal
    neighbours and fails outright when the observed traces are collinear.
    """
    observed = np.asarray(observed, dtype=np.float32)
    if observed.ndim != 3:
        raise ValueError(f"expected an (il, xl, t) cube, got shape {observed.shape}")
    mask = check_mask(mask, observed.shape)
    if mask.all():
        return observed.copy()
    axis = _line_axis(mask)
    if axis is not None:
        keep = mask[:, 0] if axis == 0 else mask[0, :]
        return _reinsert(observed, mask, _interp_lines(observed, keep, axis))

    pts = np.argwhere(mask).astype(np.float64)
    miss = np.argwhere(~mask)
    values = observed[mask].astype(np.float64)  # (n_obs, n_t): all samples interpolated at once
    query = miss.astype(np.float64)
    try:
        est = LinearNDInterpolator(pts, values, fill_value=np.nan)(query)
    except QhullError:  # all observed traces on one line or too few: nearest is all we can do
        est = np.full((len(miss), observed.shape[2]), np.nan)
    outside = np.isnan(est).any(axis=1)
    if outside.any():
        est[outside] = NearestNDInterpolator(pts, values)(query[outside])
    out = observed.copy()
    out[miss[:, 0], miss[:, 1]] = est.astype(np.float32)
    return out


def _pad_widths(n: int, fraction: float) -> tuple[int, int]:
    """Zero margin before/after an axis of length n, total rounded up to a fast FFT length."""
    if n < 2:
        return 0, 0
    total = next_fast_len(n + 2 * int(np.ceil(fraction * n)), real=True) - n
    return total // 2, total - total // 2


def _fan(shape: tuple[int, int, int], dips: tuple[float, float]) -> np.ndarray | None:
    """rfftn-domain keep-mask |k_il| <= dip_il*|f| and |k_xl| <= dip_xl*|f| (plus one wavenumber bin).

    Units: f in cycles/sample, k in cycles/trace, so an event dipping p samples/trace sits at |k| = p|f|.
    """
    if all(np.isinf(d) for d in dips):
        return None
    f = np.fft.rfftfreq(shape[2])[None, None, :]
    keep = np.ones((shape[0], shape[1], len(f[0, 0])), dtype=bool)
    for axis, dip in enumerate(dips):
        if np.isinf(dip):
            continue
        k = np.abs(np.fft.fftfreq(shape[axis]))
        k = k[:, None, None] if axis == 0 else k[None, :, None]
        keep &= k <= dip * f + 1.0 / shape[axis]
    return keep


def _power_of_two_unit(peak: float) -> float:
    """A power of two near ``peak`` (1 for 0 or non-finite): dividing samples by it is exact in floating point,
    so the FFTs and products of POCS and MSSA neither overflow nor underflow, and ordinary data keep their bits."""
    return float(2.0 ** np.floor(np.log2(peak))) if np.isfinite(peak) and peak > 0.0 else 1.0


def pocs_interpolation(observed: np.ndarray, mask: np.ndarray, n_iter: int = 50, thresh_start: float = 0.99,
                       thresh_end: float = 0.01, max_dip: float | None = None,
                       pad_fraction: float = 0.25) -> np.ndarray:
    """POCS reconstruction with 3-D FFT (f-k-k) hard thresholding (Abma & Kabir 2006).

    Start from the zero-filled cube; each iteration keeps the f-k-k coefficients whose magnitude is at
    least ``lambda_k`` and puts the observed traces back. ``lambda_k`` decays exponentially from
    ``thresh_start`` to ``thresh_end`` times the largest spectral magnitude of the zero-filled cube.

    * The cube is embedded in a zero margin (``pad_fraction`` of each spatial axis, a quarter of that in
      time) that counts as missing, so the FFT's wrap-around joins smooth extrapolations instead of
      opposite cube faces; without it the edge jump leaks energy over all wavenumbers.
    * ``max_dip`` (samples per trace) is a fan filter: coefficients with ``|k| > max_dip * |f|`` on an
      axis are dropped. With ``None`` it is chosen from the mask: when whole lines are missing along one
      axis (regular decimation, blocks) the zero-filled spectrum holds every event and its alias at equal
      strength, so thresholding alone can never separate them (POCS would return the zero-filled input);
      limiting dips to 1 sample/trace on that axis rejects the aliases of unaliased events. Scattered
      masks need no fan (random sampling turns aliases into weak incoherent noise), and ``inf`` disables it.
    """
    observed = np.asarray(observed, dtype=np.float32)
    if observed.ndim != 3:
        raise ValueError(f"expected an (il, xl, t) cube, got shape {observed.shape}")
    mask = check_mask(mask, observed.shape)
    if n_iter < 1 or not 0.0 < thresh_end <= thresh_start <= 1.0:
        raise ValueError("need n_iter >= 1 and 0 < thresh_end <= thresh_start <= 1")
    if pad_fraction < 0:
        raise ValueError("pad_fraction must be >= 0")
    if mask.all():
        return observed.copy()

    if max_dip is None:
        axis = _line_axis(mask)
        dips = (np.inf, np.inf) if axis is None else ((1.0, np.inf) if axis == 0 else (np.inf, 1.0))
    else:
        if not max_dip > 0:
            raise ValueError("max_dip must be > 0 samples per trace")
        dips = (float(max_dip), float(max_dip))

    fractions = (pad_fraction, pad_fraction, pad_fraction / 4.0)
    pads = [_pad_widths(n, fr) for n, fr in zip(observed.shape, fractions)]
    inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, observed.shape))
    # float32 FFTs: 2-3x faster than float64, and far below the noise of any seismic data.
    data = np.pad(np.where(mask[..., None], observed, 0.0).astype(np.float32), pads)
    known = np.pad(np.broadcast_to(mask[..., None], observed.shape), pads)  # margin counts as missing
    shape = data.shape
    fan = _fan(shape, dips)
    unit = np.float32(_power_of_two_unit(float(np.abs(data).max())))  # float32 FFT sums overflow near 1e36
    data = data / unit

    def spectrum(cube: np.ndarray) -> np.ndarray:
        spec = rfftn(cube)
        return spec if fan is None else spec * fan

    spec_max = float(np.abs(spectrum(data)).max())
    if spec_max == 0.0:  # nothing observed but zeros: the zero cube is the answer
        return _reinsert(observed, mask, np.zeros_like(observed))
    # Exponential schedule; the first and last iterations use thresh_start and thresh_end exactly.
    ratios = thresh_start * (thresh_end / thresh_start) ** (np.arange(n_iter) / max(n_iter - 1, 1))
    x = data
    for lam in ratios * spec_max:
        spec = spectrum(x)
        spec[np.abs(spec) < lam] = 0.0
        x = np.where(known, data, irfftn(spec, s=shape, axes=(0, 1, 2)))
    return _reinsert(observed, mask, x[inner] * unit)


# ----------------------------------------------------------------------------------------------------- MSSA
# Defaults of :func:`mssa_interpolation`, chosen on the training crosslines 0..102 of the F3 subset
# (/work/shared/data/f3_dev.segy; three 10 x 45 windows, random / block / decimate masks), never on the held-out
# crosslines; measurements: docs/seismic-real-data.md, section 5.
MSSA_RANK = 16
MSSA_ITERATIONS = 5
MSSA_WINDOW = 64  # time samples (256 ms at 4 ms), half-overlapping
MSSA_INIT = "linear"
MSSA_ENERGY = 0.995
MSSA_ALPHA = (1.0, 1.0)
_MSSA_CHUNK_ENTRIES = 1 << 24


def _hankel_index(n_il: int, n_xl: int) -> np.ndarray:
    """Flat trace index ``il * n_xl + xl`` of every entry of the block Hankel (Hankel of Hankel) matrix.

    Level 1: the crossline vector of one inline ``s_i`` as an ``L_xl x K_xl`` Hankel matrix,
    ``H_i[b, d] = s_i[b + d]``. Level 2: those matrices as a ``L_il x K_il`` block Hankel matrix, block
    ``(a, c)`` = ``H_{a + c}``. ``L = n // 2 + 1``, ``K = n - L + 1`` on each axis (both 1 for a single line),
    so the matrix is ``(L_il L_xl) x (K_il K_xl)`` and entry ``(a L_xl + b, c K_xl + d)`` holds trace
    ``(a + c, b + d)``.
    """
    l_il, l_xl = n_il // 2 + 1, n_xl // 2 + 1
    k_il, k_xl = n_il - l_il + 1, n_xl - l_xl + 1
    a, b, c, d = np.meshgrid(np.arange(l_il), np.arange(l_xl), np.arange(k_il), np.arange(k_xl), indexing="ij")
    return ((a + c) * n_xl + (b + d)).reshape(l_il * l_xl, k_il * k_xl)  # rows (a, b), columns (c, d)


def mssa_full_rank(n_il: int, n_xl: int) -> int:
    """The largest rank the block Hankel matrix of an ``n_il x n_xl`` slice can have: its smaller dimension,
    ``K_il K_xl`` (see :func:`_hankel_index`). A rank at or above it truncates nothing."""
    return (n_il - n_il // 2) * (n_xl - n_xl // 2)


def mssa_rank_note(n_il: int, n_xl: int, rank: int | None = None) -> str | None:
    """A warning when MSSA at ``rank`` (None: :data:`MSSA_RANK`) cannot reduce the rank of an ``n_il x n_xl``
    window (it keeps full rank: the missing traces stay at MSSA's start, limited to its band), else None."""
    rank = MSSA_RANK if rank is None else int(rank)
    full = mssa_full_rank(n_il, n_xl)
    if rank < full:
        return None
    clamped = "the rank is clamped to it, " if rank > full else ""
    return (f"MSSA rank {rank} is not below the full rank {full} of the block Hankel matrix of a {n_il} x {n_xl} "
            f"trace window: {clamped}the rank reduction does nothing and MSSA returns its start (linear "
            "interpolation, band-limited)")


def _band(spec_obs: np.ndarray, energy: float) -> int:
    """Number of rfft bins, from 0 Hz, that hold ``energy`` of the observed traces' power."""
    power = (np.abs(spec_obs) ** 2).sum(axis=0)
    total = power.sum()
    if total == 0.0:
        return 0
    return int(min(np.searchsorted(np.cumsum(power) / total, energy) + 1, len(power)))


def _orth(y: np.ndarray) -> np.ndarray:
    return np.linalg.qr(y)[0]


def _herm(a: np.ndarray) -> np.ndarray:
    """Conjugate transpose of a stack of matrices."""
    return np.conj(np.swapaxes(a, -1, -2))


def _rank_reduce(data: np.ndarray, start: np.ndarray, known: np.ndarray, shape: tuple[int, int], rank: int,
                 alphas: np.ndarray, power_steps: int) -> np.ndarray:
    """Iterate rank reduction with weighted reinsertion on a stack of complex slices ``(n_slices, traces)``.

    The rank-``rank`` truncation uses a subspace of ``rank + 4`` vectors per slice, refined by
    ``power_steps`` steps of subspace iteration warm-started from the previous outer iteration (4 steps
    from a seeded random start in the first), then an exact eigen-decomposition within that subspace.
    """
    n_il, n_xl = shape
    index = _hankel_index(n_il, n_xl)
    m, n = index.shape
    l_il, l_xl = n_il // 2 + 1, n_xl // 2 + 1
    k_il, k_xl = n_il - l_il + 1, n_xl - l_xl + 1
    k = min(rank, m, n)
    p = min(k + 4, m, n)  # subspace size: rank plus oversampling
    counts = np.bincount(index.reshape(-1), minlength=n_il * n_xl).astype(np.float32)
    rng = np.random.default_rng(0)
    omega = (rng.standard_normal((n, p)) + 1j * rng.standard_normal((n, p))).astype(np.complex64)
    # Slices are independent: bound the memory of the (slices, m, n) Hankel stacks (~128 MB each).
    chunk = max(1, _MSSA_CHUNK_ENTRIES // (m * n))
    if len(data) > chunk:
        return np.concatenate([_rank_reduce(data[i:i + chunk], start[i:i + chunk], known, shape, rank, alphas,
                                            power_steps) for i in range(0, len(data), chunk)])
    x, q = start, None
    for alpha_k in alphas:
        hank = x[:, index]  # (slices, m, n)
        if q is None:
            q, steps = _orth(hank @ omega), 4
        else:
            steps = power_steps
        for _ in range(steps):  # subspace iteration, warm-started from the previous outer iteration
            w = _orth(_herm(_herm(q) @ hank))  # orth(H^H q) without a transposed copy of H
            q = _orth(hank @ w)
        b = _herm(q) @ hank  # (slices, p, n): H within span(q) is q b
        vec = np.linalg.eigh(b @ _herm(b))[1][:, :, ::-1][:, :, :k]  # top-k left singular vectors of b
        low = ((q @ vec) @ (_herm(vec) @ b)).reshape(len(x), l_il, l_xl, k_il, k_xl)
        # Average the entries of each trace (anti-diagonals of both Hankel levels) back into a slice:
        # row (a, b) of the matrix holds traces (a + c, b + d) for all columns (c, d).
        avg = np.zeros((len(x), n_il, n_xl), dtype=np.complex64)
        for a in range(l_il):
            for bb in range(l_xl):
                avg[:, a:a + k_il, bb:bb + k_xl] += low[:, a, bb]
        avg = avg.reshape(len(x), -1) / counts
        x = np.where(known, alpha_k * data + (1.0 - alpha_k) * avg, avg)
    return x


def _time_windows(n_t: int, window: int | None) -> list[tuple[int, int, np.ndarray]]:
    """(start, stop, taper) of windows of ``window`` samples overlapping by half (the last one ends at the
    last sample); the tapers are triangles, flat to the cube's ends, and sum to one at every sample."""
    if window is None or window >= n_t:
        return [(0, n_t, np.ones(n_t))]
    hop = max(window // 2, 1)
    starts = list(range(0, n_t - window, hop)) + [n_t - window]
    wins = []
    total = np.zeros(n_t)
    for j, a in enumerate(starts):
        w = 1.0 - np.abs(np.arange(window) - (window - 1) / 2) / ((window + 1) / 2)
        if j == 0:
            w[: window // 2] = 1.0
        if j == len(starts) - 1:
            w[window // 2:] = 1.0
        wins.append((a, a + window, w))
        total[a:a + window] += w
    return [(a, b, w / total[a:b]) for a, b, w in wins]


def mssa_interpolation(observed: np.ndarray, mask: np.ndarray, rank: int | None = None,
                       n_iter: int = MSSA_ITERATIONS, window: int | None = MSSA_WINDOW, init: str = MSSA_INIT,
                       freq_band: tuple[float, float] | None = None, energy: float = MSSA_ENERGY,
                       alpha: tuple[float, float] = MSSA_ALPHA, power_steps: int = 1) -> np.ndarray:
    """Multichannel singular spectrum analysis: Cadzow rank reduction in f-x-y (Oropeza & Sacchi 2011).

    The cube is cut into time windows of ``window`` samples overlapping by half (``None``: one window),
    each tapered by triangles that sum to one over the windows, so the windows' reconstructions simply add
    up. In each window the traces are Fourier transformed along time (rfft); the problem then splits into
    one complex ``(il, xl)`` slice per frequency, because a trace is observed at all its samples or none.
    Every slice of the band is iterated independently (all in one batch):

        X_k = alpha_k D + (1 - alpha_k S) o A(P_rank(H(X_{k-1})))

    ``D`` is the zero-filled slice, ``S`` the sampling operator (1 on observed traces), ``H`` builds the
    block Hankel (Hankel of Hankel) matrix (:func:`_hankel_index`), ``P_rank`` truncates its SVD to ``rank``
    singular values, ``A`` averages the matrix entries that belong to one trace back into a slice (the
    anti-diagonals of both Hankel levels). ``alpha_k`` goes linearly from ``alpha[0]`` to ``alpha[1]``:
    ``(1, 1)``, the default, is plain reinsertion; smaller values let the rank reduction also denoise the
    observed traces the missing ones are predicted from (e.g. ``(1, 0)``, the damped schedule of Chen et
    al. 2016). Whatever ``alpha``, the returned float32 cube holds the observed input traces bit-identical.

    * ``init``: ``X_0`` = ``"linear"`` (:func:`linear_interpolation`, default) or ``"zero"`` (the zero-filled
      data, the textbook start). Regular decimation leaves the zero-filled slice exactly as low-rank as the
      data (each event plus its alias), so from zeros MSSA cannot leave zero-filling there.
    * ``rank``: ``None`` takes :data:`MSSA_RANK`; clipped to the size of the Hankel matrix (at full size the
      result is ``X_0`` on the missing traces, within the band; :func:`mssa_rank_note` is the warning callers
      print and record for such a window).
    * Band: bins from ``freq_band = (lo, hi)`` in cycles per sample (0..0.5), or by default from 0 up to the
      frequency where the observed traces' cumulative power reaches ``energy`` (99.5 %). Outside the band the
      missing traces are zero (the zero-filled data): < 0.5 % of the power, mostly incoherent noise that a
      low-rank model cannot predict.
    * SVD: a subspace of ``rank + 4`` vectors per slice refined by ``power_steps`` subspace-iteration steps
      per outer iteration (warm-started, seeded: deterministic), then exact within it; on F3 1 or 4 steps
      give the same SNR to 0.01 dB.

    Defaults (rank 16, 5 iterations from a linear start, 64-sample windows) chosen on the F3 training
    crosslines; figures: docs/seismic-real-data.md#5-mssa-defaults-tuning-on-the-training-crosslines

    Observed traces with NaN or infinite samples, a failed eigen-decomposition or a non-finite result are an
    InputError naming the rank and the window, never NaN in the output.
    """
    observed = np.asarray(observed, dtype=np.float32)
    if observed.ndim != 3:
        raise ValueError(f"expected an (il, xl, t) cube, got shape {observed.shape}")
    mask = check_mask(mask, observed.shape)
    rank = MSSA_RANK if rank is None else int(rank)
    a0, a1 = float(alpha[0]), float(alpha[1])
    if rank < 1 or n_iter < 1 or power_steps < 1 or not (0.0 <= a0 <= 1.0 and 0.0 <= a1 <= 1.0) \
            or not 0.0 < energy <= 1.0 or (window is not None and window < 2):
        raise ValueError("need rank, n_iter, power_steps >= 1, window >= 2 or None, 0 <= alpha <= 1 and "
                         "0 < energy <= 1")
    if init not in ("zero", "linear"):
        raise ValueError(f"init must be 'zero' or 'linear', got {init!r}")
    if mask.all():
        return observed.copy()
    if not np.isfinite(observed[mask]).all():
        raise InputError("observed traces contain NaN or infinite samples: MSSA cannot interpolate from them")
    n_il, n_xl, n_t = observed.shape
    n_tr = n_il * n_xl
    known = mask.reshape(-1)
    zero_filled = np.where(mask[..., None], observed, np.float32(0)).reshape(n_tr, n_t).astype(np.float64)
    # The rank reduction works in complex64, whose products overflow for samples above ~1e18 (eigh then fails or
    # returns NaN) and underflow for tiny ones.
    peak = float(np.abs(zero_filled[known]).max())
    unit = _power_of_two_unit(peak)
    zero_filled /= unit
    if freq_band is None:
        n_bins = _band(np.fft.rfft(zero_filled[known], axis=1), energy)
        if n_bins == 0:  # nothing observed but zeros: the zero cube is the answer
            return _reinsert(observed, mask, np.zeros_like(observed))
        f_lo, f_hi = 0.0, float(np.fft.rfftfreq(n_t)[n_bins - 1])
    else:
        f_lo, f_hi = float(freq_band[0]), float(freq_band[1])
    start = linear_interpolation(observed, mask).reshape(n_tr, n_t).astype(np.float64) / unit if init == "linear" \
        else zero_filled
    wins = _time_windows(n_t, window)
    bands, datas, starts = [], [], []
    for a, b, taper in wins:
        f = np.fft.rfftfreq(b - a)
        band = np.flatnonzero((f >= f_lo) & (f <= f_hi))
        bands.append(band)
        datas.append(np.fft.rfft(taper * zero_filled[:, a:b], axis=1)[:, band].T)
        starts.append(np.fft.rfft(taper * start[:, a:b], axis=1)[:, band].T)
    data = np.concatenate(datas).astype(np.complex64)  # (window band frequencies, traces)
    if len(data) == 0:
        return _reinsert(observed, mask, np.zeros_like(observed))
    full = mssa_full_rank(n_il, n_xl)
    what = (f"MSSA (rank {rank}{f', clamped to the full rank {full}' if rank > full else ''}) on a {n_il} x {n_xl} "
            f"x {n_t} window")
    try:
        x = _rank_reduce(data, np.concatenate(starts).astype(np.complex64), known, (n_il, n_xl), rank,
                         np.linspace(a0, a1, n_iter), power_steps)
    except np.linalg.LinAlgError as err:
        raise InputError(f"{what} failed ({err}); observed samples up to {peak:.3g}") from None
    est = np.zeros((n_tr, n_t))
    offset = 0
    for (a, b, _), band in zip(wins, bands):
        spec = np.zeros((n_tr, (b - a) // 2 + 1), dtype=np.complex128)
        spec[:, band] = x[offset:offset + len(band)].T
        offset += len(band)
        est[:, a:b] += np.fft.irfft(spec, n=b - a, axis=1)
    out = _reinsert(observed, mask, est.reshape(observed.shape) * unit)
    if not np.isfinite(out).all():  # never NaN or inf in a first guess or a baseline
        raise InputError(f"{what} gave NaN or infinite samples (observed samples up to {peak:.3g}, float32 holds "
                         "up to 3.4e38)")
    return out

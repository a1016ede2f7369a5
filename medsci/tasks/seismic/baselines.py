"""Classical missing-trace interpolation baselines for ``(il, xl, t)`` cubes.

* :func:`linear_interpolation` - piecewise-linear in the (il, xl) plane (Delaunay, all time samples as one
  vector value), or 1-D along the decimated axis when whole lines are missing.
* :func:`pocs_interpolation` - projection onto convex sets with 3-D FFT (f-k-k) hard thresholding,
  padded against wrap-around, with a fan filter against the aliases of regular decimation.

Mask semantics as in :mod:`medsci.tasks.seismic.masks` (True = observed). Both return float32 cubes whose
observed traces are bit-identical to the input.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import irfftn, next_fast_len, rfftn
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator
from scipy.spatial import QhullError

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
    return _reinsert(observed, mask, x[inner])

"""How a partly observed cube becomes model input, and how model output goes back to amplitudes.

Model space: the cube divided by one robust amplitude scale per cube (a percentile of |observed samples|,
computed from the observed traces only, so it is known at inference, mapped to ``scale_value``: about 2.5
for the 99th percentile gives roughly unit variance, the scale the noise schedule assumes). Model input per patch, channel order:

    0  x_t         the noisy sample (added by the diffusion engine)
    1  observed    the normalised observation, zeros at missing traces
    2  mask        1 = observed trace, 0 = missing (broadcast over time)
    3  guess       (only with ``condition: linear``, ``pocs`` or ``mssa``) the observation with missing
                   traces filled by linear interpolation, POCS or MSSA rank reduction
                   (medsci.tasks.seismic.baselines): a classical first guess that the network refines
    4, 5 ...       with several guesses (``condition: mssa+linear``), the others, in the order named; the
                   first named is the residual's base

The network predicts the clean patch (x0 by default) in model space, one channel.
"""

from __future__ import annotations

import numpy as np
import torch

from medsci.tasks.seismic.config import guess_methods

POCS_GUESS_ITERATIONS = 20  # first-guess POCS: cheap enough per training patch (~15 ms at 16x16x64)


def condition_names(condition: str) -> tuple[str, ...]:
    """The condition channels' names, in order: observed, mask, then each first guess."""
    return ("observed", "mask", *guess_methods(condition))


def robust_scale(observed_samples: np.ndarray, percentile: float, value: float = 1.0) -> float:
    """The divisor that maps the ``percentile`` of |samples| to ``value`` (float64 statistics).

    Falls back to the max, then to 1, for (near-)zero data.
    """
    a = np.abs(np.asarray(observed_samples, dtype=np.float64)).ravel()
    if a.size == 0:
        return 1.0
    scale = float(np.percentile(a, percentile))
    if not np.isfinite(scale) or scale <= 0.0:
        scale = float(a.max())
    return scale / value if np.isfinite(scale) and scale > 0.0 else 1.0


def normalise(cube: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(cube, dtype=np.float64) / scale).astype(np.float32)


def denormalise(cube: np.ndarray, scale: float) -> np.ndarray:
    return (np.asarray(cube, dtype=np.float64) * scale).astype(np.float32)


def condition_channels(observed: torch.Tensor, mask: torch.Tensor,
                       interpolated: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 1, il, xl, t) normalised cube + (B, 1, il, xl[, t]) mask [+ (B, k, il, xl, t) first guesses]
    -> (B, 2 + k, il, xl, t) condition.

    Missing traces of ``observed`` are zeroed here whatever it holds there, so the network never sees them.
    """
    if mask.ndim == observed.ndim - 1:
        mask = mask.unsqueeze(-1)
    m = mask.to(observed.dtype).expand_as(observed)
    parts = [observed * m, m] + ([interpolated.to(observed.dtype)] if interpolated is not None else [])
    return torch.cat(parts, dim=1)


def first_guess(observed: np.ndarray, mask: np.ndarray, method: str = "linear") -> np.ndarray:
    """The ``linear`` / ``pocs`` / ``mssa`` condition channel: missing traces filled by a classical method
    (float32, the cube's shape); several methods (``mssa+linear``) give one such cube each, stacked first.

    A window without a single observed trace (a training region inside a dead zone) gets zeros, what every
    method returns from an all-zero observation. A guess that is not finite is refused (InputError naming the
    method and the window), never handed on."""
    from medsci.errors import InputError
    from medsci.tasks.seismic.baselines import linear_interpolation, mssa_interpolation, pocs_interpolation

    if "+" in method:
        return np.stack([first_guess(observed, mask, m) for m in guess_methods(method)])
    if method not in ("linear", "pocs", "mssa"):
        raise ValueError(f"unknown first-guess method {method!r}")
    mask = np.asarray(mask)
    if not mask.any():
        return np.zeros(np.shape(observed), dtype=np.float32)
    zero_filled = np.where(mask[..., None], observed, 0.0).astype(np.float32)
    if method == "linear":
        guess = linear_interpolation(zero_filled, mask)
    elif method == "pocs":
        guess = pocs_interpolation(zero_filled, mask, n_iter=POCS_GUESS_ITERATIONS)
    else:
        guess = mssa_interpolation(zero_filled, mask)
    if not np.isfinite(guess).all():
        n_il, n_xl, n_t = guess.shape
        raise InputError(f"the {method} first guess of a {n_il} x {n_xl} x {n_t} window has NaN or infinite samples "
                         f"(observed samples up to {float(np.abs(zero_filled).max()):.3g} in model units)")
    return guess


def reinsert_observed(reconstruction: np.ndarray, observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Observed traces copied from ``observed`` (bit-exact), reconstruction elsewhere; float32."""
    return np.where(mask[..., None], np.asarray(observed, dtype=np.float32),
                    np.asarray(reconstruction, dtype=np.float32))

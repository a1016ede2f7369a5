"""Argument checks shared by the demo-data generators (seed, volume grid), with one-line InputErrors."""

from __future__ import annotations

import numpy as np

from medsci.errors import InputError

MIN_SIDE, MAX_SIDE = 16, 512  # voxels per side of a demo volume


def check_seed(seed, path=None) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", path)
    return int(seed)


def check_grid(seed, shape, spacing, path=None) -> tuple[int, tuple[int, int, int], tuple[float, float, float]]:
    """The seed, shape (three integers in [MIN_SIDE, MAX_SIDE]) and spacing (three positive mm) as plain types."""
    seed = check_seed(seed, path)
    try:
        shape_t = tuple(shape)
        spacing_t = tuple(spacing)
    except TypeError:
        raise InputError("shape and spacing must be sequences of three numbers", path) from None
    if len(shape_t) != 3 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                                    and MIN_SIDE <= n <= MAX_SIDE for n in shape_t):
        raise InputError(f"shape must be three integers in [{MIN_SIDE}, {MAX_SIDE}], got {shape_t!r}", path)
    if len(spacing_t) != 3 or not all(isinstance(v, (int, float, np.integer, np.floating))
                                      and not isinstance(v, bool) and np.isfinite(v) and v > 0
                                      for v in spacing_t):
        raise InputError(f"spacing must be three positive numbers (mm), got {spacing_t!r}", path)
    return seed, tuple(int(n) for n in shape_t), tuple(float(v) for v in spacing_t)  # type: ignore[return-value]

"""Missing-trace masks for seismic interpolation.

Semantics, used everywhere in medsci: a mask is a boolean array of shape ``(n_il, n_xl)``, one value per
trace, broadcast over the time axis; **True / 1 = observed trace, False / 0 = missing trace**.

Patterns: ``random`` (exactly ``round(ratio * n_traces)`` traces missing), ``block`` (contiguous runs of
whole inlines or crosslines missing), ``decimate`` (every ``factor``-th line kept), plus ``dead_traces``
to detect the all-zero traces that stand for missing data in real files. Bad parameters raise
ConfigError (they come from configs and command lines); a mask that does not fit its cube raises InputError.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsci.errors import ConfigError, InputError

PATTERNS = ("random", "block", "decimate")


def _grid(shape) -> tuple[int, int]:
    """Accept a cube shape (il, xl, t) or a trace-grid shape (il, xl)."""
    if len(shape) not in (2, 3):
        raise ConfigError(f"mask shape must be (il, xl) or (il, xl, t), got {tuple(shape)}")
    n_il, n_xl = int(shape[0]), int(shape[1])
    if n_il < 1 or n_xl < 1:
        raise ConfigError(f"mask shape {tuple(shape)} has an empty axis")
    return n_il, n_xl


def _axis(axis: int) -> int:
    if axis not in (0, 1):
        raise ConfigError(f"axis must be 0 (inlines) or 1 (crosslines), got {axis!r}")
    return int(axis)


def _lines_to_mask(grid: tuple[int, int], axis: int, keep_lines: np.ndarray) -> np.ndarray:
    """Per-line keep flags -> per-trace mask, whole lines along ``axis``."""
    return np.broadcast_to(keep_lines[:, None] if axis == 0 else keep_lines[None, :], grid).copy()


def random_traces(shape, ratio_missing: float, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``round(ratio_missing * n_traces)`` traces missing, chosen uniformly without replacement."""
    grid = _grid(shape)
    n = grid[0] * grid[1]
    if not 0.0 <= float(ratio_missing) < 1.0:
        raise ConfigError(f"ratio_missing must be in [0, 1), got {ratio_missing}")
    k = int(round(float(ratio_missing) * n))
    if k >= n:
        raise ConfigError(f"ratio_missing {ratio_missing} would remove all {n} traces")
    mask = np.ones(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = False
    return mask.reshape(grid)


def block_traces(shape, width: int, axis: int, rng: np.random.Generator,
                 ratio_missing: float | None = None) -> np.ndarray:
    """Whole inlines (axis 0) or crosslines (axis 1) missing as contiguous blocks.

    Without ``ratio_missing``: one block of ``width`` lines at a random position. With it: exactly
    ``round(ratio_missing * n_lines)`` lines missing, in blocks of ``width`` (the last may be shorter),
    at random positions separated by at least one observed line so each block stays a distinct gap.
    """
    grid = _grid(shape)
    axis = _axis(axis)
    n_lines = grid[axis]
    width = int(width)
    if width < 1:
        raise ConfigError(f"block width must be >= 1, got {width}")
    n_missing = width if ratio_missing is None else int(round(float(ratio_missing) * n_lines))
    if ratio_missing is not None and not 0.0 <= float(ratio_missing) < 1.0:
        raise ConfigError(f"ratio_missing must be in [0, 1), got {ratio_missing}")
    if n_missing >= n_lines:
        raise ConfigError(f"blocks of {n_missing} lines would remove all {n_lines} lines on axis {axis}")
    keep = np.ones(n_lines, dtype=bool)
    if n_missing == 0:
        return _lines_to_mask(grid, axis, keep)
    sizes = [width] * (n_missing // width) + ([n_missing % width] if n_missing % width else [])
    n_blocks, n_free = len(sizes), n_lines - n_missing
    if n_free < n_blocks - 1:
        raise ConfigError(f"cannot fit {n_blocks} separated blocks of width {width} into {n_lines} lines")
    # Random gaps around the blocks: interior gaps >= 1 line; distribute the remaining free lines over
    # the n_blocks + 1 gaps uniformly (stars and bars).
    spare = n_free - (n_blocks - 1)
    cuts = np.sort(rng.choice(spare + n_blocks, size=n_blocks, replace=False))
    gaps = np.diff(np.concatenate([[-1], cuts])) - 1  # leading gap then extra per interior gap
    gaps[1:] += 1
    start = 0
    for gap, size in zip(gaps, sizes):
        start += int(gap)
        keep[start:start + size] = False
        start += size
    return _lines_to_mask(grid, axis, keep)


def regular_decimation(shape, factor: int, axis: int, offset: int = 0) -> np.ndarray:
    """Keep every ``factor``-th inline (axis 0) or crossline (axis 1), starting at ``offset``."""
    grid = _grid(shape)
    axis = _axis(axis)
    factor = int(factor)
    if factor < 2:
        raise ConfigError(f"decimation factor must be >= 2, got {factor}")
    if not 0 <= int(offset) < min(factor, grid[axis]):
        raise ConfigError(f"decimation offset must be in [0, {min(factor, grid[axis])}), got {offset}")
    keep = (np.arange(grid[axis]) - int(offset)) % factor == 0
    return _lines_to_mask(grid, axis, keep)


def dead_traces(cube: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Observed-mask of a real cube: traces whose every |sample| <= ``tol`` are dead, i.e. missing."""
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise InputError(f"expected an (il, xl, t) cube, got shape {cube.shape}")
    return np.abs(cube).max(axis=2) > tol


def make_mask(pattern: str, shape, rng: np.random.Generator, **params) -> np.ndarray:
    """Dispatch on ``pattern``: ``random`` (ratio_missing=0.5), ``block`` (width = 1/4 of the axis,
    axis=0), ``decimate`` (factor=2, axis=0, offset=0)."""
    grid = _grid(shape)
    try:
        if pattern == "random":
            return random_traces(grid, params.pop("ratio_missing", 0.5), rng, **params)
        if pattern == "block":
            axis = _axis(params.pop("axis", 0))
            width = params.pop("width", max(1, grid[axis] // 4))
            return block_traces(grid, width, axis, rng, **params)
        if pattern == "decimate":
            return regular_decimation(grid, params.pop("factor", 2), params.pop("axis", 0), **params)
    except TypeError as err:  # unknown keyword from a config
        raise ConfigError(f"bad parameters for mask pattern {pattern!r}: {err}") from err
    raise ConfigError(f"unknown mask pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")


def check_mask(mask: np.ndarray, cube_shape, path: str | Path | None = None) -> np.ndarray:
    """Validate a per-trace mask against a cube shape; return it as a bool ``(n_il, n_xl)`` array."""
    mask = np.asarray(mask)
    want = tuple(int(s) for s in cube_shape[:2])
    if mask.shape != want:
        raise InputError(f"mask shape {mask.shape} does not match the cube's traces (il, xl) = {want}", path)
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise InputError("mask values must be 0 (missing) or 1 (observed)", path)
        mask = mask.astype(bool)
    if not mask.any():
        raise InputError("mask is all-missing: no observed trace to interpolate from", path)
    return mask


def apply_mask(cube: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Copy of ``cube`` with the missing traces (mask False) set to zero; observed samples untouched."""
    cube = np.asarray(cube)
    mask = check_mask(mask, cube.shape)
    return np.where(mask[..., None], cube, np.zeros((), dtype=cube.dtype))

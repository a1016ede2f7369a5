"""One real survey as training and held-out data: a user with one SEG-Y file and no separate training cubes
trains on one part of it and measures the model on another, before filling the survey's own gaps.

The survey is cut along one lateral axis (crosslines by default) into a training block and a held-out
block, with a gap of ``gap`` lines between them so that no training patch sees traces next to the held-out
ones. Dead traces (all samples zero) are gaps of the survey, not data: they are recorded so that training
never asks the network to reproduce them.
"""

from __future__ import annotations

from pathlib import Path

from medsci.errors import InputError
from medsci.io.atomic import write_json_atomic
from medsci.io.segy import create_segy
from medsci.tasks.seismic.masks import dead_traces

AXES = {"inline": 0, "crossline": 1}


def split_survey(cube, out_dir: str | Path, heldout_fraction: float = 0.3, axis: str = "crossline",
                 gap: int = 2, patch: tuple[int, int, int] | None = None) -> dict:
    """Write ``train.segy`` and ``heldout.segy`` (the survey's line numbers and sample rate) and
    ``split.json``; returns the split record. ``patch`` (il, xl, t): refuse a split a patch cannot fit."""
    if axis not in AXES:
        raise InputError(f"split axis must be one of {sorted(AXES)}, got {axis!r}", cube.source)
    if not 0.0 < heldout_fraction < 1.0:
        raise InputError(f"heldout fraction must lie in (0, 1), got {heldout_fraction}", cube.source)
    ax = AXES[axis]
    n = cube.shape[ax]
    n_held = int(round(n * heldout_fraction))
    n_train = n - n_held - gap
    if n_held < 1 or n_train < 1:
        raise InputError(f"{n} {axis}s cannot be split into training and held-out blocks ({heldout_fraction:.0%} "
                         f"held out, {gap} lines apart)", cube.source)
    parts = {"train": slice(0, n_train), "heldout": slice(n - n_held, n)}
    record = {"source": str(cube.source) if cube.source else None, "axis": axis, "gap": gap,
              "shape": list(cube.shape), "sample_interval_ms": cube.sample_interval_ms, "parts": {}}
    out_dir = Path(out_dir)
    for name, sl in parts.items():
        index = (slice(None), sl) if ax == 1 else (sl, slice(None))
        data = cube.data[index]
        if patch is not None:
            _check_fits(data.shape, patch, f"the {name} block of {axis}s {sl.start}..{sl.stop - 1}", cube.source)
        lines = {"ilines": cube.ilines[index[0]], "xlines": cube.xlines[index[1]]}
        create_segy(out_dir / f"{name}.segy", data, cube.sample_interval_ms, **lines)
        dead = ~dead_traces(data)
        record["parts"][name] = {"shape": list(data.shape), f"{axis}_range": [int(sl.start), int(sl.stop) - 1],
                                 "ilines": [int(lines["ilines"][0]), int(lines["ilines"][-1])],
                                 "xlines": [int(lines["xlines"][0]), int(lines["xlines"][-1])],
                                 "dead_traces": int(dead.sum())}
    write_json_atomic(out_dir / "split.json", record)
    return record


def _check_fits(shape, patch, what: str, source) -> None:
    """A patch must fit (il<->xl transposes are allowed in training); say what would fit if not."""
    n_il, n_xl, n_t = shape
    p_il, p_xl, p_t = patch
    if n_t < p_t:
        raise InputError(f"{what} has {n_t} time samples, fewer than the patch's {p_t}: use a patch of at most "
                         f"{n_t} samples in time", source)
    if not ((n_il >= p_il and n_xl >= p_xl) or (n_il >= p_xl and n_xl >= p_il)):
        raise InputError(f"{what} is {n_il} inlines x {n_xl} crosslines, too thin for the patch "
                         f"{p_il} x {p_xl}: a patch of at most {n_il} x {n_xl} (multiples of the UNet's "
                         "downsampling) would fit", source)

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
from medsci.tasks.seismic.config import holds_patch
from medsci.tasks.seismic.masks import dead_traces

AXES = {"inline": 0, "crossline": 1}


def split_survey(cube, out_dir: str | Path, heldout_fraction: float = 0.3, axis: str = "crossline",
                 gap: int = 2, patch: tuple[int, int, int] | None = None) -> dict:
    """Write ``train.segy`` and ``heldout.segy`` (the survey's line numbers and sample rate) and
    ``split.json``; returns the split record. ``patch`` (il, xl, t): refuse a split a patch cannot fit, naming
    the smallest survey that would work (nothing is written then)."""
    if axis not in AXES:
        raise InputError(f"split axis must be one of {sorted(AXES)}, got {axis!r}", cube.source)
    if not 0.0 < heldout_fraction < 1.0:
        raise InputError(f"heldout fraction must lie in (0, 1), got {heldout_fraction}", cube.source)
    ax = AXES[axis]
    n = cube.shape[ax]
    n_train, n_held = block_sizes(n, heldout_fraction, gap)
    parts = {"train": slice(0, n_train), "heldout": slice(n - n_held, n)}
    problem = None
    if n_held < 1 or n_train < 1:
        problem = (f"{n} {axis}s leave {max(n_train, 0)} for training and {max(n_held, 0)} held out, {gap} lines "
                   "apart")
    elif patch is not None:
        for name, sl in parts.items():
            shape = list(cube.shape)
            shape[ax] = sl.stop - sl.start
            problem = _misfit(shape, patch, f"the {name} block ({axis}s {sl.start}..{sl.stop - 1})")
            if problem:
                break
    if problem:
        with_patch = f", with the training patch {' x '.join(map(str, patch))}" if patch is not None else ""
        smallest = smallest_survey(cube.shape, heldout_fraction, axis, gap, patch)
        raise InputError(f"survey of {_size(cube.shape)} is too small to hold out {100 * heldout_fraction:.3g}% of "
                         f"its {axis}s, {gap} lines apart{with_patch}: {problem}; the smallest survey that works "
                         f"is {_size(smallest)} (or use a smaller patch, held-out fraction or gap)", cube.source)
    record = {"source": str(cube.source) if cube.source else None, "axis": axis, "gap": gap,
              "shape": list(cube.shape), "sample_interval_ms": cube.sample_interval_ms, "parts": {}}
    out_dir = Path(out_dir)
    for name, sl in parts.items():
        index = (slice(None), sl) if ax == 1 else (sl, slice(None))
        data = cube.data[index]
        lines = {"ilines": cube.ilines[index[0]], "xlines": cube.xlines[index[1]]}
        create_segy(out_dir / f"{name}.segy", data, cube.sample_interval_ms, **lines)
        dead = ~dead_traces(data)
        record["parts"][name] = {"shape": list(data.shape), f"{axis}_range": [int(sl.start), int(sl.stop) - 1],
                                 "ilines": [int(lines["ilines"][0]), int(lines["ilines"][-1])],
                                 "xlines": [int(lines["xlines"][0]), int(lines["xlines"][-1])],
                                 "dead_traces": int(dead.sum())}
    write_json_atomic(out_dir / "split.json", record)
    return record


def block_sizes(n: int, heldout_fraction: float, gap: int) -> tuple[int, int]:
    """(training, held-out) line counts of ``n`` lines: the last ``heldout_fraction`` held out, ``gap`` between."""
    n_held = int(round(n * heldout_fraction))
    return n - n_held - gap, n_held


def _size(shape) -> str:
    return f"{shape[0]} inlines x {shape[1]} crosslines x {shape[2]} samples"


def _misfit(shape, patch, what: str) -> str | None:
    """Why a block of ``shape`` (il, xl, t) cannot hold ``patch``, or None when it can."""
    n_il, n_xl, n_t = shape
    p_il, p_xl, p_t = patch
    if n_t < p_t:
        return f"{what} has {n_t} time samples, fewer than the patch's {p_t}"
    if not holds_patch(shape, patch):
        return f"{what} is {n_il} inlines x {n_xl} crosslines, too thin for the patch {p_il} x {p_xl}"
    return None


def smallest_survey(shape, heldout_fraction: float, axis: str, gap: int,
                    patch: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The smallest (il, xl, t) survey whose training and held-out blocks both hold ``patch`` (any patch of one
    trace without one). Across the cut, the survey's own line count is kept when some orientation of the patch
    fits it (then the smaller of the patch sizes it allows), else the smaller patch size; along the cut, the
    fewest lines whose blocks are each at least the other patch size."""
    p_il, p_xl, p_t = (1, 1, 1) if patch is None else (int(p) for p in patch)
    ax = AXES[axis]
    across = shape[1 - ax]
    # Orientations as (lines needed across the cut, lines needed along it).
    options = [(p_il, p_xl), (p_xl, p_il)] if ax == 1 else [(p_xl, p_il), (p_il, p_xl)]
    usable = [o for o in options if across >= o[0]]
    need_across, need_along = min(usable, key=lambda o: (o[1], o[0])) if usable else min(options)
    # No solution below these bounds (|round(x) - x| <= 0.5); the first count past them that works is the answer.
    n = max(need_along, int((need_along - 0.5) / heldout_fraction),
            int((need_along + gap - 0.5) / (1.0 - heldout_fraction)))
    while min(block_sizes(n, heldout_fraction, gap)) < need_along:
        n += 1
    lateral = (need_across, n) if ax == 1 else (n, need_across)
    return (*lateral, p_t)

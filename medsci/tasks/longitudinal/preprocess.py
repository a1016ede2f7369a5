"""A subject's sessions on one model grid: resample the first, register every later one onto it, normalise.

The model grid has ``preprocess.shape`` voxels at ``preprocess.spacing``, axis-aligned in RAS and centred on the
first session's volume centre. Every later session is registered (rigid or affine, SimpleITK) onto the first
session's model-grid image and resampled once, by the registration's own resampler. A session whose correlation
with the first after registration stays below ``min_similarity`` is refused (another modality or anatomy).
All sessions are divided by one number, the first session's ``normalise_percentile`` inside its foreground, so
intensity changes between sessions are kept. Predictions map back to the first session's native grid with its
affine (:func:`to_native`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medsci.errors import InputError

YEAR = 365.25  # days


def model_grid_affine(first_affine: np.ndarray, first_shape, shape, spacing) -> np.ndarray:
    centre_index = (np.asarray(first_shape[:3], dtype=np.float64) - 1) / 2
    centre = np.asarray(first_affine, dtype=np.float64)[:3, :3] @ centre_index + np.asarray(first_affine)[:3, 3]
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.asarray(shape, dtype=np.float64) - 1) / 2)
    return aff


def preprocess_subject(subject, cfg, threads: int = 1) -> dict:
    """{frames (S, X, Y, Z) float32, times (S,) days, session_ids, similarity, scale, grid_affine, first_affine,
    first_shape} for a :class:`~medsci.tasks.longitudinal.layout.Subject`."""
    from medsci.io.volume import read_volume
    from medsci.preprocessing.geometry import resample_to_grid
    from medsci.tasks.longitudinal.checks import check_handedness
    from medsci.preprocessing.registration import check_similarity, foreground_mask, register_to

    sessions = subject.sessions
    if len(sessions) < 2:
        raise InputError("needs at least two sessions", subject.folder)
    first = read_volume(sessions[0].path)
    grid = model_grid_affine(first.affine, first.array.shape, cfg.shape, cfg.spacing)
    reference = resample_to_grid(np.asarray(first.array, np.float32), first.affine, grid, cfg.shape, "bilinear",
                                 padding_mode="zeros")
    frames, similarity = [reference], [1.0]
    for session in sessions[1:]:
        vol = read_volume(session.path)
        check_handedness(first.affine, vol.affine, session.path)
        result = register_to(reference, grid, np.asarray(vol.array, np.float32), vol.affine,
                             kind=cfg.registration, seed=0, threads=threads)
        check_similarity(result.similarity, cfg.min_similarity, session.path)
        frames.append(np.asarray(result.moved, np.float32))
        similarity.append(float(result.similarity))
    fg = foreground_mask(reference)
    scale = float(np.percentile(reference[fg], cfg.normalise_percentile)) if fg.any() else 0.0
    if not np.isfinite(scale) or scale <= 0:
        raise InputError("first session has no foreground to normalise by", sessions[0].path)
    return {"frames": np.stack(frames) / np.float32(scale), "times": np.array([s.time for s in sessions], np.float64),
            "session_ids": [s.id for s in sessions], "similarity": similarity, "scale": scale,
            "grid_affine": grid, "first_affine": np.asarray(first.affine, np.float64),
            "first_shape": list(first.array.shape[:3]), "subject": subject.id,
            "first_session": str(sessions[0].path)}


def save_subject(path: str | Path, record: dict) -> None:
    from medsci.io.atomic import write_json_atomic
    from medsci.preprocessing.store import write_npz

    path = Path(path)
    write_npz(path, {"frames": record["frames"].astype(np.float32), "times": record["times"]})
    meta = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in record.items()
            if k not in ("frames", "times")}
    write_json_atomic(path.with_suffix(".json"), meta)


def load_subject(path: str | Path) -> dict:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            record = {"frames": z["frames"], "times": z["times"]}
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"not a preprocessed subject ({str(err).splitlines()[0][:100]})", path) from None
    record.update(meta)
    record["grid_affine"] = np.asarray(record["grid_affine"], np.float64)
    record["first_affine"] = np.asarray(record["first_affine"], np.float64)
    return record


def to_native(volume: np.ndarray, record: dict, scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A model-grid prediction on the first session's native grid (intensities back in its units), and that
    grid's affine."""
    from medsci.preprocessing.geometry import resample_to_grid

    out = resample_to_grid(np.asarray(volume, np.float32), record["grid_affine"], record["first_affine"],
                           record["first_shape"], "bilinear", padding_mode="zeros")
    return (out * np.float32(record["scale"]) if scale else out), record["first_affine"]

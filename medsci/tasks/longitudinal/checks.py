"""Plausibility checks of a forecast request against the model (docs/longitudinal.md, "What forecast refuses").

Cheap checks only (the sessions table, the volumes' headers, the checkpoint's config.json), so that a request
that cannot be right is refused before the weights load and the sessions are registered:

- time units: the subject's gaps between sessions against the training subjects' gaps (``training_times``,
  recorded in the checkpoint; a checkpoint without them is not checked and says so);
- horizon: a requested time more than ``HORIZON_FACTOR`` times the longest training gap after the last session;
- duplicate requested times (one output file each);
- a session whose header is mirrored against the first session's (the sign of the affine's determinant);
- a subject acquired at another voxel size than the model's (``SPACING_TOLERANCE``);

and, after registration, a session that is another subject's (``SAME_SUBJECT_SIMILARITY``).
"""

from __future__ import annotations

import numpy as np

from medsci.errors import InputError
from medsci.preprocessing.geometry import voxel_spacing

# The demo trains on gaps of 90-540 days. A subject whose median gap lies more than 5x outside the training range
# has its times in another unit: years (gaps ~0.25-1.5) or hours (x24) land 60x below and 4.4x..24x above
# it; weeks (x1/7) inside 5x are let through, their forecasts are merely less certain.
UNIT_FACTOR = 5.0
# No sequence of the model's training spans more than its longest gap; 10x that (15 years for the demo) is far
# beyond anything it saw: refused rather than extrapolated (--time 1e9 is 2.7 million years).
HORIZON_FACTOR = 10.0
# Measured on demo subjects scanned at 3 mm and resampled to a 4 mm model's grid: the model scored below copying the
# last session (SSIM in the changed region 0.965 vs 0.969); the same subjects at 4 mm: 0.981 vs 0.967. Trained on
# subjects acquired at 4, 3 and 2 mm (data.demo.spacings) it beat copy-last at 3 mm (0.974) but not deformation
# extrapolation (0.975), so the refusal stays (docs/longitudinal.md).
SPACING_TOLERANCE = 0.10
# Correlation with the first session after rigid registration (preprocess.py), measured on demo subjects: the
# same subject's later sessions 0.970-0.994 at 12 mm and 0.965-0.989 at 4 mm, another subject's last session
# 0.880-0.955 and 0.616-0.885 (docs/longitudinal.md). The margin is thin and measured on phantoms only, and a
# real subject's tumour or atrophy lowers it over years: below SAME_SUBJECT_SIMILARITY the forecast goes on with
# a recorded warning; only below SAME_SUBJECT_REFUSE is it refused (forecast --allow-other-subject overrides it).
SAME_SUBJECT_SIMILARITY = 0.96
SAME_SUBJECT_REFUSE = 0.90
UNITS = {"years": 365.25, "weeks": 7.0, "hours": 1 / 24}  # days per unit


def training_times(subjects: list[dict]) -> dict:
    """{"gap_days": {"min", "median", "max"}}: the gaps between consecutive sessions of the training subjects,
    recorded in the checkpoint (``config.json`` ``training_times``) for :func:`check_times`."""
    gaps = np.concatenate([np.diff(np.asarray(s["times"], np.float64)) for s in subjects] or [np.zeros(0)])
    if gaps.size == 0:  # no subject with two sessions: the training refuses it
        return {}
    return {"gap_days": {k: round(float(f(gaps)), 3) for k, f in
                         (("min", np.min), ("median", np.median), ("max", np.max))}}


def check_times(requested: list[float], session_times: list[float], stats: dict | None, table) -> list[str]:
    """Refuse duplicate requested times, session gaps in another unit than the training's and absurd horizons;
    return the notes of the checks skipped (a checkpoint without ``training_times``)."""
    seen = sorted(requested)
    twice = sorted({t for a, t in zip(seen, seen[1:]) if a == t})
    if twice:
        raise InputError(f"time {twice[0]:g} is requested twice: give each time once (one output file each)",
                         "--time")
    gaps = stats.get("gap_days") if isinstance(stats, dict) else None
    try:
        lo, hi = float(gaps["min"]), float(gaps["max"])
    except (TypeError, KeyError, ValueError):
        lo = hi = float("nan")
    if not 0 < lo <= hi < np.inf:
        return ["time units and horizon not checked: the checkpoint records no training_times (trained before "
                "they were recorded)"]
    median = float(np.median(np.diff(np.asarray(session_times, np.float64))))
    if not lo / UNIT_FACTOR <= median <= hi * UNIT_FACTOR:
        guess = [u for u, days in UNITS.items() if lo / UNIT_FACTOR <= median * days <= hi * UNIT_FACTOR]
        hint = f" (in {guess[0]} they would fit)" if guess else ""
        raise InputError(f"sessions are {median:g} days apart (median), but the model was trained on gaps of "
                         f"{lo:g}-{hi:g} days: are the times in days?{hint}", table)
    horizon = max(requested) - float(session_times[-1])
    if horizon > HORIZON_FACTOR * hi:
        raise InputError(f"time {max(requested):g} is {horizon:g} days after the last session, more than "
                         f"{HORIZON_FACTOR:g}x the longest gap the model was trained on ({hi:g} days)", "--time")
    return []


def check_handedness(first_affine, affine, path) -> None:
    """Refuse a session whose voxel-to-world determinant has the other sign from the first session's: a
    left-right mirror in the header, which no rigid registration undoes (forecast and preprocessing)."""
    first, this = (float(np.sign(np.linalg.det(np.asarray(a)[:3, :3]))) for a in (first_affine, affine))
    if this != first:
        raise InputError(f"its header is mirrored against the first session's (voxel-to-world determinant "
                         f"{'+' if this > 0 else '-'}, the first's {'+' if first > 0 else '-'}): a left-right "
                         "flip? fix the header or leave the session out", path)


def check_headers(session_paths: list, model_spacing, allow_other_spacing: bool) -> None:
    """From the headers alone: every session has the first session's handedness (:func:`check_handedness`), and
    the first session's voxel size is within ``SPACING_TOLERANCE`` of the model's."""
    from medsci.io.volume import read_affine

    affines = [read_affine(p) for p in session_paths]
    for path, affine in zip(session_paths[1:], affines[1:]):
        check_handedness(affines[0], affine, path)
    if model_spacing is None:  # a checkpoint without it is refused when it loads
        return
    spacing = np.asarray(voxel_spacing(affines[0]))
    trained = np.asarray(model_spacing, float)
    if not allow_other_spacing and np.any(np.abs(spacing / trained - 1) > SPACING_TOLERANCE):
        shown, model = tuple(round(float(v), 2) for v in spacing), tuple(float(v) for v in trained)
        raise InputError(f"voxel size {shown} mm is more than 10 % away from the model's {model} mm; resampled, "
                         "this model forecast worse than copying the last session in tests; resample the scans to "
                         "the model's voxel size, or pass --allow-other-spacing", session_paths[0])


def check_same_subject(record: dict, subject, allow_other: bool = False) -> list[str]:
    """Every session registered onto the first should correlate with it at least ``SAME_SUBJECT_SIMILARITY``;
    below, it may be another subject's scan (the forecast would extrapolate the change between two people):
    a warning, returned; below ``SAME_SUBJECT_REFUSE`` a refusal unless ``allow_other``."""
    notes = []
    for session, similarity in zip(subject.sessions[1:], record["similarity"][1:]):
        if similarity < SAME_SUBJECT_SIMILARITY:
            message = (f"does not look like the same subject as the first session (correlation after rigid "
                       f"registration {similarity:.3f} < {SAME_SUBJECT_SIMILARITY}): another subject's scan?")
            if similarity < SAME_SUBJECT_REFUSE and not allow_other:
                raise InputError(f"{message} (below {SAME_SUBJECT_REFUSE}: refused; --allow-other-subject to "
                                 "forecast anyway)", session.path)
            notes.append(f"{session.path}: {message}")
    return notes

"""Is a new case like the cases the synthesis model was trained on? A cheap domain check on the preprocessed
case (the arrays the network sees), against a summary of the training cases stored in the checkpoint's
config.json (``training_data``).

The summary, per training case: the brain volume in mL (the preprocessing mask on the resampled grid), and
inside the brain mask, per contrast, the percentiles :data:`PERCENTILES` of the normalised intensities ([0, 1]
after clipping to the in-brain percentile window), and the correlation of every pair of contrasts. The
checkpoint keeps the range (lowest, highest) of each over the training cases.

A case is compared with those ranges; a value further outside than the margin below is a warning in the case
record (the synthesis is still made: these are signs, not proofs, that it is out of the model's domain):

* brain volume below 1/:data:`BRAIN_VOLUME_FACTOR` of the smallest training brain or above that many times the
  largest (a voxel size wrong in the header, or not an adult human brain);
* a contrast's percentile more than :data:`INTENSITY_MARGIN` (normalised units) outside the training range
  (another sequence, an inverted contrast);
* a pair's correlation more than :data:`CORRELATION_MARGIN` outside the training range (an inverted or
  mislabelled contrast: T1 and T2 correlate negatively in the brain, an inverted T2 positively).

Margins measured on demo cases (docs/clinical.md, "Out of the training domain"). A checkpoint without
``training_data`` (trained before it was recorded) is not checked.
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np

from medsci.mri.cases import MODALITIES

PERCENTILES = (10, 25, 50, 75, 90)
BRAIN_VOLUME_FACTOR = 2.0
INTENSITY_MARGIN = 0.4
CORRELATION_MARGIN = 0.6


def brain_ml(sidecar: dict) -> float | None:
    """The case's brain volume in mL from its preprocessing sidecar (None when it does not record it)."""
    voxels, spacing = sidecar.get("mask_voxels"), (sidecar.get("resampled") or {}).get("spacing")
    if voxels is None or not spacing:
        return None
    return float(voxels) * float(np.prod(spacing)) / 1000.0


def case_summary(image: np.ndarray, mask: np.ndarray, available: Sequence[str], sidecar: dict) -> dict:
    """Brain volume, per-contrast in-brain percentiles and pairwise correlations of one preprocessed case."""
    inside = {m: image[MODALITIES.index(m)][mask].astype(np.float64) for m in MODALITIES if m in available}
    correlation = {}
    for a, b in combinations(inside, 2):
        x, y = inside[a], inside[b]
        correlation[f"{a}-{b}"] = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0
    return {"brain_ml": brain_ml(sidecar),
            "intensity": {m: np.percentile(v, PERCENTILES).tolist() if v.size else None for m, v in inside.items()},
            "correlation": correlation}


def _span(values: list[float]) -> list[float]:
    return [round(min(values), 4), round(max(values), 4)]


def training_summary(cases) -> dict:
    """The ranges over the training cases (:class:`~medsci.tasks.synthesis.data.PreparedCase`) that
    :func:`domain_warnings` compares a new case with; stored as the checkpoint's ``training_data``."""
    summaries = [case_summary(c.image, c.mask, c.available, c.sidecar) for c in cases]
    volumes = [s["brain_ml"] for s in summaries if s["brain_ml"] is not None]
    intensity = {}
    for m in MODALITIES:
        rows = np.array([s["intensity"][m] for s in summaries if s["intensity"].get(m) is not None])
        if len(rows):
            intensity[m] = {"low": rows.min(axis=0).round(4).tolist(), "high": rows.max(axis=0).round(4).tolist()}
    pairs = sorted({p for s in summaries for p in s["correlation"]})
    return {"cases": len(summaries), "percentiles": list(PERCENTILES),
            "brain_ml": _span(volumes) if volumes else None, "intensity": intensity,
            "correlation": {p: _span([s["correlation"][p] for s in summaries if p in s["correlation"]])
                            for p in pairs}}


def _outside(value: float, low: float, high: float) -> float:
    return max(low - value, value - high, 0.0)


def domain_warnings(training: dict | None, image: np.ndarray, mask: np.ndarray, available: Sequence[str],
                    sidecar: dict) -> list[str]:
    """One-line warnings for what lies far outside the checkpoint's ``training_data`` (none without it; one
    saying so when it is mangled)."""
    if training is None or not mask.any():
        return []
    try:
        return _domain_warnings(training, image, mask, available, sidecar)
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
        return ["training domain not checked: the checkpoint's training_data in config.json is not readable"]


def _domain_warnings(training: dict, image: np.ndarray, mask: np.ndarray, available: Sequence[str],
                     sidecar: dict) -> list[str]:
    case = case_summary(image, mask, available, sidecar)
    n = f"the {training.get('cases', '?')} training cases"
    warnings = []
    span, ml = training.get("brain_ml"), case["brain_ml"]
    if span and ml is not None and not span[0] / BRAIN_VOLUME_FACTOR <= ml <= span[1] * BRAIN_VOLUME_FACTOR:
        warnings.append(f"outside the training data: brain volume {ml:.0f} mL, {span[0]:.0f}-{span[1]:.0f} mL in "
                        f"{n} (more than {BRAIN_VOLUME_FACTOR:g}x off): a wrong voxel size in the header, or not "
                        "an adult brain?")
    percentiles = training.get("percentiles", list(PERCENTILES))
    for m, ranges in training.get("intensity", {}).items():
        values = case["intensity"].get(m)
        if values is None or len(values) != len(percentiles):
            continue
        off = [_outside(v, lo, hi) for v, lo, hi in zip(values, ranges["low"], ranges["high"])]
        i = int(np.argmax(off))
        if off[i] > INTENSITY_MARGIN:
            warnings.append(f"outside the training data: {m} in-brain intensity percentile {percentiles[i]:g} is "
                            f"{values[i]:.2f} after normalisation, {ranges['low'][i]:.2f}-{ranges['high'][i]:.2f} "
                            f"in {n} (more than {INTENSITY_MARGIN:g} off): another sequence, or an inverted "
                            "contrast?")
    trained = training.get("correlation", {})
    off = {p: _outside(r, *trained[p]) for p, r in case["correlation"].items() if p in trained}
    worst = [p for p in sorted(off, key=off.get, reverse=True) if off[p] > CORRELATION_MARGIN]
    if worst:
        p = worst[0]
        low, high = trained[p]
        more = f" ({len(worst) - 1} other pair(s) too)" if len(worst) > 1 else ""
        warnings.append(f"outside the training data: {p.replace('-', ' and ')} correlate {case['correlation'][p]:+.2f} "
                        f"in the brain, {low:+.2f} to {high:+.2f} in {n}: more than {CORRELATION_MARGIN:g} off{more}: "
                        "an inverted or mislabelled contrast?")
    return warnings

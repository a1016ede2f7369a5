"""Intensity steps of one modality inside the brain mask: N4 bias-field correction, percentile clipping
window, and scaling to [0, 1]."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from medsci.errors import InputError


def n4(region: np.ndarray, mask: np.ndarray, spacing: Sequence[float], source: Path) -> np.ndarray:
    """N4 bias-field correction of a float32 region inside ``mask``, fitted on a shrunk copy for speed."""
    import SimpleITK as sitk

    fit_mask = mask & (region > 0)  # N4 works on log intensities
    if not fit_mask.any():
        return region
    # SimpleITK arrays are (k, j, i): transpose so the physical spacing lines up.
    img = sitk.GetImageFromArray(np.ascontiguousarray(region.T))
    img.SetSpacing([float(s) for s in spacing])
    msk = sitk.GetImageFromArray(np.ascontiguousarray(fit_mask.T.astype(np.uint8)))
    msk.CopyInformation(img)
    factor = int(max(1, min(4, min(region.shape) // 16)))
    try:
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations([50, 50, 30, 20])
        corrector.Execute(sitk.Shrink(img, [factor] * 3), sitk.Shrink(msk, [factor] * 3))
        log_bias = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(img)).T
    except RuntimeError as err:
        raise InputError(f"N4 bias correction failed: {str(err).splitlines()[-1]}", source) from None
    return (region / np.exp(log_bias)).astype(np.float32, copy=False)


def clip_window(region: np.ndarray, mask: np.ndarray, percentiles: Sequence[float]) -> tuple[float, float]:
    """Intensities (lo, hi) at ``percentiles`` of the voxels inside ``mask``; hi > lo always."""
    lo, hi = (float(v) for v in np.percentile(region[mask], list(percentiles)))
    if not hi > lo:  # flat modality: keep the map invertible
        hi = lo + 1.0
    return lo, hi


def normalise_into(dst: np.ndarray, src: np.ndarray, lo: float, hi: float, inside: np.ndarray) -> None:
    """dst = clip((src - lo) / (hi - lo), 0, 1), zero outside ``inside``; in place, no full-size copies."""
    np.subtract(src, np.float32(lo), out=dst)
    dst *= np.float32(1.0 / (hi - lo))
    np.clip(dst, 0.0, 1.0, out=dst)
    dst[~inside] = 0.0

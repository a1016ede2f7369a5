"""Carrying a radiograph's fine detail with the anatomy the model moved.

The model works at its own detector resolution; the radiograph is finer. Its detail reaches the output through
the projective warp of the full-resolution input, which is near-identity for out-of-plane turns: parallax moves
structures at different depths by different amounts, and the warp moves none of them. The model's output at its
own resolution does show that motion. So the displacement that takes the model's first guess (the warp at model
resolution) to its output is estimated (symmetric-forces demons, SimpleITK, smoothed by ``sigma`` model pixels),
scaled up, and applied to the full-resolution warp. What a displacement cannot explain (density that appears or
fades) is added as before: the model's output minus its displaced first guess, upsampled.

At the model's resolution the result is the model's output either way (displaced first guess + remainder). Only the
detail finer than the model's pixels changes: it now follows the anatomy (docs/radiograph-rotation.md, "Clinical
use", for the measured gain).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Demons settings, chosen on held-out phantoms (docs/radiograph-rotation.md): a field smoothed over 2.5 model
# pixels follows organ-scale parallax without copying the model's pixel noise into the detail.
SIGMA = 2.5
ITERATIONS = 30


def anatomy_shift(model: np.ndarray, first_guess: np.ndarray, sigma: float = SIGMA,
                  iterations: int = ITERATIONS) -> np.ndarray:
    """(2, H, W) displacement in pixels (rows, cols) such that ``first_guess`` sampled at ``x + u(x)`` matches
    ``model``. One thread: the same bytes on every run."""
    import SimpleITK as sitk

    fixed = sitk.GetImageFromArray(np.asarray(model, dtype=np.float64))
    moving = sitk.GetImageFromArray(np.asarray(first_guess, dtype=np.float64))
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(iterations))
    demons.SetStandardDeviations(float(sigma))
    demons.SetNumberOfThreads(1)
    field = sitk.GetArrayFromImage(demons.Execute(fixed, moving))  # (H, W, 2): x (columns), y (rows)
    return np.stack([field[..., 1], field[..., 0]]).astype(np.float32)


def shift_image(image: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``x + u(x)`` (bilinear, edges extended)."""
    rows, cols = np.indices(image.shape, dtype=np.float64)
    return ndimage.map_coordinates(np.asarray(image, dtype=np.float64), [rows + u[0], cols + u[1]], order=1,
                                   mode="nearest").astype(np.float32)


def carry_detail(base: np.ndarray, model: np.ndarray, first_guess: np.ndarray, fit, scale: float,
                 shift: bool = True) -> tuple[np.ndarray, dict]:
    """The rotated radiograph at the input's resolution, and a record of what was done.

    ``base``: the full-resolution warp of the input; ``model`` / ``first_guess``: the model's output and its first
    guess on the model grid; ``fit``: the :class:`~medsci.tasks.rotation.detector_fit.DetectorFit`; ``scale``:
    model intensities -> input intensities. ``shift`` False: the warp plus the upsampled correction only.
    """
    if not shift:
        return base + fit.to_input(model - first_guess) * scale, {"method": "warp + correction"}
    u = anatomy_shift(model, first_guess)
    remainder = model - shift_image(first_guess, u)
    out = shift_image(base, fit.displacement_to_input(u)) + fit.to_input(remainder) * scale
    return out, {"method": "warp moved by the model's displacement + remainder",
                 "mean_shift_model_pixels": round(float(np.hypot(u[0], u[1]).mean()), 4),
                 "max_shift_model_pixels": round(float(np.hypot(u[0], u[1]).max()), 4)}

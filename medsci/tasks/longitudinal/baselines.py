"""Classical next-session baselines for the longitudinal task.

Every baseline takes the sessions of one subject as float32 arrays on one common grid (already registered,
e.g. with :func:`medsci.preprocessing.registration.register_to`), their acquisition times in days
(strictly increasing) and the time to predict; it returns a float32 array of the same shape.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _check(frames: Sequence[np.ndarray], times: Sequence[float]) -> tuple[list[np.ndarray], list[float]]:
    if len(frames) == 0:
        raise ValueError("at least one frame is needed")
    if len(frames) != len(times):
        raise ValueError(f"{len(frames)} frames but {len(times)} times")
    arrays = [np.asarray(f, dtype=np.float32) for f in frames]
    shape = arrays[0].shape
    if len(shape) != 3 or any(a.shape != shape for a in arrays):
        raise ValueError(f"frames must be 3D arrays of one shape, got {[a.shape for a in arrays]}")
    t = [float(x) for x in times]
    if not all(np.isfinite(t)) or any(b <= a for a, b in zip(t, t[1:])):
        raise ValueError(f"times must be finite and strictly increasing, got {t}")
    return arrays, t


# The linear and deformation baselines continue the change of the last interval; a target more than this many last
# intervals after the last frame (4 days apart, then 198 days ahead: 50x) is predicted at this many instead: the
# change of a short interval is mostly noise and misregistration, and 50x of it scored SSIM 0.16 (linear) and 0.03
# (deformation). The demo's held-out targets lie 0.5-2.5 intervals ahead, so its table is unchanged.
MAX_EXTRAPOLATION = 3.0


def extrapolation_factor(times: Sequence[float], target_time: float) -> tuple[float, float]:
    """(asked, used): how many last intervals ``target_time`` lies after the last of ``times``, and that
    clamped to [-MAX_EXTRAPOLATION, MAX_EXTRAPOLATION] (what the baselines apply; the report records both)."""
    t = [float(x) for x in times]
    if len(t) < 2:  # one frame: every baseline copies it
        return 0.0, 0.0
    asked = (float(target_time) - t[-1]) / (t[-1] - t[-2])
    return asked, float(np.clip(asked, -MAX_EXTRAPOLATION, MAX_EXTRAPOLATION))


def copy_last(frames: Sequence[np.ndarray], times: Sequence[float], target_time: float) -> np.ndarray:
    """The last frame, unchanged (a copy)."""
    arrays, _ = _check(frames, times)
    return arrays[-1].copy()


def linear_extrapolation(frames: Sequence[np.ndarray], times: Sequence[float], target_time: float) -> np.ndarray:
    """Voxelwise line through the last two frames evaluated at ``target_time``.

    The result is clipped to the last frame's value range widened by 10 % of its width on each side, so long
    extrapolations cannot run away, and the line is continued for at most ``MAX_EXTRAPOLATION`` last intervals.
    With a single frame this is :func:`copy_last`.
    """
    arrays, t = _check(frames, times)
    last = arrays[-1]
    if len(arrays) == 1:
        return last.copy()
    prev = arrays[-2]
    slope_steps = extrapolation_factor(t, target_time)[1]  # in units of the last interval, capped
    out = last.astype(np.float64) + (last.astype(np.float64) - prev) * slope_steps
    lo, hi = float(last.min()), float(last.max())
    margin = 0.1 * (hi - lo)
    return np.clip(out, lo - margin, hi + margin).astype(np.float32)


def demons_field(fixed: np.ndarray, moving: np.ndarray, spacing=(1.0, 1.0, 1.0), iterations: int = 50,
                 smoothing: float = 1.5, threads: int = 1) -> np.ndarray:
    """Displacement field (mm, shape (i, j, k, 3), components along i, j, k) registering ``moving`` to ``fixed``.

    ITK's convention: for a voxel at position x of ``fixed``, ``x + field(x)`` is the corresponding position in
    ``moving``, i.e. ``fixed(x) ~ moving(x + field(x))``. Fast symmetric-forces demons, displacement field
    smoothed with a Gaussian of ``smoothing`` voxels after each of ``iterations`` iterations; both images are
    scaled by one common factor (99th percentile of ``fixed``) so the demons thresholds do not depend on the
    intensity unit. Deterministic.
    """
    import SimpleITK as sitk

    fixed = np.asarray(fixed, dtype=np.float32)
    moving = np.asarray(moving, dtype=np.float32)
    scale = float(np.percentile(np.abs(fixed), 99)) or 1.0
    spacing = [float(s) for s in spacing]

    def image(arr: np.ndarray):
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.T / scale, dtype=np.float32))  # (k, j, i) buffer
        img.SetSpacing(spacing)  # identity direction: the index axes i, j, k are the physical x, y, z axes
        return img

    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfThreads(max(1, int(threads)))
    demons.SetNumberOfIterations(int(iterations))
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(float(smoothing))
    demons.SetUseImageSpacing(True)
    field = demons.Execute(image(fixed), image(moving))
    # Vector image -> numpy (k, j, i, 3) with components (x, y, z) = (i, j, k): reverse the spatial axes only.
    return np.ascontiguousarray(sitk.GetArrayFromImage(field).transpose(2, 1, 0, 3), dtype=np.float64)


def warp(image_array: np.ndarray, field: np.ndarray, spacing=(1.0, 1.0, 1.0), threads: int = 1) -> np.ndarray:
    """Pull-back warp: ``out(x) = image(x + field(x))``, linear interpolation, border values outside the grid.

    ``field`` is in mm with shape (i, j, k, 3) (components along i, j, k), as returned by :func:`demons_field`.
    """
    import SimpleITK as sitk

    spacing = [float(s) for s in spacing]
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(image_array, dtype=np.float32).T))
    img.SetSpacing(spacing)
    disp = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(field, dtype=np.float64).transpose(2, 1, 0, 3)),
                                  isVector=True)
    disp.CopyInformation(img)
    transform = sitk.DisplacementFieldTransform(disp)  # takes the field over (the image is consumed)
    resampler = sitk.ResampleImageFilter()
    resampler.SetNumberOfThreads(max(1, int(threads)))
    resampler.SetReferenceImage(img)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetTransform(transform)
    resampler.SetUseNearestNeighborExtrapolator(True)
    return np.ascontiguousarray(sitk.GetArrayFromImage(resampler.Execute(img)).T, dtype=np.float32)


def deformation_extrapolation(frames: Sequence[np.ndarray], times: Sequence[float], target_time: float,
                              spacing=(1, 1, 1), iterations: int = 50, smoothing: float = 1.5,
                              threads: int = 1) -> np.ndarray:
    """Continue the deformation between the last two frames up to ``target_time`` and apply it to the last.

    Sign convention. ``d = demons_field(fixed=last, moving=second_last)`` is the displacement field of the
    last frame's grid towards the second-last frame (ITK convention): ``last(x) ~ second_last(x + d(x))``.
    Anatomy therefore moved by ``m(x) = -d(x)`` over the last interval ``t_last - t_second_last`` (content that
    sat at ``x + d(x)`` now sits at ``x``). Continuing the same motion for ``s = (target_time - t_last) /
    (t_last - t_second_last)`` more intervals pushes content by ``s * m = -s * d`` (the field scaled by
    ``-(target_time - t_last) / (t_last - t_second_last)``, pointing in the direction of the motion). A push by
    a small field is, to first order, a pull-back by its opposite, so the prediction is

        out(x) = last(x + s * d(x))        (linear interpolation, border values outside the grid)

    E.g. a sphere growing from r=6 to r=7: at the r=7 boundary d points inwards (to r=6); at ``s = 1`` the
    prediction at radius 8 reads ``last`` at radius ~7, so the sphere keeps growing towards r=8. ``s = 0``
    (``target_time == t_last``) returns the last frame; a target before ``t_last`` reverses the motion; ``s`` is
    clamped to ``MAX_EXTRAPOLATION`` intervals (:func:`extrapolation_factor`).
    With a single frame this is :func:`copy_last`. ``spacing`` (mm along i, j, k) sets the physical units of
    the field; ``smoothing`` is the Gaussian regularisation of the field in voxels. Deterministic.
    """
    arrays, t = _check(frames, times)
    last = arrays[-1]
    if len(arrays) == 1:
        return last.copy()
    s = extrapolation_factor(t, target_time)[1]
    d = demons_field(last, arrays[-2], spacing=spacing, iterations=iterations, smoothing=smoothing,
                     threads=threads)
    return warp(last, s * d, spacing=spacing, threads=threads)


BASELINES = {"copy_last": copy_last, "linear": linear_extrapolation, "deformation": deformation_extrapolation}

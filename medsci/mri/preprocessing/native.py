"""Back to the native grid: a model-grid array (e.g. a synthesized modality) is unscaled, un-cropped,
un-resampled and un-reoriented from its case's sidecar, then optionally written as NIfTI."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from medsci.errors import InputError
from medsci.io.volume import Volume, write_nifti
from medsci.preprocessing.geometry import invert_ornt, paste_window, reorient, resample_to_grid


def _reference_header(sidecar: Mapping) -> Any:
    """Header of the reference NIfTI (read lazily, no voxel data); None if it is gone or not NIfTI."""
    import nibabel as nib

    path = Path(sidecar["reference"]["path"])
    if not path.name.lower().endswith((".nii", ".nii.gz")) or not path.is_file():
        return None
    try:
        return nib.load(str(path)).header.copy()
    except Exception:
        return None


def to_native(array: np.ndarray, sidecar: Mapping, modality: str | None = None, *,
              mask: np.ndarray | None = None, interpolation: str | None = None) -> Volume:
    """Map an array of the preprocessed shape back onto the case's native grid.

    Undoes crop/pad, resampling and reorientation. If ``modality`` was available for this case its
    intensity scaling is undone (x*(hi-lo)+lo); a synthesized (missing) modality keeps the [0, 1] scale.
    ``mask`` (the preprocessed mask) zeroes voxels outside the brain after unscaling, as in the input.
    ``interpolation`` ("linear"/"nearest") only matters with resampling; default: nearest for integer
    arrays (labels), linear otherwise.
    """
    arr = np.asarray(array)
    shape = tuple(sidecar["shape"])
    if arr.shape != shape:
        raise InputError(f"array shape {arr.shape} does not match the preprocessed shape {shape}",
                         sidecar.get("npz"))
    is_label = interpolation == "nearest" or (interpolation is None and arr.dtype.kind in "biu")
    work_dtype = arr.dtype if is_label else np.float32

    # Intensity first: linear interpolation commutes with an affine intensity map.
    if not is_label:
        arr = arr.astype(np.float32, copy=True)
        if modality is not None and modality in sidecar["scaling"]:
            lo, hi = sidecar["scaling"][modality]["lo"], sidecar["scaling"][modality]["hi"]
            arr *= np.float32(hi - lo)
            arr += np.float32(lo)
        if mask is not None:
            if np.shape(mask) != shape:
                raise InputError(f"mask shape {np.shape(mask)} does not match {shape}", sidecar.get("npz"))
            arr[~np.asarray(mask, dtype=bool)] = 0.0

    # Undo crop/pad: paste the window into the (resampled) grid, zeros elsewhere.
    grid = paste_window(arr, np.array(sidecar["crop"]["start"]), tuple(sidecar["resampled"]["shape"]))

    # Undo resampling.
    reor = sidecar["reoriented"]
    if sidecar["resampled"]["applied"]:
        out = resample_to_grid(grid.astype(np.float32, copy=False), np.array(sidecar["resampled"]["affine"]),
                               np.array(reor["affine"]), reor["shape"], "nearest" if is_label else "bilinear")
        grid = np.rint(out).astype(work_dtype) if is_label else out

    # Undo reorientation (exact permutation/flips).
    native = np.ascontiguousarray(reorient(grid, invert_ornt(np.array(reor["ornt"]))))
    if native.shape != tuple(sidecar["native"]["shape"]):  # the sidecar does not belong to this pipeline
        raise InputError(f"restored shape {native.shape} != native {tuple(sidecar['native']['shape'])}",
                         sidecar.get("npz"))
    return Volume(array=native, affine=np.array(sidecar["native"]["affine"], dtype=np.float64), source=None,
                  header=_reference_header(sidecar),
                  meta={"format": "nifti", "dtype": str(native.dtype), "modality": modality,
                        "reference": sidecar["reference"]["path"]})


def save_native(array: np.ndarray, sidecar: Mapping, path: str | Path, modality: str | None = None, *,
                mask: np.ndarray | None = None, interpolation: str | None = None,
                dtype: Any = None, description: str | None = None) -> Path:
    """:func:`to_native` then an atomic NIfTI write with the native affine and the reference header."""
    path = Path(path)
    inputs = set(sidecar.get("sources", {}).values()) | {sidecar.get("seg_source")}
    if str(path.resolve()) in inputs:
        raise InputError("refusing to overwrite an input volume", path)
    vol = to_native(array, sidecar, modality, mask=mask, interpolation=interpolation)
    if dtype is None:
        dtype = np.uint8 if vol.array.dtype.kind in "biu" else np.float32
    return write_nifti(path, vol.array, vol.affine, vol.header, dtype=dtype, description=description)

"""Grid geometry: reorientation (exact axis permutation and flips), resampling to a spacing and back
(MONAI), and the crop/pad window onto the model grid, with the bookkeeping that makes each step invertible."""

from __future__ import annotations

from typing import Sequence

import numpy as np


# ------------------------------------------------------------------------------------------ orientation
def orientation_transform(affine: np.ndarray, axcodes: str) -> np.ndarray:
    """nibabel orientation transform from the grid of ``affine`` to axis codes such as ``"RAS"``."""
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    return ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))


def invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform (input axis i -> output axis ornt[i,0], flip ornt[i,1])."""
    ornt = np.asarray(ornt, dtype=np.float64)
    inv = np.empty_like(ornt)
    for i, (j, flip) in enumerate(ornt):
        inv[int(j)] = (i, flip)
    return inv


def reorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    from nibabel.orientations import apply_orientation

    # apply_orientation only flips and transposes: numpy views, no copy of the volume.
    return apply_orientation(array, ornt)


def reoriented_affine(affine: np.ndarray, ornt: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Affine of the grid after :func:`reorient` with ``ornt`` of an array of ``shape``."""
    from nibabel.orientations import inv_ornt_aff

    return affine @ inv_ornt_aff(ornt, shape)


def voxel_spacing(affine: np.ndarray) -> tuple[float, ...]:
    return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


# ------------------------------------------------------------------------------------------- resampling
def _meta_tensor(array: np.ndarray, affine: np.ndarray):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
                      affine=torch.as_tensor(affine, dtype=torch.float64))


def resample_to_spacing(channels: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                        mode: str, spatial_shape: Sequence[int] | None = None):
    """MONAI Spacing on a channel-first stack; returns (array float32, new affine float64)."""
    from monai.transforms import Spacing

    out = Spacing(pixdim=tuple(spacing), mode=mode, padding_mode="border", dtype=np.float32)(
        _meta_tensor(channels, affine), output_spatial_shape=spatial_shape)
    return (np.asarray(out.as_tensor().numpy(), dtype=np.float32),
            np.asarray(out.affine.numpy(), dtype=np.float64))


def resample_to_grid(array: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
                     dst_shape: Sequence[int], mode: str, padding_mode: str = "border") -> np.ndarray:
    """MONAI SpatialResample of one 3D array from one grid onto another (the inverse of Spacing)."""
    import torch
    from monai.transforms import SpatialResample

    out = SpatialResample(mode=mode, padding_mode=padding_mode, dtype=np.float32)(
        _meta_tensor(array[None], src_affine), dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64),
        spatial_size=tuple(int(s) for s in dst_shape))
    return np.asarray(out.as_tensor().numpy()[0], dtype=np.float32)


# ------------------------------------------------------------------------------------------ boxes, crop
def bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open bounding box [start, stop) of a non-empty boolean mask."""
    start, stop = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        start.append(int(idx[0]))
        stop.append(int(idx[-1]) + 1)
    return np.array(start), np.array(stop)


def overlap(a0: Sequence[int], a1: Sequence[int], b0: Sequence[int], b1: Sequence[int]):
    """Slices of the overlap of boxes A and B, in A's and in B's local coordinates."""
    lo = np.maximum(a0, b0)
    hi = np.minimum(a1, b1)
    if np.any(hi <= lo):
        return None
    in_a = tuple(slice(int(l - s), int(h - s)) for l, h, s in zip(lo, hi, a0))
    in_b = tuple(slice(int(l - s), int(h - s)) for l, h, s in zip(lo, hi, b0))
    return in_a, in_b


def crop_window(b0: np.ndarray, b1: np.ndarray, shape: Sequence[int]):
    """Window [start, stop) of ``shape`` centred on the box [b0, b1); it may extend past the grid (padding).

    Returns start, stop and the box/window overlap as (slices in box coords, slices in window coords).
    """
    start = (b0 + b1 - np.array(shape)) // 2
    stop = start + np.array(shape)
    box_in_win = overlap(b0, b1, start, stop)
    if box_in_win is None:  # cannot happen: the window contains the box centre
        raise AssertionError("crop window misses the brain")
    return start, stop, box_in_win


def crop_record(start: np.ndarray, stop: np.ndarray, grid_shape: Sequence[int], b0: np.ndarray,
                b1: np.ndarray) -> dict:
    """Sidecar entry of the window; negative start / stop past the grid = padding."""
    return {
        "start": start.tolist(),
        "stop": stop.tolist(),
        "pad_before": np.maximum(-start, 0).tolist(),
        "pad_after": np.maximum(stop - np.array(grid_shape), 0).tolist(),
        "brain_cropped": bool(np.any(b0 < start) or np.any(b1 > stop)),
    }


def extract_window(array: np.ndarray, start: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The window [start, start + shape) of ``array``, zero where it lies outside the array."""
    out = np.zeros(tuple(shape), dtype=array.dtype)
    ov = overlap(start, start + np.array(shape), np.zeros(3, int), np.array(array.shape))
    if ov is not None:
        out[ov[0]] = array[ov[1]]
    return out


def paste_window(window: np.ndarray, start: np.ndarray, grid_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`extract_window`: ``window`` placed at ``start`` in a zero grid of ``grid_shape``."""
    grid = np.zeros(tuple(grid_shape), dtype=window.dtype)
    ov = overlap(start, start + np.array(window.shape), np.zeros(3, int), np.array(grid_shape))
    if ov is not None:
        grid[ov[1]] = window[ov[0]]
    return grid

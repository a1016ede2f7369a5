"""The Volume type (a 3D voxel array with its voxel -> RAS+ world affine) and what every reader of voxels shares.

The DICOM reader (:mod:`medsci.io.dicom`), the volume reader (:mod:`medsci.io.volume`, which hands DICOM folders
to the former) and the radiograph reader all build on this module, so it imports none of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsci.errors import InputError

# LPS (ITK) <-> RAS (NIfTI): negate the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D voxel array with its voxel -> RAS+ world affine."""

    array: np.ndarray
    affine: np.ndarray
    source: Path | None = None
    header: Any = None  # nibabel Nifti1Header for NIfTI inputs, else None
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        import nibabel as nib

        return tuple(float(s) for s in nib.affines.voxel_sizes(self.affine))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.affine))


def one_line(err: BaseException) -> str:
    """Squeeze a library exception (ITK messages span many lines) into one readable line."""
    # ITK names its objects by address ("GDCMImageIO(0x55c0...)"): noise for the user.
    lines = [re.sub(r"\(0x[0-9a-fA-F]+\)", "", ln).strip() for ln in str(err).splitlines() if ln.strip()]
    # ITK messages look like "Exception thrown in SimpleITK ReadImage: /path...\nsitk::ERROR: reason";
    # the sitk::ERROR line is the informative one.
    for i, ln in enumerate(lines):
        if "ERROR:" in ln:
            text = ln.split("ERROR:", 1)[1].strip()
            # NRRD puts the reason on the last of several "[nrrd] ..." lines after "Error reading <file>:".
            return f"{text} {lines[-1]}" if text.endswith(":") and i < len(lines) - 1 else text
    text = lines[-1] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def squeeze_to_3d(array: np.ndarray, path: Path) -> np.ndarray:
    """Drop trailing singleton axes beyond the third (e.g. a 4D file with one time point)."""
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise InputError(f"expected a 3D volume, got shape {tuple(array.shape)}", path)
    return array


# Voxel data medsci agrees to hold in memory: a header may declare any size, and allocating first would
# crash (or swap) the machine instead of refusing the file.
MAX_VOLUME_BYTES = 8 * 1024**3
#: Physically plausible medical volumes: no voxel thicker than MAX_VOXEL_MM and no axis longer than
#: MAX_EXTENT_MM (a whole-body scan is about 2 m). Beyond them a header is wrong (cm or m stored as mm), and
#: resampling it onto a millimetre grid would run for hours.
MAX_VOXEL_MM = 100.0
MAX_EXTENT_MM = 3000.0
# Deflate (gzip, zlib) expands data by at most ~1032:1, so a compressed file declaring more voxel bytes
# than this many times its own size cannot hold them.
_MAX_COMPRESSION = 1100


def check_declared_size(shape, itemsize: int, path: Path, file_bytes: int | None = None,
                        compressed: bool = True, what: str = "header") -> None:
    """Refuse a declared array (from a header, before reading it) that is empty, larger than
    :data:`MAX_VOLUME_BYTES` or larger than ``file_bytes`` can hold."""
    dims = tuple(int(s) for s in shape)
    if any(d < 1 for d in dims):
        raise InputError(f"{what} declares an empty image (shape {dims})", path)
    nbytes = int(np.prod(dims, dtype=object)) * int(itemsize)
    if nbytes > MAX_VOLUME_BYTES:
        raise InputError(f"{what} declares shape {dims} ({nbytes / 2**30:.3g} GiB of voxel data), more than the "
                         f"{MAX_VOLUME_BYTES // 2**30} GiB medsci reads; crop or downsample it first", path)
    if file_bytes is not None and nbytes > file_bytes * (_MAX_COMPRESSION if compressed else 1):
        raise InputError(f"file is truncated: the {what} declares shape {dims} ({nbytes} bytes of voxel data) "
                         f"but the file holds {file_bytes} bytes", path)


def from_sitk(img, path: Path, fmt: str, extra: dict | None = None) -> Volume:
    """A SimpleITK image (LPS, (k, j, i) arrays) as a Volume (RAS+, (i, j, k)); refuses non-scalar and non-3D."""
    import SimpleITK as sitk

    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components "
                         "per voxel", path)
    dim = img.GetDimension()
    size = img.GetSize()
    if dim < 3 or (dim > 3 and any(s != 1 for s in size[3:])):
        raise InputError(f"expected a 3D volume, got size {tuple(size)}", path)
    array = sitk.GetArrayFromImage(img)  # (..., k, j, i): reverse to the file's (i, j, k) order
    array = squeeze_to_3d(array.transpose(tuple(range(array.ndim))[::-1]), path)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)[:3]
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ origin
    meta = {"format": fmt, "dtype": str(array.dtype)}
    meta.update(extra or {})
    return Volume(array=array, affine=affine, source=path, header=None, meta=meta)


def check_physical_size(shape, affine: np.ndarray, path: Path) -> None:
    """Refuse voxel sizes over :data:`MAX_VOXEL_MM` or extents over :data:`MAX_EXTENT_MM` (before any
    resampling; every medical volume passes here through ``read_volume``)."""
    spacing = np.sqrt((np.asarray(affine, dtype=np.float64)[:3, :3] ** 2).sum(axis=0))
    extent = spacing * np.asarray(tuple(shape)[:3], dtype=np.float64)
    if spacing.max() > MAX_VOXEL_MM or extent.max() > MAX_EXTENT_MM:
        sizes = " x ".join(f"{s:g}" for s in spacing)
        lengths = " x ".join(f"{e:g}" for e in extent)
        raise InputError(f"voxels of {sizes} mm ({lengths} mm in all) are not a plausible scan (at most "
                         f"{MAX_VOXEL_MM:g} mm per voxel and {MAX_EXTENT_MM:g} mm per axis); check the header's "
                         "voxel size (cm or m stored as mm?)", path)

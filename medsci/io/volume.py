"""Reading and writing 3D volumes (NIfTI, MetaImage, NRRD, DICOM series) with their world geometry.

Every volume is held the same way whatever its format: the voxel array in the file's own index order
(i, j, k) and a 4x4 affine mapping voxel indices to RAS+ millimetres (the NIfTI convention). ITK-based
formats store LPS direction cosines and origin; they are converted here so downstream code never has to
care which format a file came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsci.errors import InputError
from medsci.io.atomic import atomic_path, refuse_non_finite
from medsci.io.paths import regular_file
from medsci.io.voxels import Volume, check_declared_size, check_physical_size, from_sitk, one_line, squeeze_to_3d

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in NIFTI_SUFFIXES[::-1] + ITK_SUFFIXES:  # check ".nii.gz" before ".nii"
        if name.endswith(suf):
            return suf
    return path.suffix.lower()


def _check_finite(array: np.ndarray, path: Path) -> None:
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise InputError(f"volume contains {n_bad} NaN/Inf voxels", path)


def load_npy(path: Path, what: str = ".npy array") -> np.ndarray:
    """A ``.npy`` file read fully, never unpickled, its declared size checked before anything is allocated.

    Refuses object (pickled) and complex arrays; the caller checks shape and meaning.
    """
    path = regular_file(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(fh)
            data_bytes = path.stat().st_size - fh.tell()
    except Exception as err:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, TokenError...
        raise InputError(f"not a readable {what} ({one_line(err)})", path) from None
    if dtype.hasobject:
        raise InputError(f"{what} holds Python objects (it would have to be unpickled); refused", path)
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"{what} is complex-valued ({dtype}); save the real-valued data", path)
    check_declared_size(shape, dtype.itemsize, path, data_bytes, compressed=False, what=".npy header")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"not a readable {what} ({one_line(err)})", path) from None


def _check_scalar_dtype(dtype: np.dtype, path: Path, fmt: str) -> None:
    """Refuse colour and complex voxels: silently taking one channel or the real part would be wrong."""
    dtype = np.dtype(dtype)
    if dtype.fields is not None:
        names = "".join(dtype.names or ())
        kind = "an RGB colour" if names.upper() in ("RGB", "RGBA") else f"a structured ({names})"
        raise InputError(f"{kind} {fmt} image, not a scalar volume; convert it to greyscale first", path)
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"complex-valued {fmt} data ({dtype}): medsci reads real intensities only; save the "
                         "magnitude (or the real part) as a real-valued image", path)
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise InputError(f"{fmt} data type {dtype} is not a scalar volume", path)


def _check_3d_shape(shape, path: Path) -> None:
    """The same rule as :func:`squeeze_to_3d`, on a declared shape (before any voxel is read)."""
    dims = tuple(int(s) for s in shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) != 3:
        raise InputError(f"expected a 3D volume, got shape {tuple(int(s) for s in shape)}", path)


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path), mmap=False)  # the header only; voxels are read below
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, OSError, zlib.error)
        raise InputError(f"cannot read NIfTI file ({one_line(err)})", path) from None
    header = img.header
    try:
        dtype, shape = header.get_data_dtype(), header.get_data_shape()
        offset = int(getattr(img.dataobj, "offset", None) or header.get_data_offset())
    except Exception as err:  # noqa: BLE001 - a mangled header surfaces here as many types
        raise InputError(f"cannot read NIfTI header ({one_line(err)})", path) from None
    _check_scalar_dtype(dtype, path, "NIfTI")
    _check_3d_shape(shape, path)
    compressed = path.name.lower().endswith(".gz")
    size = path.stat().st_size
    check_declared_size(shape, dtype.itemsize, path, size if compressed else max(size - offset, 0), compressed)
    try:
        # mmap=False + asanyarray forces the whole payload to be read now, so a truncated .nii(.gz)
        # fails here instead of later in the middle of a pipeline.
        array = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:  # nibabel raises many types (ImageFileError, EOFError, OSError, zlib.error)
        raise InputError(f"cannot read NIfTI file ({one_line(err)})", path) from None
    array = squeeze_to_3d(array, path)
    meta = {
        "format": "nifti",
        "dtype": str(dtype),
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
    }
    return Volume(array=array, affine=affine, source=path, header=header, meta=meta)


# The header keys naming a detached voxel file: MetaImage `ElementDataFile = x.raw`, NRRD `data file: x.raw`.
_DATA_FILE_KEYS = {".mhd": ("elementdatafile", "="), ".nhdr": ("data file", ":"), ".nrrd": ("data file", ":")}


def _detached_data_files(path: Path) -> list[Path]:
    """The voxel files a .mhd / .nhdr header names (a single file or a LIST), to be checked before ITK opens
    them: a named pipe there would block ITK forever. File-name patterns (``%03d``) are left to ITK."""
    key, sep = _DATA_FILE_KEYS.get(_suffix(path), (None, None))
    if key is None:
        return []
    with open(path, "rb") as fh:
        lines = fh.read(1 << 16).decode("latin-1").splitlines()
    if key == "data file":
        key = ("data file", "datafile")
    for i, line in enumerate(lines):
        name, found, value = line.partition(sep)
        if found and name.strip().lower() in key:
            value = value.strip()
            if value.upper() == "LOCAL" or "%" in value:
                return []
            if value.upper().startswith("LIST"):
                return [path.parent / v.strip() for v in lines[i + 1:] if v.strip()]
            return [path.parent / value]
    return []


def _read_itk(path: Path, fmt: str) -> Volume:
    import SimpleITK as sitk

    for data_file in _detached_data_files(path):
        if data_file.exists():  # a missing one is ITK's to report, as before
            regular_file(data_file)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's multi-line warnings; we report one line
    try:
        reader.ReadImageInformation()  # the header only: sizes are checked before any allocation
        # Bytes per voxel: those of a one-voxel image of the declared pixel type (all channels).
        one = sitk.GetArrayViewFromImage(sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(),
                                                    max(reader.GetNumberOfComponents(), 1)))
        detached = path.suffix.lower() in (".mhd", ".nhdr")  # the voxels live in another file
        check_declared_size(reader.GetSize(), one.nbytes, path, None if detached else path.stat().st_size)
        img = reader.Execute()
    except RuntimeError as err:
        raise InputError(f"cannot read {fmt} file ({one_line(err)})", path) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    return from_sitk(img, path, fmt)


def _read_dicom_series(folder: Path) -> Volume:
    # The same checks as DICOM case input (sizes, orientation, slice spacing, missing slices): a DICOM
    # folder reads one way whatever the command.
    from medsci.io.dicom import find_series, read_series

    series = find_series(folder)
    if len(series) > 1:
        names = ", ".join(sorted(repr(s.description or s.series_uid) for s in series)[:4])  # stable order
        raise InputError(f"folder holds {len(series)} DICOM series ({names}); give the folder of one series",
                         folder)
    return read_series(series[0])


def read_volume(path: str | Path) -> Volume:
    """Read a 3D volume from a NIfTI / MetaImage / NRRD file or a DICOM series folder.

    Raises InputError naming the file when it is missing, unreadable, not 3D or holds NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", path)
    if path.is_dir() and _suffix(path) in NIFTI_SUFFIXES + ITK_SUFFIXES:
        raise InputError("is a folder; expected a volume file", path)
    if not path.is_dir():
        regular_file(path)  # a FIFO or device would block or never end
    if path.is_dir():
        vol = _read_dicom_series(path)
    else:
        suffix = _suffix(path)
        if suffix in NIFTI_SUFFIXES:
            vol = _read_nifti(path)
        elif suffix in (".mha", ".mhd"):
            vol = _read_itk(path, "metaimage")
        elif suffix in (".nrrd", ".nhdr"):
            vol = _read_itk(path, "nrrd")
        else:
            raise InputError(f"unsupported volume format {suffix or '(no extension)'!r}; expected one of "
                             f"{', '.join(NIFTI_SUFFIXES + ITK_SUFFIXES)} or a DICOM folder", path)
    _check_scalar_dtype(vol.array.dtype, path, vol.meta.get("format", "volume"))
    _check_finite(vol.array, path)
    if not np.isfinite(vol.affine).all() or abs(np.linalg.det(vol.affine[:3, :3])) < 1e-12:
        raise InputError("voxel-to-world affine is singular or not finite", path)
    check_physical_size(vol.array.shape, vol.affine, path)
    return vol


def read_affine(path: str | Path) -> np.ndarray:
    """The voxel-to-world affine (RAS+) of a NIfTI / MetaImage / NRRD file from its header alone: geometry
    checks before any voxel is read. Raises InputError naming the file when the header cannot be read."""
    path = Path(path)
    suffix = _suffix(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            return np.asarray(nib.load(str(path)).affine, dtype=np.float64)
        import SimpleITK as sitk

        from medsci.io.voxels import LPS_TO_RAS

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        direction = np.asarray(reader.GetDirection(), np.float64).reshape(dim, dim)[:3, :3]
        affine = np.eye(4)
        affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(np.asarray(reader.GetSpacing(), np.float64)[:3])
        affine[:3, 3] = LPS_TO_RAS @ np.asarray(reader.GetOrigin(), np.float64)[:3]
        return affine
    except Exception as err:  # noqa: BLE001 - nibabel and ITK raise many types on a mangled header
        raise InputError(f"cannot read the header ({one_line(err)})", path) from None


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray, header: Any = None,
                dtype: Any = np.float32, description: str | None = None) -> Path:
    """Write ``array`` as NIfTI atomically with exactly ``affine``; reuse ``header``'s other fields.

    ``description`` replaces the header's descrip field (80 bytes, e.g. to say a volume is synthetic).

    The header's descrip, units, intent and its qform/sform *codes* are kept, but both forms are set from
    ``affine`` (nibabel would otherwise reset the codes to aligned/unknown when the affine changes).
    """
    import nibabel as nib

    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"write_nifti expects a 3D array, got shape {array.shape}")
    refuse_non_finite(array, path)
    affine = np.asarray(affine, dtype=np.float64)
    data = array.astype(dtype, copy=False)
    if header is not None:
        hdr = nib.Nifti1Header.from_header(header)
        sform_code, qform_code = int(hdr["sform_code"]), int(hdr["qform_code"])
        if sform_code == 0 and qform_code == 0:
            sform_code = qform_code = 1  # an uncoded affine would be ignored by readers
    else:
        hdr = nib.Nifti1Header()
        sform_code, qform_code = 1, 1
    if description is not None:
        hdr["descrip"] = description.encode("ascii", "replace")[:79]
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    # Data is already in the target dtype: no scaling, so values are stored exactly.
    hdr.set_slope_inter(1.0, 0.0)
    hdr.set_sform(affine, code=sform_code)
    hdr.set_qform(affine, code=qform_code)
    img = nib.Nifti1Image(data, affine, header=hdr)
    # Nifti1Image may touch the header; re-assert the codes so they survive.
    img.header.set_sform(affine, code=sform_code)
    img.header.set_qform(affine, code=qform_code)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def describe(volume: Volume) -> dict:
    """Summary used by ``medsci info``: geometry, dtype and intensity range."""
    arr = volume.array
    return {
        "source": None if volume.source is None else str(volume.source),
        "format": volume.meta.get("format"),
        "shape": [int(s) for s in arr.shape],
        "spacing": [round(s, 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "dtype": volume.meta.get("dtype", str(arr.dtype)),
        "min": float(np.min(arr)),
        "max": float(np.max(arr)),
        "mean": float(np.mean(arr, dtype=np.float64)),
        "affine": [[float(v) for v in row] for row in volume.affine],
    }

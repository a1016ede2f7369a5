"""On-disk form of a preprocessed case: ``<case>.npz`` arrays written byte-reproducibly, and reading
them back with their ``<case>.json`` sidecar."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from medsci.errors import InputError
from medsci.io.atomic import atomic_path, refuse_non_finite

SIDECAR_VERSION = 1


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez-compatible, uncompressed, but byte-reproducible (np.savez stamps the current time
    into every zip entry) and atomic."""
    for arr in arrays.values():
        refuse_non_finite(arr, path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                   allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def read_npz(path: str | Path, required: tuple[str, ...] = (), what: str = "preprocessed arrays",
             finite: bool = True) -> dict[str, np.ndarray]:
    """The one reader of the .npz files medsci writes: every array (read fully, no pickle), refusing with the file
    named a file that is not a readable .npz (truncated, random bytes, pickled objects), a ``required`` array
    missing and (``finite``) NaN/Inf in a float array: they would reach training as a LinAlgError or NaN loss."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # BadZipFile, ValueError (pickled object), EOFError...
        raise InputError(f"cannot read {what} ({type(err).__name__}: {str(err)[:200]})", path) from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"missing array {missing[0]!r} (holds {sorted(arrays)})", path)
    for key, arr in arrays.items():
        bad = np.count_nonzero(~np.isfinite(arr)) if finite and np.issubdtype(arr.dtype, np.floating) else 0
        if bad:
            raise InputError(f"array {key!r} holds {bad:,} NaN/Inf value(s) of {arr.size:,}", path)
    return arrays


def load_preprocessed(npz_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of ``<case>.npz`` (see :func:`read_npz`; ``image`` [channels, *shape], one channel per modality of
    the sidecar, ``mask`` and ``seg`` of that shape) and its ``<case>.json`` sidecar."""
    npz_path = Path(npz_path)
    json_path = npz_path.with_suffix(".json")
    for p in (npz_path, json_path):
        if not p.is_file():
            raise InputError("preprocessed file not found", p)
    arrays = read_npz(npz_path, ("image", "mask"))
    try:
        sidecar = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read sidecar ({err})", json_path) from None
    if not isinstance(sidecar, dict) or sidecar.get("version") != SIDECAR_VERSION:
        raise InputError(f"not a medsci preprocessing sidecar (version {SIDECAR_VERSION})", json_path)
    image, channels = arrays["image"], len(sidecar.get("modalities") or ()) or None
    if image.ndim != 4 or (channels and image.shape[0] != channels):
        raise InputError(f"image of shape {image.shape}: expected ({channels or 'channels'}, x, y, z), one channel "
                         "per modality", npz_path)
    for key in ("mask", "seg"):
        if key in arrays and arrays[key].shape != image.shape[1:]:
            raise InputError(f"{key} of shape {arrays[key].shape} does not match the image's {image.shape[1:]}",
                             npz_path)
    return arrays, sidecar

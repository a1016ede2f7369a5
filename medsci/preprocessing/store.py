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


def load_preprocessed(npz_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of ``<case>.npz`` (read fully, no pickle) and its ``<case>.json`` sidecar."""
    npz_path = Path(npz_path)
    json_path = npz_path.with_suffix(".json")
    for p in (npz_path, json_path):
        if not p.is_file():
            raise InputError("preprocessed file not found", p)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # BadZipFile, ValueError (pickled object), EOFError...
        raise InputError(f"cannot read preprocessed arrays ({type(err).__name__}: {err})", npz_path) from None
    try:
        sidecar = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read sidecar ({err})", json_path) from None
    for key in ("image", "mask"):
        if key not in arrays:
            raise InputError(f"missing array {key!r}", npz_path)
    if not isinstance(sidecar, dict) or sidecar.get("version") != SIDECAR_VERSION:
        raise InputError(f"not a medsci preprocessing sidecar (version {SIDECAR_VERSION})", json_path)
    return arrays, sidecar

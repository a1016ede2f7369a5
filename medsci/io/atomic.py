"""Atomic writes and safe output paths.

Every output goes to a temporary file in the destination folder and is renamed into place, so a killed
job never leaves a half-written file behind (rename is atomic within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

from medsci.errors import MedsciError


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, on failure delete it.

    ``suffix`` defaults to the full suffix of ``dest`` (e.g. ``.nii.gz``) so writers that infer the
    format from the extension still work.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix or ".part", dir=dest.parent)
    # mkstemp creates 0600; a plain open() would give 0666 minus the umask, which colleagues sharing the
    # output folder rely on.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    # Reading the umask means setting it; set it straight back (single-threaded at this point in practice).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | Path, text: str) -> None:
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | Path, obj) -> None:
    write_text_atomic(dest, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def safe_join(root: str | Path, name: str) -> Path:
    """Join ``name`` under ``root``, refusing any name that would escape it (``..``, absolute, links)."""
    if "\0" in str(name):  # resolve() would raise a bare ValueError
        raise MedsciError(f"output name {name!r} holds a NUL character", root)
    root_resolved = Path(root).resolve()
    candidate = (root_resolved / name).resolve()
    if candidate != root_resolved and root_resolved not in candidate.parents:
        raise MedsciError(f"output name {name!r} would escape the output folder", root)
    return candidate

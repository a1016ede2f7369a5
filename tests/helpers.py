"""Helpers shared by the test modules (imported as ``from helpers import ...``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_checksums(root: str | Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root`` (itself included): relative path -> (sha256 of a file, ``dir``, or
    ``link:<target>``; permission bits). Equal before and after a command = the command left the tree alone:
    nothing written, added, removed, renamed or re-moded."""
    root = Path(root)
    out: dict[str, tuple[str, int]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name if name != "." else Path(folder)
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if path.is_symlink():
                kind = f"link:{os.readlink(path)}"
            elif path.is_dir():
                kind = "dir"
            else:
                kind = hashlib.sha256(path.read_bytes()).hexdigest()
            out[rel] = (kind, st.st_mode & 0o7777)
    return out

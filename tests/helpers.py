"""Helpers shared by the test modules (imported as ``from helpers import ...``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_snakemake(args: list[str], **kw) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` from the repository root with this interpreter, output captured."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=900, **kw)


def tree_checksums(root: str | Path) -> dict[str, tuple[str, int]]:
    """Every entry under ``root`` (itself included): relative path -> (sha256 of a file, ``dir``, or
    ``link:<target>``; permission bits). Equal before and after a command = the command left the tree alone:
    nothing written, added, removed, renamed or re-moded."""
    root = Path(root)
    if not root.is_dir():  # a single file (or link)
        return {".": _entry(root)}
    out: dict[str, tuple[str, int]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name if name != "." else Path(folder)
            out[path.relative_to(root).as_posix()] = _entry(path)
    return out


def _entry(path: Path) -> tuple[str, int]:
    if path.is_symlink():
        kind = f"link:{os.readlink(path)}"
    elif path.is_dir():
        kind = "dir"
    else:
        kind = hashlib.sha256(path.read_bytes()).hexdigest()
    return kind, path.lstat().st_mode & 0o7777


INPUT_FLAGS = ("--checkpoint", "--input", "--mask", "--ct", "--subject", "--data", "--config", "--dicom-mapping")


@contextlib.contextmanager
def inputs_untouched(argv):
    """Assert that the block leaves every existing path named after an input flag of ``argv`` unchanged."""
    args = [str(a) for a in argv]
    paths = sorted({Path(v) for flag, v in zip(args, args[1:]) if flag in INPUT_FLAGS and Path(v).exists()})
    before = {p: tree_checksums(p) for p in paths}
    yield
    assert {p: tree_checksums(p) for p in paths} == before, f"an input of {args} was changed"

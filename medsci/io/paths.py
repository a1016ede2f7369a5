"""Path checks shared by the commands: inputs that are links to outside the input folder, and inputs that are
not regular files."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable

from medsci.errors import InputError


def check_utf8_name(path: str | Path) -> None:
    """Refuse a file or folder name that is not valid UTF-8: hashing, safetensors, SEG-Y and PNG text would fail on
    it later with a traceback."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the name is not valid UTF-8; rename it (medsci needs UTF-8 file and folder names)",
                         path) from None


def resolved(path: str | Path) -> Path:
    """``Path(path).resolve()``; a loop of symbolic links is a one-line error naming the path (Python 3.11 raises a
    bare RuntimeError)."""
    try:
        return Path(path).resolve()
    except RuntimeError:
        raise InputError("cannot follow the path: it runs into a loop of symbolic links", path) from None


def inside(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or lies below it (pass both resolved)."""
    return child == parent or parent in child.parents


def refuse_links_outside(paths: Iterable[str | Path], root: str | Path) -> None:
    """Refuse any of ``paths`` that is (or lies in a folder that is) a link resolving outside ``root``: a case,
    subject or file given inside an input folder is read from that folder, never from elsewhere. A name that is
    not UTF-8 is refused here too: every input found inside a folder passes through this check."""
    root_resolved = resolved(root)
    for path in paths:
        check_utf8_name(path)
        target = resolved(path)
        if not inside(target, root_resolved):
            raise InputError(f"is a link to {target}, outside the input folder {root}; copy the data in instead",
                             path)


def regular_file(path: str | Path) -> Path:
    """``path`` if it is a regular file (after links); otherwise InputError naming it. Every reader checks
    this before it opens a file: opening a named pipe waits for a writer forever, a device never ends."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # stat does not open: safe on a FIFO
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror or err})", path) from None
    if stat.S_ISDIR(mode):
        raise InputError("is a folder; expected a file", path)
    if not stat.S_ISREG(mode):
        raise InputError("not a regular file", path)
    return path

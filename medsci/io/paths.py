"""Path checks shared by the commands: inputs that are links to outside the input folder."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from medsci.errors import InputError


def inside(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or lies below it (pass both resolved)."""
    return child == parent or parent in child.parents


def refuse_links_outside(paths: Iterable[str | Path], root: str | Path) -> None:
    """Refuse any of ``paths`` that is (or lies in a folder that is) a link resolving outside ``root``: a case,
    subject or file given inside an input folder is read from that folder, never from elsewhere."""
    root_resolved = Path(root).resolve()
    for path in paths:
        target = Path(path).resolve()
        if not inside(target, root_resolved):
            raise InputError(f"is a link to {target}, outside the input folder {root}; copy the data in instead",
                             path)

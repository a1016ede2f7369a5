"""Finding multi-modal MRI cases on disk and checking them before any work is done.

Two layouts are understood:

* ``brats``: ``<root>/<case>/<case>-<mod>.nii.gz`` with ``mod`` in :data:`MODALITIES` and an optional
  ``<case>-seg.nii.gz`` (the BraTS 2023+ naming).
* ``generic``: one sub-folder per case, the file of each modality found with a glob pattern in which
  ``{case}`` stands for the folder name, e.g. ``{"t1n": "{case}_T1.nii.gz", "t2f": "*flair*.nii*"}``.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from medsci.errors import InputError

if TYPE_CHECKING:
    from medsci.io.volume import Volume

MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
LAYOUTS = ("brats", "generic")
_BRATS_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class Case:
    """One subject: its folder, the file of each modality found, and the segmentation if any."""

    case_id: str
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None

    def missing(self, modalities: Iterable[str] = MODALITIES) -> list[str]:
        """Modalities (in the given order) with no file in this case."""
        return [m for m in modalities if m not in self.files]

    def available(self, modalities: Iterable[str] = MODALITIES) -> list[str]:
        return [m for m in modalities if m in self.files]


def _visible_files(paths: Iterable[Path]) -> list[Path]:
    # Hidden names are skipped: atomic writers leave ".<name>.tmp" files while they work.
    return sorted(p for p in paths if p.is_file() and not p.name.startswith("."))


def _match_one(folder: Path, pattern: str, case_id: str, what: str) -> Path | None:
    """The single file in ``folder`` matching ``pattern`` (``{case}`` replaced); None if none."""
    resolved = pattern.replace("{case}", glob.escape(case_id))
    matches = _visible_files(folder.glob(resolved))
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[:4])
        raise InputError(f"pattern {pattern!r} for {what} matches {len(matches)} files ({names}); "
                         "make the pattern more specific", folder)
    return matches[0] if matches else None


def _scan_case(folder: Path, layout: str, modalities: Sequence[str], patterns: Mapping[str, str] | None,
               seg_pattern: str | None, case_id: str) -> Case:
    """The files of one case folder; ``files`` may come back empty."""
    files: dict[str, Path] = {}
    seg: Path | None = None
    if layout == "brats":
        for mod in list(modalities) + ["seg"]:
            found = [folder / f"{case_id}-{mod}{suffix}" for suffix in _BRATS_SUFFIXES]
            found = [p for p in found if p.is_file()]
            if len(found) > 1:  # which one is meant is a guess: the two may differ
                raise InputError(f"both {found[0].name} and {found[1].name} exist for {mod}; keep one of them",
                                 folder)
            if found and mod == "seg":
                seg = found[0]
            elif found:
                files[mod] = found[0]
    elif layout == "generic":
        if not patterns:
            raise InputError("the generic layout needs a file pattern per modality "
                             "(e.g. --pattern t1n='{case}_T1.nii.gz')", folder)
        unknown = sorted(set(patterns) - set(modalities))
        if unknown:
            raise InputError(f"patterns given for unknown modalities {unknown}; expected {list(modalities)}",
                             folder)
        for mod in modalities:
            if mod in patterns:
                found = _match_one(folder, patterns[mod], case_id, mod)
                if found is not None:
                    files[mod] = found
        if seg_pattern:
            seg = _match_one(folder, seg_pattern, case_id, "seg")
        # One file must not serve two modalities (a loose pattern like "*t1*" also matches t1c files).
        by_path: dict[Path, str] = {}
        for mod, p in files.items():
            if p in by_path:
                raise InputError(f"file {p.name} matches the patterns of both {by_path[p]} and {mod}",
                                 folder)
            by_path[p] = mod
    else:
        raise InputError(f"unknown case layout {layout!r}; expected one of {LAYOUTS}", folder)
    return Case(case_id=case_id, folder=folder, files=files, seg=seg)


def load_case(folder: str | Path, layout: str = "brats", modalities: Sequence[str] = MODALITIES,
              patterns: Mapping[str, str] | None = None, seg_pattern: str | None = None,
              case_id: str | None = None) -> Case:
    """Build the :class:`Case` for one case folder (no volume is read).

    Raises InputError when the folder does not exist or holds no modality at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("case folder not found", folder)
    case = _scan_case(folder, layout, modalities, patterns, seg_pattern, case_id or folder.name)
    if not case.files:
        hint = (f" (expected e.g. {case.case_id}-{modalities[0]}.nii.gz; for a folder of cases use --all)"
                if layout == "brats" else " (for a folder of cases use --all)")
        raise InputError(f"no modality files found in case folder{hint}", folder)
    return case


def discover_cases(root: str | Path, layout: str = "brats", modalities: Sequence[str] = MODALITIES,
                   patterns: Mapping[str, str] | None = None, seg_pattern: str | None = None,
                   refused: list[InputError] | None = None) -> list[Case]:
    """All cases under ``root`` (one sub-folder each), sorted by case id.

    Sub-folders holding none of the modalities are skipped; InputError if ``root`` is missing or holds
    no case at all. A case folder that cannot be scanned (e.g. two files for one modality) raises, or,
    when a ``refused`` list is given, has its error appended there so a batch can go on with the others.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("case root folder not found", root)
    if layout not in LAYOUTS:
        raise InputError(f"unknown case layout {layout!r}; expected one of {LAYOUTS}", root)
    if layout == "generic" and not patterns:
        raise InputError("the generic layout needs a file pattern per modality "
                         "(e.g. --pattern t1n='{case}_T1.nii.gz')", root)
    cases = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            case = _scan_case(sub, layout, modalities, patterns, seg_pattern, sub.name)
        except InputError as err:
            if refused is None:
                raise
            refused.append(err)
            continue
        if case.files:  # folders holding no modality are unrelated, not cases
            cases.append(case)
    if not cases and not refused:
        raise InputError(f"no cases found (layout {layout!r}, one sub-folder per case)", root)
    # A pattern that finds no file anywhere is a typo (or a malformed glob such as an unclosed '['), not a
    # modality every case lacks: going on would drop that contrast from every case without a word.
    unused = [m for m in (patterns or {}) if cases and not any(m in c.files for c in cases)]
    if layout == "generic" and unused:
        raise InputError(f"--pattern {unused[0]}={patterns[unused[0]]!r} matches no file in any of the {len(cases)} "
                         "case(s); check the pattern (a glob: * ? [...])", root)
    return sorted(cases, key=lambda c: c.case_id)


def check_case(case: Case, max_missing: int = 0, forbid_present: str | None = None,
               modalities: Sequence[str] = MODALITIES) -> None:
    """Refuse a case missing more than ``max_missing`` modalities, or holding ``forbid_present``."""
    missing = case.missing(modalities)
    if len(missing) > max_missing:
        raise InputError(f"case {case.case_id} is missing {len(missing)} modalities ({', '.join(missing)}); "
                         f"at most {max_missing} allowed", case.folder)
    if forbid_present is not None and forbid_present in case.files:
        raise InputError(f"case {case.case_id} already has {forbid_present} "
                         f"({case.files[forbid_present].name}) but it must be missing", case.folder)


def check_consistent_geometry(volumes: Mapping[str, "Volume"], atol: float = 1e-3) -> None:
    """All volumes must share one voxel grid (shape and affine); names the first file that differs."""
    items = list(volumes.items())
    if len(items) < 2:
        return
    ref_name, ref = items[0]
    for name, vol in items[1:]:
        where = vol.source if vol.source is not None else name
        ref_where = ref.source.name if ref.source is not None else ref_name
        if tuple(vol.array.shape) != tuple(ref.array.shape):
            raise InputError(f"{name} has shape {tuple(vol.array.shape)} but {ref_name} ({ref_where}) has "
                             f"{tuple(ref.array.shape)}; all modalities must share one grid", where)
        if not np.allclose(vol.affine, ref.affine, atol=atol, rtol=0):
            diff = float(np.abs(vol.affine - ref.affine).max())
            raise InputError(f"{name} affine differs from {ref_name} ({ref_where}) by up to {diff:.4g}; "
                             "all modalities must share one grid", where)

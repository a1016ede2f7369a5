"""Finding longitudinal subjects on disk: timestamped sessions of one subject, each a 3D volume.

A subject is a folder. Its sessions and their times come from a tab-separated table:

* ``sessions.tsv`` in the subject folder (what :func:`medsci.tasks.longitudinal.demo.write_demo_subjects`
  writes), or, for BIDS datasets, ``<subject>_sessions.tsv`` (e.g. ``sub-01/sub-01_sessions.tsv``);
* columns ``session_id`` and ``time_days`` (days, any origin; the BIDS ``acq_time`` column, ISO 8601
  date-times, is used when there is no ``time_days``), optionally ``age`` (years; empty or ``n/a`` for
  unknown); other columns are ignored. Rows may come in any order: sessions are sorted by time.

Session ``S``'s volume is ``S.nii.gz`` / ``S.nii`` / ``S.mha`` / ``S.nrrd`` in the subject folder, or the one
volume in ``S/anat/`` or ``S/`` (BIDS-like; where there are several, the one ``*_T1w.*``).

:func:`find_subjects` discovers every folder with a ``sessions.tsv`` and every BIDS-like ``sub-*`` folder
below a root. A subject is refused (an :class:`~medsci.errors.InputError` naming the file and the reason
on one line) when its table is missing or unreadable, lacks a column, holds a non-numeric or non-finite
time, repeats a session id or a time, lists a session without a volume, or has fewer than two sessions.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from medsci.errors import InputError, MedsciError
from medsci.io.paths import regular_file

SESSIONS_TSV = "sessions.tsv"
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
SKIP_FOLDERS = {"derivatives", "sourcedata", "code"}  # BIDS folders that hold no raw subjects
_NA = {"", "n/a", "na", "nan"}


@dataclass
class Session:
    id: str
    time: float  # days, as given in the table
    path: Path
    age: float | None = None  # years


@dataclass
class Subject:
    id: str
    folder: Path
    sessions: list[Session]  # sorted by time
    table: Path | None = None  # the sessions table the times come from

    @property
    def times(self) -> list[float]:
        return [s.time for s in self.sessions]


def _sessions_table(folder: Path) -> Path:
    """The subject's sessions table; one that exists but is not a regular file (a named pipe, whose reading
    would wait for a writer, a folder) is refused by name rather than reported missing."""
    for table in (folder / SESSIONS_TSV, folder / f"{folder.name}_sessions.tsv"):
        if table.exists():
            return regular_file(table)
    if any(p.is_dir() and p.name.startswith("ses-") for p in _children(folder)):
        raise InputError(f"no session times: add {SESSIONS_TSV} (columns session_id, time_days)", folder)
    raise InputError(f"no {SESSIONS_TSV} and no ses-* session folders", folder)


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise InputError(f"cannot list folder ({type(err).__name__}: {err.strerror or err})", folder) from None


def _number(text: str, column: str, sid: str, line: int, table: Path, optional: bool) -> float | None:
    if optional and text.strip().lower() in _NA:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"non-numeric {column} {text!r} for session {sid!r} (line {line})", table) from None
    if not math.isfinite(value):
        raise InputError(f"non-finite {column} {text!r} for session {sid!r} (line {line})", table)
    return value


def _acq_days(texts: list[tuple[str, str, int]], table: Path) -> list[float]:
    """BIDS acq_time (ISO 8601 date-times) -> days since the earliest session."""
    stamps = []
    for text, sid, line in texts:
        value = text.strip()
        if value.endswith("Z"):
            value = value[:-1] + "+00:00"
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise InputError(f"acq_time {text!r} for session {sid!r} (line {line}) is not an ISO 8601 date-time",
                             table) from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        stamps.append(stamp)
    first = min(stamps) if stamps else None
    return [(s - first).total_seconds() / 86400.0 for s in stamps]


def _find_volume(folder: Path, sid: str) -> Path | None:
    for suffix in VOLUME_SUFFIXES:
        candidate = folder / f"{sid}{suffix}"
        if candidate.exists():
            return regular_file(candidate)  # a named pipe or folder is refused by name, not reported missing
    names = [sid] if sid.startswith("ses-") else [sid, f"ses-{sid}"]
    for name in names:
        for sub in (folder / name / "anat", folder / name):
            if not sub.is_dir():
                continue
            found = [p for p in _children(sub) if p.is_file() and not p.name.startswith(".")
                     and p.name.lower().endswith(VOLUME_SUFFIXES)]
            if len(found) > 1:
                t1 = [p for p in found if "_t1w." in p.name.lower()]
                if len(t1) != 1:
                    raise InputError(f"{len(found)} volumes for session {sid!r} and not exactly one *_T1w: "
                                     "keep one per session", sub)
                found = t1
            if found:
                return found[0]
    return None


def read_subject(folder) -> Subject:
    """Read one subject folder (see the module docstring); raises InputError with a one-line reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("subject folder not found" if not folder.exists() else "not a folder", folder)
    table = _sessions_table(folder)
    try:
        text = table.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise InputError(f"cannot read sessions table ({type(err).__name__}: {reason})", table) from None
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not lines:
        raise InputError("sessions table is empty: needs a header session_id, time_days", table)
    header_line = lines[0][1]
    header = [h.strip().lower() for h in header_line.split("\t")]
    hint = " (columns must be tab-separated)" if "\t" not in header_line and "," in header_line else ""
    if "session_id" not in header:
        raise InputError(f"missing column session_id{hint}", table)
    time_column = "time_days" if "time_days" in header else "acq_time" if "acq_time" in header else None
    if time_column is None:
        raise InputError(f"missing column time_days{hint}", table)
    for name in ("session_id", time_column, "age"):
        if header.count(name) > 1:
            raise InputError(f"column {name} appears twice", table)
    i_sid, i_time = header.index("session_id"), header.index(time_column)
    i_age = header.index("age") if "age" in header else None

    rows: list[tuple[str, str, float | None, int]] = []
    seen: dict[str, int] = {}
    for line, raw in lines[1:]:
        fields = [f.strip() for f in raw.split("\t")]
        needed = max(i for i in (i_sid, i_time, i_age) if i is not None) + 1
        if len(fields) < needed:
            raise InputError(f"line {line} has {len(fields)} fields, the header has {len(header)}", table)
        sid = fields[i_sid]
        if not sid:
            raise InputError(f"empty session_id (line {line})", table)
        if "/" in sid or "\\" in sid or sid in (".", ".."):
            raise InputError(f"session_id {sid!r} (line {line}) is not a plain name", table)
        if sid in seen:
            raise InputError(f"duplicate session_id {sid!r} (lines {seen[sid]} and {line})", table)
        seen[sid] = line
        age = None if i_age is None else _number(fields[i_age], "age", sid, line, table, optional=True)
        rows.append((sid, fields[i_time], age, line))

    if time_column == "time_days":
        times = [_number(t, "time_days", sid, line, table, optional=False) for sid, t, _, line in rows]
    else:
        times = _acq_days([(t, sid, line) for sid, t, _, line in rows], table)
    by_time: dict[float, str] = {}
    for (sid, _, _, _), t in zip(rows, times):
        if t in by_time:
            raise InputError(f"duplicate timestamp: sessions {by_time[t]!r} and {sid!r} both at "
                             f"{time_column} {t:g}", table)
        by_time[t] = sid
    if len(rows) < 2:
        raise InputError(f"needs at least two sessions, {table.name} lists {len(rows)}", table)

    sessions = []
    for (sid, _, age, line), t in zip(rows, times):
        path = _find_volume(folder, sid)
        if path is None:
            raise InputError(f"no volume for session {sid!r} (line {line}): expected {sid}.nii.gz "
                             f"(or .nii, .mha, .nrrd) beside this table, or {sid}/anat/*.nii.gz", table)
        sessions.append(Session(id=sid, time=float(t), path=path, age=age))
    sessions.sort(key=lambda s: s.time)
    return Subject(id=folder.name, folder=folder, sessions=sessions, table=table)


def find_subjects(root) -> tuple[list[Subject], list[tuple[Path, str]]]:
    """Every subject below ``root``: (good subjects sorted by id, [(folder, one-line reason)] refused ones).

    A folder with a ``sessions.tsv`` or named ``sub-*`` is a subject (its subfolders are not searched);
    other folders are searched, except hidden ones and BIDS's derivatives/sourcedata/code. One bad
    subject never stops the search: its reason is collected. Raises InputError only when ``root`` itself
    is not a readable folder. Two subjects with the same folder name: the second (in path order) is refused.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("data folder not found" if not root.exists() else "not a folder", root)
    candidates: list[Path] = []
    refused: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if SESSIONS_TSV in filenames or here.name.startswith("sub-"):
            candidates.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_FOLDERS)
    good: dict[str, Subject] = {}
    for folder in sorted(candidates):
        try:
            subject = read_subject(folder)
        except MedsciError as err:
            refused.append((folder, str(err)))
            continue
        except OSError as err:
            refused.append((folder, str(InputError(f"cannot read ({type(err).__name__}: {err})", folder))))
            continue
        if subject.id in good:
            refused.append((folder, str(InputError(f"duplicate subject id {subject.id!r} (also "
                                                   f"{good[subject.id].folder})", folder))))
            continue
        good[subject.id] = subject
    return [good[k] for k in sorted(good)], sorted(refused, key=lambda r: str(r[0]))

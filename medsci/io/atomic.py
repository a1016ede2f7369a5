"""Atomic writes and safe output paths.

Every output goes to a temporary file in the destination folder and is renamed into place, so a killed
job never leaves a half-written file behind (rename is atomic within one file system). The temporary files a
killed job leaves (hidden: ``.<name>.~<host>~<pid>~...``) are removed by the next write of the same file; a full
disk, a folder that cannot be written and a NaN/Inf result (:func:`refuse_non_finite`, called by every array
writer) are one-line :class:`MedsciError` naming the file, with the earlier version, if any, intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from medsci.errors import MedsciError
from medsci.io.paths import inside, resolved


# Temporary names carry the writer's host and process id, so a later write of the same file can tell the
# leftovers of a killed writer (removed) from those of a live one (kept).
_TEMP_TAG = re.compile(r"\.~(?P<host>[^~]*)~(?P<pid>\d+)~")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:40]


def temp_prefix(name: str) -> str:
    return f".{name}.~{_host()}~{os.getpid()}~"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | Path, name: str) -> None:
    """Delete what killed writers of ``folder/name`` left (files or folders); another live writer's are kept."""
    folder = Path(folder)
    prefix = f".{name}.~"
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(prefix)]
    except OSError:  # no folder yet, or one we may write to but not list: nothing to tidy
        return
    host = _host()
    for entry in entries:
        tag = _TEMP_TAG.match(entry.name[len(name) + 1:])
        if tag is None or tag["host"] != host or int(tag["pid"]) == os.getpid() or _pid_alive(int(tag["pid"])):
            continue
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, also when a library re-raised it as another type (safetensors, torch.save)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return True
    text = str(err)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def disk_full_error(dest: str | Path) -> MedsciError:
    return MedsciError("disk full while writing it (no partial file was left; an earlier version, if any, is "
                       "intact): free space or choose another output folder, then rerun", dest)


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, on failure delete it.

    ``suffix`` defaults to the full suffix of ``dest`` (e.g. ``.nii.gz``) so writers that infer the
    format from the extension still work. A full disk is a :class:`MedsciError` naming ``dest``.
    """
    dest = Path(dest)
    if suffix is None:
        suffix = "".join(dest.suffixes)
    refuse_special_output(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(dest.parent, dest.name)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest.name), suffix=suffix or ".part", dir=dest.parent)
    except OSError as err:
        raise write_error(err, dest) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 and some writers (safetensors) recreate the file; a plain open() would give
        # 0666 minus the umask, which colleagues sharing the output folder rely on.
        os.chmod(tmp_path, output_mode())
        os.replace(tmp_path, dest)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        if is_disk_full(err):
            raise disk_full_error(dest) from None
        # An error of this file (not of an input the writer reads) is one line naming the output.
        if isinstance(err, OSError) and err.filename in (None, tmp, str(dest)):
            raise write_error(err, dest) from None
        raise


def refuse_special_output(dest: Path) -> None:
    """Only a regular file (or nothing) is replaced: renaming over a link, a device (/dev/full as root) or a pipe
    would silently swap the user's object for a file."""
    try:
        mode = os.lstat(dest).st_mode
    except FileNotFoundError:
        return
    except OSError as err:
        raise write_error(err, dest) from None
    if not stat.S_ISREG(mode):
        kind = ("a symbolic link" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode) else
                "a device, pipe or socket")
        raise MedsciError(f"the output exists and is {kind}, not a regular file: medsci replaces only regular "
                          "files; choose another output path", dest)


def write_error(err: OSError, dest: str | Path) -> MedsciError:
    """A file system's refusal to write ``dest`` (no permission, a read-only or vanished folder, a file where a
    folder should be, a loop of links) as one line naming it; every verb's writes go through here."""
    if is_disk_full(err):
        return disk_full_error(dest)
    return MedsciError(f"cannot write the output: {err.strerror or type(err).__name__}; choose a folder you can "
                       "write to", dest)


def refuse_non_finite(array, dest: str | Path) -> None:
    """Every image, volume and cube writer calls this: a NaN/Inf result (a diverged or corrupt model) is an error
    naming the file it would have become, never a file written with exit status 0."""
    import numpy as np

    arr = np.asarray(array)
    if arr.dtype.kind in "fc":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise MedsciError(f"the result holds {bad:,} NaN/Inf value(s) of {arr.size:,}; nothing was written (a "
                              "diverged or corrupt model, or non-finite inputs)", dest)


def write_npy_atomic(dest: str | Path, array) -> None:
    """``array`` as ``.npy`` (never pickled), atomically, refusing NaN/Inf."""
    import numpy as np

    refuse_non_finite(array, dest)
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def output_mode() -> int:
    """What open() would give a new file: 0666 minus the umask."""
    # Reading the umask means setting it; set it straight back (single-threaded at this point in practice).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(dest: str | Path, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | Path, text: str) -> None:
    # A report may quote a file name that is not UTF-8 (a refused case's): shown escaped, never a crash.
    write_bytes_atomic(dest, text.encode("utf-8", "backslashreplace"))


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
    root_resolved = resolved(root)
    candidate = resolved(root_resolved / name)
    if not inside(candidate, root_resolved):
        raise MedsciError(f"output name {name!r} would escape the output folder", root)
    return candidate

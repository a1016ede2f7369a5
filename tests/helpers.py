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


def tiny_synthesis(root: Path, name: str = "synthesis_model"):
    """Two 36x40x30 demo BraTS cases under ``root/brats``, preprocessed into ``root/prep`` with configs/test.yaml,
    and a synthesis checkpoint trained for one step (only its loading and geometry matter): (raw, ids, cfg, ck)."""
    from medsci.cli import main
    from medsci.config import load_config
    from medsci.tasks.synthesis.demo import write_brats_dataset
    from medsci.tasks.synthesis.pipeline import train_synthesis

    config = REPO / "configs" / "test.yaml"
    raw = root / "brats"
    write_brats_dataset(raw, cases=2, seed=3, shape=(36, 40, 30))
    ids = sorted(p.name for p in raw.iterdir() if p.is_dir())
    prep = root / "prep"
    for case in ids:
        assert main(["preprocess", "synthesis", "--case-dir", str(raw / case), "--out", str(prep),
                     "--config", str(config)]) == 0
    cfg = load_config(config).synthesis
    cfg.train.steps, cfg.train.checkpoint_every, cfg.train.warmup_steps = 1, 1, 0
    return raw, ids, cfg, train_synthesis(cfg, prep, ids, root / name, "cpu", progress=False)

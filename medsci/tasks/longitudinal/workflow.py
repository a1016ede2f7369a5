"""Parse-time helpers of the longitudinal rule file (workflows/longitudinal.smk): which subjects."""

from __future__ import annotations

from pathlib import Path


def subject_folders(cfg, raw_root: Path) -> dict[str, str]:
    """{subject id: folder}: the demo's sub-000.. or the subject folders found under ``data.raw_dir``."""
    if cfg.data.raw_dir:
        from medsci.config import require_path
        from medsci.tasks.longitudinal.layout import find_subjects

        good, _ = find_subjects(require_path(raw_root, "longitudinal.data.raw_dir"))  # refused subjects are reported by the preprocessing rule's log
        return {s.id: str(s.folder) for s in good}
    return {f"sub-{i:03d}": str(Path(raw_root) / f"sub-{i:03d}") for i in range(cfg.data.demo.subjects)}

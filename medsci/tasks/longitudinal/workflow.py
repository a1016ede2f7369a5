"""Parse-time helpers of the longitudinal rule file (workflows/longitudinal.smk): which subjects."""

from __future__ import annotations

import sys
from pathlib import Path

from medsci.errors import ConfigError


def subject_folders(cfg, raw_root: Path) -> dict[str, str]:
    """{subject id: folder}: the demo's sub-000.. or the subject folders found under ``data.raw_dir``."""
    if cfg.data.raw_dir:
        from medsci.config import require_path
        from medsci.tasks.longitudinal.layout import find_subjects

        good, refused = find_subjects(require_path(raw_root, "longitudinal.data.raw_dir"))
        # a refused subject is left out of the run: named here (and in the evaluation report, which reads the
        # same folder with ``--data``); none left is one clear error instead of an empty job graph
        for folder, reason in refused:
            print(f"medsci workflow: warning: subject {folder.name} left out: {reason}", file=sys.stderr)
        if not good:
            raise ConfigError(f"longitudinal.data.raw_dir: all {len(refused)} subjects are refused (the first: "
                              f"{refused[0][1]})" if refused else "longitudinal.data.raw_dir: no subject folders "
                              "(a sessions.tsv or sub-*) found", raw_root)
        return {s.id: str(s.folder) for s in good}
    return {f"sub-{i:03d}": str(Path(raw_root) / f"sub-{i:03d}") for i in range(cfg.data.demo.subjects)}

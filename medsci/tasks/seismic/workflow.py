"""Parse-time helpers of the seismic rule file (workflows/seismic.smk): which cubes."""

from __future__ import annotations

from pathlib import Path


def cube_files(cfg, raw_root: Path) -> dict[str, str]:
    """{cube id: file}: the demo's cube_000.. or the stems of the ``data.raw_dir`` files."""
    from medsci.config import require_path

    if cfg.data.survey:  # written by the split-survey rule
        require_path(cfg.data.survey, "seismic.data.survey", folder=False)
        return {name: str(Path(raw_root) / f"{name}.segy") for name in ("heldout", "train")}
    if cfg.data.raw_dir:
        from medsci.tasks.seismic.data import cube_files as files_in

        return {cube: str(path) for cube, path in files_in(require_path(raw_root, "seismic.data.raw_dir")).items()}
    return {f"cube_{i:03d}": str(Path(raw_root) / f"cube_{i:03d}.segy") for i in range(cfg.data.demo.cubes)}

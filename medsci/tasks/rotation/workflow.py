"""Parse-time helpers of the rotation rule file (workflows/rotation.smk): which CTs."""

from __future__ import annotations

from pathlib import Path

CT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def ct_files(cfg, raw_root: Path) -> dict[str, str]:
    """{CT id: file or folder}: the demo's ct_000.. or the CTs of ``data.raw_dir``: volume files (ids = names
    without suffix) and subfolders holding a DICOM series (ids = folder names; one series per folder)."""
    if cfg.data.raw_dir:
        from medsci.config import require_path
        from medsci.io.dicom import is_dicom_folder

        out = {}
        for path in sorted(require_path(raw_root, "rotation.data.raw_dir").iterdir()):
            if path.is_dir() and not path.name.startswith(".") and is_dicom_folder(path):
                out[path.name] = str(path)
                continue
            for suffix in CT_SUFFIXES:
                if path.is_file() and path.name.endswith(suffix) and not path.name.startswith("."):
                    out[path.name[: -len(suffix)]] = str(path)
                    break
        return out
    return {f"ct_{i:03d}": str(Path(raw_root) / f"ct_{i:03d}.nii.gz") for i in range(cfg.data.demo.cts)}

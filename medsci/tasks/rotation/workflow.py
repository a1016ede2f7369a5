"""Parse-time helpers of the rotation rule file (workflows/rotation.smk): which CTs."""

from __future__ import annotations

from pathlib import Path

CT_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")


def ct_files(cfg, raw_root: Path) -> dict[str, str]:
    """{CT id: file}: the demo's ct_000.. or the CT files of ``data.raw_dir`` (ids = names without suffix)."""
    if cfg.data.raw_dir:
        from medsci.config import require_path

        out = {}
        for path in sorted(require_path(raw_root, "rotation.data.raw_dir").iterdir()):
            for suffix in CT_SUFFIXES:
                if path.is_file() and path.name.endswith(suffix) and not path.name.startswith("."):
                    out[path.name[: -len(suffix)]] = str(path)
                    break
        return out
    return {f"ct_{i:03d}": str(Path(raw_root) / f"ct_{i:03d}.nii.gz") for i in range(cfg.data.demo.cts)}

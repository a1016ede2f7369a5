"""Parse-time helpers of the synthesis rule file (workflows/synthesis.smk): which cases, which raw files."""

from __future__ import annotations

from pathlib import Path

MODS = ("t1n", "t1c", "t2w", "t2f")


def case_ids(cfg, raw_root: Path) -> list[str]:
    """Case ids: the sub-folders of ``data.raw_dir``, or the demo cases the workflow will generate."""
    if cfg.data.raw_dir:
        from medsci.config import require_path

        return sorted(p.name for p in require_path(raw_root, "synthesis.data.raw_dir").iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f"BraTS-DEMO-{i:05d}-000" for i in range(cfg.data.demo.cases)]


def raw_inputs(cfg, raw_root: Path, case: str) -> list[str]:
    """The raw files of one case (every NIfTI in its folder for real data)."""
    folder = Path(raw_root) / case
    if cfg.data.raw_dir:
        return [str(p) for p in sorted(folder.glob("*.nii*"))]
    return [str(folder / f"{case}-{m}.nii.gz") for m in (*MODS, "seg")]


def batch_cases(input_dir: str) -> list[str]:
    """Case ids of a batch folder, as `medsci synthesize` names them."""
    from medsci.config import require_path
    from medsci.tasks.synthesis.clinical import find_case_folders

    return [case_id for case_id, _, _ in find_case_folders(require_path(input_dir, "synthesis.batch.input"))]

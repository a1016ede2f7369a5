"""Case discovery (BraTS and generic layouts) and case / geometry checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsci.errors import InputError
from medsci.mri.cases import (MODALITIES, Case, check_case, check_consistent_geometry, discover_cases,
                             load_case)
from medsci.io.volume import Volume


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_brats_layout_discovery(tmp_path):
    for mod in MODALITIES:
        _touch(tmp_path / "B-002" / f"B-002-{mod}.nii.gz")
    for mod in ("t1n", "t1c", "t2w"):  # t2f missing
        _touch(tmp_path / "A-001" / f"A-001-{mod}.nii.gz")
    _touch(tmp_path / "A-001" / "A-001-seg.nii.gz")
    _touch(tmp_path / "A-001" / ".A-001-t2f.nii.gz.tmp")  # leftover temp file: not a modality
    _touch(tmp_path / "notes" / "readme.txt")  # unrelated folder: skipped
    (tmp_path / "top-level-file.txt").write_text("x")

    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["A-001", "B-002"]
    a, b = cases
    assert a.missing() == ["t2f"] and b.missing() == []
    assert a.seg == tmp_path / "A-001" / "A-001-seg.nii.gz" and b.seg is None
    assert a.files["t1c"] == tmp_path / "A-001" / "A-001-t1c.nii.gz"
    assert a.missing(("t2f", "t1n")) == ["t2f"]


def test_generic_layout_with_case_placeholder_and_wildcards(tmp_path):
    for case in ("s01", "s02"):
        _touch(tmp_path / case / f"{case}_T1.nii.gz")
        _touch(tmp_path / case / f"{case}_T1Gd.nii.gz")
        _touch(tmp_path / case / f"{case}_flair_reg.nii")
        _touch(tmp_path / case / f"{case}_labels.nii.gz")
    patterns = {"t1n": "{case}_T1.nii.gz", "t1c": "{case}_T1Gd.nii.gz", "t2f": "*flair*.nii*"}
    cases = discover_cases(tmp_path, layout="generic", patterns=patterns, seg_pattern="*labels*")
    assert [c.case_id for c in cases] == ["s01", "s02"]
    c = cases[1]
    assert c.files == {"t1n": tmp_path / "s02" / "s02_T1.nii.gz", "t1c": tmp_path / "s02" / "s02_T1Gd.nii.gz",
                       "t2f": tmp_path / "s02" / "s02_flair_reg.nii"}
    assert c.missing() == ["t2w"]
    assert c.seg == tmp_path / "s02" / "s02_labels.nii.gz"


def test_generic_layout_ambiguous_pattern_names_folder(tmp_path):
    _touch(tmp_path / "s01" / "s01_T1.nii.gz")
    _touch(tmp_path / "s01" / "s01_T1Gd.nii.gz")
    with pytest.raises(InputError, match="matches 2 files") as info:
        discover_cases(tmp_path, layout="generic", patterns={"t1n": "*T1*"})
    assert "s01" in str(info.value)
    with pytest.raises(InputError, match="both t1n and t1c"):
        load_case(tmp_path / "s01", layout="generic", patterns={"t1n": "*T1.nii.gz", "t1c": "s01_T1.*"})


def test_missing_or_empty_root_and_bad_layout(tmp_path):
    with pytest.raises(InputError, match="not found") as info:
        discover_cases(tmp_path / "nope")
    assert "nope" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no cases found"):
        discover_cases(tmp_path / "empty")
    _touch(tmp_path / "other" / "x" / "x.txt")
    with pytest.raises(InputError, match="no cases found"):
        discover_cases(tmp_path / "other")
    with pytest.raises(InputError, match="unknown case layout"):
        discover_cases(tmp_path / "other", layout="bids")
    with pytest.raises(InputError, match="needs a file pattern"):
        discover_cases(tmp_path / "other", layout="generic")
    with pytest.raises(InputError, match="no modality files") as info:
        load_case(tmp_path / "other")
    assert "other" in str(info.value)


def test_check_case_limits(tmp_path):
    case = Case("c1", tmp_path / "c1", {"t1n": tmp_path / "a", "t1c": tmp_path / "b", "t2w": tmp_path / "c"})
    check_case(case, max_missing=1)
    check_case(case, max_missing=1, forbid_present="t2f")
    with pytest.raises(InputError, match="missing 1 modalities") as info:
        check_case(case)
    assert str(tmp_path / "c1") in str(info.value)
    with pytest.raises(InputError, match="already has t1c") as info:
        check_case(case, max_missing=1, forbid_present="t1c")
    assert str(tmp_path / "c1") in str(info.value)


def _vol(name: str, shape=(4, 5, 6), affine=None) -> Volume:
    return Volume(np.zeros(shape, np.float32), np.eye(4) if affine is None else affine, source=Path(name))


def test_check_consistent_geometry():
    shifted = np.eye(4)
    shifted[0, 3] = 5e-4  # within tolerance
    check_consistent_geometry({"t1n": _vol("a.nii.gz"), "t1c": _vol("b.nii.gz", affine=shifted)})
    with pytest.raises(InputError, match="shape") as info:
        check_consistent_geometry({"t1n": _vol("a.nii.gz"), "t2w": _vol("odd.nii.gz", shape=(4, 5, 7))})
    assert str(info.value).startswith("odd.nii.gz:")
    moved = np.eye(4)
    moved[2, 3] = 0.01
    with pytest.raises(InputError, match="affine") as info:
        check_consistent_geometry({"t1n": _vol("a.nii.gz"), "t1c": _vol("b.nii.gz"),
                                   "t2f": _vol("moved.nii.gz", affine=moved)})
    assert str(info.value).startswith("moved.nii.gz:")

"""Synthetic longitudinal brain MRI sequences and the on-disk subject/session layout.

Small grids (32 x 40 x 32 voxels of 6 mm) keep this fast; every anatomical size is in millimetres, so
these are the same subjects as at the default 4 mm, sampled more coarsely.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medsci.errors import InputError
from medsci.tasks.longitudinal import demo
from medsci.tasks.longitudinal.layout import Session, Subject, find_subjects, read_subject

SHAPE, SPACING = (32, 40, 32), (6.0, 6.0, 6.0)
VOXEL_MM3 = float(np.prod(SPACING))
H = 6.0  # partial-volume ramp width (mm) on this grid
N_SUBJECTS = 12


@pytest.fixture(scope="module")
def sequences() -> list[dict]:
    return [demo.subject_sequence(demo.subject_seed(0, i), SHAPE, SPACING) for i in range(N_SUBJECTS)]


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    demo.write_demo_subjects(root, n=3, seed=0, shape=SHAPE, spacing=SPACING)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _coords():
    x = (np.arange(SHAPE[0]) - (SHAPE[0] - 1) / 2.0) * SPACING[0]
    y = (np.arange(SHAPE[1]) - (SHAPE[1] - 1) / 2.0) * SPACING[1]
    z = (np.arange(SHAPE[2]) - (SHAPE[2] - 1) / 2.0) * SPACING[2]
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _lesion_ball(anatomy: demo.Anatomy, times) -> np.ndarray:
    """Voxels within one ramp (+1 mm) of the lesion at its largest over ``times``."""
    x, y, z = _coords()
    cx, cy, cz = anatomy.lesion_c
    reach = max(anatomy.lesion_r) * max(anatomy.lesion_scale(t) for t in times) + H / 2.0 + 1.0
    return np.broadcast_to((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 < reach**2, SHAPE)


def _ventricle_count(clean: np.ndarray, deep: np.ndarray, ball: np.ndarray) -> int:
    """CSF-dark voxels inside the brain (deep white-matter region, lesion excluded)."""
    return int(((clean < (demo.CSF + demo.WM) / 2.0) & deep & ~ball).sum())


# --------------------------------------------------------------------------------------------------
# Determinism and the drawn schedules


def test_same_seed_same_bytes_and_different_seeds_differ(written: Path, tmp_path: Path):
    again = demo.write_demo_subjects(tmp_path / "again", n=3, seed=0, shape=SHAPE, spacing=SPACING)
    assert [p.name for p in again] == ["sub-000", "sub-001", "sub-002"]
    first, second = _files(written), _files(tmp_path / "again")
    assert first == second and len(first) >= 3 * 4  # >= 3 sessions + sessions.tsv per subject
    other = demo.write_demo_subjects(tmp_path / "other", n=3, seed=1, shape=SHAPE, spacing=SPACING)
    vol0 = nib.load(str(written / "sub-000" / "ses-00.nii.gz")).get_fdata()
    vol1 = nib.load(str(other[0] / "ses-00.nii.gz")).get_fdata()
    assert _files(tmp_path / "other") != first
    # Different subjects, not just different noise: clean anatomies differ by far more than the noise.
    a0 = demo.draw_anatomy(demo.subject_seed(0, 0))
    a1 = demo.draw_anatomy(demo.subject_seed(1, 0))
    assert np.abs(demo.render(a0, 0.0, SHAPE, SPACING) - demo.render(a1, 0.0, SHAPE, SPACING)).mean() > 20.0
    assert vol0.shape == SHAPE and np.abs(vol0 - vol1).mean() > 20.0
    seq_a = demo.subject_sequence(7, SHAPE, SPACING)
    seq_b = demo.subject_sequence(7, SHAPE, SPACING)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(seq_a["volumes"], seq_b["volumes"]))
    assert np.array_equal(seq_a["times"], seq_b["times"])


def test_nifti_geometry_values_and_description(written: Path, sequences):
    img = nib.load(str(written / "sub-000" / "ses-00.nii.gz"))
    assert img.get_data_dtype() == np.float32 and img.shape == SHAPE
    assert np.allclose(img.affine, sequences[0]["affine"])
    assert np.array_equal(np.diag(img.affine), [*SPACING, 1.0])
    assert np.allclose(img.affine[:3, 3], -np.asarray(SPACING) * (np.asarray(SHAPE) - 1) / 2.0)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    assert b"synthetic" in bytes(img.header["descrip"])
    data = np.asanyarray(img.dataobj)
    assert np.array_equal(data, sequences[0]["volumes"][0])
    # T1-like range: air ~ noise floor, white matter ~ 780, nothing far above 1000.
    assert 0.0 <= data.min() and data.max() < 1150.0
    assert np.median(data[data > 650]) == pytest.approx(demo.WM, rel=0.1)


def test_times_start_at_zero_increase_irregularly_and_lengths_vary(sequences):
    lengths, all_gaps = [], []
    for seq in sequences:
        t = seq["times"]
        gaps = np.diff(t)
        assert t.dtype == np.float64 and t[0] == 0.0
        assert np.all(gaps >= demo.GAP_MIN_DAYS) and np.all(gaps <= demo.GAP_MAX_DAYS)
        assert len(set(gaps.tolist())) == len(gaps)  # irregular: no two intervals alike
        all_gaps.extend(gaps.tolist())
        assert 3 <= len(t) <= 7 and len(seq["volumes"]) == len(t) == len(seq["session_ids"])
        lengths.append(len(t))
        # Session ids number the planned visits: a missed visit is a skipped number.
        planned = [int(s.split("-")[1]) for s in seq["session_ids"]]
        assert planned[0] == 0 and planned == sorted(planned)
        assert planned[-1] - (len(planned) - 1) == seq["missing"]
        assert 55.0 <= seq["age"] <= 85.0
        rates = seq["rates"]
        assert 0.06 <= rates["ventricle_growth"] <= 0.15 and 0.02 <= rates["cortical_thinning"] <= 0.06
        assert 0.12 <= abs(rates["lesion_growth"]) and -0.30 <= rates["lesion_growth"] <= 0.50
    assert len(set(lengths)) >= 3
    assert np.std(all_gaps) > 0.2 * np.mean(all_gaps) and min(all_gaps) < 200.0 < 400.0 < max(all_gaps)
    assert sum(seq["missing"] > 0 for seq in sequences) >= 1
    # A missed visit leaves a gap of about two planned intervals among single ones.
    seq = next(s for s in sequences if s["missing"])
    planned = np.array([int(s.split("-")[1]) for s in seq["session_ids"]])
    gaps = np.diff(seq["times"])
    assert gaps[np.diff(planned) == 2].min() > gaps[np.diff(planned) == 1].max()
    assert {s["rates"]["lesion_growth"] > 0 for s in sequences} == {True, False}  # both signs


def test_n_sessions_fixes_the_length_but_not_the_anatomy():
    short = demo.subject_sequence(3, SHAPE, SPACING, n_sessions=2)
    long = demo.subject_sequence(3, SHAPE, SPACING, n_sessions=7)
    assert len(short["times"]) == 2 and len(long["times"]) == 7
    assert short["rates"] == long["rates"] and short["anatomy"].lesion_c == long["anatomy"].lesion_c
    assert np.array_equal(short["volumes"][0], long["volumes"][0])  # same subject, same first scan


# --------------------------------------------------------------------------------------------------
# Anatomy changes with time


def test_ventricles_grow_monotonically_for_every_subject(sequences):
    for seq in sequences:
        a, times = seq["anatomy"], seq["times"]
        deep = demo.deep_brain_mask(a, SHAPE, SPACING)
        ball = _lesion_ball(a, times)
        counts = [_ventricle_count(demo.render(a, t, SHAPE, SPACING), deep, ball) for t in times]
        assert all(b >= c for c, b in zip(counts, counts[1:])), counts
        assert counts[-1] > counts[0]
        # The voxel count tracks the analytic volume of the two ellipsoids (partial volume, 6 mm voxels).
        for t, count in zip(times, counts):
            assert count * VOXEL_MM3 == pytest.approx(a.ventricle_volume(t), rel=0.25)
        growth = a.ventricle_volume(times[-1]) / a.ventricle_volume(0.0)
        assert growth == pytest.approx((1 + seq["rates"]["ventricle_growth"] * times[-1] / 365.25) ** 3)


def test_cortex_thins_with_the_drawn_rate():
    seq = demo.subject_sequence(demo.subject_seed(0, 2), SHAPE, SPACING)
    a, t_last = seq["anatomy"], seq["times"][-1]
    thinning = a.cortex - a.cortex_thickness(t_last)
    assert thinning == pytest.approx(a.cortex * seq["rates"]["cortical_thinning"] * t_last / 365.25)
    first = demo.brain_mask(a, 0.0, SHAPE, SPACING)
    last = demo.brain_mask(a, t_last, SHAPE, SPACING)
    assert np.all(first >= last) and last.sum() < first.sum()  # the pial surface only recedes
    # Brightness of the cortex region (GM over darker CSF) drops: total intensity outside the deep WM.
    deep = demo.deep_brain_mask(a, SHAPE, SPACING)
    shell = first & ~deep
    assert demo.render(a, t_last, SHAPE, SPACING)[shell].sum() < demo.render(a, 0.0, SHAPE, SPACING)[shell].sum()


def test_lesion_volume_changes_with_the_drawn_sign(sequences):
    for seq in sequences:
        a, times = seq["anatomy"], seq["times"]
        ball = _lesion_ball(a, times)
        first = demo.render(a, times[0], SHAPE, SPACING)
        last = demo.render(a, times[-1], SHAPE, SPACING)
        lesion = demo.LESION_BRIGHT if a.lesion_bright else demo.LESION_DARK
        # Inside the ball only the lesion changes: the intensity change over (lesion - WM) is its volume change.
        measured = float((last - first)[ball].sum()) / (lesion - demo.WM) * VOXEL_MM3
        analytic = a.lesion_volume(times[-1]) - a.lesion_volume(times[0])
        assert np.sign(measured) == np.sign(analytic) == np.sign(seq["rates"]["lesion_growth"])
        # Soft edges on 6 mm voxels overstate a small lesion's volume change by up to ~h^2 / (12 r^2).
        assert 0.8 < measured / analytic < 1.8
        expected = (1 + seq["rates"]["lesion_growth"]) ** (times[-1] / 365.25)
        assert a.lesion_volume(times[-1]) / a.lesion_volume(0.0) == pytest.approx(expected)


def test_changed_mask_is_the_ventricle_lesion_and_cortex_change_only(sequences):
    for seq in sequences:
        a, times, changed = seq["anatomy"], seq["times"], seq["changed"]
        assert changed.dtype == bool and changed.shape == SHAPE
        brain = demo.brain_mask(a, 0.0, SHAPE, SPACING)
        deep = demo.deep_brain_mask(a, SHAPE, SPACING)
        assert 0 < changed.sum() < 0.35 * brain.sum()
        # The ventricles' growth is always part of it ...
        assert (changed & deep & ~_lesion_ball(a, times)).sum() >= 50
        # ... and nothing changes outside the brain (plus one partial-volume ramp).
        near_brain = ndimage.binary_dilation(brain, structure=np.ones((3, 3, 3), bool))
        assert not (changed & ~near_brain).any()
        first = demo.render(a, times[0], SHAPE, SPACING)
        last = demo.render(a, times[-1], SHAPE, SPACING)
        assert np.array_equal(changed, np.abs(last - first) > 0.05 * (demo.WM - demo.CSF))
    fractions = [s["changed"].sum() / demo.brain_mask(s["anatomy"], 0.0, SHAPE, SPACING).sum() for s in sequences]
    assert min(fractions) < 0.05  # where the cortex recedes by less than the threshold, only a few %


# --------------------------------------------------------------------------------------------------
# Misalignment and noise


def test_sessions_differ_only_by_a_small_rigid_motion_and_noise(sequences):
    for seq in sequences[:6]:
        a, times, poses = seq["anatomy"], seq["times"], seq["poses"]
        assert np.array_equal(poses[0], np.eye(4))
        for k, (volume, t, pose) in enumerate(zip(seq["volumes"], times, poses)):
            rot = pose[:3, :3]
            assert np.allclose(rot @ rot.T, np.eye(3)) and np.linalg.det(rot) == pytest.approx(1.0)
            angle = math.degrees(math.acos(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)))
            assert angle <= 3.0 + 1e-9 and np.linalg.norm(pose[:3, 3]) <= 4.0 + 1e-9
            posed = demo.render(a, t, SHAPE, SPACING, pose=pose)
            brain = demo.brain_mask(a, t, SHAPE, SPACING)
            residual = (volume - posed)[brain]
            assert residual.std() == pytest.approx(demo.NOISE_SIGMA, rel=0.08)  # ~2 % of white matter
            assert abs(residual.mean()) < 2.0  # Rician bias is negligible where the signal is bright
            if k > 0:
                assert angle >= 0.5 and np.linalg.norm(pose[:3, 3]) >= 0.5
                aligned = demo.render(a, t, SHAPE, SPACING)
                assert np.abs(volume - aligned).mean() > 1.1 * np.abs(volume - posed).mean()


# --------------------------------------------------------------------------------------------------
# Writing: tsv, existing folders, argument errors


def test_written_tsv_reads_back_with_the_same_times(written: Path):
    for i in range(3):
        seq = demo.subject_sequence(demo.subject_seed(0, i), SHAPE, SPACING)
        folder = written / f"sub-{i:03d}"
        text = (folder / "sessions.tsv").read_text()
        assert text.splitlines()[0] == "session_id\ttime_days\tage"
        subject = read_subject(folder)
        assert isinstance(subject, Subject) and subject.id == f"sub-{i:03d}" and subject.folder == folder
        assert [s.time for s in subject.sessions] == seq["times"].tolist()
        assert [s.id for s in subject.sessions] == seq["session_ids"]
        assert [s.path for s in subject.sessions] == [folder / f"{sid}.nii.gz" for sid in seq["session_ids"]]
        for s in subject.sessions:
            assert s.age == pytest.approx(seq["age"] + s.time / 365.25, abs=0.006)


def test_rewriting_replaces_our_files_and_leaves_others(tmp_path: Path):
    out = tmp_path / "out"
    demo.write_demo_subjects(out, n=1, seed=4, shape=SHAPE, spacing=SPACING)
    before = _files(out)
    (out / "sub-000" / "ses-00.nii.gz").write_bytes(b"stale")
    (out / "sub-000" / "notes.txt").write_text("mine")
    demo.write_demo_subjects(out, n=1, seed=4, shape=SHAPE, spacing=SPACING)
    after = _files(out)
    assert after.pop("sub-000/notes.txt") == b"mine"
    assert after == before


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "number of subjects"),
    ({"n": True}, "number of subjects"),
    ({"seed": -1}, "seed"),
    ({"shape": (8, 8, 8)}, "shape"),
    ({"spacing": (4.0, 0.0, 4.0)}, "spacing"),
])
def test_write_refuses_bad_arguments_before_writing(tmp_path: Path, kwargs, message):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        demo.write_demo_subjects(out, **{"shape": SHAPE, "spacing": SPACING, **kwargs})
    assert not out.exists()


def test_write_refuses_a_file_as_output_and_bad_n_sessions(tmp_path: Path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        demo.write_demo_subjects(target, n=1, shape=SHAPE, spacing=SPACING)
    for bad in (1, 8, 2.0, True):
        with pytest.raises(InputError, match="n_sessions"):
            demo.subject_sequence(0, SHAPE, SPACING, n_sessions=bad)


# --------------------------------------------------------------------------------------------------
# Mixed acquisition voxel sizes (data.demo.spacings)


def test_acquisition_grid_cycles_the_spacings_on_one_field_of_view():
    assert demo.acquisition_grid(5, SHAPE, SPACING) == (SHAPE, SPACING)
    spacings = ((6.0, 6.0, 6.0), (8.0, 8.0, 8.0), (4.0, 4.0, 5.0))
    grids = [demo.acquisition_grid(i, SHAPE, SPACING, spacings) for i in range(5)]
    assert grids == [(SHAPE, (6.0,) * 3), ((24, 30, 24), (8.0,) * 3), ((48, 60, 38), (4.0, 4.0, 5.0)),
                     (SHAPE, (6.0,) * 3), ((24, 30, 24), (8.0,) * 3)]
    for shape, spacing in grids:  # the same field of view, to within half a voxel per side
        assert np.all(np.abs(np.multiply(shape, spacing) - np.multiply(SHAPE, SPACING)) <= np.divide(spacing, 2))


def test_mixed_spacings_write_the_same_subjects_at_each_voxel_size(written: Path, tmp_path: Path):
    spacings = [(6.0, 6.0, 6.0), (8.0, 8.0, 8.0)]
    out = tmp_path / "mixed"
    demo.write_demo_subjects(out, n=3, seed=0, shape=SHAPE, spacing=SPACING, spacings=spacings)
    for i, (shape, spacing) in enumerate([(SHAPE, (6.0,) * 3), ((24, 30, 24), (8.0,) * 3), (SHAPE, (6.0,) * 3)]):
        folder = out / f"sub-{i:03d}"
        # the same schedule (and anatomy) as at the single voxel size; the scans on the subject's own grid
        assert (folder / "sessions.tsv").read_bytes() == (written / folder.name / "sessions.tsv").read_bytes()
        img = nib.load(str(folder / "ses-00.nii.gz"))
        assert img.shape == shape and np.allclose(img.header.get_zooms(), spacing)
        assert np.allclose(img.affine, demo.centred_affine(shape, spacing))
    # a subject at the first voxel size is byte for byte the single-spacing one; the same arguments, the same bytes
    assert _files(out / "sub-000") == _files(written / "sub-000")
    demo.write_demo_subjects(tmp_path / "again", n=3, seed=0, shape=SHAPE, spacing=SPACING, spacings=spacings)
    assert _files(tmp_path / "again") == _files(out)


@pytest.mark.parametrize("spacings, message", [
    ([(6.0, 6.0)], "spacings"),
    ([(6.0, -1.0, 6.0)], "spacings"),
    ([(6.0, float("nan"), 6.0)], "spacings"),
    (["abc"], "spacings"),
    ([(100.0, 100.0, 100.0)], "shape"),  # a grid under the smallest side the demo writes
])
def test_mixed_spacings_refuse_bad_entries_before_writing(tmp_path: Path, spacings, message):
    out = tmp_path / "out"
    with pytest.raises(InputError, match=message):
        demo.write_demo_subjects(out, n=2, shape=SHAPE, spacing=SPACING, spacings=spacings)
    assert not out.exists()


def test_spacings_config_schema_and_cli(tmp_path: Path):
    import subprocess
    import sys

    from medsci.config import config_from_dict
    from medsci.errors import ConfigError
    from medsci.tasks.longitudinal.config import LongitudinalDemoConfig

    cfg = LongitudinalDemoConfig.from_dict({"spacings": [[4, 4, 4], [3, 3, 3.5]]})
    assert cfg.spacings == ((4.0, 4.0, 4.0), (3.0, 3.0, 3.5))
    assert cfg.to_dict()["spacings"] == [[4.0, 4.0, 4.0], [3.0, 3.0, 3.5]]
    assert LongitudinalDemoConfig().spacings == () and LongitudinalDemoConfig().to_dict()["spacings"] == []
    with pytest.raises(ConfigError, match="spacings"):
        LongitudinalDemoConfig.from_dict({"spacings": [[4, 4]]})
    base = {"name": "t", "longitudinal": {"data": {"demo": {"spacings": [[4, 4, 4], [3, 3, 3]]}}}}
    assert config_from_dict(base).longitudinal.data.demo.spacings[1] == (3.0, 3.0, 3.0)
    for bad in ([[4, 4]], [[4, 0, 4]], [4, 3], "4"):
        with pytest.raises(ConfigError):
            config_from_dict({"name": "t", "longitudinal": {"data": {"demo": {"spacings": bad}}}})
    # the CLI: one number is isotropic, X,Y,Z anisotropic
    r = subprocess.run([sys.executable, "-m", "medsci", "demo-data", "longitudinal", str(tmp_path / "cli"),
                        "--subjects", "2", "--shape", *map(str, SHAPE), "--spacing", "6", "6", "6",
                        "--spacings", "6", "8,8,8"], capture_output=True, text=True, encoding="utf-8")
    assert r.returncode == 0, r.stderr
    assert nib.load(str(tmp_path / "cli" / "sub-001" / "ses-00.nii.gz")).shape == (24, 30, 24)
    r = subprocess.run([sys.executable, "-m", "medsci", "demo-data", "longitudinal", str(tmp_path / "bad"),
                        "--spacings", "6,6"], capture_output=True, text=True, encoding="utf-8")
    assert r.returncode != 0 and "voxel size" in r.stderr and "Traceback" not in r.stderr


def test_a_subject_at_another_voxel_size_is_resampled_onto_the_model_grid(tmp_path: Path):
    from medsci.tasks.longitudinal.config import LongitudinalPreprocessConfig
    from medsci.tasks.longitudinal.preprocess import preprocess_subject

    demo.write_demo_subjects(tmp_path, n=2, seed=0, shape=SHAPE, spacing=SPACING, spacings=[SPACING, (8.0,) * 3])
    prep = LongitudinalPreprocessConfig(shape=SHAPE, spacing=SPACING)
    records = [preprocess_subject(read_subject(tmp_path / f"sub-00{i}"), prep) for i in (0, 1)]
    for rec in records:
        assert rec["frames"].shape[1:] == SHAPE and np.allclose(np.diag(rec["grid_affine"])[:3], SPACING)
        assert min(rec["similarity"]) > 0.9
    assert np.allclose(np.linalg.norm(records[1]["first_affine"][:3, :3], axis=0), 8.0)


# --------------------------------------------------------------------------------------------------
# Layout: read_subject and find_subjects


def _subject(root: Path, name: str, tsv: str | None, volumes=("a", "b")) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if tsv is not None:
        (folder / "sessions.tsv").write_text(tsv)
    for v in volumes:
        (folder / f"{v}.nii.gz").write_bytes(b"")  # existence is all discovery checks
    return folder


def test_unsorted_rows_are_sorted_extra_columns_ignored_and_na_age(tmp_path: Path):
    folder = _subject(tmp_path, "s1", "session_id\tscanner\ttime_days\tage\n"
                      "c\tX\t700\tn/a\nA\tY\t0\t70.5\nb\tZ\t365.5\t71.5\n", volumes=("A", "b"))
    (folder / "c.mha").write_bytes(b"")
    subject = read_subject(folder)
    assert [s.id for s in subject.sessions] == ["A", "b", "c"]
    assert [s.time for s in subject.sessions] == [0.0, 365.5, 700.0]
    assert [s.age for s in subject.sessions] == [70.5, 71.5, None]
    assert subject.sessions[2] == Session(id="c", time=700.0, path=folder / "c.mha", age=None)


def test_bids_sessions_with_acq_time_and_anat_folders(tmp_path: Path):
    sub = tmp_path / "sub-07"
    for ses, files in (("ses-01", ["sub-07_ses-01_T1w.nii.gz", "sub-07_ses-01_FLAIR.nii.gz"]),
                       ("ses-02", ["sub-07_ses-02_T1w.nii.gz"])):
        (sub / ses / "anat").mkdir(parents=True)
        for f in files:
            (sub / ses / "anat" / f).write_bytes(b"")
    (sub / "sub-07_sessions.tsv").write_text("session_id\tacq_time\n"
                                             "ses-02\t2021-03-01T10:00:00\nses-01\t2020-03-01T10:00:00\n")
    subject = read_subject(sub)
    assert [s.id for s in subject.sessions] == ["ses-01", "ses-02"]
    assert [s.time for s in subject.sessions] == [0.0, 365.0]
    assert subject.sessions[0].path == sub / "ses-01" / "anat" / "sub-07_ses-01_T1w.nii.gz"


@pytest.mark.parametrize("tsv, volumes, message", [
    ("session_id\ttime_days\na\t0\nb\t0\n", ("a", "b"), "duplicate timestamp"),
    ("session_id\ttime_days\na\t0\na\t10\n", ("a",), "duplicate session_id 'a'"),
    ("session_id\ttime_days\na\t0\nb\tsoon\n", ("a", "b"), "non-numeric time_days 'soon'"),
    ("session_id\ttime_days\na\t0\nb\tinf\n", ("a", "b"), "non-finite time_days"),
    ("session_id\tage\na\t60\nb\t61\n", ("a", "b"), "missing column time_days"),
    ("session_id,time_days\na,0\nb,10\n", ("a", "b"), "missing column session_id .columns must be tab-sep"),
    ("session_id\ttime_days\na\t0\n", ("a",), "needs at least two sessions"),
    ("session_id\ttime_days\na\t0\nb\t10\n", ("a",), "no volume for session 'b'"),
    ("", (), "empty"),
])
def test_read_subject_refusals_name_the_table_and_the_reason(tmp_path: Path, tsv, volumes, message):
    folder = _subject(tmp_path, "s", tsv, volumes)
    with pytest.raises(InputError, match=message) as err:
        read_subject(folder)
    assert err.value.path == str(folder / "sessions.tsv")
    assert "\n" not in str(err.value)


def test_find_subjects_keeps_the_good_and_gives_one_reason_per_bad(tmp_path: Path, written: Path):
    root = tmp_path / "data"
    shutil.copytree(written / "sub-000", root / "sub-000")
    shutil.copytree(written / "sub-002", root / "site-b" / "sub-002")  # nested one level deeper
    volume = (written / "sub-000" / "ses-00.nii.gz").read_bytes()
    bad = {
        "dup_times": ("session_id\ttime_days\nses-00\t0\nses-01\t0\n", ("ses-00", "ses-01"), "duplicate timestamp"),
        "one_session": ("session_id\ttime_days\nses-00\t0\n", ("ses-00",), "needs at least two sessions"),
        "missing_volume": ("session_id\ttime_days\nses-00\t0\nses-01\t90\n", ("ses-00",),
                           "no volume for session 'ses-01'"),
        "text_time": ("session_id\ttime_days\nses-00\t0\nses-01\tlater\n", ("ses-00", "ses-01"), "non-numeric"),
    }
    for name, (tsv, volumes, _) in bad.items():
        folder = _subject(root, name, tsv, ())
        for v in volumes:
            (folder / f"{v}.nii.gz").write_bytes(volume)
    for ses in ("ses-01", "ses-02"):  # BIDS-like, but no times anywhere
        (root / "sub-bids" / ses / "anat").mkdir(parents=True)
        (root / "sub-bids" / ses / "anat" / f"sub-bids_{ses}_T1w.nii.gz").write_bytes(volume)
    (root / ".hidden" / "sub-x").mkdir(parents=True)  # never looked at

    good, refused = find_subjects(root)
    assert [s.id for s in good] == ["sub-000", "sub-002"]
    assert good[1].folder == root / "site-b" / "sub-002"
    assert all(len(s.sessions) >= 3 and s.times == sorted(s.times) for s in good)
    reasons = {folder.name: reason for folder, reason in refused}
    assert len(refused) == len(reasons) == 5
    for name, (_, _, message) in bad.items():
        assert message in reasons[name] and str(root / name / "sessions.tsv") in reasons[name]
    assert "no session times: add sessions.tsv" in reasons["sub-bids"]
    assert str(root / "sub-bids") in reasons["sub-bids"]
    assert all("\n" not in r for r in reasons.values())


def test_find_subjects_duplicate_ids_and_bad_root(tmp_path: Path, written: Path):
    shutil.copytree(written / "sub-001", tmp_path / "a" / "sub-001")
    shutil.copytree(written / "sub-001", tmp_path / "b" / "sub-001")
    good, refused = find_subjects(tmp_path)
    assert [s.folder for s in good] == [tmp_path / "a" / "sub-001"]
    assert refused[0][0] == tmp_path / "b" / "sub-001" and "duplicate subject id 'sub-001'" in refused[0][1]
    with pytest.raises(InputError, match="not found"):
        find_subjects(tmp_path / "nowhere")
    # A subject folder given as the root is that one subject.
    good, refused = find_subjects(written / "sub-001")
    assert [s.id for s in good] == ["sub-001"] and refused == []

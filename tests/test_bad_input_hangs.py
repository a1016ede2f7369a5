"""The "Hangs, submissions and overwrites" section of the bad-input catalogue (docs/bad-input.md): one test per
row, through the real entry point, checking the exit code, no traceback and the message the table promises.

Rows with a named pipe would block forever without the fix: a watchdog opens the pipe's write end after a while
so that such a read ends (and the test fails) instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from catalogue import row_registry, section_rows
from medsci.cli import main
from test_bad_input_files import assert_row_message
from test_dicom import _write_source

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "configs" / "test.yaml"
TITLE, PREFIX = "Hangs, submissions and overwrites", "H"
SHAPE = (36, 40, 30)


# ------------------------------------------------------------------------------------------ shared inputs
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """An untrained synthesis checkpoint of configs/test.yaml (refusals and sampling only: no training), one
    BraTS-like case and a stub checkpoint (config.json only: loading it fails, so a refusal came first)."""
    from medsci.config import load_config
    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.networks import build_network
    from medsci.tasks.synthesis.demo import write_brats_dataset
    from medsci.tasks.synthesis.pipeline import checkpoint_config

    root = tmp_path_factory.mktemp("hangs_assets")
    cfg = load_config(TEST_CONFIG).synthesis
    cfg.model.prior = "none"  # a regression prior is fitted on training cases: none here
    ckcfg = checkpoint_config(cfg)
    net = build_network(ckcfg["model"])
    model = save_checkpoint(root / "model", ckcfg, net, ema=net)
    raw = root / "raw"
    write_brats_dataset(raw, cases=1, seed=3, shape=SHAPE)
    stub = root / "stub"
    stub.mkdir()
    (stub / "config.json").write_text('{"task": "synthesis", "schedule": {"num_train_timesteps": 20}}')
    return {"model": model, "case": next(p for p in raw.iterdir() if p.is_dir()), "stub": stub}


def _case(folder: Path, source: Path, name: str, drop: str = "t2f") -> Path:
    """A copy of the BraTS-like ``source`` case named ``name``, without its ``drop`` contrast and label map."""
    folder.mkdir(parents=True)
    for mod in ("t1n", "t1c", "t2w", "t2f"):
        if mod != drop:
            shutil.copyfile(source / f"{source.name}-{mod}.nii.gz", folder / f"{name}-{mod}.nii.gz")
    return folder


@pytest.fixture
def unblock():
    """``unblock(fifo)``: after 15 s, open the pipe for writing now and then, so that a reader stuck on it (the bug)
    gets end-of-file and the test fails instead of hanging. With the fix nobody opens it; nothing happens."""
    stop = threading.Event()

    def watch(fifo: Path):
        if stop.wait(15):
            return
        while not stop.wait(0.2):
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader (yet)
                pass

    threads = []

    def start(fifo: Path) -> Path:
        os.mkfifo(fifo)
        threads.append(threading.Thread(target=watch, args=(fifo,), daemon=True))
        threads[-1].start()
        return fifo
    yield start
    stop.set()
    for t in threads:
        t.join()


# ------------------------------------------------------------------------------------------ rows
def _expect(predicate: Callable[[], bool], what: str) -> Callable[[], None]:
    def check():
        assert predicate(), what
    return check


@dataclass
class Row:
    argv: list[str]
    code: int
    check: Callable[[], None] | None = None


ROWS, row = row_registry()


def _itk_header(tmp: Path, name: str, unblock) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4, 4), np.float32)), str(tmp / name))
    header = tmp / name
    data = header.with_suffix(".raw")
    text = header.read_text(encoding="latin-1").replace(data.name, "pipe.raw")
    header.write_text(text, encoding="latin-1")
    data.unlink()
    unblock(tmp / "pipe.raw")
    return header


@row("H01")
def _(tmp, a, unblock):
    return Row(["info", str(_itk_header(tmp, "detached.mhd", unblock))], 2)


@row("H02")
def _(tmp, a, unblock):
    return Row(["info", str(_itk_header(tmp, "detached.nhdr", unblock))], 2)


@row("H03")
def _(tmp, a, unblock):
    folder = tmp / "series"
    _write_source(folder, "T1 AX", shape=(8, 8, 3))
    unblock(folder / "IM0003.dcm")
    return Row(["info", str(folder)], 2)


@row("H04")
def _(tmp, a, unblock):
    drop = tmp / "drop"
    _case(drop / "good", a["case"], "good")
    _write_source(drop / "dicomcase", "T1 AX", shape=(8, 8, 3))
    unblock(drop / "dicomcase" / "IM0003.dcm")
    out = tmp / "out"

    def check():
        assert (out / "good" / "good_t2f_SYNTHETIC.nii.gz").is_file()
        record = json.loads((out / "dicomcase" / "dicomcase.json").read_text(encoding="utf-8"))
        assert record["status"] == "refused" and "not a regular file" in record["reason"]
    return Row(["synthesize", "--checkpoint", str(a["model"]), "--input", str(drop), "--output", str(out),
                "--no-progress", "--no-qc", "--steps", "1", "--n-samples", "1"], 1, check)


@row("H05")
def _(tmp, a, unblock):
    ct = tmp / "thick.nii.gz"
    hu = np.full((8, 8, 64), -1000.0, np.float32)
    hu[2:6, 2:6, :] = 40.0  # soft tissue inside air
    nib.save(nib.Nifti1Image(hu, np.diag([1.0, 1.0, 500.0, 1.0])), str(ct))
    return Row(["preprocess", "rotation", "--config", str(TEST_CONFIG), "--cts", str(ct), "--out",
                str(tmp / "pairs")], 1, _expect(lambda: not (tmp / "pairs" / "thick.npz").exists(), "no pairs"))


@row("H06")
def _(tmp, a, unblock):
    img = sitk.GetImageFromArray(np.ones((8, 8, 8), np.float32))
    img.SetSpacing((2000.0, 2000.0, 2000.0))  # metres written as millimetres
    sitk.WriteImage(img, str(tmp / "metres.nrrd"))
    return Row(["info", str(tmp / "metres.nrrd")], 2)


def _mapping_row(tmp, a, rid: str, text: str) -> Row:
    mapping = tmp / f"{rid}.yaml"
    mapping.write_text(text, encoding="utf-8")
    drop = _case(tmp / "drop" / "c1", a["case"], "c1").parent
    return Row(["synthesize", "--checkpoint", str(a["stub"]), "--input", str(drop), "--output", str(tmp / "out"),
                "--dicom-mapping", str(mapping)], 2)


@row("H07")
def _(tmp, a, unblock):
    return _mapping_row(tmp, a, "H07", "t1n: ['(a+)+$']\n")


@row("H08")
def _(tmp, a, unblock):
    return _mapping_row(tmp, a, "H08", "t2f: ['.*.*.*.*x']\n")


@row("H19")
def _(tmp, a, unblock):
    config = unblock(tmp / "pipe.yaml")
    return Row(["train", "synthesis", "--config", str(config), "--data", str(tmp / "prep"), "--cases", "c1", "--out",
                str(tmp / "model")], 2)


@row("H20")
def _(tmp, a, unblock):
    return Row(["split-survey", str(unblock(tmp / "pipe.segy")), "--out", str(tmp / "split")], 2)


# --- submissions -------------------------------------------------------------------------------------
def _submission(tmp: Path, a, output: Callable[[Path], np.ndarray | None] | None = None) -> tuple[Path, Path]:
    """Input case c1 (t2f missing) and a submission folder sub/ with c1-t2f.nii.gz (``output(case)``: its voxels;
    default: a smooth field unlike any input) and the manifest `medsci submit` writes."""
    from medsci.tasks.synthesis.submission import write_manifest

    inputs = tmp / "in"
    case = _case(inputs / "c1", a["case"], "c1")
    ref = nib.load(case / "c1-t1n.nii.gz")
    voxels = output(case) if output else np.fromfunction(lambda i, j, k: 1.0 + i + 2 * j + 3 * k, SHAPE)
    sub = tmp / "sub"
    sub.mkdir()
    nib.save(nib.Nifti1Image(np.asarray(voxels, np.float32), ref.affine), str(sub / "c1-t2f.nii.gz"))
    write_manifest(sub, {"c1-t2f.nii.gz": sub / "c1-t2f.nii.gz"}, {"c1": sorted(case.glob("*.nii.gz"))},
                   a["model"], config={}, sampler={"steps": 2, "seed": 0}, seeds={"sampler": 0})
    return sub, inputs


def _edit_manifest(sub: Path, edit: Callable[[dict], None]) -> None:
    manifest = json.loads((sub / "manifest.json").read_text(encoding="utf-8"))
    edit(manifest)
    (sub / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


@row("H09")
def _(tmp, a, unblock):
    (tmp / "empty").mkdir()
    return Row(["verify-submission", str(tmp / "empty")], 1)


@row("H10")
def _(tmp, a, unblock):
    sub, inputs = _submission(tmp, a, lambda case: np.fromfunction(lambda i, j, k, t: 1.0 + i + j + k, (*SHAPE, 1)))
    return Row(["verify-submission", str(sub), "--input", str(inputs)], 1)


@row("H11")
def _(tmp, a, unblock):
    sub, inputs = _submission(tmp, a, lambda case: np.asanyarray(nib.load(case / "c1-t1n.nii.gz").dataobj))
    return Row(["verify-submission", str(sub), "--input", str(inputs)], 1)


@row("H12")
def _(tmp, a, unblock):
    sub, inputs = _submission(tmp, a)
    _edit_manifest(sub, lambda m: m["seeds"].update(sampler=7))
    return Row(["verify-submission", str(sub), "--input", str(inputs)], 1)


@row("H13")
def _(tmp, a, unblock):
    sub, inputs = _submission(tmp, a)
    _edit_manifest(sub, lambda m: m["sampler"].update(steps=50))
    return Row(["verify-submission", str(sub), "--input", str(inputs)], 1)


@row("H14")
def _(tmp, a, unblock):
    sub, inputs = _submission(tmp, a)
    _edit_manifest(sub, lambda m: m["inputs"]["c1"]["c1-t1n.nii.gz"].update(
        path=str((inputs / "c1" / "c1-t1n.nii.gz").resolve())))
    return Row(["verify-submission", str(sub), "--input", str(inputs)], 1)


def _submit(tmp, a, *extra) -> list[str]:
    drop = _case(tmp / "drop" / "c1", a["case"], "c1").parent
    return ["submit", "--checkpoint", str(a["stub"]), "--input", str(drop), "--output", str(tmp / "sub"), *extra]


@row("H15")
def _(tmp, a, unblock):
    sub, _ = _submission(tmp, a)
    before = sorted(p.name for p in sub.iterdir())
    return Row(_submit(tmp, a), 2, _expect(lambda: sorted(p.name for p in sub.iterdir()) == before, "unchanged"))


@row("H16")
def _(tmp, a, unblock):
    sub, _ = _submission(tmp, a)
    (sub / "notes.txt").write_text("mine\n")
    return Row(_submit(tmp, a, "--force"), 2, _expect((sub / "notes.txt").is_file, "the user's file kept"))


# --- demo-data ---------------------------------------------------------------------------------------
def _user_file(path: Path) -> Callable[[], None]:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"the user's own data\n")
    return _expect(lambda: path.read_bytes() == b"the user's own data\n", "the user's file was overwritten")


@row("H17")
def _(tmp, a, unblock):
    check = _user_file(tmp / "userdata" / "BraTS-DEMO-00000-000" / "BraTS-DEMO-00000-000-t1n.nii.gz")
    return Row(["demo-data", "synthesis", str(tmp / "userdata"), "--cases", "1", "--shape", "16", "16", "16"], 2,
               check)


@row("H18")
def _(tmp, a, unblock):
    check = _user_file(tmp / "userct" / "ct_000.nii.gz")
    return Row(["demo-data", "rotation", str(tmp / "userct"), "--cts", "1", "--shape", "16", "16", "16"], 2, check)


# ------------------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize("rid", sorted(ROWS), ids=sorted(ROWS))
def test_bad_input_row(rid, assets, tmp_path, capsys, unblock):
    spec = ROWS[rid](tmp_path, assets, unblock)
    code = main(spec.argv)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    assert code == spec.code, output
    assert_row_message(section_rows(TITLE, PREFIX)[rid], output)  # folders stripped, as the table writes paths
    if spec.check is not None:
        spec.check()


def test_catalogue_rows_match_tests():
    assert sorted(section_rows(TITLE, PREFIX)) == sorted(ROWS)


def test_submit_force_replaces_only_its_own_files_and_the_manifest_names_no_path(assets, tmp_path, capsys):
    """A real `medsci submit`: stale volumes of an earlier run used to stay beside the new ones, and the manifest
    held the absolute input and checkpoint paths; what it writes verifies, and is no copy of an input."""
    from medsci.tasks.synthesis.submission import verify_submission

    drop = _case(tmp_path / "drop" / "c1", assets["case"], "c1").parent
    out = tmp_path / "sub"
    out.mkdir()
    (out / "old-t2w.nii.gz").write_bytes(b"stale")
    (out / "manifest.json").write_text("{}")
    argv = ["submit", "--checkpoint", str(assets["model"]), "--input", str(drop), "--output", str(out),
            "--no-progress", "--steps", "1", "--n-samples", "1"]
    assert main(argv) == 2 and "pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0, capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["c1-t2f.nii.gz", "manifest.json"]
    text = (out / "manifest.json").read_text(encoding="utf-8")
    assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text
    assert verify_submission(out, drop, assets["model"]) == []


def test_long_series_descriptions_are_matched_in_bounded_time(tmp_path):
    """The worst three-repeat pattern allowed, on a SeriesDescription of 1500 characters (cut to 64; a minute
    of backtracking before)."""
    import time

    from medsci.io.dicom import DicomSeries
    from medsci.mri.contrasts import classify_series, load_mapping

    mapping = tmp_path / "m.yaml"
    mapping.write_text("t1n: ['.*.*.*x']\n", encoding="utf-8")
    long = DicomSeries("1.2.3", [], "a" * 1500, {"SeriesDescription": "a" * 1500, "Modality": "MR"}, tmp_path)
    started = time.perf_counter()
    assert classify_series([long], load_mapping(mapping))[0] == {}
    assert time.perf_counter() - started < 5

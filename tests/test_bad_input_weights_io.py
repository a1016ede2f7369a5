"""The "Weights, output folders and names" section of the bad-input catalogue (docs/bad-input.md): one test per row.

Diverged or corrupt weights (NaN/Inf, or finite but so large that the result overflows), output folders that cannot
be written (no permission, a loop of symbolic links), names that are not UTF-8 and names with control characters,
through the real entry points (``medsci.cli.main`` in-process). Each row checks the exit code, that no traceback
reaches the user, the message the catalogue promises and, for batches, that the good case still completes.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from catalogue import assert_promised, promised_messages, row_registry, section_rows, without_folders
from medsci.cli import main
from test_bad_input_files import SEIS_TINY, TEST_CONFIG

TITLE, PREFIX = "Weights, output folders and names", "W"
CASE0, CASE1 = "BraTS-DEMO-00000-000", "BraTS-DEMO-00001-000"


# ------------------------------------------------------------------------------------------ shared inputs
def _checkpoint(folder: Path, config: dict) -> Path:
    """Untrained weights of ``config``'s network (only loading and the finiteness of results are tested)."""
    import torch

    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.networks import build_network

    torch.manual_seed(0)
    net = build_network(config["model"])
    return save_checkpoint(folder, config, net, ema=net)


def _scaled(src: Path, dest: Path, how: Callable) -> Path:
    """A copy of checkpoint ``src`` whose weight files hold ``how(tensor)`` for every float tensor."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    for name in ("model.safetensors", "ema.safetensors"):
        state = load_file(str(dest / name))
        save_file({k: how(v) if v.is_floating_point() else v for k, v in state.items()}, str(dest / name))
    return dest


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """One checkpoint per generator (good, all-NaN, and 'diverged': finite weights x 1e30 whose results overflow),
    two synthesis cases missing t2f, a survey with two dead traces, a longitudinal subject and a radiograph."""
    from medsci.config import load_config
    from medsci.io.radiograph import write_png
    from medsci.io.segy import create_segy
    from medsci.tasks.longitudinal.demo import write_demo_subjects
    from medsci.tasks.longitudinal.pipeline import checkpoint_config as longitudinal_config
    from medsci.tasks.rotation.pipeline import checkpoint_config as rotation_config
    from medsci.tasks.seismic.config import SeismicConfig
    from medsci.tasks.seismic.pipeline import checkpoint_config as seismic_config
    from medsci.tasks.synthesis.demo import write_brats_dataset
    from medsci.tasks.synthesis.pipeline import checkpoint_config as synthesis_config
    from test_longitudinal import SHAPE, SPACING, _cfg as longitudinal_cfg
    from test_rotation import _small_cfg as rotation_cfg

    root = tmp_path_factory.mktemp("weights_io")
    syn = load_config(TEST_CONFIG).synthesis
    syn.model.prior = "none"
    configs = {"syn": synthesis_config(syn), "seis": seismic_config(SeismicConfig.from_dict(SEIS_TINY)),
               "rot": rotation_config(rotation_cfg()), "lon": longitudinal_config(longitudinal_cfg())}
    a = {"root": root}
    for key, config in configs.items():
        good = _checkpoint(root / key, config)
        a[key] = good
        a[f"{key}_nan"] = _scaled(good, root / f"{key}_nan", lambda v: v.new_full(v.shape, float("nan")))
        a[f"{key}_big"] = _scaled(good, root / f"{key}_big", lambda v: v * 1e30 if v.ndim > 1 else v)
    write_brats_dataset(root / "cases", cases=2, seed=1, shape=(36, 40, 30))
    for p in (root / "cases").glob("*/*-t2f.nii.gz"):
        p.unlink()
    cube = np.random.default_rng(0).standard_normal((6, 5, 16)).astype(np.float32)
    cube[2, 3] = cube[4, 1] = 0  # two dead traces to reconstruct
    a["survey"] = create_segy(root / "survey.segy", cube)
    write_demo_subjects(root / "subjects", n=1, seed=1, shape=SHAPE, spacing=SPACING)
    a["subject"] = root / "subjects" / "sub-000"
    a["view"] = root / "view.png"
    write_png(a["view"], np.random.default_rng(0).random((32, 32)))
    write_brats_dataset(root / "brats", cases=2, seed=3, shape=(36, 40, 30))  # complete cases, preprocessed
    for case in (CASE0, CASE1):
        assert main(["preprocess", "synthesis", "--case-dir", str(root / "brats" / case), "--out",
                     str(root / "prep"), "--config", str(TEST_CONFIG)]) == 0
    return a


# ------------------------------------------------------------------------------------------ command lines
def _synthesize(a, ck: str, out: Path, cases: Path | None = None) -> list[str]:
    return ["synthesize", "--checkpoint", str(a[ck]), "--input", str(cases or a["root"] / "cases"), "--output",
            str(out), "--no-progress", "--no-qc"]


def _forecast(a, ck: str, out: Path) -> list[str]:
    return ["forecast", "--checkpoint", str(a[ck]), "--subject", str(a["subject"]), "--time", "2000", "--output",
            str(out)]


def _interpolate(a, ck: str, out: Path) -> list[str]:
    return ["interpolate", "--checkpoint", str(a[ck]), "--input", str(a["survey"]), "--output", str(out)]


def _rotate(a, ck: str, out: Path, image: Path | None = None) -> list[str]:
    return ["rotate", "--checkpoint", str(a[ck]), "--input", str(image or a["view"]), "--angles", "0,0,5",
            "--output", str(out)]


def _export(a, run: Path, out: Path, *extra: str) -> list[str]:
    return ["export", str(run), str(out), *extra]


# ------------------------------------------------------------------------------------------ rows
@dataclass
class Row:
    argv: list[str]
    code: int
    unwritable: Path | None = None  # a folder made unwritable for the command
    check: Callable[[], None] | None = None  # what must (not) have been written


ROWS, row = row_registry()


def _nothing_in(folder: Path) -> Callable[[], None]:
    def check():
        assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()], list(folder.rglob("*"))
    return check


def _no_volume(out: Path) -> Callable[[], None]:
    def check():
        assert not list(out.rglob("*.nii.gz")), list(out.rglob("*.nii.gz"))
    return check


def _only_good_case(out: Path, bad: str = CASE0, good: str = CASE1) -> Callable[[], None]:
    def check():
        assert (out / good / f"{good}_t2f_SYNTHETIC.nii.gz").is_file()
        assert not (out / bad / f"{bad}_t2f_SYNTHETIC.nii.gz").exists()
    return check


# --- NaN weights: refused when the checkpoint loads ------------------------------------------------------
@row("W01")
def _(tmp, a):
    return Row(_synthesize(a, "syn_nan", tmp / "out"), 2, check=_nothing_in(tmp / "out"))


@row("W02")
def _(tmp, a):
    return Row(_forecast(a, "lon_nan", tmp / "pred.nii.gz"), 2, check=_nothing_in(tmp))


@row("W03")
def _(tmp, a):
    return Row(_interpolate(a, "seis_nan", tmp / "filled.segy"), 2, check=_nothing_in(tmp))


@row("W04")
def _(tmp, a):
    return Row(_rotate(a, "rot_nan", tmp / "rotated.png"), 2, check=_nothing_in(tmp))


@row("W05")
def _(tmp, a):
    return Row(_export(a, a["syn_nan"], tmp / "shared"), 2, check=_nothing_in(tmp))


@row("W06")
def _(tmp, a):
    run = tmp / "run"
    shutil.copytree(a["syn"], run)
    raw = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(raw[: len(raw) // 2])  # the EMA, which sampling reads, is intact
    return Row(_export(a, run, tmp / "shared"), 2, check=_nothing_in(tmp / "shared"))


# --- finite weights whose results overflow: no NaN output is written -------------------------------------
@row("W07")
def _(tmp, a):
    return Row(_synthesize(a, "syn_big", tmp / "out"), 1, check=_no_volume(tmp / "out"))


@row("W08")
def _(tmp, a):
    return Row(_forecast(a, "lon_big", tmp / "pred.nii.gz"), 2, check=_nothing_in(tmp))


@row("W09")
def _(tmp, a):
    return Row(_interpolate(a, "seis_big", tmp / "filled.segy"), 2, check=_nothing_in(tmp))


@row("W10")
def _(tmp, a):
    return Row(_rotate(a, "rot_big", tmp / "rotated.png"), 2, check=_nothing_in(tmp))


@row("W23")
def _(tmp, a):
    argv = ["sample", "synthesis", "--checkpoint", str(a["syn_nan"]), "--input", str(a["root"] / "cases"), "--out",
            str(tmp / "out"), "--no-progress"]
    return Row(argv, 2, check=_nothing_in(tmp / "out"))


@row("W24")
def _(tmp, a):
    argv = ["sample", "synthesis", "--checkpoint", str(a["syn_big"]), "--input", str(a["root"] / "cases"), "--out",
            str(tmp / "out"), "--no-progress"]
    return Row(argv, 1, check=_no_volume(tmp / "out"))


# --- output folders that cannot be written ---------------------------------------------------------------
@row("W11")
def _(tmp, a):
    out = tmp / "out"
    (out / CASE0).mkdir(parents=True)  # an earlier run's case folder, someone else's
    return Row(_synthesize(a, "syn", out), 1, unwritable=out / CASE0, check=_only_good_case(out))


@row("W12")
def _(tmp, a):
    (tmp / "locked").mkdir()
    return Row(_forecast(a, "lon", tmp / "locked" / "pred.nii.gz"), 2, unwritable=tmp / "locked",
               check=_nothing_in(tmp / "locked"))


@row("W13")
def _(tmp, a):
    (tmp / "locked").mkdir()
    return Row(_interpolate(a, "seis", tmp / "locked" / "filled.segy"), 2, unwritable=tmp / "locked",
               check=_nothing_in(tmp / "locked"))


@row("W14")
def _(tmp, a):
    (tmp / "locked").mkdir()
    return Row(_rotate(a, "rot", tmp / "locked" / "rotated.png"), 2, unwritable=tmp / "locked",
               check=_nothing_in(tmp / "locked"))


@row("W25")
def _(tmp, a):
    """The output path is a symbolic link to the user's own file: it was replaced by a regular file."""
    (tmp / "mine.png").write_bytes(b"the user's own file")
    (tmp / "rotated.png").symlink_to(tmp / "mine.png")

    def check():
        assert (tmp / "rotated.png").is_symlink() and (tmp / "mine.png").read_bytes() == b"the user's own file"
    return Row(_rotate(a, "rot", tmp / "rotated.png"), 2, check=check)


@row("W15")
def _(tmp, a):
    (tmp / "locked").mkdir()
    return Row(_export(a, a["syn"], tmp / "locked" / "shared"), 2, unwritable=tmp / "locked",
               check=_nothing_in(tmp / "locked"))


def _loop(tmp: Path) -> Path:
    os.symlink("loop2", tmp / "loop1")
    os.symlink("loop1", tmp / "loop2")
    return tmp / "loop1"


@row("W16")
def _(tmp, a):
    return Row(_forecast(a, "lon", _loop(tmp) / "pred.nii.gz"), 2)


@row("W17")
def _(tmp, a):
    return Row(_synthesize(a, "syn", _loop(tmp) / "out"), 2)


@row("W18")
def _(tmp, a):
    return Row(_export(a, a["syn"], _loop(tmp) / "shared"), 2)


# --- names that are not UTF-8, or hold control characters ------------------------------------------------
@row("W19")
def _(tmp, a):
    image = Path(os.fsdecode(os.fsencode(tmp) + b"/view\xff.png"))
    shutil.copyfile(a["view"], image)
    return Row(_rotate(a, "rot", tmp / "rotated.png", image), 2, check=lambda: not (tmp / "rotated.png").exists())


@row("W20")
def _(tmp, a):
    cases, out = tmp / "cases", tmp / "out"
    shutil.copytree(a["root"] / "cases", cases)
    t1n = cases / CASE0 / f"{CASE0}-t1n.nii.gz"
    t1n.rename(os.fsdecode(os.fsencode(cases / CASE0) + f"/{CASE0}\xe9-t1n.nii.gz".encode("latin-1")))
    return Row(_synthesize(a, "syn", out, cases), 1, check=_only_good_case(out))


@row("W21")
def _(tmp, a):
    return Row(_export(a, a["syn"], Path(os.fsdecode(os.fsencode(tmp) + b"/shared\xff"))), 2,
               check=_nothing_in(tmp))


@row("W22")
def _(tmp, a):
    return Row(_export(a, a["syn"], tmp / "shared", "--name", "demo\n## Intended use\nclinical diagnosis"), 2,
               check=_nothing_in(tmp))


# --- found by the hostile-input battery (tests/scripts/hostile_battery.py) -------------------------------
def _npz_edit(path: Path, key: str, how: Callable) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key] = how(arrays[key])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _prep_copy(tmp: Path, a, key: str, how: Callable) -> Path:
    prep = shutil.copytree(a["root"] / "prep", tmp / "prep")
    _npz_edit(prep / f"{CASE0}.npz", key, how)
    return prep


def _train_synthesis(tmp: Path, prep: Path) -> list[str]:
    return ["train", "synthesis", "--config", str(TEST_CONFIG), "--data", str(prep), "--cases", CASE0, CASE1,
            "--out", str(tmp / "ck"), "--no-progress"]


def _unchanged(path: Path) -> Callable[[], None]:
    before = path.read_bytes()

    def check():
        assert path.read_bytes() == before
    return check


def _sample(a, tmp: Path, *extra: str) -> list[str]:
    return ["sample", "synthesis", "--checkpoint", str(a["syn"]), "--out", str(tmp / "out"), "--no-progress", *extra]


@row("W26")
def _(tmp, a):
    return Row(["demo-data", "seismic", "--shape", "1", "1", "2", str(tmp / "out")], 2, check=_nothing_in(tmp))


@row("W27")
def _(tmp, a):
    return Row(_export(a, a["syn"], tmp / "shared", "--name", "x" * 100_000), 2, check=_nothing_in(tmp))


@row("W28")
def _(tmp, a):
    survey = shutil.copyfile(a["survey"], tmp / "survey.segy")
    os.link(survey, tmp / "filled.segy")
    return Row(_interpolate(a, "seis", tmp / "filled.segy")[:4] + [str(survey), "--output", str(tmp / "filled.segy")],
               2, check=_unchanged(survey))


@row("W29")
def _(tmp, a):
    patterns = ["--pattern", "t1n=*[t1n.nii.gz", "--pattern", "t1c=*t1c*", "--pattern", "t2w=*t2w*"]
    return Row(["preprocess", "synthesis", "--all", "--case-dir", str(a["root"] / "brats"), "--out", str(tmp / "p"),
                "--config", str(TEST_CONFIG), "--layout", "generic", *patterns], 2, check=_nothing_in(tmp))


@row("W30")
def _(tmp, a):
    return Row(_sample(a, tmp, "--input", str(a["root"] / "cases"), "--data", str(a["root"] / "prep"), "--case",
                       CASE0), 2, check=_nothing_in(tmp))


@row("W31")
def _(tmp, a):
    return Row(_sample(a, tmp, "--data", str(a["root"] / "prep"), "--case", CASE0, "--steps-curve", "10", "99999"), 2,
               check=_nothing_in(tmp))


@row("W32")
def _(tmp, a):
    prep = _prep_copy(tmp, a, "image", lambda x: np.where(x > 0.5, np.nan, x).astype(x.dtype))
    return Row(_train_synthesis(tmp, prep), 2, check=_nothing_in(tmp / "ck"))


@row("W33")
def _(tmp, a):
    return Row(_train_synthesis(tmp, _prep_copy(tmp, a, "image", lambda x: x[:2])), 2, check=_nothing_in(tmp / "ck"))


@row("W34")
def _(tmp, a):
    (tmp / "cut.npz").write_bytes((a["root"] / "prep" / f"{CASE0}.npz").read_bytes()[:500])
    return Row(["train", "rotation", "--config", str(TEST_CONFIG), "--pairs", str(tmp / "cut.npz"), "--out",
                str(tmp / "ck"), "--no-progress"], 2, check=_nothing_in(tmp / "ck"))


@row("W35")
def _(tmp, a):
    shape = np.load(a["root"] / "prep" / f"{CASE1}.npz")["mask"].shape
    (tmp / "s" / CASE1).mkdir(parents=True)
    np.savez(tmp / "s" / CASE1 / f"{CASE1}-t2f.npz", mean=np.full(shape, np.nan, np.float32))
    return Row(["evaluate", "synthesis", "--data", str(a["root"] / "prep"), "--train-cases", CASE0, "--cases", CASE1,
                "--samples", str(tmp / "s"), "--targets", "t2f", "--out", str(tmp / "ev")], 2,
               check=_nothing_in(tmp / "ev"))


@row("W36")
def _(tmp, a):
    import nibabel as nib

    ramp = np.arange(96, dtype=np.float32).reshape(4, 4, 6) + 1  # spans 95
    for name, data in (("pred", ramp[::-1].copy()), ("target", ramp)):
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp / f"{name}.nii.gz"))
    argv = ["metrics", "--pred", str(tmp / "pred.nii.gz"), "--target", str(tmp / "target.nii.gz"), "--data-range",
            "1e-30"]

    def check():  # the warning is in the JSON too
        import contextlib
        import io
        import json

        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
            assert main(argv) == 0
        assert "more than 100 times off" in json.loads(out.getvalue())["data_range_warning"]
    return Row(argv, 0, check=check)


@row("W37")
def _(tmp, a):
    import nibabel as nib

    cases = shutil.copytree(a["root"] / "brats", tmp / "cases")
    t1c = cases / CASE0 / f"{CASE0}-t1c.nii.gz"
    img = nib.load(str(t1c))
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.float32), img.affine), str(t1c))

    def check():
        assert (tmp / "p" / f"{CASE1}.npz").is_file() and not (tmp / "p" / f"{CASE0}.npz").exists()
    return Row(["preprocess", "synthesis", "--all", "--case-dir", str(cases), "--out", str(tmp / "p"), "--config",
                str(TEST_CONFIG)], 1, check=check)


# ------------------------------------------------------------------------------------------ the test
def _make_unwritable(folder: Path, monkeypatch) -> None:
    """No one may create anything in ``folder``: chmod where that binds; root ignores modes, so there the calls
    that create files and folders are made to fail with EACCES, as the file system would."""
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return
    inside = os.fsencode(folder) + b"/"

    def refuse(real):
        def call(path, *args, **kwargs):
            if os.fsencode(path).startswith(inside) and (real is not os.open or args[0] & os.O_CREAT):
                raise PermissionError(errno.EACCES, "Permission denied", path)
            return real(path, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "open", refuse(os.open))
    monkeypatch.setattr(os, "mkdir", refuse(os.mkdir))


def _assert_cell(cell: str, output: str) -> None:
    """The row's promised messages: ``medsci ...`` lines, or a batch's ``<case>: refused: ...`` lines."""
    if promised_messages(cell):
        assert_promised(cell, output)
        return
    shown = without_folders(output)
    for message in re.findall(r"`([^`]+)`", cell):
        assert message in shown, f"promised {message!r}\ngot {shown!r}"


@pytest.mark.parametrize("rid", sorted(ROWS), ids=sorted(ROWS))
def test_bad_input_row(rid, assets, tmp_path, capsys, monkeypatch):
    spec = ROWS[rid](tmp_path, assets)
    if spec.unwritable is not None:
        _make_unwritable(spec.unwritable, monkeypatch)
    try:
        code = main(spec.argv)
    finally:
        if spec.unwritable is not None:
            monkeypatch.undo()
            spec.unwritable.chmod(0o755)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert "Traceback" not in output, output
    assert code == spec.code, output
    _assert_cell(section_rows(TITLE, PREFIX)[rid], output)
    if spec.code == 2:  # refused: on one line
        assert len([ln for ln in captured.err.splitlines() if ": error: " in ln]) == 1, output
    if spec.check is not None:
        spec.check()


def test_catalogue_rows_match_tests():
    rows = section_rows(TITLE, PREFIX)
    assert sorted(rows) == sorted(ROWS), (sorted(set(rows) ^ set(ROWS)), "rows without tests or tests without rows")
    for cell in rows.values():
        assert re.findall(r"`([^`]+)`", cell), f"row promises no message: {cell}"

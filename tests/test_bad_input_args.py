"""The "Arguments, configs and output paths" half of the bad-input catalogue (docs/bad-input.md): one test per row.

Every row runs one bad command line against the same small tree of inputs and asserts: exit status 2, one line
on stderr naming the argument or file and a reason specific to the row, no traceback, nothing written anywhere in
the tree (no output created, inputs byte-identical) and that the refusal came before any work: no weights are
loaded (the checkpoint is a stub whose loading would fail with another message, and loading is patched to fail
the test), and it is fast. A few rows go through the real ``medsci`` console script in a subprocess.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from catalogue import assert_promised, section_rows
from medsci.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad-input.md"
SECTION = "## Arguments, configs and output paths"

_LAUGHS = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))

# Config files of the config rows (written into <tree>/configs/<row>.yaml).
CONFIGS: dict[str, str | bytes] = {
    "A01": "",
    "A02": "# only a comment\n\n",
    "A03": _LAUGHS,
    "A04": "synthesis: " + "[" * 40 + "]" * 40 + "\n",
    "A05": "name: &a [1, *a]\n",
    "A06": "name: demo\n" + "#" * (1 << 20) + "\n",
    "A07": "synthesis:\n  train: {lr: .nan}\n",
    "A08": "synthesis:\n  train: {steps: 0}\n",
    "A09": "synthesis:\n  train: {steps: -5}\n",
    "A10": "synthesis:\n  trian: {steps: 5}\n",
    "A11": "synthesis:\n  train: {steps: many}\n",
    "A12": "name: !!python/object/apply:os.system ['touch PWNED']\n",
    "A13": "- name: demo\n- results: results\n",
    "A14": "just a sentence\n",
    "A15": b"name: caf\xe9\n",
    "A16": "name: a\n---\nname: b\n",
    "A17": "name: 2024-01-01\n",
    "A18": "1: one\n",
    "A21": "device: cuda\n",
    "A61": "rotation:\n  drr: {pixels: [16, 16], mu_water: .inf}\n",
    "A74": "synthesis:\n  train: {lr: !!float 'fast'}\n",
    "A71": "t1n: " + "[" * 5000 + "]" * 5000 + "\n",
}


@dataclass(frozen=True)
class Row:
    id: str
    argv: tuple[str, ...]  # {w} = the tree
    names: str  # the argument or file the message must name
    reason: str  # a substring specific to this row
    subprocess: bool = False
    needs_no_cuda: bool = False


def _train(config: str) -> tuple[str, ...]:
    return ("train", "synthesis", "--config", config, "--data", "{w}/prep", "--cases", "c1", "--out", "{w}/new")


_SAMPLE = ("sample", "synthesis", "--checkpoint", "{w}/ckpt", "--input", "{w}/cases")
_FORECAST = ("forecast", "--checkpoint", "{w}/ckpt", "--subject", "{w}/subject", "--time", "400")
_INTERP = ("interpolate", "--checkpoint", "{w}/ckpt", "--input", "{w}/survey.segy")
_DEMO = ("demo-data", "synthesis", "{w}/new", "--cases", "1")

ROWS = [
    # YAML configs (read by every verb through medsci.config.load_config)
    Row("A01", _train("{w}/configs/A01.yaml"), "A01.yaml", "config file is empty"),
    Row("A02", _train("{w}/configs/A02.yaml"), "A02.yaml", "config file is empty"),
    Row("A03", _train("{w}/configs/A03.yaml"), "A03.yaml", "error: {w}/configs/A03.yaml: YAML expands to more "
        "than 100000 values (nested aliases?); refused", subprocess=True),
    Row("A04", _train("{w}/configs/A04.yaml"), "A04.yaml", "nested more than 32 levels deep"),
    Row("A05", _train("{w}/configs/A05.yaml"), "A05.yaml", "alias *a refers to an undefined or enclosing anchor"),
    Row("A06", _train("{w}/configs/A06.yaml"), "A06.yaml", "larger than 1024 KiB"),
    Row("A07", _train("{w}/configs/A07.yaml"), "A07.yaml", "synthesis.train.lr: nan is not a finite number"),
    Row("A08", _train("{w}/configs/A08.yaml"), "A08.yaml", "synthesis.train.steps: 0 is less than the minimum of 1"),
    Row("A09", _train("{w}/configs/A09.yaml"), "A09.yaml", "-5 is less than the minimum of 1"),
    Row("A10", _train("{w}/configs/A10.yaml"), "A10.yaml", "'trian' was unexpected"),
    Row("A11", _train("{w}/configs/A11.yaml"), "A11.yaml", "'many' is not of type 'integer'"),
    Row("A12", _train("{w}/configs/A12.yaml"), "A12.yaml", "could not determine a constructor for the tag"),
    Row("A13", _train("{w}/configs/A13.yaml"), "A13.yaml", "must be a mapping of settings, not a list"),
    Row("A14", _train("{w}/configs/A14.yaml"), "A14.yaml", "must be a mapping of settings, not a str"),
    Row("A15", _train("{w}/configs/A15.yaml"), "A15.yaml", "not UTF-8 text"),
    Row("A16", _train("{w}/configs/A16.yaml"), "A16.yaml", "expected a single document"),
    Row("A17", _train("{w}/configs/A17.yaml"), "A17.yaml", "name: a date value is not allowed"),
    Row("A18", _train("{w}/configs/A18.yaml"), "A18.yaml", "key 1 is not a name"),
    Row("A19", _train("{w}/cases"), "cases", "is a folder, not a config file"),
    Row("A20", _train("{w}/configs/missing.yaml"), "missing.yaml", "config file not found"),
    Row("A21", _train("{w}/configs/A21.yaml"), "A21.yaml", "no usable CUDA GPU", needs_no_cuda=True),
    Row("A61", ("drr", "--ct", "{w}/ct.nii.gz", "--output", "{w}/new", "--config", "{w}/configs/A61.yaml"),
        "A61.yaml", "rotation.drr.mu_water: inf is not a finite number"),
    # Sampler and runtime arguments
    Row("A22", (*_SAMPLE, "--out", "{w}/new", "--n-samples", "0"), "--n-samples", "0 is out of range"),
    Row("A23", (*_SAMPLE, "--out", "{w}/new", "--n-samples", "-1"), "--n-samples", "-1 is out of range"),
    Row("A24", (*_SAMPLE, "--out", "{w}/new", "--steps", "5000"), "--steps",
        "5000 sampling steps exceed the 20 timesteps"),
    Row("A25", (*_SAMPLE, "--out", "{w}/new", "--threads", "-1"), "--threads", "must be a thread count in [1, 1024]",
        subprocess=True),
    Row("A26", (*_train("{w}/configs/ok.yaml"), "--threads", "0"), "--threads", "0 is out of range"),
    Row("A27", (*_SAMPLE, "--out", "{w}/new", "--device", "cuda"), "--device", "no usable CUDA GPU",
        needs_no_cuda=True),
    Row("A28", (*_SAMPLE, "--out", "{w}/new", "--device", "banana"), "--device", "'banana' is not a device"),
    Row("A29", (*_SAMPLE, "--seed", "-3", "--out", "{w}/new"), "--seed", "must be a non-negative integer"),
    Row("A30", (*_SAMPLE, "--guidance-scale", "nan", "--out", "{w}/new"), "--guidance-scale",
        "must be a finite number"),
    # Output paths
    Row("A31", (*_SAMPLE, "--out", "{w}/cases"), "cases", "the output is the input"),
    Row("A32", (*_SAMPLE, "--out", "{w}/cases/c1/out"), "c1/out", "lies inside the input"),
    Row("A33", (*_SAMPLE, "--out", "{w}/afile"), "afile", "exists and is not a folder", subprocess=True),
    Row("A34", (*_SAMPLE, "--out", "{w}/afile/sub"), "afile/sub", "afile is a file, not a folder"),
    Row("A35", (*_SAMPLE, "--out", "{w}/ckpt/samples"), "ckpt/samples", "lies inside the input"),
    Row("A36", ("synthesize", "--checkpoint", "{w}/ckpt", "--input", "{w}/cases", "--output", "{w}/cases/x"),
        "cases/x", "the output folder lies inside the input folder"),
    Row("A37", ("submit", "--checkpoint", "{w}/ckpt", "--input", "{w}/cases", "--output", "{w}/cases"),
        "cases", "the output folder lies inside the input folder"),
    Row("A38", (*_FORECAST, "--output", "{w}/subject/pred.nii.gz"), "pred.nii.gz", "lies inside the input"),
    Row("A39", ("rotate", "--checkpoint", "{w}/ckpt", "--input", "{w}/view.png", "--angles", "0,10,0",
                "--output", "{w}/view.png"), "view.png", "refusing to overwrite an input"),
    Row("A40", ("drr", "--ct", "{w}/ct.nii.gz", "--output", "{w}/afile/drrs"), "drrs", "afile is a file"),
    Row("A41", (*_INTERP, "--output", "{w}/survey.segy"), "survey.segy", "refusing to overwrite an input"),
    Row("A42", ("preprocess", "synthesis", "--case-dir", "{w}/cases/c1", "--out", "{w}/cases/c1/prep"),
        "prep", "lies inside the input"),
    Row("A43", ("evaluate", "synthesis", "--data", "{w}/prep", "--train-cases", "c1", "--cases", "c2",
                "--samples", "{w}/samples", "--out", "{w}/samples/eval"), "eval", "lies inside the input"),
    Row("A44", (*_train("{w}/configs/ok.yaml")[:-1], "{w}/prep/model"), "model", "lies inside the input"),
    Row("A45", ("summarize", "{w}/prep", "--out", "{w}/samples"), "samples", "output file path is an existing folder"),
    Row("A46", ("bench", "--out", "{w}/afile/bench.json"), "bench.json", "afile is a file"),
    Row("A47", ("split-survey", "{w}/survey.segy", "--out", "{w}/survey.segy"), "survey.segy",
        "refusing to overwrite an input"),
    # demo-data
    Row("A48", (*_DEMO, "--shape", "100000", "100000", "100000"), "--shape", "must be a side length in [1, 4096]"),
    Row("A49", (*_DEMO, "--shape", "4096", "4096", "4096"), "--shape", "voxels is more than the limit"),
    Row("A50", (*_DEMO, "--spacing", "0", "1", "1"), "--spacing", "must be a voxel size in mm"),
    Row("A51", ("demo-data", "synthesis", "{w}/new", "--cases", "0"), "--cases", "must be a number of cases"),
    Row("A52", ("demo-data", "synthesis", "{w}/userdir", "--cases", "1"), "userdir",
        "holds files demo-data did not write (notes.txt)", subprocess=True),
    Row("A53", ("demo-data", "seismic", "{w}/new", "--cubes", "-2"), "--cubes", "-2 is out of range"),
    Row("A54", ("demo-data", "longitudinal", "{w}/new", "--spacing", "nan", "4", "4"), "--spacing",
        "must be a voxel size in mm"),
    Row("A55", ("demo-data", "rotation", "{w}/new", "--seed", "-1"), "--seed", "must be a non-negative integer"),
    Row("A56", ("demo-data", "rotation", "{w}/afile"), "afile", "exists and is not a folder"),
    # Other verbs' numbers
    Row("A57", ("preprocess", "synthesis", "--case-dir", "{w}/cases/c1", "--out", "{w}/new", "--shape", "2048",
                "2048", "2048"), "--shape", "voxels is more than the limit"),
    Row("A58", ("preprocess", "synthesis", "--case-dir", "{w}/cases/c1", "--out", "{w}/new", "--max-missing", "7"),
        "--max-missing", "7 is out of range"),
    Row("A59", (*_FORECAST[:-1], "inf", "--output", "{w}/pred.nii.gz"), "--time", "must be a finite number"),
    Row("A60", ("drr", "--ct", "{w}/ct.nii.gz", "--output", "{w}/new", "--pixels", "3", "3"), "--pixels",
        "must be a pixel count in [8, 4096]"),
    Row("A62", (*_INTERP, "--output", "{w}/out.segy", "--overlap", "1"), "--overlap", "must be an overlap in [0, 1)"),
    Row("A63", (*_INTERP, "--output", "{w}/out.segy", "--iline-byte", "0"), "--iline-byte",
        "must be a trace-header byte"),
    Row("A64", ("split-survey", "{w}/survey.segy", "--out", "{w}/new", "--heldout", "1.5"), "--heldout",
        "must be a fraction in (0, 1)"),
    Row("A65", ("metrics", "--pred", "{w}/ct.nii.gz", "--target", "{w}/ct.nii.gz", "--data-range", "-1"),
        "--data-range", "must be an intensity range"),
    Row("A66", ("train-segmenter", "--config", "{w}/configs/ok.yaml", "--data", "{w}/prep", "--cases", "c1",
                "--out", "{w}/new", "--threads", "100000"), "--threads", "100000 is out of range"),
    Row("A67", ("train", "synthesis", "--data", "{w}/prep", "--cases", "c1", "--out", "{w}/new"), "--config",
        "the following arguments are required"),
    Row("A68", (*_SAMPLE, "--out", "{w}/new", "--bogus"), "--bogus", "unrecognized arguments"),
    Row("A69", ("synthesize", "--checkpoint", "{w}/ckpt", "--input", "{w}/cases", "--output", "{w}/new",
                "--dicom-mapping", "{w}/configs/A12.yaml"), "A12.yaml", "modality mapping is not valid"),
    Row("A70", ("export", "{w}/ckpt", "{w}/ckpt/export"), "export", "OUT is inside the run folder"),
    Row("A72", ("sample", "rotation", "--config", "{w}/configs/ok.yaml", "--checkpoint", "{w}/ckpt", "--pairs",
                "{w}/prep/c1.npz", "--out", "{w}/prep"), "prep", "its output of the same name would overwrite it"),
    Row("A73", ("sample", "longitudinal", "--config", "{w}/configs/ok.yaml", "--checkpoint", "{w}/ckpt",
                "--subjects", "{w}/prep/c1.npz", "--out", "{w}/prep"), "prep",
        "its output of the same name would overwrite it"),
    Row("A74", _train("{w}/configs/A74.yaml"), "A74.yaml", "cannot build a value: ValueError: could not convert string to float"),
    Row("A71", ("synthesize", "--checkpoint", "{w}/ckpt", "--input", "{w}/cases", "--output", "{w}/new",
                "--dicom-mapping", "{w}/configs/A71.yaml"), "A71.yaml", "A71.yaml: YAML is nested more than 32 levels"),
]


def tree_state(root: Path) -> dict[str, str]:
    """Every file, folder and link below ``root`` with a digest of its bytes (folders and links: their kind)."""
    state = {}
    for path in sorted(Path(root).rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            state[rel] = "dir"
        else:
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def _nifti(path: Path, shape=(8, 8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Inputs every row may name; no row may change anything here."""
    root = tmp_path_factory.mktemp("bad_args")
    for mod in ("t1n", "t1c", "t2w"):
        _nifti(root / "cases" / "c1" / f"c1-{mod}.nii.gz")
    _nifti(root / "ct.nii.gz")
    _nifti(root / "subject" / "ses-00.nii.gz")
    (root / "subject" / "sessions.tsv").write_text("session_id\ttime_days\nses-00\t0\n")
    (root / "prep").mkdir()
    (root / "prep" / "c1.npz").write_bytes(b"placeholder")
    (root / "samples").mkdir()
    # A stub checkpoint: config.json only. Loading its weights would fail with a message of its own, so a row
    # that reports its own reason was refused before the model was touched.
    (root / "ckpt").mkdir()
    (root / "ckpt" / "config.json").write_text('{"task": "synthesis", "schedule": {"num_train_timesteps": 20}}')
    (root / "afile").write_text("a file, not a folder\n")
    (root / "survey.segy").write_bytes(b"\0" * 3600)
    (root / "view.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "userdir").mkdir()
    (root / "userdir" / "notes.txt").write_text("my notes\n")
    (root / "configs").mkdir()
    for name in ("test.yaml", "demo.yaml"):  # test.yaml builds on demo.yaml (defaults:)
        (root / "configs" / name).write_text((REPO / "configs" / name).read_text())
    (root / "configs" / "ok.yaml").write_text((REPO / "configs" / "test.yaml").read_text())
    for row_id, text in CONFIGS.items():
        (root / "configs" / f"{row_id}.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    return root


@pytest.fixture
def no_model_work(monkeypatch):
    """Loading weights or starting a training fails the test: refusals must come before any work.

    Every medsci module is imported first and each of its bindings of these functions is patched (monkeypatch
    restores them): a module first imported while patched would otherwise keep the stand-in for good.
    """
    import importlib
    import pkgutil

    import medsci
    import medsci.diffusion.checkpoint as checkpoint
    import medsci.diffusion.training as training

    for info in pkgutil.walk_packages(medsci.__path__, "medsci."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the bad input was refused")

    originals = (checkpoint.load_weights, training.train)
    for name, module in list(sys.modules.items()):
        if name == "medsci" or name.startswith("medsci."):
            for attr, value in list(vars(module).items()):
                if any(value is f for f in originals):
                    monkeypatch.setattr(module, attr, forbidden)


def _run(argv: list[str], subprocess_run: bool, capsys) -> tuple[int, str]:
    if subprocess_run:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        exe = Path(sys.executable).with_name("medsci")
        proc = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=120)
        return proc.returncode, proc.stderr
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_argument_is_refused_before_any_work(row, tree, capsys, monkeypatch, no_model_work):
    if row.needs_no_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tree)
    before = tree_state(tree)
    argv = [a.format(w=tree) for a in row.argv]
    started = time.perf_counter()
    code, err = _run(argv, row.subprocess, capsys)
    seconds = time.perf_counter() - started
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert row.names in lines[0] and row.reason.format(w=tree) in lines[0], lines[0]
    # the message the catalogue promises: paths relative to the tree, the torch version as VERSION
    import torch

    shown = err.replace(f"{tree}{os.sep}", "").replace(torch.__version__, "VERSION")
    assert_promised(section_rows(SECTION[3:], "A")[row.id], shown)
    assert tree_state(tree) == before, "the refused command wrote into the tree"
    assert not (tree / "PWNED").exists()
    # In a subprocess most of the time is Python and torch starting up (slow on a loaded machine).
    assert seconds < (90 if row.subprocess else 5), f"refused only after {seconds:.1f} s"


def test_billion_laughs_is_refused_in_milliseconds(tree):
    """Before: 50 s and 5.9 GB for a 356-byte file; one more level would have exhausted the machine."""
    from medsci.config import load_config
    from medsci.errors import ConfigError

    started = time.perf_counter()
    with pytest.raises(ConfigError, match="nested aliases"):
        load_config(tree / "configs" / "A03.yaml")
    assert time.perf_counter() - started < 0.5


def _doc_ids() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC} lacks the section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| *(A\d\d) *\|", section, flags=re.M)


def test_every_catalogue_row_has_a_test_and_every_test_a_row():
    ids = _doc_ids()
    assert len(ids) == len(set(ids)), "duplicate row ids in the catalogue"
    assert sorted(ids) == sorted(r.id for r in ROWS)
    assert len(ids) >= 40


def test_seismic_layout_hint_names_options_that_exist():
    """The SEG-Y refusal hint used to say `pass geometry=(n_il, n_xl)`: a Python argument, no CLI option."""
    from medsci.io.segy import _geometry_hint
    from medsci.tasks.seismic.interpolate import register_interpolate
    import argparse

    hint = _geometry_hint("trace headers do not form a regular inline/crossline grid")
    assert "geometry=" not in hint and "--iline-byte" in hint and "--xline-byte" in hint
    parser = argparse.ArgumentParser()
    register_interpolate(parser.add_subparsers())
    interpolate = parser._subparsers._group_actions[0].choices["interpolate"]
    known = {s for a in interpolate._actions for s in a.option_strings}
    assert {"--iline-byte", "--xline-byte"} <= known


def test_demo_data_rerun_into_its_own_output_is_allowed_and_force_writes_into_a_foreign_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo-data", "seismic", str(out), "--cubes", "1", "--shape", "16", "16", "32"]
    assert main(argv) == 0
    first = tree_state(out)
    assert main(argv) == 0  # its own earlier output: rewritten, same bytes
    assert tree_state(out) == first
    (out / "mine.txt").write_text("keep")
    assert main(argv) == 2
    assert "mine.txt" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert (out / "mine.txt").read_text() == "keep"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(tmp_path, umask):
    """Outputs are 0666 minus the umask (atomic writes used to leave them 0600 whatever the umask)."""
    old = os.umask(umask)
    try:
        assert main(["demo-data", "seismic", str(tmp_path / "d"), "--cubes", "1", "--shape", "16", "16", "32"]) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "d").rglob("*") if p.is_file()]
    assert files
    assert {p.stat().st_mode & 0o777 for p in files} == {0o666 & ~umask}


def test_failed_evaluate_leaves_no_partial_json(tmp_path, capsys):
    """`evaluate synthesis` fitted and wrote regression_baseline.json before it found a sample missing."""
    import medsci.tasks.synthesis.baselines as baselines
    import medsci.tasks.synthesis.data as data_module
    from medsci.errors import MedsciError

    calls = []

    class Fitted:
        def to_dict(self):
            calls.append("written")
            return {}

    def fit(cases, targets, **options):
        return Fitted()

    def load_case(data, case_id):
        raise MedsciError("missing synthesis (run `medsci sample synthesis` first)", case_id)

    mp = pytest.MonkeyPatch()
    mp.setattr(baselines.LinearRegressionBaseline, "fit", staticmethod(fit))
    mp.setattr(data_module, "load_training_cases", lambda data, ids: [])
    mp.setattr(data_module, "load_case", load_case)
    try:
        code = main(["evaluate", "synthesis", "--data", str(tmp_path / "prep"), "--train-cases", "a", "--cases", "b",
                     "--samples", str(tmp_path / "samples"), "--out", str(tmp_path / "eval")])
    finally:
        mp.undo()
    assert code == 2
    assert "missing synthesis" in capsys.readouterr().err
    assert calls == [] and not (tmp_path / "eval").exists()


def _options(parser) -> set[str]:
    import argparse

    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _options(sub)
    return found


def test_every_option_a_message_names_exists():
    """Hints used to name options that do not exist (`--all` in `sample synthesis`, `geometry=` for SEG-Y):
    every `--option` quoted in a string of medsci's sources outside add_argument must be a real option."""
    from medsci.cli import build_parser

    known = _options(build_parser())
    named = set()
    for path in (REPO / "medsci").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if "add_argument" in line or line.strip().startswith("#"):
                continue
            named |= {(m, path.name) for m in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", line)}
    other_programs = {"--error-unmatch", "--porcelain", "--untracked-files", "--nproc",  # git, torchrun
                      "--configfile", "--cores", "--quiet", "--config"}  # snakemake (the load benchmark runs it)
    unknown = sorted(f"{option} ({where})" for option, where in named
                     if option not in known and option not in other_programs)
    assert unknown == []

"""Security: checkpoints are never unpickled, YAML is safe-loaded, names and links in inputs cannot make medsci
read or write outside the folders it was given, and a checkpoint's config cannot name files for it to read.

Files read are recorded with an audit hook (every ``open`` and folder listing of the process), so "never read"
is checked, not assumed."""

from __future__ import annotations

import json
import os
import pickle
import re
import sys
from pathlib import Path

import pytest

from medsci.cli import main
from medsci.errors import ConfigError, InputError, MedsciError
from test_bad_input_args import tree_state

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / "configs" / "test.yaml"

_OPENED: list[str] | None = None


def _audit(event: str, args) -> None:
    if _OPENED is not None and event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
        _OPENED.append(os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else str(args[0]))


sys.addaudithook(_audit)  # cannot be removed; it records only while a test sets _OPENED


class _Recording:
    def __enter__(self) -> list[str]:
        global _OPENED
        _OPENED = []
        return _OPENED

    def __exit__(self, *exc) -> None:
        global _OPENED
        _OPENED = None


def _touched(opened: list[str], folder: Path) -> list[str]:
    root = str(folder.resolve())
    return [p for p in opened if str(Path(p).resolve()).startswith(root)]


class _Payload:
    """Unpickling this creates the marker file: the proof that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


# ------------------------------------------------------------------------------------------ checkpoints
def _random_checkpoint(folder: Path, extra: dict | None = None) -> Path:
    """A synthesis checkpoint of the test preset with untrained weights (no training needed to test loading)."""
    from medsci.config import load_config
    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.networks import build_network
    from medsci.tasks.synthesis.pipeline import checkpoint_config

    import torch

    cfg = load_config(TEST_CONFIG).synthesis
    cfg.model.prior = "none"
    ck = checkpoint_config(cfg)
    torch.manual_seed(0)
    save_checkpoint(folder, {**ck, **(extra or {})}, build_network(ck["model"]))
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _random_checkpoint(tmp_path_factory.mktemp("ck") / "model")


@pytest.fixture(scope="module")
def raw_case(tmp_path_factory) -> Path:
    """One BraTS-layout demo case on the test preset's grid, t2f dropped."""
    from medsci.tasks.synthesis.demo import write_brats_dataset

    root = tmp_path_factory.mktemp("raw")
    write_brats_dataset(root, cases=1, seed=1, shape=(36, 40, 30))
    case = next(p for p in root.iterdir() if p.is_dir())
    for p in case.glob("*-t2f.nii.gz"):
        p.unlink()
    return case


def test_a_pickle_renamed_safetensors_is_refused_and_never_run(checkpoint, raw_case, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
    for name in ("model.safetensors", "ema.safetensors"):
        (bad / name).write_bytes(pickle.dumps({"weight": _Payload(marker)}))
    inputs = raw_case.parent
    before = tree_state(inputs)
    code = main(["sample", "synthesis", "--checkpoint", str(bad), "--input", str(inputs), "--out",
                 str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "ema.safetensors: not a valid safetensors file" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists() and tree_state(inputs) == before


@pytest.mark.parametrize("saver", ["pickle", "torch.save"])
def test_a_training_state_with_a_pickled_payload_is_refused_and_never_run(tmp_path, saver):
    import torch

    from medsci.diffusion.checkpoint import STATE_FILE, load_training_state

    marker = tmp_path / "PWNED"
    path = tmp_path / STATE_FILE
    if saver == "pickle":
        path.write_bytes(pickle.dumps({"step": _Payload(marker)}))
    else:
        torch.save({"step": _Payload(marker)}, path)
    with pytest.raises(ConfigError, match="unreadable training state"):
        load_training_state(tmp_path)
    assert not marker.exists()


def _calls(source: str, name: str) -> list[str]:
    """The full text of every call ``name(...)`` in ``source`` (balanced parentheses, over several lines)."""
    calls = []
    for match in re.finditer(re.escape(name) + r"\(", source):
        depth, i = 0, match.end() - 1
        for i in range(match.end() - 1, len(source)):
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            if depth == 0:
                break
        calls.append(source[match.start():i + 1])
    return calls


def test_no_source_unpickles_or_unsafe_loads():
    """Every torch.load passes weights_only=True; no pickle/unsafe YAML loaders; no np.load with pickles."""
    sources = {p: p.read_text(encoding="utf-8") for p in (REPO / "medsci").rglob("*.py")}
    torch_loads = [(p, call) for p, text in sources.items() for call in _calls(text, "torch.load")]
    assert torch_loads, "expected at least the training-state reader"
    for path, call in torch_loads:
        assert "weights_only=True" in call, f"{path}: {call}"
    forbidden = re.compile(r"pickle\.loads?\(|yaml\.load\(|yaml\.unsafe_load|yaml\.full_load|FullLoader|"
                           r"UnsafeLoader|Loader=yaml\.Loader|allow_pickle=True|import dill|import joblib")
    offenders = [f"{p}: {m.group(0)}" for p, text in sources.items() for m in forbidden.finditer(text)]
    assert offenders == []


# ------------------------------------------------------------------------------------------ YAML
_TAGS = ["!!python/object/apply:os.system ['touch {m}']",
         "!!python/object/new:subprocess.Popen [['touch', '{m}']]",
         "!!python/object/apply:builtins.open ['{m}', 'w']",
         "!!python/name:os.system",
         "!!python/module:os"]


@pytest.mark.parametrize("tag", _TAGS, ids=["apply", "new", "open", "name", "module"])
def test_yaml_python_tags_are_refused_and_never_run(tmp_path, tag):
    from medsci.config import load_config
    from medsci.mri.contrasts import load_mapping

    marker = tmp_path / "PWNED"
    config = tmp_path / "config.yaml"
    config.write_text("name: " + tag.format(m=marker) + "\n")
    with pytest.raises(ConfigError, match="config.yaml: not valid YAML"):
        load_config(config)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("t1n: " + tag.format(m=marker) + "\n")
    with pytest.raises(InputError, match="modality mapping is not valid"):
        load_mapping(mapping)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ names and links
@pytest.mark.parametrize("name", ["../x", "../../etc/cron.d/x", "/etc/passwd", "a/../../x", "a\0b"],
                         ids=["parent", "deep-parent", "absolute", "dotdot-inside", "nul"])
def test_output_names_cannot_escape_the_output_folder(tmp_path, name):
    from medsci.io.atomic import safe_join

    with pytest.raises(MedsciError, match="output name"):
        safe_join(tmp_path / "out", name)


@pytest.mark.parametrize("folder_name", ["..hidden", "a b", "x/../..", "-rf", "é", "CON", ".."])
def test_case_ids_are_plain_names_inside_the_output(tmp_path, folder_name):
    from medsci.io.atomic import safe_join
    from medsci.tasks.synthesis.clinical import _safe_id

    case_id = _safe_id(folder_name)
    assert case_id and "/" not in case_id and "\0" not in case_id and not case_id.startswith(".")
    assert safe_join(tmp_path, case_id).parent == tmp_path.resolve()


def _outside_case(tmp_path: Path, raw_case: Path) -> Path:
    """A copy of the demo case outside the input folder: what a link in the input points to."""
    import shutil

    outside = tmp_path / "elsewhere" / "secret-case"
    shutil.copytree(raw_case, outside)
    return outside


@pytest.mark.parametrize("verb", ["synthesize", "submit"])
def test_a_case_folder_linking_outside_the_input_is_refused_and_the_others_complete(
        verb, checkpoint, raw_case, tmp_path, capsys):
    import shutil

    inputs = tmp_path / "in"
    shutil.copytree(raw_case, inputs / "good")
    outside = _outside_case(tmp_path, raw_case)
    (inputs / "linked").symlink_to(outside, target_is_directory=True)
    out = tmp_path / "out"
    before = tree_state(tmp_path)
    quick = ["--no-progress", "--steps", "2", "--n-samples", "1", *(["--no-qc"] if verb == "synthesize" else [])]
    with _Recording() as opened:
        code = main([verb, "--checkpoint", str(checkpoint), "--input", str(inputs), "--output", str(out), *quick])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert re.search(r"linked: refused: .*linked: is a link to .*secret-case, outside the input folder", err), err
    assert _touched(opened, outside.parent) == []
    produced = sorted(p.name for p in out.rglob("*.nii.gz"))
    assert any(n.startswith("good") for n in produced) and not any("linked" in n for n in produced)
    after = tree_state(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out")} == before


def test_a_case_file_linking_outside_the_input_is_refused(checkpoint, raw_case, tmp_path, capsys):
    import shutil

    inputs = tmp_path / "in"
    shutil.copytree(raw_case, inputs / "case")
    outside = _outside_case(tmp_path, raw_case)
    t1n = next((inputs / "case").glob("*-t1n.nii.gz"))
    t1n.unlink()
    t1n.symlink_to(next(outside.glob("*-t1n.nii.gz")))
    with _Recording() as opened:
        code = main(["synthesize", "--checkpoint", str(checkpoint), "--input", str(inputs), "--output",
                     str(tmp_path / "out"), "--no-progress", "--no-qc"])
    err = capsys.readouterr().err
    assert code == 1 and "is a link to" in err and "outside the input folder" in err
    assert [p for p in _touched(opened, outside.parent) if p.endswith(".nii.gz")] == []


def test_preprocess_refuses_a_linked_case_folder_and_does_the_others(raw_case, tmp_path, capsys):
    import shutil

    inputs = tmp_path / "in"
    shutil.copytree(raw_case, inputs / raw_case.name)
    outside = _outside_case(tmp_path, raw_case)
    link_id = "BraTS-LINK-00001-000"
    for path in outside.iterdir():  # BraTS layout: the files carry the case id
        path.rename(outside / path.name.replace(raw_case.name, link_id))
    (inputs / link_id).symlink_to(outside, target_is_directory=True)
    code = main(["preprocess", "synthesis", "--all", "--case-dir", str(inputs), "--out", str(tmp_path / "prep"),
                 "--config", str(TEST_CONFIG), "--max-missing", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "BraTS-LINK-00001-000: is a link to" in err
    assert (tmp_path / "prep" / f"{raw_case.name}.npz").is_file()
    assert not list((tmp_path / "prep").glob("*LINK*"))


def test_forecast_refuses_a_session_file_linking_outside_the_subject(tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    subject = tmp_path / "sub-01"
    subject.mkdir()
    image = nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4))
    nib.save(image, str(subject / "ses-00.nii.gz"))
    secret = tmp_path / "elsewhere" / "scan.nii.gz"
    secret.parent.mkdir()
    nib.save(image, str(secret))
    (subject / "ses-01.nii.gz").symlink_to(secret)
    (subject / "sessions.tsv").write_text("session_id\ttime_days\nses-00\t0\nses-01\t100\n")
    stub = tmp_path / "ck"
    stub.mkdir()
    (stub / "config.json").write_text('{"task": "longitudinal"}')
    code = main(["forecast", "--checkpoint", str(stub), "--subject", str(subject), "--time", "200", "--output",
                 str(tmp_path / "pred.nii.gz")])
    err = capsys.readouterr().err
    assert code == 2 and "ses-01.nii.gz: is a link to" in err and "outside the input folder" in err
    assert not (tmp_path / "pred.nii.gz").exists()


# ------------------------------------------------------------------------------------------ checkpoint config
def test_a_checkpoint_config_naming_files_does_not_make_inference_read_them(raw_case, tmp_path, capsys):
    """Paths planted in config.json (data folders, segmenter weights, training cases) are never opened."""
    secret = tmp_path / "secret"
    (secret / "raw").mkdir(parents=True)
    (secret / "weights.safetensors").write_bytes(b"not to be read")
    planted = {"data": {"raw_dir": str(secret / "raw")}, "raw_dir": str(secret / "raw"),
               "segmentation": {"weights": str(secret / "weights.safetensors")},
               "training_cases": [str(secret / "case")], "results": str(secret), "config": str(secret / "c.yaml")}
    ck = _random_checkpoint(tmp_path / "model", planted)
    with _Recording() as opened:
        code = main(["sample", "synthesis", "--checkpoint", str(ck), "--input", str(raw_case.parent), "--out",
                     str(tmp_path / "out"), "--no-progress", "--steps", "2", "--n-samples", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert list((tmp_path / "out").glob("*-t2f.nii.gz")), "the case was not synthesised"
    assert _touched(opened, secret) == []
    assert json.loads((ck / "config.json").read_text())["raw_dir"] == str(secret / "raw")  # it was planted

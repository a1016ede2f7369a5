"""BraSyn submissions (manifest + verify-submission), provenance, and `medsci export` of a synthesis model."""

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from helpers import inputs_untouched
from medsci.cli import main
from medsci.errors import MedsciError
from medsci.provenance import deterministic_settings, enable_determinism, environment, git_commit, sha256_file
from medsci.tasks.synthesis.export import export_model, safetensors_parameters
from medsci.tasks.synthesis.submission import (MANIFEST, provenance_digest, register_submission_commands,
                                              verify_submission, write_manifest)
from test_synthesis import trained  # noqa: F401  (the tiny trained checkpoint, built once per module)

DROP = ("t2w", "t1c")  # the contrast removed from each of the two input cases


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli(argv: list[str]) -> int:
    """`medsci <command>` for the commands of this module, with the CLI's error handling."""
    parser = argparse.ArgumentParser(prog="medsci")
    register_submission_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        with inputs_untouched(argv):
            return int(args.handler(args) or 0)
    except MedsciError as err:
        import sys

        print(f"medsci {args.command}: error: {err}", file=sys.stderr)
        return 2


def _sample(checkpoint: Path, inputs: Path, out: Path) -> dict[str, str]:
    argv = ["sample", "synthesis", "--checkpoint", str(checkpoint), "--input", str(inputs), "--out", str(out),
            "--steps", "2", "--device", "cpu"]
    with inputs_untouched(argv):
        assert main(argv) == 0
    return {p.name: _digest(p) for p in sorted(out.iterdir())}


@pytest.fixture(scope="module")
def submission(trained):  # noqa: F811
    """Two held-out-style input cases, each missing one contrast, their synthesis and its manifest."""
    root, raw = trained["root"], trained["raw"]
    inputs = root / "sub-input"
    cases = trained["ids"][2:4]
    for case, drop in zip(cases, DROP):
        shutil.copytree(raw / case, inputs / case)
        (inputs / case / f"{case}-{drop}.nii.gz").unlink()
        (inputs / case / f"{case}-seg.nii.gz").unlink()
    out = root / "submission"
    _sample(trained["model"], inputs, out)
    outputs = {p.name: p for p in out.iterdir()}
    used = {case: sorted((inputs / case).glob("*.nii.gz")) for case in cases}
    ckcfg = json.loads((trained["model"] / "config.json").read_text(encoding="utf-8"))
    write_manifest(out, outputs, used, trained["model"], config={"checkpoint": ckcfg},
                   sampler={**ckcfg["sample"], "steps": 2}, seeds={"sampler": ckcfg["sample"]["seed"]},
                   extra={"command": "medsci sample synthesis"})
    return {"inputs": inputs, "out": out, "cases": cases, "model": trained["model"], "root": root}


# ---------------------------------------------------------------------------------------------- provenance
def test_provenance_records_environment_and_file_digests(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(np.random.default_rng(0).bytes(3 * 2**20 + 17))  # more than one read chunk
    assert sha256_file(f) == _digest(f)
    env = environment()
    assert env["packages"]["torch"] == torch.__version__.split("+")[0] or env["packages"]["torch"] == torch.__version__
    assert env["packages"]["numpy"] == np.__version__ and env["torch"]["version"] == torch.__version__
    assert env["threads"]["torch_threads"] == torch.get_num_threads()
    assert {"python", "platform", "cpu", "deterministic", "medsci_version", "medsci_git"} <= set(env)
    json.dumps(env)  # serialisable as it is
    assert git_commit(tmp_path) is None  # not a checkout: recorded as unknown, never an error
    repo = git_commit()
    assert repo is None or (len(repo["commit"]) == 40 and repo["dirty"] in (True, False, None))


def test_sampling_runs_and_is_unchanged_under_deterministic_algorithms(submission, tmp_path, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        settings = enable_determinism(0, warn_only=False)  # strict: an op without a deterministic kernel fails
        assert settings["deterministic_algorithms"] and settings["cudnn_deterministic"]
        assert not settings["cudnn_benchmark"] and settings["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert deterministic_settings() == settings
        again = _sample(submission["model"], submission["inputs"], tmp_path / "det")
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]
    expected = {p.name: _digest(p) for p in submission["out"].glob("*.nii.gz")}
    assert again == expected  # same bytes with and without deterministic kernels (CPU)


# ---------------------------------------------------------------------------------------------- manifest
def test_manifest_records_the_hash_of_every_file_it_names(submission):
    out, model = submission["out"], submission["model"]
    manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    assert manifest["format"] == "medsci-brasyn-submission" and manifest["format_version"] == 1
    names = sorted(p.name for p in out.glob("*.nii.gz"))
    assert names == sorted(f"{c}-{d}.nii.gz" for c, d in zip(submission["cases"], DROP))
    assert sorted(manifest["outputs"]) == names
    for name in names:
        assert manifest["outputs"][name]["sha256"] == _digest(out / name)
        assert manifest["outputs"][name]["bytes"] == (out / name).stat().st_size
    for case in submission["cases"]:
        files = sorted((submission["inputs"] / case).glob("*.nii.gz"))
        assert sorted(manifest["inputs"][case]) == [p.name for p in files] and len(files) == 3
        for p in files:
            assert manifest["inputs"][case][p.name]["sha256"] == _digest(p)
    ck = manifest["checkpoint"]
    assert ck["weights_used"] == "ema.safetensors"
    assert set(ck["files"]) == {"config.json", "ema.safetensors", "model.safetensors"}  # no training state
    for name, rec in ck["files"].items():
        assert rec["sha256"] == _digest(model / name)
    assert manifest["config"]["checkpoint"]["task"] == "mri-synthesis"
    assert manifest["sampler"]["steps"] == 2 and manifest["seeds"] == {"sampler": 0}
    assert manifest["environment"]["packages"]["torch"] and manifest["extra"]["command"]
    # The wall-clock time is kept apart from everything the outputs depend on.
    assert set(manifest["created"]) == {"utc"} and "byte-identical" in manifest["reproducibility"]


def test_a_correct_submission_verifies(submission, capsys):
    assert verify_submission(submission["out"], submission["inputs"], submission["model"]) == []
    assert cli(["verify-submission", str(submission["out"]), "--input", str(submission["inputs"]),
                "--checkpoint", str(submission["model"])]) == 0
    assert capsys.readouterr().out.strip() == "OK: 2 cases"


def _copy(submission, tmp_path) -> tuple[Path, Path]:
    out, inputs = tmp_path / "sub", tmp_path / "in"
    shutil.copytree(submission["out"], out)
    shutil.copytree(submission["inputs"], inputs)
    return out, inputs


def _rewrite(out: Path, name: str, fn, rehash: bool = True) -> None:
    """Replace output ``name`` by ``fn(array, affine) -> (array, affine)``; ``rehash`` updates the manifest."""
    img = nib.load(out / name)
    array, affine = fn(np.asarray(img.dataobj).copy(), img.affine.copy())
    new = nib.Nifti1Image(array, affine, header=img.header)
    new.set_data_dtype(array.dtype)
    nib.save(new, out / name)
    if rehash:
        manifest = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        manifest["outputs"][name]["sha256"] = _digest(out / name)
        manifest["provenance_sha256"] = provenance_digest(manifest)  # as if submit had written it
        (out / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def _nan(a, aff):
    a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] = np.nan
    return a, aff


def _shift(a, aff):
    aff[0, 3] += 0.5
    return a, aff


def _outside_head(a, aff):
    b = np.zeros_like(a)
    b[0, 0, 0] = 1.0  # a corner voxel: background in every input contrast
    return b, aff


def _as_int(a, aff):
    return (a * 1000).astype(np.int16), aff


def _tamper(a, aff):
    a[a.shape[0] // 2, a.shape[1] // 2, a.shape[2] // 2] += 0.01
    return a, aff


VOLUME_BREAKAGES = {
    "shape": (lambda a, aff: (a[:-1], aff), True, "shape (35, 40, 30) differs from the input's (36, 40, 30)"),
    "affine": (_shift, True, "affine differs from the input's"),
    "nan": (_nan, True, "not finite (volume contains 1 NaN/Inf voxels)"),
    "zero": (lambda a, aff: (np.zeros_like(a), aff), True, "all voxels are zero"),
    "outside-head": (_outside_head, True, "empty inside the head"),
    "dtype": (_as_int, True, "stored as int16, expected a float type"),
    "tampered": (_tamper, False, "differs from the manifest.json outputs record"),
}


@pytest.mark.parametrize("kind", sorted(VOLUME_BREAKAGES))
def test_each_broken_volume_is_reported_with_its_own_message(submission, tmp_path, kind, capsys):
    out, inputs = _copy(submission, tmp_path)
    fn, rehash, message = VOLUME_BREAKAGES[kind]
    name = f"{submission['cases'][0]}-{DROP[0]}.nii.gz"
    _rewrite(out, name, fn, rehash)
    problems = verify_submission(out, inputs)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{name}: ") and message in problems[0]
    assert cli(["verify-submission", str(out), "--input", str(inputs)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[0] == f"medsci verify-submission: error: {out}: {problems[0]}" and "FAILED: 1 problem" in lines[1]


def test_names_cases_and_extra_files_are_checked(submission, tmp_path):
    out, inputs = _copy(submission, tmp_path)
    (c0, c1), (d0, d1) = submission["cases"], DROP
    (out / f"{c0}-{d0}.nii.gz").rename(out / f"{c0}-T2W.nii.gz")  # wrong name
    (out / f"{c1}-{d1}.nii.gz").unlink()  # a case left out
    (out / "notes.txt").write_text("hi", encoding="utf-8")  # an extra file
    (out / f"{c0}-{d0}-std.nii.gz").write_bytes(b"")
    problems = verify_submission(out, inputs)
    text = "\n".join(problems)
    assert f"{c0}-T2W.nii.gz: wrong name (expected <case>-<mod>.nii.gz" in text
    assert "notes.txt: extra file" in text
    assert f"{c0}-{d0}-std.nii.gz: extra file (an uncertainty map" in text
    assert f"{c1}: missing case (no {c1}-{d1}.nii.gz in the submission)" in text
    assert f"{c0}: missing case" in text
    assert "0 case(s) submitted but the input has 2" in text
    assert f"{c1}-{d1}.nii.gz: listed in manifest.json outputs but not found" in text
    # Without --input only what the folder itself shows is checked.
    alone = verify_submission(out)
    assert not any("missing case" in p for p in alone) and any("wrong name" in p for p in alone)


def test_wrong_contrast_unknown_case_and_changed_inputs_are_reported(submission, tmp_path):
    out, inputs = _copy(submission, tmp_path)
    (c0, c1), (d0, d1) = submission["cases"], DROP
    (out / f"{c1}-{d1}.nii.gz").rename(out / f"{c1}-t2f.nii.gz")  # t2f exists in the input: wrong contrast
    shutil.copy(out / f"{c0}-{d0}.nii.gz", out / f"BraTS-XYZ-{d0}.nii.gz")
    src = inputs / c0 / f"{c0}-t1n.nii.gz"
    img = nib.load(src)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) + 1, img.affine, header=img.header), src)
    problems = verify_submission(out, inputs)
    text = "\n".join(problems)
    assert f"{c1}-t2f.nii.gz: submits t2f but the input case lacks {d1}" in text
    assert f"BraTS-XYZ-{d0}.nii.gz: unknown case BraTS-XYZ (not in the input folder)" in text
    assert "3 case(s) submitted but the input has 2" in text
    assert f"input {c0}/{c0}-t1n.nii.gz: sha256" in text and "inputs record" in text


def test_manifest_problems_and_corrupt_files(submission, tmp_path, capsys):
    out, inputs = _copy(submission, tmp_path)
    name = f"{submission['cases'][0]}-{DROP[0]}.nii.gz"
    (out / name).write_bytes(b"\x1f\x8b not really gzip")
    (out / MANIFEST).write_text("{ not json", encoding="utf-8")
    problems = verify_submission(out, inputs)
    assert any(p.startswith(f"{name}: unreadable (cannot read NIfTI file") for p in problems)
    assert any(p.startswith("manifest.json: not readable JSON") for p in problems)
    (out / MANIFEST).unlink()
    assert any(p.startswith("manifest.json: missing") for p in verify_submission(out))
    assert cli(["verify-submission", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "submission folder not found" in err and len(err.strip().splitlines()) == 1


def test_changed_checkpoint_is_reported(submission, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(submission["model"], model)
    assert verify_submission(submission["out"], checkpoint=model) == []
    cfg = json.loads((model / "config.json").read_text(encoding="utf-8"))
    cfg["sample"]["steps"] = 9
    (model / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    problems = verify_submission(submission["out"], checkpoint=model)
    assert len(problems) == 1 and problems[0].startswith("checkpoint config.json: sha256")


# ---------------------------------------------------------------------------------------------- export
def test_exported_model_loads_and_samples_the_same_bytes(submission, tmp_path, capsys):
    from safetensors.torch import load_file

    from medsci.tasks.synthesis.pipeline import load_model

    run, out = submission["model"], tmp_path / "shared" / "synthesis-model"
    assert cli(["export", str(run), str(out)]) == 0
    assert "exported" in capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert files == ["MODEL_CARD.md", "config.json", "ema.safetensors", "model.safetensors", "model_card.json"]
    assert not list(out.parent.glob(".*"))  # no temporary folder left beside OUT
    for name in ("config.json", "ema.safetensors", "model.safetensors"):
        assert _digest(out / name) == _digest(run / name)
    loaded = load_model(out, device="cpu")
    params = sum(v.numel() for v in load_file(str(run / "ema.safetensors")).values())
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["network"]["parameters"] == params == safetensors_parameters(out / "ema.safetensors")["parameters"]
    assert loaded.config["training_cases"] == card["training"]["cases"]
    for name, rec in card["files"].items():
        assert rec["sha256"] == _digest(out / name)
    assert card["synthesizes"] == ["t1n", "t1c", "t2w", "t2f"] and card["training"]["n_cases"] == 3
    geometry = json.loads((run / "config.json").read_text(encoding="utf-8")).get("geometry")
    if geometry:  # checkpoints record the grid they were trained on
        assert card["training"]["preprocessing"]["voxel_spacing_mm"] == geometry["spacing"]
        assert card["training"]["preprocessing"]["field_of_view_mm"] == geometry["field_of_view_mm"]
    from_run = {p.name: _digest(p) for p in submission["out"].glob("*.nii.gz")}  # sampled from RUN, same flags
    assert _sample(out, submission["inputs"], tmp_path / "from-export") == from_run


def test_model_card_warns_and_names_training_data_and_evaluation(submission, tmp_path):
    run = submission["model"]
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    stat = {"mean": 0.8123, "std": 0.01, "n": 2}
    summary = {"cases": ["held-1"], "training_cases": cfg["training_cases"], "targets": ["t2f"],
               "metrics": {"all": {"model": {"brain": {"ssim": stat, "psnr": {"mean": 20.5, "std": 1.0, "n": 2}}}},
                           "t2f": {"model": {"brain": {"ssim": stat}}}},
               "sampling": {"sampler": cfg["sample"], "device": "cpu", "network_evaluations_per_volume": 6,
                            "seconds_per_volume": 0.2}}
    (tmp_path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    out = export_model(run, tmp_path / "out", evaluation=tmp_path / "summary.json", ema_only=True, name="tiny")
    assert not (out / "model.safetensors").exists() and (out / "evaluation_summary.json").is_file()
    md = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "SYNTHETIC" in md and "must not be used for diagnosis" in md
    assert "3 training case(s)" in md and all(f"`{c}`" in md for c in cfg["training_cases"])
    assert "0.8123 ± 0.0100" in md and "20.50 ± 1.00" in md and "| t2f | 0.8123" in md
    assert "32 x 32 x 32 voxels, orientation RAS" in md
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["name"] == "tiny" and "SYNTHETIC" in card["warning"] and card["evaluation"]["n_held_out_cases"] == 1
    assert card["training"]["steps"] == cfg["step"]
    # Spacing and field of view come from the recorded geometry; an old checkpoint recorded none.
    geo = tmp_path / "geo"
    shutil.copytree(run, geo)
    cfg["geometry"] = {"spacing": [1.5, 1.5, 2.0], "orientation": "RAS", "shape": [32, 32, 32],
                       "field_of_view_mm": [48.0, 48.0, 64.0]}
    (geo / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    md = (export_model(geo, tmp_path / "geo-out") / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Voxel spacing: 1.5 x 1.5 x 2 mm; field of view 48 x 48 x 64 mm" in md
    del cfg["geometry"]
    cfg["preprocess"]["spacing"] = None
    (geo / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    out = export_model(geo, tmp_path / "old-out")
    md = (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Voxel spacing: not recorded" in md
    assert json.loads((out / "model_card.json").read_text(encoding="utf-8"))["training"]["preprocessing"]["voxel_spacing_mm"] is None
    # An evaluation of another model is refused when named explicitly.
    summary["training_cases"] = ["someone-else"]
    (tmp_path / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    with pytest.raises(MedsciError, match="trained on other cases"):
        export_model(run, tmp_path / "out2", evaluation=tmp_path / "summary.json")


def test_export_refuses_unsafe_destinations_and_non_checkpoints(submission, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(submission["model"], run)
    before = {p.name: _digest(p) for p in run.iterdir()}
    for out, message in [(run / "export", "inside the run folder"), (run, "is the run folder itself"),
                         (tmp_path, "contains the run folder")]:
        assert cli(["export", str(run), str(out), "--force"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert {p.name: _digest(p) for p in run.iterdir()} == before and not (run / "export").exists()

    assert cli(["export", str(tmp_path / "in"), str(tmp_path / "x")]) == 2
    assert "run folder not found" in capsys.readouterr().err
    (tmp_path / "notrun").mkdir()
    assert cli(["export", str(tmp_path / "notrun"), str(tmp_path / "x")]) == 2
    assert "not a medsci checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine", encoding="utf-8")
    assert cli(["export", str(run), str(busy)]) == 2
    assert "not empty (use --force" in capsys.readouterr().err and (busy / "keep.txt").is_file()
    assert cli(["export", str(run), str(busy), "--force"]) == 0
    assert not (busy / "keep.txt").exists() and (busy / "MODEL_CARD.md").is_file()
    assert cli(["export", str(run), str(tmp_path / "run2"), "--force"]) == 0  # a fresh OUT needs no --force
    assert cli(["export", str(busy), str(run), "--force"]) == 2  # never replaces a training run
    assert "training_state.pt" in capsys.readouterr().err

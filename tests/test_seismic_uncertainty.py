"""Seismic uncertainty (issue 24): the reconstruction's std in amplitude units, ``medsci interpolate`` writing
``<stem>_std.npy``, and the held-out evaluation scoring whether the std predicts the error."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from helpers import inputs_untouched
from medsci.cli import main
from medsci.io.segy import read_segy
from medsci.tasks.seismic.config import SeismicConfig
from medsci.tasks.seismic.demo import write_seismic_dataset

SHAPE = (10, 9, 16)
UNET = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}
TINY = {
    "model": {"unet": UNET, "patch": [8, 8, 16]},  # the defaults otherwise: haar domain, residual on POCS
    "train": {"steps": 2, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 2, "seed": 0},
    "sample": {"steps": 1, "n_samples": 1, "seed": 0},
    "inference": {"sw_batch_size": 8},
}
HEAD = {**TINY, "model": {**TINY["model"], "unet": {**UNET, "variance_head": True},
                          "schedule": {"objective": "rflow"}}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from medsci.tasks.seismic.pipeline import load_model, train_seismic

    root = tmp_path_factory.mktemp("seis_unc")
    full = write_seismic_dataset(root / "demo", cubes=2, seed=4, shape=SHAPE)
    head = train_seismic(SeismicConfig.from_dict(HEAD), full, root / "head", "cpu", progress=False)
    plain = train_seismic(SeismicConfig.from_dict(TINY), full, root / "plain", "cpu", progress=False)
    mask = np.ones(SHAPE[:2], dtype=bool)
    mask[::3, :] = False  # whole inlines missing
    mask[:, 4] = False
    np.save(root / "mask.npy", mask.astype(np.uint8))
    return {"root": root, "head": head, "plain": plain, "loaded": load_model(head, "cpu"), "cube": full[1],
            "truth": read_segy(full[1]).data, "mask": mask}


def _interpolate(capsys, *argv) -> tuple[int, str]:
    with inputs_untouched(argv):
        rc = main(["interpolate", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_reconstruction_std_is_in_amplitude_units_and_zero_on_observed_traces(setup):
    from medsci.tasks.seismic.pipeline import reconstruct

    loaded, truth, mask = setup["loaded"], setup["truth"], setup["mask"]
    assert loaded.model.variance_head and loaded.schedule.objective == "rflow"
    observed = np.where(mask[..., None], truth, 0).astype(np.float32)
    rec = reconstruct(loaded, observed, mask)
    assert rec.uncertainty == "variance" and rec.std.shape == SHAPE and rec.std.dtype == np.float32
    assert np.all(rec.std[mask] == 0) and np.all(rec.std[~mask] > 0) and np.isfinite(rec.std).all()
    # Ten times the amplitudes: the model sees the same normalised cube, so the std (and the mean) scale by ten,
    # without any offset; a std left in model units would stay the same.
    loud = reconstruct(loaded, observed * np.float32(10), mask)
    np.testing.assert_allclose(loud.std, 10 * rec.std, rtol=1e-4, atol=1e-6 * float(rec.std.max()))
    np.testing.assert_allclose(loud.data, 10 * rec.data, rtol=1e-4, atol=1e-5 * float(np.abs(rec.data).max()))


def test_interpolate_writes_the_std_beside_the_output(setup, tmp_path, capsys):
    out, report = tmp_path / "filled.segy", tmp_path / "report.json"
    rc, err = _interpolate(capsys, "--checkpoint", setup["head"], "--input", setup["cube"], "--output", out,
                           "--mask", setup["root"] / "mask.npy", "--report", report)
    assert rc == 0, err
    std_path = tmp_path / "filled_std.npy"
    std, mask = np.load(std_path), setup["mask"]
    assert std.dtype == np.float32 and std.shape == SHAPE
    assert np.isfinite(std).all() and (std >= 0).all()
    assert np.all(std[mask] == 0) and (std[~mask] > 0).any()
    rep = json.loads(report.read_text())
    assert rep["uncertainty"] == "variance" and rep["std_output"] == str(std_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["filled.segy", "filled_std.npy", "report.json"]
    # The std belongs to the reconstruction: the same one as the pipeline's (same seed and settings).
    from medsci.tasks.seismic.pipeline import reconstruct

    rec = reconstruct(setup["loaded"], np.where(mask[..., None], setup["truth"], 0), mask)
    np.testing.assert_array_equal(std, rec.std)


def test_interpolate_without_head_writes_no_std_unless_several_samples(setup, tmp_path, capsys):
    argv = ["--checkpoint", setup["plain"], "--input", setup["cube"], "--mask", setup["root"] / "mask.npy"]
    rc, err = _interpolate(capsys, *argv, "--output", tmp_path / "one.npy", "--n-samples", "1",
                           "--report", tmp_path / "one.json")
    assert rc == 0, err
    assert not (tmp_path / "one_std.npy").exists()
    rep = json.loads((tmp_path / "one.json").read_text())
    assert rep["uncertainty"] == "none" and rep["std_output"] is None
    # Two samples: their spread is the uncertainty map.
    rc, err = _interpolate(capsys, *argv, "--output", tmp_path / "two.npy", "--n-samples", "2")
    assert rc == 0, err
    std = np.load(tmp_path / "two_std.npy")
    assert np.all(std[setup["mask"]] == 0) and (std[~setup["mask"]] > 0).any()


def test_heldout_sampling_and_evaluation_score_the_model_uncertainty(setup, tmp_path):
    from medsci.evaluation.uncertainty import uncertainty_scores
    from medsci.tasks.seismic.commands import _make_masks, _reconstruct_cube
    from medsci.tasks.seismic.evaluation import evaluate_heldout

    cfg = SeismicConfig.from_dict({**HEAD, "evaluation": {
        "patterns": {"random": {"ratio_missing": 0.5}, "decimate": {"factor": 2}}, "unguided": True,
        "pocs_iterations": 3, "benchmark": []}})
    data = setup["root"] / "demo"
    _make_masks(cfg, ["cube_001"], [setup["cube"]], tmp_path / "masks")
    _reconstruct_cube(cfg, setup["loaded"], setup["loaded"].sample, "cube_001", setup["cube"], tmp_path / "masks",
                      tmp_path / "samples")
    folder = tmp_path / "samples" / "cube_001"
    timing = json.loads((folder / "cube_001-timing.json").read_text())
    assert timing["reconstructions"]["random"]["model"]["uncertainty"] == "variance"
    for pattern in ("random", "decimate"):
        mask = np.load(tmp_path / "masks" / f"cube_001-{pattern}.npy")
        std = np.load(folder / f"cube_001-{pattern}-model_std.npy")
        assert std.shape == SHAPE and np.all(std[mask] == 0) and (std[~mask] > 0).all()
    out = tmp_path / "eval"
    text = evaluate_heldout(cfg, data, ["cube_001"], ["cube_000"], tmp_path / "masks", tmp_path / "samples", out)

    summary = json.loads((out / "summary.json").read_text())
    with open(out / "metrics.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    truth = setup["truth"]
    for pattern in ("random", "decimate"):
        mask = np.load(tmp_path / "masks" / f"cube_001-{pattern}.npy")
        pred = np.load(folder / f"cube_001-{pattern}-model.npy")
        std = np.load(folder / f"cube_001-{pattern}-model_std.npy")
        # Scored on the missing traces only: the observed ones (std 0, error 0) would be a free rank agreement.
        want = uncertainty_scores(std, pred.astype(np.float64) - truth, np.broadcast_to(~mask[..., None], SHAPE))
        whole = uncertainty_scores(std, pred.astype(np.float64) - truth)
        assert want["spearman"] != pytest.approx(whole["spearman"], abs=1e-3)
        got = summary["uncertainty"][pattern]
        assert got["method"] == "variance" and got["n"] == 1
        for key in ("spearman", "top_decile_ratio", "coverage90"):
            assert got[key] == pytest.approx(want[key], rel=1e-9)
        model = next(r for r in rows if r["pattern"] == pattern and r["method"] == "model")
        assert float(model["uncertainty_spearman"]) == pytest.approx(want["spearman"], rel=1e-9)
        assert model["uncertainty"] == "variance"
        others = [r for r in rows if r["pattern"] == pattern and r["method"] != "model"]
        assert {r["method"] for r in others} == {"model_unguided", "linear", "pocs", "mssa"}
        assert all(r["uncertainty_spearman"] == "" and r["uncertainty"] == "" for r in others)
        assert f"Uncertainty ({pattern}, variance, 1 cube): Spearman(std, |error|) {want['spearman']:.3f}" in text
    assert "## Uncertainty of the model" in (out / "summary.md").read_text()


def test_evaluation_ignores_a_std_the_timing_does_not_claim(tmp_path):
    """A model without uncertainty: scores None and "none", never a crash; a stale _std.npy is not scored."""
    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.evaluation import evaluate_heldout
    from medsci.tasks.seismic.masks import random_traces

    cfg = SeismicConfig.from_dict({"evaluation": {"patterns": {"random": {"ratio_missing": 0.5}},
                                                  "unguided": False, "pocs_iterations": 2, "benchmark": []}})
    truth = 3.0 * np.random.default_rng(0).standard_normal((6, 8, 16)).astype(np.float32)
    mask = random_traces(truth.shape, 0.5, np.random.default_rng(1))
    (tmp_path / "data").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "samples" / "c0").mkdir(parents=True)
    write_cube(tmp_path / "data" / "c0.npy", truth)
    np.save(tmp_path / "masks" / "c0-random.npy", mask)
    np.save(tmp_path / "samples" / "c0" / "c0-random-model.npy", truth * np.float32(0.9))
    np.save(tmp_path / "samples" / "c0" / "c0-random-model_std.npy", np.abs(truth))  # stale, from another run
    timing = {"seconds": 1.0, "network_evaluations": 2, "windows": 1, "empty_windows": 0, "uncertainty": "none"}
    (tmp_path / "samples" / "c0" / "c0-timing.json").write_text(json.dumps(
        {"reconstructions": {"random": {"model": timing}}, "device": "cpu", "sampler": "euler"}))
    out = tmp_path / "eval"
    text = evaluate_heldout(cfg, tmp_path / "data", ["c0"], [], tmp_path / "masks", tmp_path / "samples", out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["uncertainty"]["random"] == {"spearman": None, "top_decile_ratio": None, "coverage90": None,
                                                "method": "none", "n": 0}
    assert "Uncertainty (random): none" in text
    with open(out / "metrics.csv", encoding="utf-8") as fh:
        model = next(r for r in csv.DictReader(fh) if r["method"] == "model")
    assert model["uncertainty"] == "none" and math.isnan(float(model["uncertainty_spearman"]))
    # The timing claims a map that is not there: refused, naming the file.
    timing["uncertainty"] = "variance"
    (tmp_path / "samples" / "c0" / "c0-random-model_std.npy").unlink()
    (tmp_path / "samples" / "c0" / "c0-timing.json").write_text(json.dumps(
        {"reconstructions": {"random": {"model": timing}}, "device": "cpu", "sampler": "euler"}))
    from medsci.errors import MedsciError

    with pytest.raises(MedsciError, match="missing uncertainty map"):
        evaluate_heldout(cfg, tmp_path / "data", ["c0"], [], tmp_path / "masks", tmp_path / "samples",
                         tmp_path / "eval2")

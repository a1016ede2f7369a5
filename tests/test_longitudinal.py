"""Longitudinal generator: context encoder, preprocessing, training task, prediction, forecast CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tree_checksums
from medsci.diffusion.context import FrameSequenceEncoder
from medsci.errors import InputError
from medsci.tasks.longitudinal.config import LongitudinalConfig
from medsci.tasks.longitudinal.data import CHANGE_SCALE, MODEL_SCALE, LongitudinalTrainingTask, context_tensor
from medsci.tasks.longitudinal.demo import write_demo_subjects
from medsci.tasks.longitudinal.layout import read_subject

SHAPE, SPACING = (16, 24, 16), (12.0, 12.0, 12.0)


def _cfg(**train):
    return LongitudinalConfig.from_dict(_settings(**train), "longitudinal")


def _settings(**train) -> dict:
    return {
        "preprocess": {"shape": list(SHAPE), "spacing": list(SPACING)},
        "model": {"unet": {"channels": [8, 16], "attention_levels": [False, True], "norm_num_groups": 8,
                           "num_head_channels": 8}, "schedule": {"num_train_timesteps": 20}, "frame_patch": 8,
                  "context_dim": 16, "context_layers": 1, "context_heads": 2, "max_frames": 4},
        "train": {"steps": 3, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 3,
                  "condition_dropout": {"context": 0.1}, **train},
        "sample": {"steps": 2},
    }


def test_encoder_ignores_missing_frames_whatever_they_hold():
    torch.manual_seed(0)
    enc = FrameSequenceEncoder((8, 8, 8), patch=4, dim=16, layers=1, heads=2).eval()
    frames = np.random.default_rng(0).random((2, 8, 8, 8)).astype(np.float32)
    ctx = context_tensor(frames, np.array([0.0, 100.0]), 300.0, max_frames=3)
    garbage = ctx.clone()
    garbage[2, :-2] = 5.0  # a padding slot full of values, still flagged absent
    garbage[2, -2] = -3.0
    a, mask_a = enc(ctx[None])
    b, mask_b = enc(garbage[None])
    present = mask_a[0]
    assert present.sum() == 2 * 8 and torch.equal(mask_a, mask_b)
    torch.testing.assert_close(a[0][present], b[0][present])
    # Times matter: the same frames at other times give other tokens.
    shifted = ctx.clone()
    shifted[:2, -2] -= 1.0
    assert not torch.allclose(enc(shifted[None])[0][0][present], a[0][present])


def test_context_tensor_keeps_the_latest_frames_with_relative_times():
    frames = np.stack([np.full((2, 2, 2), i, np.float32) for i in range(5)])
    ctx = context_tensor(frames, np.array([0, 100, 200, 365.25, 730.5]), 1095.75, max_frames=3)
    assert ctx.shape == (3, 8 + 2)
    np.testing.assert_allclose(ctx[:, 0].numpy(), [4.0, 6.0, 8.0])  # frames 2, 3, 4 (x 2, model scale)
    np.testing.assert_allclose(ctx[:, -2].numpy(), [(200 - 1095.75) / 365.25, -2.0, -1.0], rtol=1e-6)
    assert ctx[:, -1].tolist() == [1.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    root = tmp_path_factory.mktemp("lon")
    write_demo_subjects(root / "raw", n=3, seed=1, shape=SHAPE, spacing=SPACING)
    return root


@pytest.fixture(scope="module")
def prepared(subjects):
    from medsci.tasks.longitudinal.preprocess import preprocess_subject, save_subject

    cfg = _cfg()
    paths = []
    for i in range(3):
        record = preprocess_subject(read_subject(subjects / "raw" / f"sub-{i:03d}"), cfg.preprocess)
        save_subject(subjects / f"sub-{i:03d}.npz", record)
        paths.append(subjects / f"sub-{i:03d}.npz")
    return cfg, paths


def test_preprocessing_registers_sessions_and_keeps_intensity_changes(prepared):
    from medsci.tasks.longitudinal.preprocess import load_subject

    _, paths = prepared
    record = load_subject(paths[0])
    assert record["frames"].shape[1:] == SHAPE and record["similarity"][0] == 1.0
    assert min(record["similarity"]) > 0.9  # the demo's small misalignments are undone
    assert record["times"][0] == 0 and np.all(np.diff(record["times"]) > 0)
    brain = record["frames"][0] > 0.3
    assert 0.6 < float(np.percentile(record["frames"][0][brain], 99)) < 1.2  # one divisor for all sessions


def test_a_session_of_another_contrast_is_refused(subjects, tmp_path):
    import shutil

    from medsci.io.volume import read_volume, write_nifti
    from medsci.tasks.longitudinal.preprocess import preprocess_subject

    folder = tmp_path / "sub-x"
    shutil.copytree(subjects / "raw" / "sub-000", folder)
    last = sorted(folder.glob("ses-*.nii.gz"))[-1]
    vol = read_volume(last)
    write_nifti(last, vol.array.max() - vol.array, vol.affine)  # inverted contrast
    with pytest.raises(InputError, match="does not align"):
        preprocess_subject(read_subject(folder), _cfg().preprocess)


def test_training_batches_are_reproducible_and_predict_the_change(prepared):
    from medsci.tasks.longitudinal.preprocess import load_subject

    cfg, paths = prepared
    task = LongitudinalTrainingTask([load_subject(p) for p in paths], cfg.model)
    a = task.batch(torch.Generator().manual_seed(5), 3)
    b = task.batch(torch.Generator().manual_seed(5), 3)
    torch.testing.assert_close(a.x0, b.x0)
    assert a.conditions.context.shape == (3, 4, int(np.prod(SHAPE)) + 2)
    assert a.conditions.vector.shape == (3, 9) and (a.conditions.vector[:, -1] > 0).all()  # gap in years
    # The last present frame in the context is the first condition channel (the residual's base); the second is
    # the change between the two latest present frames, scaled to the target's gap.
    v = int(np.prod(SHAPE))
    gaps = a.conditions.vector[:, -1]
    for i in range(3):
        present = a.conditions.context[i, :, -1] > 0.5
        frames = a.conditions.context[i, present]
        last = frames[-1, :v].reshape(SHAPE)
        torch.testing.assert_close(last, a.conditions.condition[i, 0])
        if len(frames) >= 2:
            previous, previous_gap = frames[-2, :v].reshape(SHAPE), float(frames[-1, v] - frames[-2, v])
            trend = (last - previous) / MODEL_SCALE * CHANGE_SCALE * float(gaps[i]) / previous_gap
            torch.testing.assert_close(trend, a.conditions.condition[i, 1], rtol=1e-4, atol=1e-4)
        else:
            assert not a.conditions.condition[i, 1].any()
    # a change, not the anatomy: in intensity units a small fraction of the frames
    assert (a.x0 / CHANGE_SCALE).abs().mean() < 0.2 * (a.conditions.condition[:, 0] / MODEL_SCALE).abs().mean()


@pytest.fixture(scope="module")
def trained(prepared, subjects):
    from medsci.tasks.longitudinal.pipeline import train_longitudinal

    cfg, paths = prepared
    return cfg, paths, train_longitudinal(cfg, paths[:2], subjects / "model", "cpu", progress=False)


def test_prediction_forecast_and_guidance(trained):
    from dataclasses import replace

    from medsci.tasks.longitudinal.pipeline import forecast, load_model, predict
    from medsci.tasks.longitudinal.preprocess import load_subject

    cfg, paths, out = trained
    loaded = load_model(out, "cpu")
    assert loaded.model.null_kinds == ("context",)
    record = load_subject(paths[2])
    frames, times = record["frames"], record["times"]
    p = predict(loaded, frames[:-1], times[:-1], times[-1], replace(loaded.sample, n_samples=2))
    again = predict(loaded, frames[:-1], times[:-1], times[-1], replace(loaded.sample, n_samples=2))
    np.testing.assert_array_equal(p.mean, again.mean)
    assert p.mean.shape == SHAPE and p.std is not None and p.network_evaluations == 2 * 2
    guided = predict(loaded, frames[:-1], times[:-1], times[-1], replace(loaded.sample, guidance_scale=2.0))
    assert guided.network_evaluations == 4
    seq = forecast(loaded, frames, times, [times[-1] + 100, times[-1] + 300])
    assert len(seq) == 2 and all(s.mean.shape == SHAPE for s in seq)
    with pytest.raises(InputError, match="not after the first session"):
        predict(loaded, frames, times, times[0] - 1)


def test_forecast_cli_writes_the_native_grid(trained, subjects, tmp_path):
    import nibabel as nib

    _, _, out = trained
    folder = subjects / "raw" / "sub-002"
    subject = read_subject(folder)
    last = subject.sessions[-1].time
    inputs = tree_checksums(folder), tree_checksums(out)
    r = subprocess.run([sys.executable, "-m", "medsci", "forecast", "--checkpoint", str(out), "--subject",
                        str(folder), "--time", str(last + 200), "--output", str(tmp_path / "f.nii.gz"),
                        "--n-samples", "2"], capture_output=True, text=True, encoding="utf-8")
    assert r.returncode == 0, r.stderr
    img = nib.load(tmp_path / "f.nii.gz")
    first = nib.load(subject.sessions[0].path)
    assert img.shape == first.shape and np.allclose(img.affine, first.affine)
    assert (tmp_path / "f_std.nii.gz").is_file()
    rec = json.loads((tmp_path / "f.nii.gz.json").read_text(encoding="utf-8"))
    assert rec["outputs"][0]["extrapolated"] and rec["synthetic"]
    # no variance head: the std is the spread of the 2 samples, and both the JSON and the header say so
    assert rec["outputs"][0]["uncertainty"] == "samples"
    assert rec["outputs"][0]["std_file"] == str(tmp_path / "f_std.nii.gz")
    assert nib.load(tmp_path / "f_std.nii.gz").header["descrip"].tobytes().rstrip(b"\0").decode().endswith(
        "spread of 2 samples")
    r = subprocess.run([sys.executable, "-m", "medsci", "forecast", "--checkpoint", str(out), "--subject",
                        str(folder), "--time", "-5", "--output", str(tmp_path / "g.nii.gz")],
                       capture_output=True, text=True, encoding="utf-8")
    assert r.returncode != 0 and "not after the first session" in r.stderr and "Traceback" not in r.stderr
    assert not Path(tmp_path / "g.nii.gz").exists()
    # Another voxel size (10 mm against the model's 12 mm): refused before anything is written, unless allowed.
    write_demo_subjects(tmp_path / "other", n=1, seed=3, shape=(20, 28, 20), spacing=(10.0, 10.0, 10.0))
    other = tmp_path / "other" / "sub-000"
    run = [sys.executable, "-m", "medsci", "forecast", "--checkpoint", str(out), "--subject", str(other),
           "--time", str(read_subject(other).sessions[-1].time + 100), "--n-samples", "1", "--output"]
    r = subprocess.run(run + [str(tmp_path / "h.nii.gz")], capture_output=True, text=True, encoding="utf-8")
    assert r.returncode != 0 and "voxel size" in r.stderr and "--allow-other-spacing" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "h.nii.gz").exists()
    r = subprocess.run(run + [str(tmp_path / "h.nii.gz"), "--allow-other-spacing"], capture_output=True, text=True,
                       encoding="utf-8")
    assert r.returncode == 0, r.stderr
    assert nib.load(tmp_path / "h.nii.gz").shape == (20, 28, 20)
    assert (tree_checksums(folder), tree_checksums(out)) == inputs
    # the checkpoint records the voxel sizes its training subjects were acquired at (here all 12 mm)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["acquisition_spacing"] == {"min": list(SPACING), "max": list(SPACING)}


def test_changed_region_ignores_scan_noise_and_finds_a_moved_edge():
    from medsci.tasks.longitudinal.config import LongitudinalEvalConfig
    from medsci.tasks.longitudinal.evaluation import changed_region, target_sessions

    rng = np.random.default_rng(0)
    last = np.zeros((24, 24, 24), np.float32)
    last[6:18, 6:18, 6:18] = 0.8
    truth = last.copy()
    truth[6:18, 6:18, 18:20] = 0.8  # the object grew by two voxels along z
    noisy_last = last + rng.normal(0, 0.03, last.shape).astype(np.float32)
    noisy_truth = truth + rng.normal(0, 0.03, last.shape).astype(np.float32)
    cfg = LongitudinalEvalConfig()
    region = changed_region(noisy_truth, noisy_last, cfg)
    grown = np.zeros_like(region)
    grown[6:18, 6:18, 18:20] = True
    assert region[grown].mean() > 0.9  # the growth is found
    assert region[:, :, :14].mean() < 0.001  # noise alone, far from it, is (almost never) change
    unsmoothed = changed_region(noisy_truth, noisy_last, LongitudinalEvalConfig(change_smoothing=0.0))
    assert unsmoothed[:, :, :14].mean() > 0.2  # why the frames are smoothed first
    assert target_sessions(6) == [2, 3, 4, 5] and target_sessions(3) == [2] and target_sessions(2) == [1]


def _head_settings() -> dict:
    """The tiny model with a variance head, trained with the rectified-flow objective; one sample per prediction."""
    settings = _settings()
    settings["model"]["unet"]["variance_head"] = True
    settings["model"]["schedule"]["objective"] = "rflow"
    settings["sample"] = {"steps": 1}
    settings["evaluation"] = {"n_samples": 1, "forecast_sessions": 2}
    return settings


@pytest.fixture(scope="module")
def trained_head(prepared, subjects):
    from medsci.tasks.longitudinal.pipeline import train_longitudinal

    _, paths = prepared
    cfg = LongitudinalConfig.from_dict(_head_settings(), "longitudinal")
    return paths, train_longitudinal(cfg, paths[:2], subjects / "model_head", "cpu", progress=False)


def test_forecast_cli_writes_the_variance_heads_std_on_the_input_grid(trained_head, subjects, tmp_path):
    import nibabel as nib

    _, out = trained_head
    folder = subjects / "raw" / "sub-002"
    subject = read_subject(folder)
    t = subject.sessions[-1].time + 200
    r = subprocess.run([sys.executable, "-m", "medsci", "forecast", "--checkpoint", str(out), "--subject",
                        str(folder), "--time", str(t), "--output", str(tmp_path / "f.nii.gz"), "--n-samples", "1"],
                       capture_output=True, text=True, encoding="utf-8")
    assert r.returncode == 0, r.stderr
    first = nib.load(subject.sessions[0].path)
    img = nib.load(tmp_path / "f_std.nii.gz")  # one sample: only the head can have given a std
    std = np.asarray(img.dataobj)
    assert img.shape == first.shape and np.allclose(img.affine, first.affine)
    assert np.isfinite(std).all() and std.min() >= 0 and (std > 0).mean() > 0.5
    assert img.header["descrip"].tobytes().rstrip(b"\0").decode() == \
        f"SYNTHETIC medsci forecast std t={t:g} d: variance head"
    rec = json.loads((tmp_path / "f.nii.gz.json").read_text(encoding="utf-8"))
    assert rec["outputs"][0]["uncertainty"] == "variance" and rec["sampler"]["n_samples"] == 1
    assert rec["outputs"][0]["std_file"] == str(tmp_path / "f_std.nii.gz")


def test_evaluation_scores_the_variance_heads_std_against_the_error(trained_head, tmp_path):
    import yaml
    from scipy.stats import spearmanr

    from medsci.evaluation.uncertainty import uncertainty_scores
    from medsci.tasks.longitudinal.evaluation import brain_mask, target_sessions
    from medsci.tasks.longitudinal.preprocess import load_subject

    paths, out = trained_head
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"longitudinal": _head_settings()}), encoding="utf-8")
    medsci = [sys.executable, "-m", "medsci"]
    for cmd in (["sample", "longitudinal", "--checkpoint", str(out), "--out", str(tmp_path / "pred")],
                ["evaluate", "longitudinal", "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "ev")]):
        r = subprocess.run(medsci + cmd + ["--config", str(config), "--subjects", str(paths[2])],
                           capture_output=True, text=True, encoding="utf-8")
        assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text(encoding="utf-8"))
    u = summary["uncertainty"]
    record = load_subject(paths[2])
    sessions = target_sessions(len(record["times"]))
    assert u["method"] == "variance" and u["predictions"] == u["predictions_with_std"] == len(sessions)
    # the block holds the per-session scores of prediction - truth in the brain mask of the metrics, averaged
    expected = []
    with np.load(tmp_path / "pred" / paths[2].name) as z:
        for k in sessions:
            truth, pred, std = z[f"s{k}_truth"], z[f"s{k}_method_model"], z[f"s{k}_std"]
            assert np.isfinite(std).all() and std.min() > 0
            expected.append(uncertainty_scores(std, pred - truth, brain_mask(z[f"s{k}_method_copy_last"])))
    for key in ("spearman", "top_decile_ratio", "coverage90"):
        assert u[key] == pytest.approx(np.nanmean([e[key] for e in expected]), rel=1e-9), key
    assert 0 <= u["coverage90"] <= 1 and -1 <= u["spearman"] <= 1 and set(u["changed_region"]) >= {"coverage90"}
    # std against horizon over the forecasts: the last session and the 2 autoregressive ones after it
    chain = summary["forecast_uncertainty"]["sub-002"]
    assert len(chain) == 3 and all(f["mean_std"] > 0 and f["uncertainty"] == "variance" for f in chain)
    h = u["horizon"]
    rho = spearmanr([f["horizon_days"] for f in chain], [f["mean_std"] for f in chain]).statistic
    assert h["forecasts"] == 3 and h["forecast_std_spearman"] == pytest.approx(rho)
    assert h["forecast_std_last_over_first"] == pytest.approx(chain[-1]["mean_std"] / chain[0]["mean_std"])
    assert h["forecast_std_grows"] == (rho > 0)
    text = (tmp_path / "ev" / "summary.md").read_text(encoding="utf-8")
    assert f"Uncertainty (variance, brain): Spearman(std, |error|) {u['spearman']:.3f}" in text
    assert "## Forecast uncertainty" in text


def test_no_uncertainty_without_a_head_and_with_one_sample(trained):
    from dataclasses import replace

    from medsci.tasks.longitudinal.config import LongitudinalEvalConfig
    from medsci.tasks.longitudinal.evaluation import score_subject, uncertainty_subject
    from medsci.tasks.longitudinal.pipeline import load_model, predict_subject
    from medsci.tasks.longitudinal.preprocess import load_subject
    from medsci.tasks.longitudinal.report import markdown, summarise

    _, paths, out = trained
    loaded = load_model(out, "cpu")
    record = load_subject(paths[2])
    eval_cfg = LongitudinalEvalConfig(n_samples=1, forecast_sessions=1)
    pred = predict_subject(loaded, record, eval_cfg, replace(loaded.sample, n_samples=1))
    assert all(t["std"] is None and t["uncertainty"] == "none" for t in pred["targets"])
    rows = uncertainty_subject("sub-002", pred, eval_cfg)
    assert len(rows) == len(pred["targets"]) and all(r["mean_std"] is None and r["brain_spearman"] is None
                                                     for r in rows)
    summary = summarise(score_subject("sub-002", pred, eval_cfg), {"sub-002": pred["forecast"]}, {}, rows)
    u = summary["uncertainty"]
    assert u["method"] == "none" and u["predictions_with_std"] == 0
    assert u["spearman"] is None and u["coverage90"] is None and u["changed_region"]["spearman"] is None
    assert u["horizon"]["forecast_std_spearman"] is None and u["horizon"]["forecast_std_grows"] is None
    assert u["horizon"]["forecast_std_last_over_first"] is None
    assert u["horizon"]["heldout_std_spearman"] is None
    assert "Uncertainty (none, brain): none (the model gave no uncertainty map)." in markdown(summary)


def test_uncertainty_summary_measures_growth_with_the_horizon():
    from medsci.tasks.longitudinal.report import summarise_uncertainty

    def row(h, std, err):
        scores = {f"{r}_{k}": 0.5 for r in ("brain", "changed") for k in ("spearman", "top_decile_ratio",
                                                                           "coverage90")}
        return {"horizon_days": h, "mean_std": std, "brain_abs_error": err, "uncertainty": "variance", **scores}

    rows = [row(100, 0.01, 0.02), row(300, 0.02, 0.03), row(200, 0.03, 0.025)]
    forecasts = {"a": [{"horizon_days": 100, "mean_std": 0.01}, {"horizon_days": 200, "mean_std": 0.02}],
                 "b": [{"horizon_days": 150, "mean_std": 0.03}, {"horizon_days": 400, "mean_std": 0.04}]}
    u = summarise_uncertainty(rows, forecasts)
    h = u["horizon"]
    assert h["heldout_error_spearman"] == pytest.approx(1.0) and h["heldout_std_spearman"] == pytest.approx(0.5)
    assert h["forecast_std_spearman"] == pytest.approx(0.8) and h["forecast_std_grows"] is True
    assert h["forecast_std_last_over_first"] == pytest.approx((2 + 4 / 3) / 2)
    assert u["spearman"] == 0.5 and u["predictions"] == 3 and u["method"] == "variance"
    shrinking = {"a": [{"horizon_days": d, "mean_std": 1 / d} for d in (100, 200, 300)]}
    assert summarise_uncertainty(rows, shrinking)["horizon"]["forecast_std_grows"] is False

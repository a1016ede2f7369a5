"""Seismic interpolation model: conditioning, training patches, guided sampling, sliding window, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medsci.tasks.seismic.demo import make_seismic_cube
from medsci.errors import ConfigError, InputError
from medsci.tasks.seismic.conditioning import (condition_channels, denormalise, first_guess, normalise,
                                               reinsert_observed, robust_scale)
from medsci.tasks.seismic.config import SeismicConfig
from medsci.tasks.seismic.data import SeismicTrainingTask, TrainingCube, evaluation_mask
from medsci.tasks.seismic.evaluation import cube_metrics, cube_rows, summarize
from medsci.tasks.seismic.masks import random_traces

TINY = {
    "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                       "num_head_channels": 8}, "patch": [8, 8, 16], "domain": "image"},  # haar: own test
    "train": {"steps": 3, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 3, "seed": 0},
    "sample": {"steps": 2, "n_samples": 1, "seed": 0},
    "inference": {"sw_batch_size": 4, "overlap": 0.5},
}


def _cubes(n: int, shape=(12, 10, 24)) -> list[np.ndarray]:
    return [3.0 * make_seismic_cube(shape, np.random.default_rng([5, i])) for i in range(n)]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.pipeline import load_model, train_seismic

    root = tmp_path_factory.mktemp("seis_model")
    paths = [write_cube(root / f"c{i}.npy", c) for i, c in enumerate(_cubes(2))]
    cfg = SeismicConfig.from_dict(TINY)
    ck = train_seismic(cfg, paths, root / "model", "cpu", progress=False)
    return load_model(ck, "cpu")


# ------------------------------------------------------------------------------------------- conditioning
def test_config_defaults_and_validation():
    cfg = SeismicConfig.from_dict(None)
    assert cfg.enabled and cfg.model.patch == (16, 16, 64) and cfg.model.domain == "haar"
    assert (cfg.sample.steps, cfg.sample.n_samples) == (5, 4)  # the demo preset: 20 evaluations per window
    assert SeismicConfig.from_dict({"enabled": False}).enabled is False
    with pytest.raises(ConfigError, match="divisible"):
        SeismicConfig.from_dict({"model": {"patch": [10, 16, 64]}})
    with pytest.raises(ConfigError, match="patterns"):
        SeismicConfig.from_dict({"evaluation": {"patterns": {"spiral": {}}}})
    with pytest.raises(ConfigError, match="first guess"):
        SeismicConfig.from_dict({"model": {"condition": "zeros", "residual": True}})


def test_condition_layout_zeroes_missing_traces():
    obs = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 1, 3, 4, 5) + 1
    mask = torch.zeros(2, 1, 3, 4, dtype=torch.bool)
    mask[0, 0, 1, 2] = True
    mask[1, 0, 0, :] = True
    cond = condition_channels(obs, mask)
    assert cond.shape == (2, 2, 3, 4, 5)
    m = mask.unsqueeze(-1).expand(2, 1, 3, 4, 5)
    assert torch.equal(cond[:, 1:2], m.float())
    assert torch.equal(cond[:, 0:1][m], obs[m]) and (cond[:, 0:1][~m] == 0).all()
    guess = torch.randn(2, 1, 3, 4, 5)
    assert torch.equal(condition_channels(obs, mask, guess)[:, 2:3], guess)


def test_robust_scale_and_round_trip():
    rng = np.random.default_rng(0)
    cube = rng.normal(0, 7.0, (6, 5, 40)).astype(np.float32)
    mask = random_traces(cube.shape, 0.5, rng)
    scale = robust_scale(cube[mask], 99.0)
    assert scale == pytest.approx(np.percentile(np.abs(cube[mask].astype(np.float64)), 99.0))
    back = denormalise(normalise(cube, scale), scale)
    np.testing.assert_allclose(back, cube, rtol=1e-6, atol=0)
    # Observed traces come back bit-exact however the reconstruction was computed.
    out = reinsert_observed(back + 1.0, cube, mask)
    assert np.array_equal(out[mask], cube[mask]) and np.allclose(out[~mask], cube[~mask] + 1.0, atol=1e-5)
    assert robust_scale(np.zeros(10), 99.0) == 1.0
    assert robust_scale(cube[mask], 99.0, 2.5) == pytest.approx(scale / 2.5)


def test_first_guess_is_linear_between_lines():
    cube = np.zeros((5, 3, 4), dtype=np.float32)
    cube[0], cube[2], cube[4] = 1.0, 3.0, 7.0
    mask = np.array([1, 0, 1, 0, 1], bool)[:, None].repeat(3, 1)
    guess = first_guess(cube, mask)
    np.testing.assert_allclose(guess[1], 2.0)
    np.testing.assert_allclose(guess[3], 5.0)


# ------------------------------------------------------------------------------------------------ training
def _task(augment: bool, **model) -> SeismicTrainingTask:
    cfg = SeismicConfig.from_dict({"model": {**TINY["model"], "augment": augment, **model}}).model
    cube = np.arange(12 * 10 * 24, dtype=np.float32).reshape(12, 10, 24)  # unique values locate each crop
    return SeismicTrainingTask([TrainingCube("a", cube, 1.0)], cfg)


def test_training_batch_shapes_weights_and_crops():
    task = _task(augment=False, observed_loss_weight=0.25, condition="zeros", residual=False)
    batch = task.batch(torch.Generator().manual_seed(3), 5)
    assert batch.x0.shape == (5, 1, 8, 8, 16) and batch.conditions.condition.shape == (5, 2, 8, 8, 16)
    assert batch.loss_weight.shape == (5, 1, 8, 8, 1)
    observed = batch.conditions.condition[:, 1:2].bool()
    assert torch.equal(batch.conditions.condition[:, :1], torch.where(observed, batch.x0, torch.zeros(())))
    assert set(batch.loss_weight.unique().tolist()) <= {0.25, 1.0}
    assert torch.equal(batch.loss_weight.expand_as(batch.x0) == 0.25, observed)
    cube = task.cubes[0]
    for patch in batch.x0[:, 0]:
        i, j, k = np.unravel_index(int(patch[0, 0, 0]), cube.shape)  # no augmentation: a plain crop
        assert torch.equal(patch, cube[i:i + 8, j:j + 8, k:k + 16])
    for m in observed[:, 0, :, :, 0]:
        assert m.any() and not m.all()  # every mask keeps and loses traces


def test_residual_batch_targets_cube_minus_a_first_guess_made_on_the_region():
    task = _task(augment=False, guess_bank=3)  # default: POCS first guess, residual target
    assert len(task.bank) == 3
    for region, mask, guess, _ in task.bank:  # each guess is POCS of its whole region (here the whole 12x10 cube)
        assert region.shape == (12, 10, 24)
        np.testing.assert_allclose(guess.numpy(), first_guess(region.numpy(), mask, "pocs"), atol=1e-5)
    batch = task.batch(torch.Generator().manual_seed(4), 3)
    assert batch.conditions.condition.shape == (3, 3, 8, 8, 16)
    observed = batch.conditions.condition[:, 1:2].bool().expand_as(batch.x0)
    patch = batch.x0 + batch.conditions.condition[:, 2:3]  # residual + guess = the clean crop
    assert torch.equal(batch.conditions.condition[:, :1][observed], patch[observed])
    assert (batch.x0[observed] == 0).all()  # the first guess keeps observed traces exactly
    cube = task.cubes[0]
    for p, m, g in zip(patch[:, 0], batch.conditions.condition[:, 1, :, :, 0].bool(), batch.conditions.condition[:, 2]):
        i, j, k = np.unravel_index(int(round(float(p[0, 0, 0]))), cube.shape)
        crop = (slice(i, i + 8), slice(j, j + 8))
        # The crop's guess and mask are the crop of one bank entry's region guess and mask, not POCS of the crop.
        assert any(np.array_equal(mask[crop], m.numpy()) and torch.equal(guess[crop + (slice(k, k + 16),)], g)
                   for _, mask, guess, _ in task.bank)
        assert not np.allclose(g.numpy(), first_guess(p.numpy(), m.numpy(), "pocs"), atol=1e-3)


def test_several_first_guesses_one_channel_each_residual_over_the_first():
    with pytest.raises(ConfigError, match="each at most once"):
        SeismicConfig.from_dict({"model": {"condition": "mssa+mssa"}})
    with pytest.raises(ConfigError, match="one or more of"):
        SeismicConfig.from_dict({"model": {"condition": "linear+kriging"}})
    task = _task(augment=True, guess_bank=2, condition="pocs+linear")
    for region, mask, guess, _ in task.bank:  # (2, il, xl, t): POCS then linear, each of the whole region
        assert guess.shape == (2, *region.shape)
        np.testing.assert_allclose(guess[0].numpy(), first_guess(region.numpy(), mask, "pocs"), atol=1e-5)
        np.testing.assert_array_equal(guess[1].numpy(), first_guess(region.numpy(), mask, "linear"))
        assert not np.allclose(guess[0].numpy(), guess[1].numpy(), atol=1e-3)
    batch = task.batch(torch.Generator().manual_seed(4), 4)
    cond = batch.conditions.condition
    assert cond.shape == (4, 4, 8, 8, 16)
    observed = cond[:, 1:2].bool().expand_as(batch.x0)
    patch = batch.x0 + cond[:, 2:3]  # the residual is taken over the first named guess (POCS)
    assert torch.equal(cond[:, :1][observed], patch[observed]) and (batch.x0[observed] == 0).all()
    # Both guess channels went through the same flips/transposes/crop as the patch: the linear guess keeps the
    # observed traces exactly, so it equals the patch there, and it differs from the POCS channel where missing.
    assert torch.equal(cond[:, 3:4][observed], patch[observed])
    assert not torch.allclose(cond[:, 3:4][~observed], cond[:, 2:3][~observed], atol=1e-3)


def test_model_with_several_first_guesses_reconstructs_and_keeps_observed_traces(tmp_path):
    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.pipeline import load_model, reconstruct, train_seismic

    paths = [write_cube(tmp_path / f"c{i}.npy", c) for i, c in enumerate(_cubes(2))]
    cfg = SeismicConfig.from_dict({**TINY, "model": {**TINY["model"], "condition": "linear+pocs", "guess_bank": 2}})
    loaded = load_model(train_seismic(cfg, paths, tmp_path / "model", "cpu", progress=False), "cpu")
    assert loaded.condition == "linear+pocs"
    assert loaded.config["condition_channels"] == ["observed", "mask", "linear", "pocs"]
    truth = _cubes(1, (8, 8, 16))[0]
    mask = random_traces(truth.shape, 0.5, np.random.default_rng(1))
    rec = reconstruct(loaded, np.where(mask[..., None], truth, 0).astype(np.float32), mask)
    assert np.array_equal(rec.data[mask], truth[mask]) and np.isfinite(rec.data).all()


def test_training_batch_deterministic_and_augmented():
    task = _task(augment=True, condition="linear", residual=False)
    a = task.batch(torch.Generator().manual_seed(11), 6)
    b = task.batch(torch.Generator().manual_seed(11), 6)
    c = task.batch(torch.Generator().manual_seed(12), 6)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.conditions.condition, b.conditions.condition)
    assert not torch.equal(a.x0, c.x0)
    assert a.conditions.condition.shape[1] == 3
    # Augmented patches are flips/transposes of crops: strides along il/xl become +-1 or +-24 (= xl stride).
    cube = task.cubes[0]
    strides = set()
    for _ in range(4):
        x = task.batch(torch.Generator().manual_seed(100 + _), 6).x0[:, 0]
        strides |= {int(v) for v in (x[:, 1, 0, 0] - x[:, 0, 0, 0])}
    assert strides <= {cube.stride(0), -cube.stride(0), cube.stride(1), -cube.stride(1)} and len(strides) > 1


def test_evaluation_masks_seeded_per_cube_and_pattern():
    a = evaluation_mask("cube_001", (16, 12, 8), "random", {"ratio_missing": 0.5}, 0)
    assert np.array_equal(a, evaluation_mask("cube_001", (16, 12, 8), "random", {"ratio_missing": 0.5}, 0))
    assert not np.array_equal(a, evaluation_mask("cube_002", (16, 12, 8), "random", {"ratio_missing": 0.5}, 0))
    assert (~a).sum() == 96
    dec = evaluation_mask("cube_001", (16, 12, 8), "decimate", {"factor": 2}, 0)
    assert dec[::2].all() and not dec[1::2].any()


# ------------------------------------------------------------------------------------------------ sampling
def test_guided_sampling_keeps_observed_traces_and_is_seeded(tiny_model):
    from dataclasses import replace

    from medsci.tasks.seismic.pipeline import reconstruct

    truth = _cubes(1, (8, 8, 16))[0]  # exactly one window
    mask = random_traces(truth.shape, 0.5, np.random.default_rng(1))
    observed = np.where(mask[..., None], truth, 0).astype(np.float32)
    rec = reconstruct(tiny_model, observed, mask)
    assert rec.data.shape == truth.shape and rec.data.dtype == np.float32
    assert np.array_equal(rec.data[mask], truth[mask])  # bit-exact
    assert rec.windows == 1 and rec.network_evaluations == 2 and rec.input_guidance
    assert np.isfinite(rec.data).all() and np.abs(rec.data[~mask]).max() > 0
    again = reconstruct(tiny_model, observed, mask)
    assert np.array_equal(again.data, rec.data)
    other = reconstruct(tiny_model, observed, mask, replace(tiny_model.sample, seed=1))
    assert not np.array_equal(other.data[~mask], rec.data[~mask])
    jumps = reconstruct(tiny_model, observed, mask, inference=replace(tiny_model.inference, resample_jumps=2))
    assert jumps.network_evaluations == 6 and np.array_equal(jumps.data[mask], truth[mask])
    two = reconstruct(tiny_model, observed, mask, replace(tiny_model.sample, n_samples=2))
    assert two.network_evaluations == 4 and two.window_evaluations == 4 and np.array_equal(two.data[mask], truth[mask])
    free = reconstruct(tiny_model, observed, mask, inference=replace(tiny_model.inference, input_guidance=False))
    assert np.array_equal(free.data[mask], truth[mask]) and not np.array_equal(free.data, rec.data)


def test_sliding_window_on_a_cube_larger_than_the_patch(tiny_model):
    from medsci.tasks.seismic.pipeline import reconstruct

    truth = _cubes(1, (14, 11, 30))[0]  # not a multiple of the 8x8x16 patch on any axis
    mask = random_traces(truth.shape, 0.4, np.random.default_rng(2))
    observed = np.where(mask[..., None], truth, 0).astype(np.float32)
    a = reconstruct(tiny_model, observed, mask)
    b = reconstruct(tiny_model, observed, mask)
    assert a.data.shape == truth.shape and a.windows == 3 * 2 * 3
    assert np.array_equal(a.data[mask], truth[mask])
    assert np.array_equal(a.data, b.data)
    assert np.isfinite(a.data).all()
    # Output amplitudes follow the input's scale (model works on cube / robust scale).
    assert a.scale == pytest.approx(np.percentile(np.abs(truth[mask].astype(np.float64)), 99.0) / 2.5)


def test_zero_filled_condition_model_keeps_observed_traces(tmp_path):
    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.pipeline import load_model, reconstruct, train_seismic

    cfg = SeismicConfig.from_dict({**TINY, "model": {**TINY["model"], "condition": "zeros", "residual": False},
                                   "train": {**TINY["train"], "steps": 1}})
    paths = [write_cube(tmp_path / "c.npy", _cubes(1)[0])]
    loaded = load_model(train_seismic(cfg, paths, tmp_path / "m", "cpu", progress=False), "cpu")
    assert loaded.config["model"]["condition_channels"] == 2 and not loaded.residual
    truth = _cubes(1, (9, 8, 16))[0]
    mask = random_traces(truth.shape, 0.5, np.random.default_rng(3))
    rec = reconstruct(loaded, np.where(mask[..., None], truth, 0), mask)
    assert np.array_equal(rec.data[mask], truth[mask]) and rec.windows == 2


def test_reconstruct_refuses_bad_masks(tiny_model):
    from medsci.tasks.seismic.pipeline import reconstruct

    cube = _cubes(1, (8, 8, 16))[0]
    with pytest.raises(InputError, match="all-missing"):
        reconstruct(tiny_model, cube, np.zeros((8, 8), bool))
    with pytest.raises(InputError, match="does not match"):
        reconstruct(tiny_model, cube, np.ones((8, 7), bool))


# ---------------------------------------------------------------------------------------------- evaluation
def test_metrics_against_hand_computed_snr():
    truth = np.zeros((4, 3, 16), dtype=np.float32)
    truth[..., 5] = 2.0
    truth[..., 9] = -1.0
    mask = np.ones((4, 3), bool)
    mask[1, 2] = mask[3, 0] = False
    pred = truth.copy()
    pred[1, 2] += 0.5  # error only on missing traces: 16 samples of 0.5
    pred[3, 0, 5] = 0.0  # and one sample of 2.0
    m = cube_metrics(pred, truth, mask)
    err_missing = 16 * 0.25 + 4.0
    sig_missing = 2 * (4.0 + 1.0)
    assert m["snr_missing"] == pytest.approx(10 * math.log10(sig_missing / err_missing))
    assert m["snr"] == pytest.approx(10 * math.log10(12 * 5.0 / err_missing))
    assert m["mse_missing"] == pytest.approx(err_missing / 32)
    assert m["mse"] == pytest.approx(err_missing / truth.size)
    assert m["ssim_inline"] < 1 and m["ssim_crossline"] < 1
    assert cube_metrics(truth, truth, mask)["ssim_inline"] == pytest.approx(1.0)

    rows = cube_rows("c", "random", truth, mask, {"model": pred, "linear": truth})
    assert [r["method"] for r in rows] == ["model", "linear"]
    assert rows[1]["snr_missing"] == math.inf and rows[0]["missing_fraction"] == pytest.approx(2 / 12)
    summary = summarize(rows + cube_rows("d", "random", truth, mask, {"model": truth}))
    assert summary["random"]["model"]["snr_missing"]["n"] == 1  # inf left out of the mean
    assert summary["random"]["model"]["mse"]["mean"] == pytest.approx(err_missing / truth.size / 2)


def test_haar_domain_model_trains_reconstructs_and_reloads(tmp_path):
    from medsci.io.segy import write_cube
    from medsci.tasks.seismic.pipeline import load_model, reconstruct, train_seismic

    # patch 8x8x16 halves to 4x4x8 subbands, which the 2-level UNet (factor 2) still divides.
    cfg = SeismicConfig.from_dict({**TINY, "model": {**TINY["model"], "domain": "haar", "guess_bank": 2},
                                   "train": {**TINY["train"], "steps": 2}})
    paths = [write_cube(tmp_path / "c.npy", _cubes(1)[0])]
    loaded = load_model(train_seismic(cfg, paths, tmp_path / "m", "cpu", progress=False), "cpu")
    spec = loaded.config["model"]
    assert spec["haar"] and spec["condition_channels"] == 3 and spec["channels"] == 1
    assert loaded.model.unet.conv_in.conv.in_channels == 4 * 8  # observation, mask, guess + x_t: 8 subbands each
    truth = _cubes(1, (9, 8, 16))[0]
    mask = random_traces(truth.shape, 0.5, np.random.default_rng(3))
    rec = reconstruct(loaded, np.where(mask[..., None], truth, 0), mask)
    assert rec.data.shape == truth.shape and np.array_equal(rec.data[mask], truth[mask])
    assert np.isfinite(rec.data).all() and not np.array_equal(rec.data[~mask], np.zeros_like(truth[~mask]))
    with pytest.raises(ConfigError, match="divisible by 4"):
        SeismicConfig.from_dict({"model": {**TINY["model"], "domain": "haar", "patch": [6, 8, 16]}})

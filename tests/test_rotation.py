"""Radiograph rotation: DRR geometry against hand computation, baselines, pairs, training task, model, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from helpers import inputs_untouched
from medsci.errors import ConfigError, InputError
from medsci.tasks.rotation import drr
from medsci.tasks.rotation.baselines import homography_warp, identity
from medsci.tasks.rotation.config import RotationConfig
from medsci.tasks.rotation.data import (
    MIRROR,
    RotationTrainingTask,
    angle_features,
    geometry_of,
    load_pairs,
    render_pairs,
    save_pairs,
)
from medsci.tasks.rotation.demo import chest_ct


def _centred_affine(shape, spacing):
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return aff


def _blob(shape=(20, 24, 28), seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 2).astype(np.float32) * 0.05


# ------------------------------------------------------------------------------------------------ DRR geometry
def test_parallel_beam_limit_is_a_sum_along_the_beam_axis():
    vol = np.random.default_rng(0).random((12, 16, 20)).astype(np.float32)
    sp = 4.0
    aff = _centred_affine(vol.shape, (sp, sp, sp))
    # Source and detector very far: parallel rays; one detector pixel per voxel column at the detector.
    g = drr.DetectorGeometry(sdd=1e7 + 400, sid=1e7, pixels=(20, 12), spacing=(sp, sp), samples=1600)
    out = drr.render_drr(torch.from_numpy(vol), aff, g, [0, 0, 0])[0].numpy()
    expected = (vol.sum(axis=1) * sp)[::-1, ::-1].T  # beam +y; rows = -z, columns = -x
    np.testing.assert_allclose(out, expected, rtol=3e-3)  # ray sampling: 1600 points over the chord
    assert out.mean() > 30  # not trivially zero


@pytest.mark.parametrize("angles, axes", [((0, 0, 90), (0, 1)), ((90, 0, 0), (1, 2)), ((0, 90, 0), (2, 0))])
def test_ninety_degree_rotation_equals_projecting_the_permuted_volume(angles, axes):
    """Each axis on its own, sign included: R_z(90) takes x to y, R_x(90) y to z, R_y(90) z to x (right-handed)."""
    vol = _blob((24, 24, 24))
    aff = _centred_affine(vol.shape, (5.0, 5.0, 5.0))
    g = drr.DetectorGeometry(pixels=(40, 40), spacing=(5.0, 5.0))
    turned = drr.render_drr(torch.from_numpy(vol), aff, g, angles)[0].numpy()
    permuted = np.ascontiguousarray(np.rot90(vol, 1, axes=axes))  # the array turned from axes[0] towards axes[1]
    direct = drr.render_drr(torch.from_numpy(permuted), aff, g, [0, 0, 0])[0].numpy()
    np.testing.assert_allclose(turned, direct, atol=1e-4 * direct.max())
    wrong = np.ascontiguousarray(np.rot90(vol, -1, axes=axes))
    assert np.abs(drr.render_drr(torch.from_numpy(wrong), aff, g, [0, 0, 0])[0].numpy() - turned).max() > 0.01


def test_world_geometry_not_array_order_decides_the_view():
    """The same object stored with a flipped x axis (negative affine diagonal, LPS-like) renders the same."""
    vol = _blob((20, 24, 28))
    aff = _centred_affine(vol.shape, (5.0, 5.0, 5.0))
    flipped_aff = aff.copy()
    flipped_aff[0, 0] = -5.0
    flipped_aff[0, 3] = -aff[0, 3]
    g = drr.DetectorGeometry(pixels=(32, 32), spacing=(6.0, 6.0))
    a = drr.render_drr(torch.from_numpy(vol), aff, g, [5, -7, 9])[0].numpy()
    b = drr.render_drr(torch.from_numpy(np.ascontiguousarray(vol[::-1])), flipped_aff, g, [5, -7, 9])[0].numpy()
    np.testing.assert_allclose(a, b, atol=1e-4 * a.max())


@pytest.mark.parametrize("angles", [(0, 0, 0), (20, 0, 0), (0, 30, 0), (0, 0, -25), (10, -15, 12)])
def test_point_object_lands_where_the_geometry_says(angles):
    shape, sp = (16, 20, 24), 4.0
    aff = _centred_affine(shape, (sp, sp, sp))
    vol = np.zeros(shape, np.float32)
    vol[3, 7, 15] = 1.0
    g = drr.DetectorGeometry(sdd=1000, sid=700, pixels=(64, 64), spacing=(1.5, 1.5), samples=800)
    img = drr.render_drr(torch.from_numpy(vol), aff, g, angles)[0].numpy()
    w = img / img.sum()
    rows, cols = np.indices(img.shape)
    centre = drr.volume_centre(aff, shape)
    point = aff[:3, :3] @ np.array([3, 7, 15]) + aff[:3, 3]
    turned = drr.rotation_matrix(angles).numpy() @ (point - centre) + centre
    # By hand: the ray from the source through the point, stretched to the detector plane.
    source = centre - 700 * np.array([0.0, 1.0, 0.0])
    d = turned - source
    hit = source + d * (1000 / d[1])
    det_centre = source + 1000 * np.array([0.0, 1.0, 0.0])
    expected_row = -(hit - det_centre)[2] / 1.5 + 31.5
    expected_col = -(hit - det_centre)[0] / 1.5 + 31.5
    assert (w * rows).sum() == pytest.approx(expected_row, abs=0.1)
    assert (w * cols).sum() == pytest.approx(expected_col, abs=0.1)


def test_beer_lambert_and_hu_conversion():
    hu = np.full((8, 8, 8), -1000.0, np.float32)
    hu[2:6, 2:6, 2:6] = 0.0  # a 4-voxel water cube
    aff = _centred_affine(hu.shape, (10.0, 10.0, 10.0))
    g = drr.DetectorGeometry(sdd=1e7 + 200, sid=1e7, pixels=(8, 8), spacing=(10.0, 10.0), samples=2000)
    line = drr.render_ct(hu, aff, g, [[0, 0, 0]])[0]
    # Through the cube's core: 40 mm of water at 0.02/mm (trilinear edges add half a voxel each side at most).
    assert line[3, 3] == pytest.approx(0.02 * 40, rel=0.15)
    assert line[0, 0] == pytest.approx(0.0, abs=1e-6)  # air attenuates nothing
    bl = drr.render_ct(hu, aff, g, [[0, 0, 0]], output="beer_lambert")[0]
    np.testing.assert_allclose(bl, np.exp(-line), rtol=1e-5)


def test_render_is_chunked_without_changing_the_result():
    vol = torch.from_numpy(_blob())
    aff = _centred_affine(tuple(vol.shape), (5.0, 5.0, 5.0))
    g = drr.DetectorGeometry(pixels=(24, 24), spacing=(6.0, 6.0))
    whole = drr.render_drr(vol, aff, g, [[3, 4, 5], [0, 0, 0]])
    chunked = drr.render_drr(vol, aff, g, [[3, 4, 5], [0, 0, 0]], max_points=1000)
    torch.testing.assert_close(whole, chunked)


def test_rays_are_sampled_only_where_they_cross_the_volume_and_the_step_is_a_setting():
    """Mass in the corners of the grid (where the bounding sphere's chord and the volume's differ most), seen at
    large angles: the default (half a voxel) and a dense reference agree, so the clipped span loses nothing;
    one sample per voxel stays within 1 % of the reference."""
    vol = np.zeros((20, 20, 20), np.float32)
    for idx in [(1, 1, 1), (18, 18, 18), (1, 18, 1), (18, 1, 18), (2, 17, 17)]:
        vol[idx] = 1.0
    vol = ndimage.gaussian_filter(vol, 1.0) + 0.002
    aff = _centred_affine(vol.shape, (5.0, 5.0, 5.0))
    angles = [[0, 0, 0], [40, -30, 45], [-60, 20, 10]]
    views = {step: drr.render_drr(torch.from_numpy(vol), aff, drr.DetectorGeometry(
        pixels=(48, 48), spacing=(4.0, 4.0), step=step), angles).numpy() for step in (0.1, 0.5, 1.0)}
    peak = views[0.1].max()
    assert peak > 1.0
    # A clipped-off corner would lose a whole blob (about the peak); sampling phase moves pixels by < 0.5 %.
    np.testing.assert_allclose(views[0.5], views[0.1], atol=6e-3 * peak)
    np.testing.assert_allclose(views[1.0], views[0.1], atol=2e-2 * peak)
    np.testing.assert_allclose(views[1.0].sum((1, 2)), views[0.1].sum((1, 2)), rtol=2e-3)
    with pytest.raises(ConfigError, match="step"):
        RotationConfig.from_dict({"drr": {"step": 5.0}})


def test_check_ct_refuses_volumes_not_in_hu():
    with pytest.raises(InputError, match="Hounsfield"):
        drr.check_ct(np.random.default_rng(0).random((16, 16, 16)).astype(np.float32), "ct01.nii.gz")
    with pytest.raises(InputError, match="3D"):
        drr.check_ct(np.zeros((16, 16), np.float32), "flat.nii.gz")
    hu, _ = chest_ct(0, (24, 24, 24), (13.0, 13.0, 13.0))
    drr.check_ct(hu)  # a real-looking CT passes


# ------------------------------------------------------------------------------------------------ baselines
def test_homography_warp_is_exact_for_rotations_about_the_beam_axis():
    vol = torch.from_numpy(_blob((32, 32, 32)))
    aff = _centred_affine((32, 32, 32), (5.0, 5.0, 5.0))
    g = drr.DetectorGeometry(pixels=(48, 48), spacing=(5.0, 5.0))
    source = drr.render_drr(vol, aff, g, [0, 0, 0])[0].numpy()
    inner = (slice(8, 40), slice(8, 40))
    for angle in ([0, 20, 0], [0, -10, 0]):
        truth = drr.render_drr(vol, aff, g, angle)[0].numpy()
        warped = homography_warp(source, angle, g)
        assert np.abs(warped - truth)[inner].mean() < 0.1 * np.abs(source - truth)[inner].mean()
    np.testing.assert_allclose(homography_warp(source, [0, 0, 0], g), source, atol=1e-5)
    np.testing.assert_array_equal(identity(source, [0, 0, 5]), source)


# ------------------------------------------------------------------------------------------------ pairs and task
def _small_cfg(**model):
    cfg = RotationConfig.from_dict({
        "drr": {"pixels": [16, 16], "spacing": [28.0, 28.0], "samples": 24},
        "pairs": {"per_ct": 6},
        "model": {"unet": {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8,
                           "num_head_channels": 8}, "schedule": {"num_train_timesteps": 20}, **model},
        "train": {"steps": 3, "batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 3,
                  "condition_dropout": {"vector": 0.1}},
        "sample": {"steps": 2, "guidance_scale": 2.0, "adaptive_guidance": None},
    }, "rotation")
    return cfg


def _pairs(cfg, seed=0, angles=None):
    hu, aff = chest_ct(seed, (24, 24, 24), (13.0, 13.0, 13.0))
    angles = np.array([[0, 0, 10], [0, 0, -10], [10, 0, 0], [0, 12, 0], [5, -5, 5], [-15, 15, -15]]) \
        if angles is None else angles
    return render_pairs(hu, aff, geometry_of(cfg.drr), angles, cfg.drr.mu_water, cfg.pairs.window_percentile)


def test_pairs_share_one_display_window_and_round_trip(tmp_path):
    cfg = _small_cfg()
    pairs = _pairs(cfg)
    assert pairs.source.shape == (16, 16) and pairs.targets.shape == (6, 16, 16)
    assert 0.0 <= pairs.targets.min() and pairs.targets.max() <= 1.0
    assert np.mean(pairs.source >= 1.0) <= 0.01  # the 99.5th percentile maps to 1
    save_pairs(tmp_path / "ct.npz", pairs)
    back = load_pairs(tmp_path / "ct.npz")
    np.testing.assert_array_equal(back.targets, pairs.targets)
    assert back.divisor == pairs.divisor
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        load_pairs(tmp_path / "bad.npz")


def test_mirror_of_a_ct_gives_mirrored_views_with_mirrored_angles():
    """What flip_augment relies on: mirroring left-right negates the angles about y and z, not about x."""
    cfg = _small_cfg()
    hu, aff = chest_ct(2, (24, 24, 24), (13.0, 13.0, 13.0))
    g = geometry_of(cfg.drr)
    angles = np.array([[8.0, -6.0, 11.0]])
    views = drr.render_ct(hu, aff, g, angles)[0]
    mirrored = drr.render_ct(np.ascontiguousarray(hu[::-1]), aff, g, angles * MIRROR)[0]
    np.testing.assert_allclose(mirrored[:, ::-1], views, atol=1e-3 * views.max())
    unmirrored_angles = drr.render_ct(np.ascontiguousarray(hu[::-1]), aff, g, angles)[0]
    assert np.abs(unmirrored_angles[:, ::-1] - views).max() > 0.05 * views.max()


def test_a_fraction_of_training_rotations_turn_about_one_axis_only():
    from medsci.tasks.rotation.data import random_angles

    plain = random_angles(np.random.default_rng(3), 40, (15.0, 10.0, 5.0))
    mixed = random_angles(np.random.default_rng(3), 40, (15.0, 10.0, 5.0), single_axis=0.25)
    assert (np.count_nonzero(plain, axis=1) == 3).all() and (np.abs(plain) <= (15.0, 10.0, 5.0)).all()
    nonzero = np.count_nonzero(mixed, axis=1)
    assert (nonzero[:10] == 1).all() and (nonzero[10:] == 3).all()
    assert [int(np.flatnonzero(a)[0]) for a in mixed[:10]] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]  # each axis in turn
    np.testing.assert_array_equal(mixed[10:], plain[10:])  # the other views are the same draws
    np.testing.assert_array_equal(mixed[:10][mixed[:10] != 0], plain[:10][mixed[:10] != 0])
    with pytest.raises(ConfigError, match="single_axis"):
        RotationConfig.from_dict({"pairs": {"single_axis": 1.5}})


def test_angle_features_are_sin_cos_over_the_trained_range():
    f = angle_features([[15.0, 0.0, -7.5]], (15.0, 15.0, 15.0)).numpy()[0]
    np.testing.assert_allclose(f, [1, 0, 0, 1, -np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def test_histogram_shift_remaps_input_and_target_with_one_curve():
    cfg = _small_cfg(histogram_shift_prob=1.0, flip_augment=False)
    pairs = _pairs(cfg)
    task = RotationTrainingTask([pairs], cfg.model, cfg.pairs.max_angle, geometry_of(cfg.drr))
    gen = torch.Generator().manual_seed(3)
    batch = task.batch(gen, 4)
    assert batch.conditions.condition.shape == (4, 2, 16, 16)  # source and its warp
    src = batch.conditions.condition[:, :1] / 2
    tgt = (batch.x0 + batch.conditions.condition[:, 1:2]) / 2  # residual + warp = target
    raw_src = torch.from_numpy(pairs.source).flatten()
    raw_tgt = torch.from_numpy(pairs.targets).flatten(1)
    for i in range(4):
        mapped_src = src[i, 0].flatten()
        assert not torch.allclose(mapped_src, raw_src, atol=1e-3)  # remapped
        # One monotone curve for both images: the source's order is kept ...
        order = torch.argsort(raw_src)
        assert (mapped_src[order].diff() >= -1e-5).all()
        # ... and the target went through the same curve: the curve read off the source predicts it.
        xs, idx = torch.sort(raw_src)
        curve = lambda v: np.interp(v, xs.numpy(), mapped_src[idx].numpy())  # noqa: E731
        errors = [np.abs(curve(raw_tgt[k].numpy()) - tgt[i, 0].flatten().numpy()).mean() for k in range(6)]
        assert min(errors) < 0.02
    # Same generator seed -> same batch (reproducible training).
    again = task.batch(torch.Generator().manual_seed(3), 4)
    torch.testing.assert_close(again.x0, batch.x0)


# ------------------------------------------------------------------------------------------------ model
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medsci.tasks.rotation.pipeline import train_rotation

    root = tmp_path_factory.mktemp("rot")
    cfg = _small_cfg()
    paths = []
    for seed in (0, 1):
        save_pairs(root / f"ct_{seed:03d}.npz", _pairs(cfg, seed))
        paths.append(root / f"ct_{seed:03d}.npz")
    out = train_rotation(cfg, paths, root / "model", "cpu", progress=False)
    return cfg, out, root


def test_checkpoint_records_geometry_and_guidance(trained):
    from medsci.tasks.rotation.pipeline import load_model

    cfg, out, _ = trained
    loaded = load_model(out, "cpu")
    assert loaded.pixels == (16, 16) and loaded.max_angle == (15.0, 15.0, 15.0)
    assert loaded.model.null_kinds == ("vector",)
    ck = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert ck["model"]["vector_dim"] == 6 and ck["model"]["haar"] is True
    # Weights only in safetensors; the optimizer state loads with weights_only (no pickled code).
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["ema.safetensors", "model.safetensors"]
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["step"] == 3


def test_guidance_doubles_network_evaluations_and_is_reproducible(trained):
    from dataclasses import replace

    from medsci.tasks.rotation.pipeline import load_model, rotate

    cfg, out, _ = trained
    loaded = load_model(out, "cpu")
    src = _pairs(cfg, 5).source[None]
    full = rotate(loaded, src, [[0, 0, 10]], loaded.sample)
    none = rotate(loaded, src, [[0, 0, 10]], replace(loaded.sample, guidance_scale=1.0))
    assert full.network_evaluations == 2 * none.network_evaluations == 4
    again = rotate(loaded, src, [[0, 0, 10]], loaded.sample)
    np.testing.assert_array_equal(full.image, again.image)
    assert full.image.shape == (1, 16, 16) and 0 <= full.image.min() and full.image.max() <= 1
    with pytest.raises(InputError, match="pixels"):
        rotate(loaded, np.zeros((1, 20, 20), np.float32), [[0, 0, 1]])


def test_a_refused_ct_is_recorded_and_left_out_of_training(tmp_path, capsys):
    from medsci.tasks.rotation.data import refusal_of, save_refusal
    from medsci.tasks.rotation.pipeline import train_rotation

    cfg = _small_cfg()
    save_pairs(tmp_path / "ct_000.npz", _pairs(cfg, 0))
    save_refusal(tmp_path / "ct_001.npz", "does not look like a CT in Hounsfield units")
    assert refusal_of(tmp_path / "ct_001.npz").startswith("does not look") and refusal_of(tmp_path / "ct_000.npz") is None
    with pytest.raises(InputError, match="refused"):
        load_pairs(tmp_path / "ct_001.npz")
    out = train_rotation(cfg, [tmp_path / "ct_000.npz", tmp_path / "ct_001.npz"], tmp_path / "m", "cpu", progress=False)
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["training_cts"] == ["ct_000"]
    assert "ct_001 left out of training" in capsys.readouterr().out


def test_detector_size_must_fit_the_network():
    with pytest.raises(ConfigError, match="divisible by 8"):
        RotationConfig.from_dict({"drr": {"pixels": [60, 64]}}, "rotation")


def test_guidance_needs_a_null_trained():
    with pytest.raises(ConfigError, match="condition_dropout"):
        RotationConfig.from_dict({"train": {"condition_dropout": {}}, "sample": {"guidance_scale": 2.0}}, "rotation")


def test_evaluation_scores_every_method_and_remap(trained, tmp_path):
    from medsci.tasks.rotation.evaluation import evaluation_angles, save_predictions
    from medsci.tasks.rotation.pipeline import predict_heldout
    from medsci.tasks.rotation.pipeline import load_model
    from medsci.tasks.rotation.report import write_evaluation

    cfg, out, _ = trained
    cfg.evaluation.magnitudes, cfg.evaluation.combined, cfg.evaluation.remaps = (10.0,), 1, ("gamma0.6",)
    angles = evaluation_angles(cfg.evaluation, cfg.pairs.max_angle, 0)
    assert angles.shape == (7, 3) and sorted(np.abs(angles[:6]).sum(1)) == [10.0] * 6
    pairs = _pairs(cfg, 7, angles)
    save_pairs(tmp_path / "ct_007.npz", pairs)
    loaded = load_model(out, "cpu")
    loaded.sample = cfg.sample
    (tmp_path / "pred").mkdir()
    save_predictions(tmp_path / "pred" / "ct_007.npz", predict_heldout(loaded, pairs, cfg, geometry_of(cfg.drr)))
    summary = write_evaluation(cfg, [tmp_path / "ct_007.npz"], tmp_path / "pred", tmp_path / "eval")
    rows = (tmp_path / "eval" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    # 7 views x (identity, warp, model, model_no_guidance) plain + 7 x (identity, warp, model) remapped.
    assert len(rows) == 1 + 7 * 4 + 7 * 3
    by = summary["by_axis_magnitude"]
    assert set(by) == {"x10", "y10", "z10", "xyz"}
    # The warp is exact about the beam axis: it must beat the identity there by a wide margin.
    assert by["y10"]["warp"]["ssim"] > by["y10"]["identity"]["ssim"] + 0.05
    assert summary["network_evaluations"]["model"] == 4 and summary["network_evaluations"]["model_no_guidance"] == 2
    assert (tmp_path / "eval" / "figures" / "ct_007_grid.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "figures" / "ct_007_sweep.gif").read_bytes()[:3] == b"GIF"
    assert "Quality bar" in (tmp_path / "eval" / "summary.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------ CLI
def _medsci(*args, cwd=None):
    with inputs_untouched(args):
        return subprocess.run([sys.executable, "-m", "medsci", *map(str, args)], capture_output=True, text=True,
                              cwd=cwd, encoding="utf-8")


def _png(path, image, mode="L"):
    from PIL import Image

    if mode == "RGBA":
        Image.fromarray((np.stack([image] * 4, -1) * 255).astype(np.uint8), "RGBA").save(path)
    else:
        Image.fromarray((image * 255).astype(np.uint8)).save(path)


def test_rotate_cli_png_keeps_format_and_marks_synthetic(trained, tmp_path):
    from PIL import Image

    cfg, out, _ = trained
    src = _pairs(cfg, 5).source
    big = np.kron(src, np.ones((3, 3), np.float32))  # 48x48: resampled to the model's 16x16 and back
    _png(tmp_path / "cxr.png", big)
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "cxr.png", "--angles", "0,0,10",
                "--output", tmp_path / "out.png")
    assert r.returncode == 0, r.stderr
    img = Image.open(tmp_path / "out.png")
    assert img.size == (48, 48) and img.mode == "L"
    assert "SYNTHETIC" in img.info.get("Description", "")
    record = json.loads((tmp_path / "out.png.json").read_text(encoding="utf-8"))
    assert record["synthetic"] and record["network_evaluations"] == 4 and record["warnings"] == []


def test_rotate_cli_refusals(trained, tmp_path):
    cfg, out, _ = trained
    src = _pairs(cfg, 5).source
    _png(tmp_path / "rgba.png", src, "RGBA")
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "rgba.png", "--angles", "0,0,5",
                "--output", tmp_path / "o.png")
    assert r.returncode != 0 and "alpha" in r.stderr and "Traceback" not in r.stderr
    _png(tmp_path / "ok.png", src)
    # 40 deg = 2.7x the trained 15: the angle features repeat at 2x, so refused even with --allow-extrapolation.
    for extra in ([], ["--allow-extrapolation"]):
        r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "ok.png", "--angles", "0,0,40",
                    "--output", tmp_path / "o.png", *extra)
        assert r.returncode != 0 and "trained range" in r.stderr and not (tmp_path / "o.png").exists()
    # 25 deg = 1.7x: refused unless --allow-extrapolation, then a warning in the image's own metadata too.
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "ok.png", "--angles", "0,0,25",
                "--output", tmp_path / "o.png")
    assert r.returncode != 0 and "--allow-extrapolation" in r.stderr
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "ok.png", "--angles", "0", "0", "-25",
                "--output", tmp_path / "o.png", "--allow-extrapolation")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "o.png.json").read_text(encoding="utf-8"))
    assert any("outside the trained range" in w for w in rec["warnings"])
    from PIL import Image

    assert "WARNING" in Image.open(tmp_path / "o.png").info["Description"]
    # Up to 1.5x the trained range: a warning on the terminal and in the metadata, no refusal; a negative
    # first angle with the = form.
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "ok.png", "--angles=-20,0,0",
                "--output", tmp_path / "o3.png")
    assert r.returncode == 0 and "warning" in r.stdout and "x -20 deg > 15" in r.stdout, r.stderr
    rec = json.loads((tmp_path / "o3.png.json").read_text(encoding="utf-8"))
    assert rec["warnings"] and "outside the trained range" in rec["warnings"][0]
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "ok.png", "--angles", "0,0,5",
                "--output", tmp_path / "o4.png", "--threads", "0")
    assert r.returncode != 0 and "--threads" in r.stderr and "Traceback" not in r.stderr
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "ok.png", "--angles", "1,2",
                "--output", tmp_path / "o2.png")
    assert r.returncode != 0 and "RX,RY,RZ" in r.stderr


def test_rotate_cli_dicom_without_pixels_is_refused(trained, tmp_path):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    _, out, _ = trained
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = ds.file_meta.MediaStorageSOPClassUID, generate_uid(), "CR"
    ds.save_as(tmp_path / "empty.dcm", enforce_file_format=True)
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "empty.dcm", "--angles", "0,0,5",
                "--output", tmp_path / "o.dcm")
    assert r.returncode != 0 and "pixel data" in r.stderr and "Traceback" not in r.stderr


def test_drr_cli_renders_and_refuses_non_hu(tmp_path):
    from medsci.io.volume import write_nifti

    hu, aff = chest_ct(0, (24, 24, 24), (13.0, 13.0, 13.0))
    write_nifti(tmp_path / "ct.nii.gz", hu, aff)
    r = _medsci("drr", "--ct", tmp_path / "ct.nii.gz", "--angles", "0,0,0", "--angles", "0,0,10", "--output",
                tmp_path / "d", "--pixels", "32", "32", "--spacing", "14", "14")
    assert r.returncode == 0, r.stderr
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "d" / "drr_+0_+0_+0.png"))
    b = np.asarray(Image.open(tmp_path / "d" / "drr_+0_+0_+10.png"))
    assert a.dtype == np.uint16 and a.shape == (32, 32) and np.abs(a.astype(int) - b).mean() > 100
    # NIfTI output reads back through medsci.io.radiograph as the same picture as the PNG.
    r = _medsci("drr", "--ct", tmp_path / "ct.nii.gz", "--angles=-10,0,0", "--output", tmp_path / "dn",
                "--pixels", "32", "24", "--spacing", "14", "14", "--format", "nifti")
    assert r.returncode == 0, r.stderr
    from medsci.io.radiograph import read_radiograph

    back = read_radiograph(tmp_path / "dn" / "drr_-10_+0_+0.nii.gz")
    assert back.pixels.shape == (32, 24)
    r = _medsci("drr", "--ct", tmp_path / "ct.nii.gz", "--angles=-10,0,0", "--output", tmp_path / "dp",
                "--pixels", "32", "24", "--spacing", "14", "14")
    png = np.asarray(Image.open(tmp_path / "dp" / "drr_-10_+0_+0.png")).astype(np.float64) / 65535
    np.testing.assert_allclose(back.pixels, (png - png.min()) / (png.max() - png.min()), atol=2e-3)
    write_nifti(tmp_path / "unit.nii.gz", (hu + 1000) / 3000, aff)
    r = _medsci("drr", "--ct", tmp_path / "unit.nii.gz", "--output", tmp_path / "d2")
    assert r.returncode != 0 and "Hounsfield" in r.stderr and "Traceback" not in r.stderr
    write_nifti(tmp_path / "flat.nii.gz", hu[:, :, :1], aff)
    r = _medsci("drr", "--ct", tmp_path / "flat.nii.gz", "--output", tmp_path / "d3")
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_bench_item_reports_drr_time_and_network_evaluations():
    from medsci.tasks.rotation.bench import bench_rotation_item

    out = bench_rotation_item("cpu", ct_shape=(32, 32, 32), detector_sizes=(32,))
    assert out["drr_seconds_per_view"]["32x32"] > 0
    # 10 DDIM steps: 20 evaluations with full guidance, 10 without, adaptive guidance in between.
    assert out["full_guidance_network_evaluations"] == 20 and out["no_guidance_network_evaluations"] == 10
    assert 10 < out["adaptive_guidance_network_evaluations"] <= 20


def test_rotate_cli_dicom_and_nifti_round_trip(trained, tmp_path):
    import nibabel as nib
    import pydicom

    from test_radiograph_io import _make_dicom  # tests/ is on sys.path (pytest rootdir-less imports)

    cfg, out, _ = trained
    src = _pairs(cfg, 5).source
    stored = np.round(np.kron(src, np.ones((2, 2))) * 4095).astype(np.uint16)  # 32x32, 12 bits
    # 32 px of 14 mm: the tiny model's 448 mm field of view.
    _make_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1", extra={"ImagerPixelSpacing": ["14", "14"]})
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "cr.dcm", "--angles", "5,0,0",
                "--output", tmp_path / "rot.dcm")
    assert r.returncode == 0, r.stderr
    ds = pydicom.dcmread(tmp_path / "rot.dcm")
    src_ds = pydicom.dcmread(tmp_path / "cr.dcm")
    assert ds.Rows == 32 and ds.Modality == "CR" and "SYNTHETIC" in ds.SeriesDescription
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsStored == 12
    assert "ImagerPixelSpacing" in ds.DerivationDescription and "16x16 px at the model's 28x28 mm" in ds.ImageComments
    assert ds.SOPInstanceUID != src_ds.SOPInstanceUID and ds.StudyInstanceUID == src_ds.StudyInstanceUID
    assert "DERIVED" in ds.ImageType and "rx,ry,rz=[5.0, 0.0, 0.0]" in ds.DerivationDescription
    nii = tmp_path / "dx.nii.gz"
    aff = np.diag([14.0, 14.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(np.kron(src, np.ones((2, 2))).T.astype(np.float32)[:, :, None], aff), nii)
    r = _medsci("rotate", "--checkpoint", out, "--input", nii, "--angles", "0,0,-5", "--output", tmp_path / "r.nii.gz")
    assert r.returncode == 0, r.stderr
    img = nib.load(tmp_path / "r.nii.gz")
    assert img.shape == (32, 32, 1) and np.allclose(img.affine, aff)
    assert b"SYNTHETIC" in img.header["descrip"].tobytes()


def test_rotate_keeps_the_aspect_ratio_and_the_physical_scale(trained, tmp_path):
    """Issue 26: a non-square radiograph is resampled by its pixel spacing and centred on the model's detector
    (padded, never squashed); one far smaller than the model's field of view is refused."""
    import pydicom

    from test_radiograph_io import _make_dicom

    cfg, out, _ = trained
    src = _pairs(cfg, 5).source  # 16x16 at 28 mm
    # 40x24 px of 7 mm: 280x168 mm, centred on the 448 mm detector as 10x6 model pixels.
    wide = np.kron(src[3:13, 5:11], np.ones((4, 4), np.float32))
    stored = np.round(wide * 4095).astype(np.uint16)
    _make_dicom(tmp_path / "dx.dcm", stored, modality="DX", extra={"ImagerPixelSpacing": ["7", "7"]})
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "dx.dcm", "--angles", "0,0,5",
                "--output", tmp_path / "rot.dcm")
    assert r.returncode == 0, r.stderr
    full_record = json.loads((tmp_path / "rot.dcm.json").read_text(encoding="utf-8"))
    assert full_record["detail"]["method"] == "warp moved by the model's displacement + remainder"
    assert np.isfinite(full_record["detail"]["mean_shift_model_pixels"])
    record = full_record["resampling"]
    assert record["scaled_pixels"] == [10, 6] and record["scale"] == [0.25, 0.25]
    assert record["padded_model_pixels"] == {"top": 3, "bottom": 3, "left": 5, "right": 5}
    assert record["spacing_source"] == "ImagerPixelSpacing" and record["field_of_view_fraction"] == 1.0
    assert pydicom.dcmread(tmp_path / "rot.dcm").pixel_array.shape == (40, 24)
    for angles, flags in (("0,5,0", []), ("0,0,5", ["--detail", "warp"])):  # in plane: the warp is exact
        r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "dx.dcm", "--angles", angles, *flags,
                    "--output", tmp_path / "plain.dcm")
        assert r.returncode == 0, r.stderr
        detail = json.loads((tmp_path / "plain.dcm.json").read_text(encoding="utf-8"))["detail"]
        assert detail == {"method": "warp + correction"}

    from medsci.tasks.rotation.detector_fit import DetectorFit
    from medsci.tasks.rotation.pipeline import load_model

    fit = DetectorFit.plan((40, 24), (7.0, 7.0), "test", load_model(out, "cpu").geometry)
    on_model = fit.to_model(wide)
    np.testing.assert_allclose(on_model[3:13, 5:11], src[3:13, 5:11], atol=0.15)  # same anatomy, same place
    assert np.abs(on_model[3:13, 5:11] - src[3:13, 5:11]).mean() < 0.03
    assert on_model[:3].max() == 0 and on_model[:, :5].max() == 0  # air around it
    back = fit.to_input(on_model)
    assert np.abs(back - wide).mean() < 0.05

    # At 0.15 mm the same 40 px are 6 mm: 1 % of the field of view, refused with the reason.
    _make_dicom(tmp_path / "tiny.dcm", stored, modality="DX")
    r = _medsci("rotate", "--checkpoint", out, "--input", tmp_path / "tiny.dcm", "--angles", "0,0,5",
                "--output", tmp_path / "t.dcm")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "tiny.dcm: the image spans 6x3 mm (ImagerPixelSpacing), 1 % of the model's 448x448 mm" in r.stderr
    assert not (tmp_path / "t.dcm").exists()


def test_a_folder_of_cts_takes_volume_files_and_dicom_series_folders(tmp_path):
    """rotation.data.raw_dir: one CT per volume file or per subfolder holding a DICOM series (read in HU with its
    spacing); other files, hidden entries and folders without DICOM are not CTs."""
    import SimpleITK as sitk

    from medsci.tasks.rotation.data import load_ct
    from medsci.tasks.rotation.demo import write_demo_cts
    from medsci.tasks.rotation.workflow import ct_files

    raw = tmp_path / "cts"
    write_demo_cts(raw, n=1, shape=(16, 16, 16), spacing=(20.0, 20.0, 20.0))
    hu, _ = chest_ct(1, (16, 16, 16), (20.0, 20.0, 25.0))
    image = sitk.GetImageFromArray(np.round(hu.transpose(2, 1, 0)).astype(np.int16))  # sitk order (k, j, i)
    image.SetSpacing((20.0, 20.0, 25.0))
    series = raw / "patient_b"
    series.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetSize()[2]):
        sl = image[:, :, k]
        for tag, value in {"0020|000e": "1.2.826.0.1.3680043.2.1125.9.1", "0020|000d": "1.2.826.0.1.3680043.2.1125.9.2",
                           "0008|0060": "CT", "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, k))))}.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"{k:03d}.dcm"))
        writer.Execute(sl)
    (raw / "notes.txt").write_text("not a CT")
    (raw / ".hidden.nii.gz").write_bytes(b"")
    (raw / "empty_folder").mkdir()
    cfg = RotationConfig.from_dict({"data": {"raw_dir": str(raw)}})
    found = ct_files(cfg, raw)
    assert found == {"ct_000": str(raw / "ct_000.nii.gz"), "patient_b": str(series)}
    from medsci.tasks.rotation.commands import _ct_id  # the pairs job names its output by the workflow's id

    assert {name: _ct_id(Path(path)) for name, path in found.items()} == {"ct_000": "ct_000", "patient_b": "patient_b"}
    dotted = series.rename(raw / "patient.b")
    assert _ct_id(dotted) == "patient.b" and "patient.b" in ct_files(cfg, raw)
    vol, affine = load_ct(dotted)
    assert vol.shape == (16, 16, 16) and np.allclose(np.abs(np.diag(affine))[:3], (20.0, 20.0, 25.0))
    assert np.abs(np.sort(vol.ravel()) - np.sort(np.round(hu).ravel())).max() <= 1.0  # HU kept (orientation aside)


def test_fine_detail_follows_the_displacement_the_model_made():
    """A full-resolution image whose anatomy moved by a smooth displacement (the truth) and a model that got the
    motion right at a quarter of the resolution: moving the full-resolution warp by the displacement estimated from
    the model's output halves the error of adding the upsampled correction, and the model grid is unchanged."""
    from medsci.tasks.rotation.detail import anatomy_shift, carry_detail, shift_image
    from medsci.tasks.rotation.detector_fit import DetectorFit

    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.random((96, 96)), 1.0)
    texture = ((texture - texture.min()) / np.ptp(texture)).astype(np.float32)
    rows, cols = np.indices((96, 96), dtype=np.float64)
    bump = np.exp(-((rows - 48) ** 2 + (cols - 48) ** 2) / (2 * 22.0**2))
    moved = np.stack([4.0 * bump, -3.0 * bump]).astype(np.float32)  # input pixels
    truth = shift_image(texture, moved)
    fit = DetectorFit.plan((96, 96), (1.0, 1.0), "test", drr.DetectorGeometry(pixels=(24, 24), spacing=(4.0, 4.0)))
    first_guess, model = fit.to_model(texture), fit.to_model(truth)
    u = anatomy_shift(model, first_guess)
    inner = (slice(6, 18), slice(6, 18))
    assert np.abs(u[0][inner].mean() - 1.0 * bump[24:72, 24:72].mean()) < 0.35  # 4 px -> 1 model px, rows
    assert u[0][inner].mean() > 0.4 and u[1][inner].mean() < -0.3
    shifted, record = carry_detail(texture, model, first_guess, fit, 1.0)
    plain, plain_record = carry_detail(texture, model, first_guess, fit, 1.0, shift=False)
    assert record["mean_shift_model_pixels"] > 0.2 and plain_record == {"method": "warp + correction"}
    err = lambda img: float(np.abs(img - truth)[16:80, 16:80].mean())  # noqa: E731
    assert err(shifted) < 0.6 * err(plain), (err(shifted), err(plain))
    # At the model's resolution still the model's output, up to resampling (as close as the plain correction's).
    off = lambda img: float(np.abs(fit.to_model(img) - model).mean())  # noqa: E731
    assert off(shifted) < max(1.5 * off(plain), 0.01), (off(shifted), off(plain))
    np.testing.assert_array_equal(anatomy_shift(model, first_guess), u)  # the same bytes again

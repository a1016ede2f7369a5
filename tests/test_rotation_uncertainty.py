"""Radiograph rotation, issue 24: the model's uncertainty written by `medsci rotate` and scored by the evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from medsci.tasks.rotation.data import geometry_of, save_pairs
from test_rotation import _medsci, _pairs, _png, _small_cfg  # tests/ is on sys.path

UNET = {"channels": [8, 16], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny models on the same pairs: rectified flow with a variance head, and DDPM without one."""
    from medsci.tasks.rotation.pipeline import train_rotation

    root = tmp_path_factory.mktemp("rot_unc")
    base = _small_cfg()
    paths = [root / "ct_000.npz", root / "ct_001.npz"]
    for seed, path in enumerate(paths):
        save_pairs(path, _pairs(base, seed))
    head = _small_cfg(unet={**UNET, "variance_head": True},
                      schedule={"num_train_timesteps": 20, "objective": "rflow"})
    assert head.model.unet.variance_head and head.model.schedule.objective == "rflow"
    out = {"head": (head, train_rotation(head, paths, root / "head", "cpu", progress=False)),
           "plain": (base, train_rotation(base, paths, root / "plain", "cpu", progress=False))}
    return out


def _rotate(ckpt, source, output, angles, *extra) -> dict:
    """`medsci rotate`; the uncertainty part of the output's JSON record."""
    r = _medsci("rotate", "--checkpoint", ckpt, "--input", source, "--angles", angles, "--output", output, *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(output.with_name(output.name + ".json").read_text(encoding="utf-8"))["uncertainty"]


def test_rotate_writes_the_variance_heads_std_beside_a_png(models, tmp_path):
    from PIL import Image

    cfg, ckpt = models["head"]
    src = _pairs(cfg, 5).source
    _png(tmp_path / "cxr.png", np.kron(src, np.ones((3, 3), np.float32)))  # 8-bit, 48x48
    rec = _rotate(ckpt, tmp_path / "cxr.png", tmp_path / "out.png", "0,0,10")
    assert rec["method"] == "variance" and rec["std_file"] == "out_std.png"
    img = Image.open(tmp_path / "out_std.png")
    std = np.asarray(img).astype(np.float64) / 65535
    # 16-bit even for an 8-bit input (an 8-bit std would round to 0), on the output's grid, finite and >= 0.
    assert np.asarray(img).dtype == np.uint16 and std.shape == (48, 48) and "SYNTHETIC" in img.info["Description"]
    assert np.isfinite(std).all() and std.min() >= 0 and std.max() > 0
    assert rec["std_mean"] == pytest.approx(std.mean(), abs=1e-4)
    assert rec["std_max"] == pytest.approx(std.max(), abs=1e-4) and rec["std_max"] > rec["std_mean"] > 0


def test_rotate_without_a_head_or_samples_writes_no_std(models, tmp_path):
    cfg, ckpt = models["plain"]
    _png(tmp_path / "cxr.png", _pairs(cfg, 5).source)
    rec = _rotate(ckpt, tmp_path / "cxr.png", tmp_path / "out.png", "0,0,10")
    assert rec == {"method": "none", "std_file": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cxr.png", "out.png", "out.png.json"]
    # Several samples give the spread over samples instead.
    rec = _rotate(ckpt, tmp_path / "cxr.png", tmp_path / "two.png", "0,0,10", "--n-samples", "2")
    assert rec["method"] == "samples" and (tmp_path / "two_std.png").exists() and rec["std_max"] > 0


def test_rotate_std_of_nifti_in_value_units_and_of_dicom_as_npy(models, tmp_path):
    import nibabel as nib

    from test_radiograph_io import _make_dicom

    cfg, ckpt = models["head"]
    src = _pairs(cfg, 5).source
    aff = np.diag([14.0, 14.0, 1.0, 1.0])  # 32 px of 14 mm: the tiny model's 448 mm field of view
    values = (100.0 + 900.0 * np.kron(src, np.ones((2, 2)))).T.astype(np.float32)[:, :, None]  # 100 .. 1000
    nib.save(nib.Nifti1Image(values, aff), tmp_path / "dx.nii.gz")
    rec = _rotate(ckpt, tmp_path / "dx.nii.gz", tmp_path / "r.nii.gz", "0,0,-5")
    assert rec["method"] == "variance" and rec["std_file"] == "r_std.nii.gz"
    img = nib.load(tmp_path / "r_std.nii.gz")
    assert img.shape == (32, 32, 1) and np.allclose(img.affine, aff)
    # A spread in the input's units: scaled by the value range (900), not shifted by its minimum (100).
    span = float(values.max() - values.min())
    np.testing.assert_allclose(img.get_fdata().mean(), rec["std_mean"] * span, rtol=1e-3)
    assert img.get_fdata().min() >= 0

    stored = np.round(np.kron(src, np.ones((2, 2))) * 4095).astype(np.uint16)
    _make_dicom(tmp_path / "cr.dcm", stored, photometric="MONOCHROME1", extra={"ImagerPixelSpacing": ["14", "14"]})
    rec = _rotate(ckpt, tmp_path / "cr.dcm", tmp_path / "rot.dcm", "5,0,0")
    std = np.load(tmp_path / "rot_std.npy")
    assert rec["std_file"] == "rot_std.npy" and std.dtype == np.float32 and std.shape == (32, 32)
    assert np.isfinite(std).all() and std.min() >= 0
    assert rec["std_mean"] == pytest.approx(float(std.mean()), rel=1e-5)


def test_evaluation_scores_the_models_uncertainty(models, tmp_path):
    from medsci.tasks.rotation.evaluation import evaluation_angles, load_predictions, save_predictions
    from medsci.tasks.rotation.pipeline import load_model, predict_heldout, rotate
    from medsci.tasks.rotation.report import write_evaluation

    summaries = {}
    for kind, (cfg, ckpt) in models.items():
        cfg.evaluation.magnitudes, cfg.evaluation.combined, cfg.evaluation.remaps = (10.0,), 1, ("gamma0.6",)
        pairs = _pairs(cfg, 7, evaluation_angles(cfg.evaluation, cfg.pairs.max_angle, 0))
        save_pairs(tmp_path / kind / "ct_007.npz", pairs)
        loaded = load_model(ckpt, "cpu")
        loaded.sample = cfg.sample
        (tmp_path / kind / "pred").mkdir()
        save_predictions(tmp_path / kind / "pred" / "ct_007.npz",
                         predict_heldout(loaded, pairs, cfg, geometry_of(cfg.drr)))
        summaries[kind] = write_evaluation(cfg, [tmp_path / kind / "ct_007.npz"], tmp_path / kind / "pred",
                                           tmp_path / kind / "eval")
        predicted = load_predictions(tmp_path / kind / "pred" / "ct_007.npz")
        # The std is no method: the metrics table is what it was (7 views x 4 plain + 7 x 3 remapped).
        assert len((tmp_path / kind / "eval" / "metrics.csv").read_text(encoding="utf-8").splitlines()) == 50
        assert set(predicted["predictions"]["none"]) == {"identity", "warp", "model", "model_no_guidance"}
    u = summaries["head"]["uncertainty"]
    assert u["method"] == "variance" and u["images"] == 7
    # y10 twice in-plane; x10, z10 (both signs) and the combined rotation out-of-plane.
    assert u["in_plane"]["images"] == 2 and u["out_of_plane"]["images"] == 5
    # The stored std is the model's on the plain inputs (the same sampler seed gives the same map) ...
    cfg, ckpt = models["head"]
    pairs = _pairs(cfg, 7, evaluation_angles(cfg.evaluation, cfg.pairs.max_angle, 0))
    loaded = load_model(ckpt, "cpu")
    again = rotate(loaded, np.repeat(pairs.source[None], 7, 0), pairs.angles, cfg.sample)
    predicted = load_predictions(tmp_path / "head" / "pred" / "ct_007.npz")
    np.testing.assert_allclose(predicted["std"]["model"], again.std, rtol=1e-5, atol=1e-7)
    # ... and the summary's scores are the per-view scores against |model - truth| on the whole image, averaged.
    std, model = again.std, predicted["predictions"]["none"]["model"]
    err = np.abs(model - pairs.targets)
    rho = [spearmanr(std[k].ravel(), err[k].ravel()).statistic for k in range(7)]
    cover = [np.mean(err[k] <= 1.6448536269514722 * std[k]) for k in range(7)]
    assert u["spearman"] == pytest.approx(np.nanmean(rho), abs=1e-6)
    assert u["coverage90"] == pytest.approx(np.mean(cover), abs=1e-6) and 0 <= u["coverage90"] <= 1
    assert u["in_plane"]["coverage90"] == pytest.approx(np.mean([cover[k] for k in (2, 3)]), abs=1e-6)
    assert u["top_decile_ratio"] > 0
    md = (tmp_path / "head" / "eval" / "summary.md").read_text(encoding="utf-8")
    assert f"Uncertainty of the model (variance, held-out views, whole image): Spearman(std, |error|) " \
           f"{u['spearman']:.3f}" in md
    saved = json.loads((tmp_path / "head" / "eval" / "summary.json").read_text(encoding="utf-8"))
    assert saved["uncertainty"]["images"] == 7
    # Without a head and one sample: no map, no scores, and the summary says so.
    n = summaries["plain"]["uncertainty"]
    assert n["method"] == "none" and n["images"] == 0
    assert n["spearman"] is None and n["coverage90"] is None and n["in_plane"]["images"] == 0
    assert "Uncertainty of the model (none, held-out views, whole image): none" in \
        (tmp_path / "plain" / "eval" / "summary.md").read_text(encoding="utf-8")

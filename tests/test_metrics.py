"""Metrics against scikit-image, direct numpy formulas and hand-made cases; the ``medsci metrics`` CLI."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.data import camera
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medsci.cli import main
from medsci.evaluation.metrics import image_metrics, section_ssim, snr_db, ssim_map

# Our SSIM map is float64 over the valid region (window fully inside). skimage filters the whole image in
# float64 with reflect padding, then drops the same (win - 1) / 2 border before averaging, so both use the
# same windows (11 taps: skimage's truncate=3.5 * sigma=1.5 -> radius 5) and the same formula: they agree
# to rounding (~1e-12). The residual only grows if the summation order matters, hence atol 1e-8.
SKIMAGE_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def _pair_2d(noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    img = camera()[::4, ::4].astype(np.float64) / 255.0  # 128 x 128 natural image in [0, 1]
    noisy = img + np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return img, noisy


def _pair_3d(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vol = ndimage.gaussian_filter(rng.random((24, 20, 18)), 2.0) * 300.0 + 100.0  # smooth, offset ~250
    return vol, vol + rng.normal(0.0, 5.0, vol.shape)


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.3])
def test_ssim_2d_matches_skimage(noise):
    img, noisy = _pair_2d(noise)
    ours = image_metrics(noisy, img, data_range=1.0)["ssim"]
    ref = structural_similarity(img, noisy, data_range=1.0, **SKIMAGE_SSIM)
    assert ours == pytest.approx(ref, abs=1e-8)
    assert 0.0 < ours < 1.0


def test_ssim_3d_with_offset_matches_skimage_and_map_shape():
    vol, noisy = _pair_3d()
    data_range = float(vol.max() - vol.min())
    ours = image_metrics(noisy, vol, data_range=data_range)
    ref = structural_similarity(vol, noisy, data_range=data_range, **SKIMAGE_SSIM)
    assert ours["ssim"] == pytest.approx(ref, abs=1e-8)
    smap = ssim_map(noisy, vol, data_range, spatial_dims=3)
    assert tuple(smap.shape) == (14, 10, 8)  # valid region: 10 voxels less per axis
    # Batched input gives a batched map with the same values.
    batched = ssim_map(torch.from_numpy(noisy)[None, None], torch.from_numpy(vol)[None, None], data_range, 3)
    assert tuple(batched.shape) == (1, 1, 14, 10, 8)
    assert torch.allclose(batched[0, 0], smap)


def test_ssim_map_matches_monai_on_well_conditioned_data():
    # Same formula and window as MONAI's compute_ssim_and_cs, which runs in float32: on high-variance data
    # in [0, 1] it is exact to ~1e-5 per voxel. On low-variance or offset data its E[x^2] - E[x]^2 loses
    # digits (2e-4 per voxel for smoothed data, 3e-3 in the mean with an offset), which is why ours is
    # float64 (module docstring), so only the well-conditioned case is compared.
    from monai.metrics.regression import compute_ssim_and_cs

    rng = np.random.default_rng(7)
    x = rng.random((22, 18, 16))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    ref, _ = compute_ssim_and_cs(
        torch.from_numpy(y)[None, None], torch.from_numpy(x)[None, None], spatial_dims=3,
        kernel_size=[11, 11, 11], kernel_sigma=[1.5, 1.5, 1.5], data_range=1.0,
    )
    ours = ssim_map(y, x, data_range=1.0, spatial_dims=3)
    assert ours.shape == ref[0, 0].shape
    assert (ours - ref[0, 0].double()).abs().max().item() < 1e-4
    assert abs(ours.mean().item() - ref.mean().item()) < 1e-5


def test_psnr_mse_mae_match_formulas_and_skimage():
    img, noisy = _pair_2d(0.1)
    m = image_metrics(torch.from_numpy(noisy), torch.from_numpy(img), data_range=2.0)
    err = noisy - img
    assert m["mse"] == pytest.approx(np.mean(err**2), rel=1e-12)
    assert m["mae"] == pytest.approx(np.mean(np.abs(err)), rel=1e-12)
    assert m["psnr"] == pytest.approx(10 * np.log10(4.0 / np.mean(err**2)), rel=1e-12)
    assert m["psnr"] == pytest.approx(peak_signal_noise_ratio(img, noisy, data_range=2.0), rel=1e-12)


def test_identical_images():
    vol, _ = _pair_3d()
    m = image_metrics(vol, vol, data_range=float(np.ptp(vol)), masks={"all": np.ones(vol.shape, bool)})
    assert m["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["mse"] == 0.0 and m["mae"] == 0.0
    assert m["psnr"] == math.inf and m["all_psnr"] == math.inf
    assert snr_db(vol, vol) == math.inf


def test_masked_metrics_when_error_is_outside_the_mask():
    img, _ = _pair_2d()
    rng = np.random.default_rng(3)
    mask = np.zeros(img.shape, bool)
    mask[40:90, 30:100] = True
    noise = np.where(mask, 0.01, 0.2) * rng.standard_normal(img.shape)  # big errors outside the mask
    pred = img + noise
    m = image_metrics(pred, img, data_range=1.0, masks={"roi": mask})

    inside = noise[mask]
    assert m["roi_mse"] == pytest.approx(np.mean(inside**2), rel=1e-12)
    assert m["roi_mae"] == pytest.approx(np.mean(np.abs(inside)), rel=1e-12)
    assert m["roi_psnr"] == pytest.approx(10 * np.log10(1.0 / np.mean(inside**2)), rel=1e-12)
    # Reference masked SSIM: skimage's full map, cropped to the valid region like the mask.
    _, full = structural_similarity(img, pred, data_range=1.0, full=True, **SKIMAGE_SSIM)
    assert m["roi_ssim"] == pytest.approx(full[5:-5, 5:-5][mask[5:-5, 5:-5]].mean(), abs=1e-8)
    # The error is outside the mask, so every metric is better inside it (and by a lot).
    assert m["roi_mse"] < m["mse"] / 50
    assert m["roi_mae"] < m["mae"]
    assert m["roi_psnr"] > m["psnr"] + 15
    assert m["roi_ssim"] > m["ssim"] + 0.2


def test_empty_and_border_only_masks():
    img, noisy = _pair_2d()
    border = np.zeros(img.shape, bool)
    border[:3, :] = True  # inside the 5-voxel strip the SSIM map does not cover
    m = image_metrics(noisy, img, masks={"empty": np.zeros(img.shape, bool), "border": border})
    assert all(math.isnan(m[f"empty_{k}"]) for k in ("ssim", "psnr", "mse", "mae"))
    assert math.isnan(m["border_ssim"])
    assert m["border_mse"] == pytest.approx(np.mean((noisy - img)[:3] ** 2), rel=1e-12)
    with pytest.raises(ValueError, match="mask 'bad'"):
        image_metrics(noisy, img, masks={"bad": np.ones((3, 3), bool)})


def _reference_ssim_valid(x: np.ndarray, y: np.ndarray, kernel: tuple[int, ...], sigma: float, L: float) -> float:
    """Independent SSIM: separable normalised Gaussian windows of the given sizes, valid region only."""
    def filt(a: np.ndarray) -> np.ndarray:
        for axis, k in enumerate(kernel):
            d = np.arange(k) - (k - 1) / 2
            w = np.exp(-0.5 * (d / sigma) ** 2)
            a = ndimage.correlate1d(a, w / w.sum(), axis=axis, mode="constant")
        crop = tuple(slice((k - 1) // 2, n - (k - 1) // 2) for k, n in zip(kernel, a.shape))
        return a[crop]

    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_kernel_shrinks_on_short_axes():
    rng = np.random.default_rng(4)
    vol = ndimage.gaussian_filter(rng.random((20, 16, 6)), 1.5)
    noisy = vol + rng.normal(0, 0.02, vol.shape)
    m = image_metrics(noisy, vol, data_range=1.0)
    # Axis of length 6 gets a 5-wide window: map shape (10, 6, 2).
    assert tuple(ssim_map(noisy, vol, 1.0, 3).shape) == (10, 6, 2)
    assert m["ssim"] == pytest.approx(_reference_ssim_valid(vol, noisy, (11, 11, 5), 1.5, 1.0), abs=1e-10)


def test_snr_db_hand_made():
    rng = np.random.default_rng(5)
    target = rng.standard_normal((8, 9, 10))
    assert snr_db(0.9 * target, target) == pytest.approx(20.0, abs=1e-9)  # error = 0.1 * signal
    # Masked: exact inside the mask (only the outside is wrong) -> inf; wrong only inside -> finite.
    mask = np.zeros(target.shape, bool)
    mask[:4] = True
    pred = target.copy()
    pred[4:] *= 0.5
    assert snr_db(pred, target, mask) == math.inf
    expected = 10 * np.log10(np.sum(target[4:] ** 2) / np.sum((0.5 * target[4:]) ** 2))
    assert snr_db(pred, target, ~mask) == pytest.approx(expected, rel=1e-12)  # = 20*log10(2)
    assert expected == pytest.approx(20 * np.log10(2.0))
    assert math.isnan(snr_db(pred, target, np.zeros(target.shape, bool)))


def test_section_ssim_matches_skimage_per_section():
    rng = np.random.default_rng(6)
    vol = ndimage.gaussian_filter(rng.standard_normal((12, 24, 20)), 2.0)
    noisy = vol + rng.normal(0, 0.05, vol.shape)
    data_range = float(np.ptp(vol))
    for axis in (0, 1, 2):
        moved_t, moved_p = np.moveaxis(vol, axis, 0), np.moveaxis(noisy, axis, 0)
        ref = np.mean(
            [structural_similarity(a, b, data_range=data_range, **SKIMAGE_SSIM) for a, b in zip(moved_t, moved_p)]
        )
        assert section_ssim(noisy, vol, axis=axis, data_range=data_range) == pytest.approx(ref, abs=1e-8)
    # Sections along axis 0 are 24 x 20 (axis -3 is the same axis).
    ref0 = np.mean([structural_similarity(a, b, data_range=data_range, **SKIMAGE_SSIM) for a, b in zip(vol, noisy)])
    assert section_ssim(noisy, vol, axis=-3, data_range=data_range) == pytest.approx(ref0, abs=1e-8)
    # A 3D SSIM of the same pair is a different number (3D windows).
    assert abs(image_metrics(noisy, vol, data_range)["ssim"] - ref0) > 1e-3


def test_bad_arguments():
    a = np.zeros((16, 16))
    with pytest.raises(ValueError, match="data_range"):
        image_metrics(a, a, data_range=0.0)
    with pytest.raises(ValueError, match="shape"):
        image_metrics(a, np.zeros((16, 15)))
    with pytest.raises(ValueError, match="3D"):
        section_ssim(a, a, axis=0, data_range=1.0)


# ---------------------------------------------------------------- CLI


def _write_nifti(path, array: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return str(path)


def test_cli_metrics_with_mask(tmp_path, capsys):
    vol, noisy = _pair_3d()
    mask = np.zeros(vol.shape, np.float32)
    mask[6:18, 5:15, 4:14] = 1.0
    target = _write_nifti(tmp_path / "target.nii.gz", vol)
    pred = _write_nifti(tmp_path / "pred.nii.gz", noisy)
    mask_path = _write_nifti(tmp_path / "mask.nii.gz", mask)

    assert main(["metrics", "--pred", pred, "--target", target, "--mask", mask_path]) == 0
    out = json.loads(capsys.readouterr().out)
    v32, n32 = vol.astype(np.float32).astype(np.float64), noisy.astype(np.float32).astype(np.float64)
    data_range = float(v32.max() - v32.min())
    expected = image_metrics(n32, v32, data_range=data_range, masks={"mask": mask > 0})
    assert out["data_range"] == pytest.approx(data_range)
    for key in ("ssim", "psnr", "mse", "mae", "mask_ssim", "mask_psnr", "mask_mse", "mask_mae"):
        assert out[key] == pytest.approx(expected[key], rel=1e-9), key
    assert out["mse"] == pytest.approx(np.mean((n32 - v32) ** 2), rel=1e-9)
    assert out["ssim"] == pytest.approx(structural_similarity(v32, n32, data_range=data_range, **SKIMAGE_SSIM), abs=1e-8)


def test_cli_metrics_data_range_and_identical(tmp_path, capsys):
    vol, _ = _pair_3d()
    target = _write_nifti(tmp_path / "t.nii", vol)
    assert main(["metrics", "--pred", target, "--target", target, "--data-range", "1000"]) == 0
    out = json.loads(capsys.readouterr().out)  # Python's json reads the Infinity token
    assert out["psnr"] == math.inf and out["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert "mask_ssim" not in out and out["data_range"] == 1000.0


def test_cli_metrics_errors(tmp_path, capsys):
    vol, noisy = _pair_3d()
    target = _write_nifti(tmp_path / "target.nii.gz", vol)
    small = _write_nifti(tmp_path / "small.nii.gz", noisy[:10])
    assert main(["metrics", "--pred", small, "--target", target]) == 2
    err = capsys.readouterr().err.strip()
    assert "small.nii.gz" in err and "does not match" in err and len(err.splitlines()) == 1

    assert main(["metrics", "--pred", target, "--target", target, "--mask", small]) == 2
    assert "small.nii.gz" in capsys.readouterr().err

    flat = _write_nifti(tmp_path / "flat.nii.gz", np.full(vol.shape, 3.0))
    assert main(["metrics", "--pred", target, "--target", flat]) == 2
    assert "flat.nii.gz" in capsys.readouterr().err

    assert main(["metrics", "--pred", str(tmp_path / "missing.nii.gz"), "--target", target]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err

"""Haar DWT/IDWT against PyWavelets, layout, reconstruction, errors, autocast, autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import torch

import medsci.wavelets as wavelets
from medsci.wavelets import (
    SUBBANDS_2D,
    SUBBANDS_3D,
    bench_haar,
    haar_dwt2d,
    haar_dwt3d,
    haar_idwt2d,
    haar_idwt3d,
)

SHAPES_3D = [(10, 6, 4), (4, 6, 8), (2, 2, 2), (6, 12, 2)]


@pytest.fixture(params=[None, 7], ids=["whole", "tiny-chunks"])
def chunking(request, monkeypatch):
    """Run each test with the default CPU chunk size and with tiny chunks (many ragged chunks)."""
    if request.param is not None:
        monkeypatch.setattr(wavelets, "_CPU_CHUNK_ELEMENTS", request.param)


@pytest.mark.parametrize("shape", SHAPES_3D)
def test_dwt3d_matches_pywt_coefficients(shape, chunking):
    x = np.random.default_rng(1).standard_normal(shape)
    y = haar_dwt3d(torch.from_numpy(x)[None, None])
    assert y.shape == (1, 8, shape[0] // 2, shape[1] // 2, shape[2] // 2)
    assert y.dtype == torch.float64
    ref = pywt.dwtn(x, "haar")
    assert tuple(sorted(ref)) == SUBBANDS_3D  # pywt's key order is our channel order
    for k, name in enumerate(SUBBANDS_3D):
        np.testing.assert_allclose(y[0, k].numpy(), ref[name], rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("shape", SHAPES_3D)
def test_idwt3d_matches_pywt(shape, chunking):
    rng = np.random.default_rng(2)
    half = tuple(n // 2 for n in shape)
    coeffs = {name: rng.standard_normal(half) for name in SUBBANDS_3D}
    y = torch.from_numpy(np.stack([coeffs[name] for name in SUBBANDS_3D]))[None]
    x = haar_idwt3d(y)
    assert x.shape == (1, 1, *shape)
    np.testing.assert_allclose(x[0, 0].numpy(), pywt.idwtn(coeffs, "haar"), rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 8), (8, 4), (2, 2)])
def test_dwt2d_matches_pywt(shape, chunking):
    x = np.random.default_rng(3).standard_normal(shape)
    y = haar_dwt2d(torch.from_numpy(x)[None, None])[0].numpy()
    ref = pywt.dwtn(x, "haar")
    for k, name in enumerate(SUBBANDS_2D):
        np.testing.assert_allclose(y[k], ref[name], rtol=0, atol=1e-12, err_msg=name)
    # Same numbers through pywt.dwt2's naming: cH is the detail along the first axis ('da').
    c_a, (c_h, c_v, c_d) = pywt.dwt2(x, "haar")
    for k, ref_band in enumerate([c_a, c_v, c_h, c_d]):
        np.testing.assert_allclose(y[k], ref_band, rtol=0, atol=1e-12)
    back = haar_idwt2d(torch.from_numpy(y)[None])[0, 0].numpy()
    np.testing.assert_allclose(back, pywt.idwt2((c_a, (c_h, c_v, c_d)), "haar"), atol=1e-12)
    np.testing.assert_allclose(back, x, atol=1e-12)


def test_scaling_of_constant_block():
    # All-ones 2x2x2 block: low band = 8 / (2*sqrt(2)) = 2*sqrt(2), details 0 (the value-range caveat).
    y = haar_dwt3d(torch.ones(1, 1, 2, 2, 2, dtype=torch.float64))
    assert y[0, 0].item() == pytest.approx(2 * math.sqrt(2), abs=1e-12)
    assert torch.all(y[0, 1:] == 0)
    y2 = haar_dwt2d(-torch.ones(1, 1, 2, 2, dtype=torch.float64))
    assert y2[0, 0].item() == pytest.approx(-2.0, abs=1e-12)


def test_perfect_reconstruction_float32_and_energy(chunking):
    x = torch.randn(2, 3, 12, 10, 8, generator=torch.Generator().manual_seed(0))
    y = haar_dwt3d(x)
    assert y.dtype == torch.float32
    assert (haar_idwt3d(y) - x).abs().max().item() < 1e-6
    # Orthonormal: energy is preserved.
    assert y.pow(2).sum().item() == pytest.approx(x.pow(2).sum().item(), rel=1e-5)
    x2 = torch.randn(3, 2, 10, 14, generator=torch.Generator().manual_seed(1))
    assert (haar_idwt2d(haar_dwt2d(x2)) - x2).abs().max().item() < 1e-6


def test_batch_and_channel_layout(chunking):
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = haar_dwt3d(x)
    assert y.shape == (2, 24, 2, 3, 4)
    for b in range(2):
        for c in range(3):
            single = haar_dwt3d(x[b : b + 1, c : c + 1])[0]
            for k in range(8):
                assert torch.equal(y[b, c * 8 + k], single[k])
    x2 = torch.randn(2, 3, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y2 = haar_dwt2d(x2)
    for c in range(3):
        assert torch.equal(y2[1, c * 4 : c * 4 + 4], haar_dwt2d(x2[1:2, c : c + 1])[0])


def test_non_contiguous_input():
    x = torch.randn(1, 1, 8, 6, 4, dtype=torch.float64).transpose(2, 4)  # (1, 1, 4, 6, 8) strided
    ref = pywt.dwtn(x[0, 0].numpy(), "haar")
    y = haar_dwt3d(x)
    np.testing.assert_allclose(y[0, 3].numpy(), ref["add"], atol=1e-12)


@pytest.mark.parametrize(
    ("fn", "shape", "axis_text"),
    [
        (haar_dwt3d, (1, 1, 4, 5, 6), "axis 3 (H) has odd size 5"),
        (haar_dwt3d, (1, 1, 7, 4, 4), "axis 2 (D) has odd size 7"),
        (haar_dwt2d, (1, 1, 4, 3), "axis 3 (W) has odd size 3"),
    ],
)
def test_odd_shape_raises(fn, shape, axis_text):
    with pytest.raises(ValueError, match=axis_text.replace("(", r"\(").replace(")", r"\)")):
        fn(torch.zeros(shape))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="5-D"):
        haar_dwt3d(torch.zeros(1, 4, 4, 4))
    with pytest.raises(ValueError, match="multiple of 8"):
        haar_idwt3d(torch.zeros(1, 6, 2, 2, 2))
    with pytest.raises(ValueError, match="floating point"):
        haar_dwt2d(torch.zeros(1, 1, 4, 4, dtype=torch.int64))


def test_bf16_autocast_cpu_roughly_reconstructs():
    x = torch.rand(1, 2, 8, 8, 8, generator=torch.Generator().manual_seed(6)) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xb = x.to(torch.bfloat16)
        y = haar_dwt3d(xb)
        back = haar_idwt3d(y)
    assert y.dtype == torch.bfloat16 and back.dtype == torch.bfloat16
    ref = haar_dwt3d(x)
    assert (y.float() - ref).abs().max().item() < 0.05  # bf16 has ~3 significant digits
    assert (back.float() - x).abs().max().item() < 0.05
    # float32 input under autocast stays float32 (adds/subs are not autocast ops).
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert haar_dwt3d(x).dtype == torch.float32


def test_autograd_path_matches_and_gradient_is_transpose():
    x = torch.randn(1, 2, 4, 4, 6, dtype=torch.float64, requires_grad=True)
    y = haar_dwt3d(x)
    assert torch.allclose(y.detach(), haar_dwt3d(x.detach()), atol=1e-14)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    # Orthonormal transform: the gradient of <W x, w> is W^T w = idwt(w).
    assert torch.allclose(x.grad, haar_idwt3d(w), atol=1e-12)
    assert torch.autograd.gradcheck(haar_idwt2d, (torch.randn(1, 4, 2, 3, dtype=torch.float64, requires_grad=True),))


def test_bench_haar_small():
    result = bench_haar(shape=(16, 16, 8), repeats=2)
    assert set(result) == {"shape", "dwt_idwt_s", "copy_s", "ratio"}
    assert result["shape"] == (16, 16, 8)
    assert result["dwt_idwt_s"] > 0 and result["copy_s"] > 0
    assert result["ratio"] == pytest.approx(result["dwt_idwt_s"] / result["copy_s"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_reconstructs():
    x = torch.randn(2, 3, 8, 12, 6, generator=torch.Generator().manual_seed(8))
    y_gpu = haar_dwt3d(x.cuda())
    assert y_gpu.is_cuda
    assert torch.allclose(y_gpu.cpu(), haar_dwt3d(x), atol=1e-6)
    assert (haar_idwt3d(y_gpu).cpu() - x).abs().max().item() < 1e-6
    with torch.autocast("cuda", dtype=torch.bfloat16):
        back = haar_idwt3d(haar_dwt3d(x.cuda().to(torch.bfloat16)))
    assert (back.float().cpu() - x).abs().max().item() < 0.1
    x2 = torch.randn(2, 2, 10, 6, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(haar_dwt2d(x2.cuda()).cpu(), haar_dwt2d(x2), atol=1e-6)

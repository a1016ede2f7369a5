"""Haar DWT/IDWT against PyWavelets, layout, reconstruction, errors, autocast, autograd, fast vs reference path."""

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
    result = bench_haar(shape=(16, 16, 8), repeats=3, warmup=1)
    assert set(result) == {
        "shape", "device", "threads", "repeats", "dwt_s", "idwt_s", "copy_s", "ratio", "target", "meets_target"
    }
    assert result["shape"] == (16, 16, 8) and result["device"] == "cpu" and result["repeats"] == 3
    assert result["threads"] == torch.get_num_threads()
    assert result["dwt_s"] > 0 and result["idwt_s"] > 0 and result["copy_s"] > 0
    assert result["ratio"] == pytest.approx((result["dwt_s"] + result["idwt_s"]) / result["copy_s"])
    assert result["target"] == 3.0 and result["meets_target"] == (result["ratio"] <= 3.0)
    with pytest.raises(ValueError, match="repeats"):
        bench_haar(shape=(4, 4, 4), repeats=0)


# --- float32 CPU fast path (int64-word de-interleave + Hadamard matrix product) vs the reference butterflies ---

FAST_CASES = [
    (3, (1, 1, 20, 12, 10)),  # several slabs: chunked by slab for small chunk sizes
    (3, (3, 2, 4, 6, 8)),  # several volumes: chunked by whole volumes for larger chunk sizes
    (3, (5, 1, 2, 2, 2)),  # the smallest blocks, one slab per volume
    (3, (2, 1, 6, 2, 14)),
    (2, (2, 3, 10, 14)),
    (2, (1, 1, 2, 2)),
    (2, (1, 2, 30, 4)),
]


@pytest.mark.parametrize("chunk", [1, 7, 100, 1000, 1 << 20])
@pytest.mark.parametrize(("ndim", "shape"), FAST_CASES)
def test_fast_path_matches_reference_and_inverts(ndim, shape, chunk):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(11)) * 2 - 1
    y = wavelets._fast_dwt(x, ndim, chunk)
    assert y.dtype == torch.float32 and y.shape == (shape[0], shape[1] * 2**ndim, *(n // 2 for n in shape[2:]))
    assert torch.allclose(y, wavelets._reference_dwt(x, ndim), rtol=0, atol=1e-6)
    assert torch.allclose(y.double(), wavelets._reference_dwt(x.double(), ndim), rtol=0, atol=1e-6)
    back = wavelets._fast_idwt(y, ndim, chunk)
    assert torch.allclose(back, wavelets._reference_idwt(y, ndim), rtol=0, atol=1e-6)
    assert (back - x).abs().max().item() < 1e-6


@pytest.mark.parametrize("shape", [(6, 8, 10), (4, 6, 2)])
def test_fast_path_float32_matches_pywt(shape, chunking):
    x = np.random.default_rng(12).uniform(-1, 1, shape)
    xt = torch.from_numpy(x).float()[None, None]
    assert wavelets._use_fast_path(xt) == (xt.numel() >= max(1, wavelets._CPU_CHUNK_ELEMENTS // 2))
    y = haar_dwt3d(xt)
    ref = pywt.dwtn(x, "haar")
    for k, name in enumerate(SUBBANDS_3D):
        np.testing.assert_allclose(y[0, k].double().numpy(), ref[name], rtol=0, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(haar_idwt3d(y)[0, 0].double().numpy(), x, rtol=0, atol=2e-6)
    x2 = x[0]
    y2 = haar_dwt2d(torch.from_numpy(x2).float()[None, None])
    for k, name in enumerate(SUBBANDS_2D):
        np.testing.assert_allclose(y2[0, k].double().numpy(), pywt.dwtn(x2, "haar")[name], rtol=0, atol=2e-6)


def test_public_functions_take_the_fast_path_for_float32_cpu(monkeypatch):
    calls = []
    fast_dwt, fast_idwt = wavelets._fast_dwt, wavelets._fast_idwt
    monkeypatch.setattr(wavelets, "_fast_dwt", lambda *a: calls.append("dwt") or fast_dwt(*a))
    monkeypatch.setattr(wavelets, "_fast_idwt", lambda *a: calls.append("idwt") or fast_idwt(*a))
    x = torch.randn(1, 2, 32, 32, 64, generator=torch.Generator().manual_seed(13))  # one chunk's worth
    haar_idwt3d(haar_dwt3d(x))
    haar_idwt2d(haar_dwt2d(x[0]))
    assert calls == ["dwt", "idwt", "dwt", "idwt"]
    calls.clear()
    haar_dwt3d(x.double())  # other dtypes, small inputs and autograd use the reference butterflies
    haar_dwt3d(x[:, :, :4, :4, :4])
    haar_dwt3d(x.clone().requires_grad_())
    assert calls == []


def test_fast_path_agrees_with_autograd_path():
    x = torch.randn(2, 1, 32, 32, 64, generator=torch.Generator().manual_seed(14))
    assert wavelets._use_fast_path(x)
    xg = x.clone().requires_grad_()
    yg = haar_dwt3d(xg)
    y = haar_dwt3d(x)
    assert yg.requires_grad and not y.requires_grad
    assert torch.allclose(y, yg.detach(), rtol=0, atol=1e-6)
    yr = y.clone().requires_grad_()
    assert torch.allclose(haar_idwt3d(y), haar_idwt3d(yr).detach(), rtol=0, atol=1e-6)
    x2 = x[:, 0]
    assert torch.allclose(haar_dwt2d(x2), haar_dwt2d(x2.clone().requires_grad_()).detach(), rtol=0, atol=1e-6)


def test_fast_path_odd_storage_offset_and_non_contiguous():
    base = torch.randn(1 + 2 * 16 * 12 * 10, generator=torch.Generator().manual_seed(15))
    x = base[1:].view(2, 1, 16, 12, 10)  # contiguous, but starts 4 bytes into its storage
    assert x.storage_offset() == 1
    ref = wavelets._reference_dwt(x, 3)
    for chunk in (1, 1 << 20):
        assert torch.allclose(wavelets._fast_dwt(x, 3, chunk), ref, rtol=0, atol=1e-6)
    xt = x.transpose(2, 4)  # non-contiguous (2, 1, 10, 12, 16)
    assert torch.allclose(wavelets._fast_dwt(xt, 3, 7), wavelets._reference_dwt(xt, 3), rtol=0, atol=1e-6)
    yt = wavelets._fast_dwt(x, 3, 7).transpose(3, 4)  # non-contiguous subbands
    assert torch.allclose(wavelets._fast_idwt(yt, 3, 7), wavelets._reference_idwt(yt, 3), rtol=0, atol=1e-6)


def test_fast_path_under_bf16_autocast_keeps_float32():
    x = torch.randn(1, 1, 32, 32, 64, generator=torch.Generator().manual_seed(16))
    ref = haar_dwt3d(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = haar_dwt3d(x)  # the matrix product must not be autocast to bf16
        back = haar_idwt3d(y)
    assert y.dtype == torch.float32 and back.dtype == torch.float32
    assert torch.allclose(y, ref, rtol=0, atol=1e-6)
    assert (back - x).abs().max().item() < 1e-6


def test_fast_path_guards(monkeypatch):
    x = torch.randn(1, 1, 32, 32, 64, generator=torch.Generator().manual_seed(17))
    ref = wavelets._reference_dwt(x, 3)
    assert wavelets._fp32_matmul_is_ieee() and wavelets._fast_path_self_check()
    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    if matmul is not None and hasattr(matmul, "fp32_precision"):
        saved = matmul.fp32_precision
        matmul.fp32_precision = "bf16"  # the user allowed bf16 float32 matmuls
        try:
            assert not wavelets._use_fast_path(x)
            assert torch.equal(haar_dwt3d(x), ref)
        finally:
            matmul.fp32_precision = saved
    monkeypatch.setattr(wavelets, "_FAST_PATH_OK", False)  # self-check failed on this machine
    assert not wavelets._use_fast_path(x)
    assert torch.equal(haar_dwt3d(x), ref)
    monkeypatch.setattr(wavelets, "_FAST_PATH_OK", None)  # the check itself runs and passes here
    assert wavelets._fast_path_self_check() and wavelets._FAST_PATH_OK is True


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

"""One-level orthonormal Haar wavelet transform (2D and 3D) in torch.

The transforms are batched, run on any device, and compute in the input's dtype (also under
``torch.autocast``: they only use adds, subtracts and one scalar multiply, which autocast leaves alone).
No transform matrices are built: the input is viewed as ``(..., n, 2, ...)`` along every spatial axis and
the pairs are combined with a butterfly, one axis at a time, into preallocated buffers. They are called at
every diffusion sampling step: on CPU the work is cache-blocked in slabs along the first spatial axis
(dwt + idwt of a 224x224x160 float32 volume: ~10 ms, 6-8x a ``clone()`` on a busy 2-core machine; the
strided pairs along W cost the most). :func:`bench_haar` measures it.

Layout
    ``haar_dwt3d``: ``(B, C, D, H, W) -> (B, 8*C, D/2, H/2, W/2)``. The 8 subbands of input channel ``c``
    are output channels ``8*c .. 8*c+7`` in PyWavelets ``dwtn`` key order :data:`SUBBANDS_3D`
    (``'aaa', 'aad', 'ada', 'add', 'daa', 'dad', 'dda', 'ddd'``; the first letter is the first spatial
    axis D, ``a`` = low pass, ``d`` = high pass), i.e. subband index ``4*i + 2*j + k`` with ``i, j, k`` the
    band (0 = a, 1 = d) along D, H, W. ``haar_dwt2d``: ``(B, C, H, W) -> (B, 4*C, H/2, W/2)`` in order
    :data:`SUBBANDS_2D` (``'aa', 'ad', 'da', 'dd'``, the ``pywt.dwtn`` keys; in ``pywt.dwt2``'s
    ``cA, (cH, cV, cD)`` naming that is ``cA, cV, cH, cD``: ``cH`` is the detail along the first axis).

Scaling
    Exactly PyWavelets' ``'haar'`` (orthonormal): along one axis ``a = (x0 + x1)/sqrt(2)`` and
    ``d = (x0 - x1)/sqrt(2)`` for each pair of neighbours ``(x0, x1)``. In 3D the low band ``aaa`` is the
    sum of the 2x2x2 block divided by ``2*sqrt(2)`` (in 2D: the 2x2 sum divided by 2). The transform
    preserves energy and ``haar_idwt*`` is its exact inverse.

Value range
    For data in ``[-1, 1]`` the 3D low band reaches ``±2*sqrt(2)`` (about ±2.83; 2D: ±2) and detail bands
    ``±2*sqrt(2)`` too. A diffusion scheduler working in the wavelet domain must therefore NOT clip its
    ``x0`` prediction to ``[-1, 1]`` (clip to ``±2*sqrt(2)``, or clip after the inverse transform).

Spatial sizes must be even; an odd size raises ``ValueError`` naming the axis (pad or crop first).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import torch

__all__ = [
    "SUBBANDS_2D",
    "SUBBANDS_3D",
    "bench_haar",
    "haar_dwt2d",
    "haar_dwt3d",
    "haar_idwt2d",
    "haar_idwt3d",
]

SUBBANDS_3D: tuple[str, ...] = ("aaa", "aad", "ada", "add", "daa", "dad", "dda", "ddd")
SUBBANDS_2D: tuple[str, ...] = ("aa", "ad", "da", "dd")

_AXIS_NAMES = {2: ("H", "W"), 3: ("D", "H", "W")}


def _check_input(x: torch.Tensor, ndim: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim + 2:
        layout = "(B, C, D, H, W)" if ndim == 3 else "(B, C, H, W)"
        raise ValueError(f"{name}: expected a {ndim + 2}-D tensor {layout}, got shape {tuple(x.shape)}")
    if not (x.is_floating_point() or x.is_complex()):
        raise ValueError(f"{name}: expected a floating point tensor, got dtype {x.dtype}")


def _state_shape(bc: int, half: tuple[int, ...], i: int) -> tuple[int, ...]:
    """Shape of the butterfly state after ``i`` axes are transformed.

    ``(BC, 2 x i subband axes, n_j for transformed axes j < i, (n_j, 2) for the others)``. In state ``i``
    the pair axis of spatial axis ``i`` sits at position ``2*i + 2``; in state ``i + 1`` its subband axis
    sits at position ``1 + i``.
    """
    shape: list[int] = [bc] + [2] * i
    for j, n in enumerate(half):
        shape += [n] if j < i else [n, 2]
    return tuple(shape)


def _butterfly(src: torch.Tensor, src_axis: int, dst: torch.Tensor, dst_axis: int) -> None:
    """dst[.., 0, ..] = a + b and dst[.., 1, ..] = a - b where (a, b) = src split along src_axis."""
    a, b = src.select(src_axis, 0), src.select(src_axis, 1)
    torch.add(a, b, out=dst.select(dst_axis, 0))
    torch.sub(a, b, out=dst.select(dst_axis, 1))


def _butterfly_scaled(src: torch.Tensor, src_axis: int, dst: torch.Tensor, dst_axis: int, scale: float) -> None:
    """Like :func:`_butterfly` with both outputs times ``scale``, in 3 half-size ops instead of 4.

    ``s = scale*(a + b)`` then ``d = s - 2*scale*b = scale*(a - b)`` (one fused add with alpha).
    """
    a, b = src.select(src_axis, 0), src.select(src_axis, 1)
    s = dst.select(dst_axis, 0)
    torch.add(a, b, out=s)
    s.mul_(scale)
    torch.add(s, b, alpha=-2.0 * scale, out=dst.select(dst_axis, 1))


def _needs_autograd(x: torch.Tensor) -> bool:
    # ``out=`` ops do not support autograd; fall back to (slightly slower) out-of-place ops then.
    return x.requires_grad and torch.is_grad_enabled()


def _butterfly_graph(src: torch.Tensor, src_axis: int, dst_axis: int) -> torch.Tensor:
    a, b = src.select(src_axis, 0), src.select(src_axis, 1)
    return torch.stack((a + b, a - b), dim=dst_axis)


# Elements of input processed per chunk on CPU: the intermediate butterfly states of one chunk stay in
# cache, so only the input read and the output write go to memory (about 2x faster than whole-tensor
# stages). On GPUs the whole tensor is one chunk: bandwidth is plentiful and launches are not.
_CPU_CHUNK_ELEMENTS = 1 << 19


def _run_butterflies(src: torch.Tensor, dst: torch.Tensor, bc: int, half: tuple[int, ...], forward: bool) -> None:
    """Apply all axis butterflies from state ``src`` into state ``dst`` (both full-size views), chunked.

    Chunks are slices along the batch*channel axis and the first spatial half-axis ``n1``; in state
    ``i`` the ``n1`` axis sits at position ``1 + i``, so chunks of every state are simple narrows.
    """
    ndim = len(half)
    if src.numel() == 0:
        return
    scale = 1.0 / math.sqrt(2.0) ** ndim  # 1/sqrt(2) per axis, folded into the last stage
    i_src, i_dst = (0, ndim) if forward else (ndim, 0)
    stages = list(range(ndim)) if forward else list(reversed(range(ndim)))
    per_sample = src.numel() // bc
    per_slab = per_sample // half[0]  # elements of one pair of first-axis planes
    if src.device.type != "cpu" or per_sample * bc <= _CPU_CHUNK_ELEMENTS:
        b_step, k_step = bc, half[0]
    elif per_sample <= _CPU_CHUNK_ELEMENTS:
        b_step, k_step = max(1, _CPU_CHUNK_ELEMENTS // per_sample), half[0]
    else:
        b_step, k_step = 1, max(1, _CPU_CHUNK_ELEMENTS // per_slab)
    n_scratch = min(ndim - 1, 2)
    scratch = [
        torch.empty(b_step * k_step * per_slab, dtype=src.dtype, device=src.device) for _ in range(n_scratch)
    ]
    for b0 in range(0, bc, b_step):
        nb = min(b_step, bc - b0)
        for k0 in range(0, half[0], k_step):
            m = min(k_step, half[0] - k0)
            chunk_half = (m, *half[1:])
            cur = src.narrow(0, b0, nb).narrow(1 + i_src, k0, m)
            for step, i in enumerate(stages):
                if step == ndim - 1:
                    out = dst.narrow(0, b0, nb).narrow(1 + i_dst, k0, m)
                else:
                    i_next = i + 1 if forward else i
                    out = scratch[step % 2][: nb * m * per_slab].view(_state_shape(nb, chunk_half, i_next))
                src_axis, dst_axis = (2 * i + 2, 1 + i) if forward else (1 + i, 2 * i + 2)
                if step == ndim - 1:
                    _butterfly_scaled(cur, src_axis, out, dst_axis, scale)
                else:
                    _butterfly(cur, src_axis, out, dst_axis)
                cur = out


def _check_even(x: torch.Tensor, ndim: int, name: str) -> None:
    spatial = tuple(x.shape[2:])
    for axis, (label, n) in enumerate(zip(_AXIS_NAMES[ndim], spatial)):
        if n % 2:
            raise ValueError(
                f"{name}: spatial axis {axis + 2} ({label}) has odd size {n}; the Haar transform needs even "
                f"sizes (got spatial shape {spatial}), pad or crop first"
            )


def _dwt(x: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    _check_input(x, ndim, name)
    _check_even(x, ndim, name)
    b, c, *spatial = x.shape
    half = tuple(n // 2 for n in spatial)
    bc = b * c
    state = x.reshape(_state_shape(bc, half, 0))
    if _needs_autograd(x):
        for i in range(ndim):
            state = _butterfly_graph(state, 2 * i + 2, 1 + i)
        return (state * (1.0 / math.sqrt(2.0) ** ndim)).reshape(b, c * 2**ndim, *half)
    out = torch.empty((bc, *([2] * ndim), *half), dtype=x.dtype, device=x.device)
    _run_butterflies(state, out, bc, half, forward=True)
    return out.view(b, c * 2**ndim, *half)


def _idwt(y: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    _check_input(y, ndim, name)
    b, c_all, *half_list = y.shape
    nb = 2**ndim
    if c_all % nb:
        raise ValueError(f"{name}: channel count {c_all} is not a multiple of {nb} subbands")
    half = tuple(half_list)
    c = c_all // nb
    bc = b * c
    state = y.reshape(_state_shape(bc, half, ndim))
    spatial = tuple(2 * n for n in half)
    if _needs_autograd(y):
        # The orthonormal Haar 2x2 matrix is symmetric and its own inverse: undo the axes in reverse.
        for i in reversed(range(ndim)):
            state = _butterfly_graph(state, 1 + i, 2 * i + 2)
        return (state * (1.0 / math.sqrt(2.0) ** ndim)).reshape(b, c, *spatial)
    out = torch.empty((b, c, *spatial), dtype=y.dtype, device=y.device)
    _run_butterflies(state, out.view(_state_shape(bc, half, 0)), bc, half, forward=False)
    return out


def haar_dwt3d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, 8C, D/2, H/2, W/2); subbands of channel c at 8c..8c+7 in SUBBANDS_3D order."""
    return _dwt(x, 3, "haar_dwt3d")


def haar_idwt3d(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt3d`: (B, 8C, d, h, w) -> (B, C, 2d, 2h, 2w)."""
    return _idwt(y, 3, "haar_idwt3d")


def haar_dwt2d(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2); subbands of channel c at 4c..4c+3 in SUBBANDS_2D order."""
    return _dwt(x, 2, "haar_dwt2d")


def haar_idwt2d(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_dwt2d`: (B, 4C, h, w) -> (B, C, 2h, 2w)."""
    return _idwt(y, 2, "haar_idwt2d")


def bench_haar(
    shape: tuple[int, int, int] = (224, 224, 160), device: str = "cpu", repeats: int = 5
) -> dict[str, Any]:
    """Median wall time of ``haar_idwt3d(haar_dwt3d(x))`` vs ``x.clone()`` on a (1, 1, *shape) float32 tensor.

    Returns ``{"shape", "dwt_idwt_s", "copy_s", "ratio"}`` with ``ratio = dwt_idwt_s / copy_s``.
    """
    if repeats < 1:
        raise ValueError(f"bench_haar: repeats must be >= 1, got {repeats}")
    dev = torch.device(device)
    x = torch.randn((1, 1, *shape), generator=torch.Generator().manual_seed(0)).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn: Any) -> float:
        fn()  # warm-up: allocator, kernels
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    with torch.no_grad():
        dwt_idwt_s = timed(lambda: haar_idwt3d(haar_dwt3d(x)))
        copy_s = timed(lambda: x.clone())
    return {
        "shape": tuple(int(n) for n in shape),
        "dwt_idwt_s": dwt_idwt_s,
        "copy_s": copy_s,
        "ratio": dwt_idwt_s / copy_s if copy_s > 0 else float("inf"),
    }

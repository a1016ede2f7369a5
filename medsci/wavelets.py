"""One-level orthonormal Haar wavelet transform (2D and 3D) in torch.

The transforms are batched, run on any device and compute in the input's dtype (also under ``torch.autocast``,
which they switch off around their one matrix product). They are called at every diffusion sampling step, so
there are three code paths, equal up to float rounding (tested against each other and PyWavelets):

* **float32 on CPU**, no autograd, inputs of at least half a chunk (the common case): one pass per chunk of
  slabs (a slab: one pair of planes along the first spatial axis of one channel) that stays in the core's cache.
  The pairs along the last axis are de-interleaved without a strided gather: an int64 view of the storage holds
  each pair as one word whose low 32 bits are its first value (little-endian), so an int64 -> int32 conversion
  copies the first values; a second int64 view 4 bytes further on does the same for the second values. All
  ``2**n`` butterflies and the scaling are then one ``(2**n x 2**n) @ (2**n x columns)`` matrix product (a
  symmetric Hadamard matrix, its own inverse) written straight into the subbands. The inverse multiplies by the
  same matrix and interleaves the pairs with ``torch.complex`` into a complex64 view of the output. Used on
  little-endian machines whose float32 matmuls are IEEE (not when ``torch.backends.mkldnn.matmul.fp32_precision``
  allows bf16/tf32), after a one-time self-check against the reference path.
* **other dtypes and devices** (float64, bfloat16, CUDA, ...) and small inputs, no autograd: the reference path.
  The input is viewed as ``(..., n, 2, ...)`` along every spatial axis and the pairs are combined with a
  butterfly, one axis at a time, into preallocated buffers (adds, subtracts and one scalar multiply),
  cache-blocked on CPU.
* **autograd** (an input that requires grad, grad mode on): the same butterflies out of place.

Speed (:func:`bench_haar`, ``medsci bench --items haar``): dwt + idwt of a 224x224x160 float32 volume costs a few
copies of it (about 4.4-5.3x ``x.clone()``; target 3x, not met). Figures: docs/measurements.md#haar-transform-speed

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
import sys
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


# Elements of input processed per chunk on CPU: the intermediate states of one chunk stay in the core's cache,
# so only the input read and the output write go to memory. 512 KiB of float32; for a 224x224x160 volume the
# fast path then takes one slab (a pair of 224x160 planes) per chunk and intra-op thread, measured best (4x
# larger chunks: about 15% slower). On GPUs the whole tensor is one chunk: bandwidth is plentiful and launches
# are not.
_CPU_CHUNK_ELEMENTS = 1 << 17


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


# ---------------------------------------------------------------------------------------------------------------
# float32 CPU fast path: int64-word de-interleave + one Hadamard matrix product per cache-sized chunk of slabs.


def _fp32_matmul_is_ieee() -> bool:
    """True when float32 CPU matrix products are plain float32 (the user has not allowed bf16/tf32 shortcuts)."""
    try:
        return torch.backends.mkldnn.matmul.fp32_precision in ("none", "ieee")
    except AttributeError:  # torch without the per-backend precision API
        try:
            return torch.get_float32_matmul_precision() == "highest"
        except RuntimeError:
            return False


_HADAMARD: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}


def _hadamard(ndim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The ``2**ndim`` Haar butterflies as one matrix: ``H[o, q] = (-1)**popcount(o & q) / sqrt(2)**ndim``.

    ``o`` is the subband index (``4*i + 2*j + k`` in 3D) and ``q`` the position in the ``2 x ... x 2`` block in the
    same bit order, so ``H`` is symmetric and orthonormal: it is its own inverse. Cached (read-only).
    """
    key = (ndim, dtype, device)
    if key not in _HADAMARD:
        n = 2**ndim
        sign = [[(-1.0) ** bin(o & q).count("1") for q in range(n)] for o in range(n)]
        matrix = torch.tensor(sign, dtype=torch.float64) / math.sqrt(2.0) ** ndim
        _HADAMARD[key] = matrix.to(dtype=dtype, device=device)
    return _HADAMARD[key]


def _int64_words(x: torch.Tensor, byte_offset: int, count: int) -> torch.Tensor:
    """``count`` int64 words over the storage of contiguous float32 ``x``, starting ``byte_offset`` bytes into it.

    Word ``k`` holds the float32 values ``2k`` and ``2k + 1`` (offset 0) or ``2k + 1`` and ``2k + 2`` (offset 4);
    on a little-endian machine its low 32 bits are the first of them. Offset 4 is not 8-byte aligned, which
    ``Tensor.view(dtype)`` refuses, hence the storage slice.
    """
    start = x.storage_offset() * x.element_size() + byte_offset
    words = x.untyped_storage()[start : start + 8 * count]
    return torch.empty(0, dtype=torch.int64, device=x.device).set_(words, 0, (count,), (1,))


def _slab_order(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """View a ``(nv, 2, ..., 2, m, n2, ..)`` block (pair axes of all but the last spatial axis, slabs, then the
    half sizes of all but the first) in input order ``(nv, m, 2, n2, 2, .., n_last)``."""
    perm = [0, ndim]
    for q in range(ndim - 1):
        perm += [1 + q, ndim + 1 + q]
    return t.permute(perm)


def _fast_geometry(shape: tuple[int, ...], ndim: int) -> tuple[int, list[int], int, tuple[int, ...]]:
    """``(volumes, half sizes, subband elements per slab, one slab as int64 words (2, n2, 2, .., n_last))``."""
    vols = shape[0] * shape[1]
    half = list(shape[2:])
    p = math.prod(half[1:])
    pairs: tuple[int, ...] = (2,)
    for n in half[1:-1]:
        pairs += (n, 2)
    return vols, half, p, pairs + (half[-1],)


def _fast_plan(vols: int, n1: int, slab: int, chunk: int | None) -> tuple[bool, list[int]]:
    """Chunk sizes: ``(True, slabs per chunk, volume after volume)`` for large volumes, else ``(False, volumes per
    chunk)``; a chunk holds about ``chunk`` input elements, by default ``_CPU_CHUNK_ELEMENTS`` per intra-op thread
    (each thread works on its share in its own core's cache; fewer parallel regions on a busy machine)."""
    if chunk is None:
        chunk = _CPU_CHUNK_ELEMENTS * max(1, torch.get_num_threads())
    per = max(1, chunk // slab)
    if per < n1:
        return True, ([per] * (n1 // per) + ([n1 % per] if n1 % per else [])) * vols
    step = per // n1
    return False, [min(step, vols - v) for v in range(0, vols, step)]


def _fast_block_views(
    buf: torch.Tensor, ndim: int, half: list[int], nv: int, m: int, by_slab: bool, as_words: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The matrix ``(nv, 2**ndim, m*p)`` over ``buf`` and its first/second values of each last-axis pair, viewed in
    input order ``(nv, m, 2, n2, .., n_last)`` (without ``nv`` when chunking by slab); ``as_words``: as int32."""
    bands, p = 2**ndim, math.prod(half[1:])
    mat = buf[: nv * bands * m * p].view(nv, bands, m * p)
    block = (mat.view(torch.int32) if as_words else mat).view(nv, *(2,) * ndim, m, *half[1:])
    first, second = (_slab_order(block.select(ndim, k), ndim) for k in (0, 1))
    return (mat[0], first[0], second[0]) if by_slab else (mat, first, second)


def _fast_dwt(x: torch.Tensor, ndim: int, chunk: int | None = None) -> torch.Tensor:
    x = x.contiguous()
    b, c = x.shape[:2]
    vols, half, p, pairs = _fast_geometry((b, c, *(n // 2 for n in x.shape[2:])), ndim)
    n1, bands = half[0], 2**ndim
    words = bands * p // 2  # int64 words (pairs along the last axis) per slab
    out = torch.empty((vols, bands, n1 * p), dtype=x.dtype, device=x.device)
    hmat = _hadamard(ndim, x.dtype, x.device)
    by_slab, sizes = _fast_plan(vols, n1, bands * p, chunk)
    # int64 words whose low 32 bits are the first (lo) / second (hi) value of each pair along the last axis
    lo = _int64_words(x, 0, x.numel() // 2).view(vols, n1, *pairs)
    hi = _int64_words(x, 4, x.numel() // 2 - 1)
    cut = sizes[:-1] + [sizes[-1] - 1]  # hi covers every chunk but the last in full
    if by_slab:
        lo_c = lo.view(vols * n1, *pairs).split(sizes)
        hi_c = hi[: (vols * n1 - 1) * words].view(vols * n1 - 1, *pairs).split(cut)
        per_vol = sizes[: len(sizes) // vols]
        out_c = [o for v in range(vols) for o in out[v].split([m * p for m in per_vol], dim=1)]
    else:
        lo_c = lo.split(sizes)
        hi_c = hi[: (vols - 1) * n1 * words].view(vols - 1, n1, *pairs).split(cut)
        out_c = out.split(sizes)
    buf = torch.empty(max(sizes) * (1 if by_slab else n1) * bands * p, dtype=x.dtype, device=x.device)
    views: dict[int, tuple[torch.Tensor, ...]] = {}
    last = len(sizes) - 1
    for k, (size, src_lo, src_hi, dst) in enumerate(zip(sizes, lo_c, hi_c, out_c)):
        nv, m = (1, size) if by_slab else (size, n1)
        if size not in views:
            views[size] = _fast_block_views(buf, ndim, half, nv, m, by_slab, as_words=True)
        mat, first, second = views[size]
        first.copy_(src_lo)  # int64 -> int32 keeps the low word: the first value of each pair
        if k < last:
            second.copy_(src_hi)
        else:  # the very last pair's hi word would reach past the storage: copy its chunk's second values strided
            pairs_in = x.view(-1, *pairs, 2) if by_slab else x.view(vols, n1, *pairs, 2)
            _fast_block_views(buf, ndim, half, nv, m, by_slab, as_words=False)[2].copy_(pairs_in[-size:, ..., 1])
        if by_slab:
            torch.mm(hmat, mat, out=dst)
        else:
            torch.bmm(hmat.expand(size, bands, bands), mat, out=dst)
    return out.view(b, c * bands, *half)


def _fast_idwt(y: torch.Tensor, ndim: int, chunk: int | None = None) -> torch.Tensor:
    y = y.contiguous()
    b, bands = y.shape[0], 2**ndim
    c = y.shape[1] // bands
    vols, half, p, pairs = _fast_geometry((b, c, *y.shape[2:]), ndim)
    n1 = half[0]
    x = torch.empty((b, c, *(2 * n for n in half)), dtype=y.dtype, device=y.device)
    pairs_out = torch.view_as_complex(x.view(vols, n1, *pairs, 2))  # (x0, x1) pairs as complex numbers
    src = y.view(vols, bands, n1 * p)
    hmat = _hadamard(ndim, y.dtype, y.device)
    by_slab, sizes = _fast_plan(vols, n1, bands * p, chunk)
    if by_slab:
        per_vol = sizes[: len(sizes) // vols]
        src_c = [s for v in range(vols) for s in src[v].split([m * p for m in per_vol], dim=1)]
        out_c = pairs_out.view(vols * n1, *pairs).split(sizes)
    else:
        src_c, out_c = src.split(sizes), pairs_out.split(sizes)
    buf = torch.empty(max(sizes) * (1 if by_slab else n1) * bands * p, dtype=y.dtype, device=y.device)
    views: dict[int, tuple[torch.Tensor, ...]] = {}
    for size, s, dst in zip(sizes, src_c, out_c):
        if size not in views:
            views[size] = _fast_block_views(buf, ndim, half, *((1, size) if by_slab else (size, n1)), by_slab, False)
        mat, first, second = views[size]
        if by_slab:
            torch.mm(hmat, s, out=mat)
        else:
            torch.bmm(hmat.expand(size, bands, bands), s, out=mat)
        torch.complex(first, second, out=dst)
    return x


_FAST_PATH_OK: bool | None = None  # result of the one-time self-check


def _fast_path_self_check() -> bool:
    """Run the fast path once on small inputs (several chunks, both word views) against the reference path."""
    global _FAST_PATH_OK
    if _FAST_PATH_OK is None:
        ok = False
        try:
            gen = torch.Generator().manual_seed(0)
            with torch.no_grad():
                # by slab (3D, 2D) and by whole volumes (3D), several chunks each
                for ndim, shape, chunk in ((3, (2, 1, 4, 4, 6), 1), (3, (3, 1, 2, 4, 2), 16), (2, (1, 2, 6, 4), 1)):
                    x = torch.randn(shape, generator=gen)
                    y = _fast_dwt(x, ndim, chunk)
                    ok = bool(torch.allclose(y, _reference_dwt(x, ndim), rtol=0, atol=1e-5)) and bool(
                        torch.allclose(_fast_idwt(y, ndim, chunk), x, rtol=0, atol=1e-5)
                    )
                    if not ok:
                        break
        except Exception:  # noqa: BLE001  (any failure just means: use the reference path)
            ok = False
        _FAST_PATH_OK = ok
    return _FAST_PATH_OK


def _use_fast_path(t: torch.Tensor) -> bool:
    # Below half a chunk the reference path's smaller setup cost wins (both take ~0.1-0.3 ms there).
    return (
        t.device.type == "cpu"
        and t.dtype == torch.float32
        and t.numel() >= max(1, _CPU_CHUNK_ELEMENTS // 2)
        and sys.byteorder == "little"
        and _fp32_matmul_is_ieee()
        and _fast_path_self_check()
    )


def _check_even(x: torch.Tensor, ndim: int, name: str) -> None:
    spatial = tuple(x.shape[2:])
    for axis, (label, n) in enumerate(zip(_AXIS_NAMES[ndim], spatial)):
        if n % 2:
            raise ValueError(
                f"{name}: spatial axis {axis + 2} ({label}) has odd size {n}; the Haar transform needs even "
                f"sizes (got spatial shape {spatial}), pad or crop first"
            )


def _reference_dwt(x: torch.Tensor, ndim: int) -> torch.Tensor:
    b, c, *spatial = x.shape
    half = tuple(n // 2 for n in spatial)
    bc = b * c
    out = torch.empty((bc, *([2] * ndim), *half), dtype=x.dtype, device=x.device)
    _run_butterflies(x.reshape(_state_shape(bc, half, 0)), out, bc, half, forward=True)
    return out.view(b, c * 2**ndim, *half)


def _reference_idwt(y: torch.Tensor, ndim: int) -> torch.Tensor:
    b, c_all, *half_list = y.shape
    half = tuple(half_list)
    c = c_all // 2**ndim
    bc = b * c
    out = torch.empty((b, c, *(2 * n for n in half)), dtype=y.dtype, device=y.device)
    _run_butterflies(y.reshape(_state_shape(bc, half, ndim)), out.view(_state_shape(bc, half, 0)), bc, half,
                     forward=False)
    return out


def _dwt(x: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    _check_input(x, ndim, name)
    _check_even(x, ndim, name)
    if _needs_autograd(x):
        b, c, *spatial = x.shape
        half = tuple(n // 2 for n in spatial)
        state = x.reshape(_state_shape(b * c, half, 0))
        for i in range(ndim):
            state = _butterfly_graph(state, 2 * i + 2, 1 + i)
        return (state * (1.0 / math.sqrt(2.0) ** ndim)).reshape(b, c * 2**ndim, *half)
    if _use_fast_path(x):
        with torch.autocast("cpu", enabled=False):
            return _fast_dwt(x, ndim)
    return _reference_dwt(x, ndim)


def _idwt(y: torch.Tensor, ndim: int, name: str) -> torch.Tensor:
    _check_input(y, ndim, name)
    b, c_all, *half_list = y.shape
    nb = 2**ndim
    if c_all % nb:
        raise ValueError(f"{name}: channel count {c_all} is not a multiple of {nb} subbands")
    if _needs_autograd(y):
        # The orthonormal Haar 2x2 matrix is symmetric and its own inverse: undo the axes in reverse.
        half = tuple(half_list)
        c = c_all // nb
        state = y.reshape(_state_shape(b * c, half, ndim))
        for i in reversed(range(ndim)):
            state = _butterfly_graph(state, 1 + i, 2 * i + 2)
        return (state * (1.0 / math.sqrt(2.0) ** ndim)).reshape(b, c, *(2 * n for n in half))
    if _use_fast_path(y):
        with torch.autocast("cpu", enabled=False):
            return _fast_idwt(y, ndim)
    return _reference_idwt(y, ndim)


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


HAAR_BENCH_TARGET = 3.0  # goal for bench_haar's ratio: (dwt + idwt) time at most 3x a plain copy


def bench_haar(
    shape: tuple[int, int, int] = (224, 224, 160), device: str = "cpu", repeats: int = 9, warmup: int = 3
) -> dict[str, Any]:
    """Wall time of ``haar_dwt3d`` and ``haar_idwt3d`` on a ``(1, 1, *shape)`` float32 tensor vs ``x.clone()``.

    The three operations are first run ``warmup`` times each, then ``repeats`` rounds of one call each (so a busy
    machine slows all three alike); every figure is the median over the rounds, synchronised on CUDA. Timings use
    the current ``torch.get_num_threads()``. Returns ``{"shape", "device", "threads", "repeats", "dwt_s",
    "idwt_s", "copy_s", "ratio", "target", "meets_target"}`` with ``ratio = (dwt_s + idwt_s) / copy_s`` and
    ``target`` = :data:`HAAR_BENCH_TARGET`.
    """
    if repeats < 1:
        raise ValueError(f"bench_haar: repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"bench_haar: warmup must be >= 0, got {warmup}")
    dev = torch.device(device)
    x = torch.randn((1, 1, *shape), generator=torch.Generator().manual_seed(0)).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with torch.no_grad():
        y = haar_dwt3d(x)
        ops = {"copy_s": x.clone, "dwt_s": lambda: haar_dwt3d(x), "idwt_s": lambda: haar_idwt3d(y)}
        for fn in ops.values():
            for _ in range(warmup):
                fn()
        sync()
        times: dict[str, list[float]] = {key: [] for key in ops}
        for _ in range(repeats):
            for key, fn in ops.items():
                t0 = time.perf_counter()
                fn()
                sync()
                times[key].append(time.perf_counter() - t0)
    result: dict[str, Any] = {
        "shape": tuple(int(n) for n in shape),
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
    }
    result.update({key: statistics.median(ts) for key, ts in times.items()})
    copy_s = result["copy_s"]
    result["ratio"] = (result["dwt_s"] + result["idwt_s"]) / copy_s if copy_s > 0 else float("inf")
    result["target"] = HAAR_BENCH_TARGET
    result["meets_target"] = result["ratio"] <= HAAR_BENCH_TARGET
    return result

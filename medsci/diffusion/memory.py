"""Memory guard of sampling: a volume the device cannot hold is refused with a message, before any allocation.

The estimate is dominated by self-attention: MONAI's UNet always attends at its lowest level (middle block) and
at every level with ``attention_levels`` true, over all voxels of that level at once, so scores and their
softmax take ``2 x heads x tokens^2`` floats per item (within 10 % of the measured peak on CPU; figures:
docs/measurements.md#sampling-memory-estimate). What the guard misses (other networks, fragmentation) still ends
in a clean message: :func:`out_of_memory_error` turns the allocator's error into one.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from medsci.errors import MedsciError

FLOAT_BYTES = 4
# Per voxel of a network call and channel of the first level: the first level's working tensors and the skip
# connections kept for the decoder (measured ~3; rounded up).
ACTIVATION_FACTOR = 8
# Whole-volume tensors kept across the sampler: sample, running sum and sum of squares, conditions, known,
# offset, the network output.
VOLUME_COPIES = 10

ADVICE = ("use a windowed preset (the checkpoint's inference window: synthesis.model.inference_window, "
          "seismic inference.window) or a smaller preset (preprocess.shape), or a device with more memory")


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` (CUDA: free device memory; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _network_spec(model: torch.nn.Module) -> dict | None:
    spec = getattr(model, "spec", None) or getattr(getattr(model, "model", None), "spec", None)
    return spec if isinstance(spec, dict) and "unet" in spec else None


def estimate_bytes(model: torch.nn.Module, shape: tuple[int, ...], window: tuple[int, ...] | None,
                   sw_batch_size: int, condition_channels: int = 0) -> int | None:
    """Peak memory of sampling ``shape`` (B, C, *spatial); None for a network this module does not know."""
    spec = _network_spec(model)
    if spec is None:
        return None
    unet = spec["unet"]
    channels = [int(c) for c in unet["channels"]]
    attention = [bool(a) for a in unet.get("attention_levels", [False] * len(channels))]
    head_width = int(unet.get("num_head_channels", channels[-1]))
    dims = int(spec["spatial_dims"])
    spatial = tuple(int(s) for s in shape[2:])
    items, call_voxels = (shape[0], math.prod(spatial)) if window is None else (
        sw_batch_size, math.prod(min(w, s) for w, s in zip(window, spatial)))
    if spec.get("haar"):
        call_voxels //= (2 ** dims) ** int(spec.get("haar_levels", 1))
    attention_peak = 0
    for level, width in enumerate(channels):
        if attention[level] or level == len(channels) - 1:
            tokens = call_voxels // 2 ** (dims * level)
            heads = max(1, width // min(width, head_width))
            attention_peak = max(attention_peak, 2 * heads * tokens * tokens)
    activations = ACTIVATION_FACTOR * channels[0] * call_voxels
    volume = math.prod(shape) * VOLUME_COPIES + shape[0] * condition_channels * math.prod(spatial)
    return FLOAT_BYTES * (items * (attention_peak + activations) + volume)


def _gib(n: int) -> str:
    return f"{n / 2 ** 30:.1f} GiB"


def check_memory(model: torch.nn.Module, shape: tuple[int, ...], window: tuple[int, ...] | None,
                 sw_batch_size: int, device: torch.device, condition_channels: int = 0,
                 source: str | Path | None = None) -> None:
    """Refuse (MedsciError naming ``source``) when sampling ``shape`` needs more memory than ``device`` has free."""
    need = estimate_bytes(model, shape, window, sw_batch_size, condition_channels)
    free = available_bytes(device) if need is not None else None
    if need is None or free is None or need <= free:
        return
    raise MedsciError(f"sampling a {'x'.join(map(str, shape[2:]))} volume needs about {_gib(need)} of {device.type} "
                      f"memory, {_gib(free)} are free: {ADVICE}", source)


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def out_of_memory_error(device: torch.device, shape: tuple[int, ...], source: str | Path | None = None
                        ) -> MedsciError:
    return MedsciError(f"ran out of {device.type} memory sampling a {'x'.join(map(str, shape[2:]))} volume: "
                       f"{ADVICE}", source)

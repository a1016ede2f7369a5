"""One inference path for every generator: windows, several samples, residual offsets, input guidance.

``generate`` turns a trained network and one input (conditions, optionally known entries) into the mean and
voxelwise standard deviation of ``sampler.n_samples`` samples:

- ``inference.window`` set: MONAI's ``SlidingWindowInferer`` with Gaussian blending, either around every network
  call (``window_mode: network``: one sampling trajectory for the whole volume, no seams) or around the whole
  sampler (``window_mode: sampler``: each batch of windows is sampled on its own, which bounds memory by the
  window batch whatever the input size);
- ``offset``: the model diffuses a residual over a first guess; the offset is added back (and removed from
  ``known``) here;
- ``known``/``known_mask``: input guidance (RePaint-style replacement in the loop, ``inference.resample_jumps``);
- seeds: sample ``k`` of window batch ``c`` draws from a CPU generator seeded by ``(sampler.seed, c, k)``, so the
  same seed and settings give the same bytes on CPU.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import Callable

import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import InferenceConfig, SamplerConfig, ScheduleConfig, resolve_sampler
from medsci.diffusion.networks import FlipAveraged, WindowedNetwork
from medsci.diffusion.sampling import sample


@dataclass
class Generated:
    mean: torch.Tensor  # (B, C, *spatial) on the CPU, offset included
    # Voxelwise uncertainty (a standard deviation) per ``uncertainty``: the variance head's, plus the spread
    # over samples when there are several (law of total variance); the spread alone; or None.
    std: torch.Tensor | None
    # network calls per window batch (steps x (1 + jumps) x guidance x samples x 2 ** flip axes)
    network_evaluations: int
    windows: int  # sampler windows (window_mode: sampler), else 0
    window_evaluations: int  # network evaluations summed over sampler windows
    empty_windows: int  # sampler windows without a single known entry
    seconds: float
    input_guidance: bool
    resample_jumps: int
    uncertainty: str = "none"  # variance | samples | none (see SamplerConfig.uncertainty)
    # (B,) network evaluations each input item took part in (adaptive guidance decides per item); None with
    # sampler windows
    item_evaluations: torch.Tensor | None = None


def sampler_with(base: SamplerConfig, schedule: ScheduleConfig, **overrides) -> SamplerConfig:
    """``base`` with the given overrides (None = keep), checked as a whole and against the training schedule:
    one place for every generator's ``--steps/--n-samples/--seed/...`` flags. Whether the model has the variance
    head an explicit ``uncertainty: variance`` needs is checked where the model is at hand (``generate``)."""
    from medsci.errors import ConfigError

    values = {**base.to_dict(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        cfg = SamplerConfig.from_dict(values, "sample")
        resolve_sampler(cfg, schedule, variance_head=True)
    except ConfigError as err:
        raise ConfigError(err.reason, "command line") from None
    return cfg


def sample_generator(seed: int, call: int, k: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + call) * 101 + k)


def _samples(model, schedule, sampler, conditions, shape, call, *, known, known_mask, offset, jumps, guided,
             x0_transform, device, overwrite_known=True):
    """``sampler.n_samples`` samples of one batch: (sum, sum of squares, sum of head variances or None, network
    evaluations, (B,) evaluations per item)."""
    total = total_sq = total_var = None
    nfe, item_nfe = 0, 0
    off = offset.to(device) if offset is not None else None
    for k in range(sampler.n_samples):
        res = sample(model, schedule, sampler, conditions, shape, generator=sample_generator(sampler.seed, call, k),
                     x0_transform=x0_transform,
                     known=(known - (offset if offset is not None else 0)) if guided else None,
                     known_mask=known_mask if guided else None, resample_jumps=jumps,
                     overwrite_known=overwrite_known, device=device)
        x = res.sample.float() + (off if off is not None else 0)
        total = x if total is None else total + x
        total_sq = x * x if total_sq is None else total_sq + x * x
        if sampler.uncertainty == "variance" and res.variance is not None:
            v = res.variance.float()
            total_var = v if total_var is None else total_var + v
        nfe += res.network_evaluations
        item_nfe = item_nfe + res.item_evaluations
    return total, total_sq, total_var, nfe, item_nfe


def _mean_std(total, total_sq, total_var, n, mode: str):
    mean = total / n
    if mode == "none":
        return mean, None
    var = (total_sq / n - mean * mean).clamp_min(0) if n > 1 else None
    if mode == "variance" and total_var is not None:
        var = total_var / n + (var if var is not None else 0)
    return mean, (var.sqrt() if var is not None else None)


def generate(model: torch.nn.Module, schedule: ScheduleConfig, sampler: SamplerConfig, inference: InferenceConfig,
             conditions: Conditions | None, shape: tuple[int, ...], *, known: torch.Tensor | None = None,
             known_mask: torch.Tensor | None = None, offset: torch.Tensor | None = None,
             x0_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
             device: torch.device | str = "cpu", progress: bool = False, source: str | None = None) -> Generated:
    """Mean (and std) of ``sampler.n_samples`` samples of ``shape`` (B, C, *spatial) for one input batch.

    ``known``/``offset``: (B, C, *spatial); ``known_mask``: (B, 1, *spatial), 1 = known. Tensors may be on the
    CPU; the network runs on ``device``. A volume too large for the device's free memory is refused before
    anything is allocated, and running out of memory anyway is one MedsciError naming ``source`` (the input).
    """
    from medsci.diffusion.memory import check_memory, is_out_of_memory, out_of_memory_error

    device = torch.device(device)
    sampler = resolve_sampler(sampler, schedule, bool(getattr(model, "variance_head", False)))
    window = tuple(inference.window) if inference.window else None
    cond_channels = conditions.condition.shape[1] if conditions is not None and conditions.condition is not None \
        else 0
    check_memory(model, shape, window, inference.sw_batch_size, device, cond_channels, source)
    try:
        result = _generate(model, schedule, sampler, inference, conditions, shape, known, known_mask, offset,
                           x0_transform, device, progress)
        calls = 2 ** len(inference.flip_axes)  # network calls per evaluation of the flip-averaged network
        if calls == 1:
            return result
        return replace(result, network_evaluations=result.network_evaluations * calls,
                       window_evaluations=result.window_evaluations * calls,
                       item_evaluations=None if result.item_evaluations is None else result.item_evaluations * calls)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise out_of_memory_error(device, shape, source) from None


def _generate(model, schedule, sampler, inference, conditions, shape, known, known_mask, offset, x0_transform,
              device, progress) -> Generated:
    guided = known is not None and inference.input_guidance
    jumps = inference.resample_jumps if guided else 0
    window = tuple(inference.window) if inference.window else None
    started = time.perf_counter()
    if inference.flip_axes:
        model = FlipAveraged(model, tuple(inference.flip_axes))
    if window is None or inference.window_mode == "network":
        net = model if window is None else WindowedNetwork(model, window, inference.overlap, inference.sw_batch_size)
        total, total_sq, total_var, nfe, item_nfe = _samples(
            net, schedule, sampler, conditions, shape, 0, known=known, known_mask=known_mask, offset=offset,
            jumps=jumps, guided=guided, x0_transform=x0_transform, device=device)
        mean, std = _mean_std(total.cpu(), total_sq.cpu(), total_var.cpu() if total_var is not None else None,
                              sampler.n_samples, sampler.uncertainty)
        return Generated(mean, std, nfe, 0, 0, 0, time.perf_counter() - started, guided, jumps,
                         sampler.uncertainty if std is not None else "none", item_nfe)
    if x0_transform is not None:
        raise ValueError("x0_transform works on whole volumes; use window_mode: network with it")
    return _generate_sampler_windows(model, schedule, sampler, inference, conditions, shape, known, known_mask,
                                     offset, guided, jumps, device, progress, started)


def _generate_sampler_windows(model, schedule, sampler, inference, conditions, shape, known, known_mask, offset,
                              guided, jumps, device, progress, started) -> Generated:
    from monai.inferers import SlidingWindowInferer

    b, c = shape[0], shape[1]
    cond = conditions or Conditions()
    zeros = torch.zeros(shape)
    # Everything spatial is cut into the same windows: condition channels, known entries, their mask, the offset.
    parts = [cond.condition if cond.condition is not None else zeros[:, :0],
             known if known is not None else zeros[:, :0],
             known_mask.to(zeros.dtype).expand(b, 1, *shape[2:]) if known_mask is not None else zeros[:, :0],
             offset if offset is not None else zeros[:, :0]]
    sizes = [p.shape[1] for p in parts]
    stacked = torch.cat([p.float() for p in parts], 1)
    counts = {"calls": 0, "nfe": 0, "windows": 0, "window_nfe": 0, "empty": 0}

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        n = windows.shape[0]
        w_cond, w_known, w_mask, w_offset = torch.split(windows, sizes, dim=1)
        if w_mask.shape[1]:
            counts["empty"] += int((w_mask.flatten(1).amax(1) == 0).sum())
        # Items of a batch of windows come from the same input item when b == 1 (the usual case).
        item = cond.index(slice(0, 1)).repeat(n) if b == 1 else cond
        item = item.windowed(w_cond if w_cond.shape[1] else None)
        total, total_sq, total_var, nfe, _ = _samples(
            model, schedule, sampler, item, (n, c, *windows.shape[2:]), counts["calls"],
            known=w_known if w_known.shape[1] else None, known_mask=w_mask if w_mask.shape[1] else None,
            offset=w_offset if w_offset.shape[1] else None, jumps=jumps, guided=guided, x0_transform=None,
            device=device)
        counts["calls"] += 1
        counts["nfe"] = nfe
        counts["windows"] += n
        counts["window_nfe"] += nfe * n
        mean, std = _mean_std(total, total_sq, total_var, sampler.n_samples, sampler.uncertainty)
        return mean if std is None else torch.cat([mean, std], 1)

    if b != 1 and cond.present() != ("condition",) and cond.present():
        raise ValueError("window_mode: sampler takes one input item at a time when it has per-item conditions")
    inferer = SlidingWindowInferer(roi_size=tuple(inference.window), sw_batch_size=inference.sw_batch_size,
                                   overlap=inference.overlap, mode="gaussian", sigma_scale=inference.sigma_scale,
                                   padding_mode="constant", cval=0.0, sw_device=device, device=torch.device("cpu"),
                                   progress=progress)
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.5 indexes with lists of slices, which torch >= 2.8 flags as deprecated on every window.
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        out = inferer(stacked, predictor)
    mean, std = out[:, :c], (out[:, c:] if out.shape[1] > c else None)
    return Generated(mean, std, counts["nfe"], counts["windows"], counts["window_nfe"], counts["empty"],
                     time.perf_counter() - started, guided, jumps, sampler.uncertainty if std is not None else "none")

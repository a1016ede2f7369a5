"""Reverse diffusion shared by every generator.

One loop serves rectified-flow Euler steps (1-2 network evaluations), DDIM and the 1000-step DDPM reference.
Per step:
1. the network is called on ``x_t`` and the batch's :class:`~medsci.diffusion.conditioning.Conditions` (twice
   with classifier-free guidance: the second call drops the guided kinds, which the network replaces by their
   nulls; once when adaptive guidance decides the unconditional call is redundant — decided per batch item, so
   one item whose estimates do not settle keeps its own guidance without holding the others at full guidance);
2. its output (x0, epsilon or v) is converted to an x0 estimate, and ``x0_transform`` applied — the place where a
   task clamps in image space (e.g. inverse Haar -> clamp -> Haar for wavelet-domain models); a network with a
   variance head also gives the log-variance of that estimate, kept from the first (pure-noise) call: the
   variance of x0 given the conditions alone, which later calls, fed the sampler's own estimate, understate;
3. the MONAI scheduler steps to the previous timestep;
4. with input guidance (``known``/``known_mask``), known entries of x_{t-1} are replaced by the observation
   noised to t-1 (RePaint-style), optionally with resampling jumps. The last step replaces them by the
   observation itself (noise level 0), so known entries come out exact without any final overwrite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, resolve_sampler
from medsci.diffusion.schedulers import build_scheduler, noise_levels, set_inference_steps
from medsci.errors import ConfigError

LOG_VARIANCE_RANGE = (-16.0, 8.0)  # of the variance head: keeps exp() finite at init and in bf16


@dataclass
class SampleResult:
    sample: torch.Tensor
    network_evaluations: int
    guided_steps: int  # steps in which at least one item was guided
    item_evaluations: torch.Tensor | None = None  # (B,) network evaluations each batch item took part in
    variance: torch.Tensor | None = None  # the variance head's (first call), if the network has one


def to_x0(output: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Convert a network output of ``prediction_type`` at noise level ``alpha_bar`` into an x0 estimate (ddpm)."""
    if prediction_type == "sample":
        return output
    if prediction_type == "epsilon":
        return (x_t - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt()
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * x_t - (1 - alpha_bar).sqrt() * output
    raise ValueError(prediction_type)


def split_variance(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(prediction, log-variance or None): a network with a variance head outputs 2 x ``channels``."""
    if output.shape[1] == 2 * channels:
        return output[:, :channels], output[:, channels:].clamp(*LOG_VARIANCE_RANGE)
    return output, None


def _alpha_bar(scheduler, t: int) -> torch.Tensor:
    return scheduler.alphas_cumprod[t] if t >= 0 else torch.tensor(1.0)


def _x0_gain(scheduler, schedule: ScheduleConfig, t: int) -> float:
    """d x0 / d output: how an error of the network's output scales into the x0 estimate."""
    if schedule.prediction_type == "sample":
        return 1.0
    signal, noise = noise_levels(scheduler, t)
    if schedule.objective == "rflow":
        return float(noise)  # x0 = x_t + s v
    return float(noise / signal) if schedule.prediction_type == "epsilon" else float(noise)


def _x0_estimate(scheduler, schedule: ScheduleConfig, output, x_t, t: int, device) -> torch.Tensor:
    if schedule.objective == "rflow":
        if schedule.prediction_type == "sample":
            return output
        return x_t + (t / schedule.num_train_timesteps) * output  # velocity x0 - eps: x0 = x_t + s v
    return to_x0(output, x_t, _alpha_bar(scheduler, t).to(device), schedule.prediction_type)


def guided_kinds(model: torch.nn.Module, sampler: SamplerConfig, conditions: Conditions | None) -> tuple[str, ...]:
    """The condition kinds classifier-free guidance drops in its unconditional call (empty: no guidance).

    ``sampler.guidance`` names them; by default every kind the network was trained to replace by a null.
    """
    if sampler.guidance_scale == 1.0 or conditions is None:
        return ()
    trained = tuple(getattr(model, "null_kinds", ()))
    requested = tuple(sampler.guidance) if sampler.guidance is not None else trained
    untrained = [k for k in requested if k not in trained]
    kinds = tuple(k for k in requested if getattr(conditions, k) is not None)
    if untrained or not kinds:
        raise ConfigError(f"guidance_scale {sampler.guidance_scale} needs a model trained with condition dropout "
                          f"of {', '.join(untrained or ['some condition'])} (train.condition_dropout)")
    return kinds


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    schedule: ScheduleConfig,
    sampler: SamplerConfig,
    conditions: Conditions | None,
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    x0_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    known: torch.Tensor | None = None,
    known_mask: torch.Tensor | None = None,
    resample_jumps: int = 0,
    overwrite_known: bool = True,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Draw one batch of samples of ``shape`` (B, C, *spatial) given ``conditions`` (batch size B).

    Random numbers come from ``generator`` (a CPU generator: same seed -> same bytes on CPU, and the same
    starting noise on any device). ``known`` (shape of the sample) and ``known_mask`` (broadcastable, 1 =
    observed) switch on input guidance; ``overwrite_known=False`` leaves the result exactly as the loop made it.
    """
    device = torch.device(device)
    sampler = resolve_sampler(sampler, schedule, bool(getattr(model, "variance_head", False)))
    scheduler = build_scheduler(schedule, sampler.sampler)
    steps = schedule.num_train_timesteps if sampler.sampler == "ddpm" else sampler.steps
    set_inference_steps(scheduler, steps)
    timesteps = [int(t) for t in scheduler.timesteps]
    stride = schedule.num_train_timesteps // steps if sampler.sampler == "ddim" else 1
    # The timestep each step goes to: RFlow's grid ends at 0 (clean), the DDPM/DDIM grids at t - stride.
    next_t = (timesteps[1:] + [0]) if sampler.sampler == "euler" else [t - stride for t in timesteps]

    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    kinds = guided_kinds(model, sampler, conditions)
    cond = conditions.to(device) if conditions is not None else None
    uncond = cond.drop(kinds) if kinds else None

    x = torch.randn(shape, generator=generator).to(device)
    if known is not None:
        known = known.to(device)
        known_mask = known_mask.to(device=device, dtype=x.dtype)

    nfe = 0
    guided_steps = 0
    # Per item: still guided (adaptive guidance turns it off for each item on its own).
    guided = torch.full((shape[0],), bool(kinds), dtype=torch.bool)
    item_nfe = torch.zeros(shape[0], dtype=torch.long)
    channels = shape[1]
    variance = None

    def predict_x0(x_t: torch.Tensor, t: int) -> torch.Tensor:
        nonlocal nfe, guided_steps, variance
        tt = torch.full((x_t.shape[0],), t, device=device, dtype=torch.long)
        with autocast:
            out_c, log_var = split_variance(model(x_t, tt, cond).float(), channels)
            nfe += 1
            item_nfe.add_(1)
            if variance is None and log_var is not None:
                variance = log_var.exp() * _x0_gain(scheduler, schedule, t) ** 2
            x0 = _x0_estimate(scheduler, schedule, out_c, x_t, t, device)
            if guided.any():
                # The unconditional call for the items still guided only.
                rows = guided.nonzero()[:, 0]
                out_u, _ = split_variance(model(x_t[rows], tt[rows], uncond.index(rows.to(device))).float(),
                                          channels)
                nfe += 1
                item_nfe[rows] += 1
                guided_steps += 1
                x0_c = x0[rows]
                x0_u = _x0_estimate(scheduler, schedule, out_u, x_t[rows], t, device)
                x0_g = x0_u + sampler.guidance_scale * (x0_c - x0_u)
                # Adaptive guidance: once an item's guided and conditional estimates agree, its extra call is
                # wasted; each item decides for itself.
                if sampler.adaptive_guidance is not None:
                    cos = torch.nn.functional.cosine_similarity(x0_g.flatten(1), x0_c.flatten(1), dim=1)
                    guided[rows] = (cos <= sampler.adaptive_guidance).cpu()
                x0 = x0.index_put((rows.to(device),), x0_g)
        if x0_transform is not None:
            x0 = x0_transform(x0)
        return x0

    def noised_known(t: int) -> torch.Tensor:
        signal, noise_level = noise_levels(scheduler, t)
        noise = torch.randn(known.shape, generator=generator).to(device)
        return signal.to(device) * known + noise_level.to(device) * noise

    for i, t in enumerate(timesteps):
        t_prev = next_t[i]
        for jump in range(resample_jumps + 1):
            x0 = predict_x0(x, t)
            if sampler.sampler == "euler":
                # Euler step along the straight path; MONAI's RFlow step takes the velocity x0 - eps.
                velocity = (x0 - x) / (t / schedule.num_train_timesteps)
                x_prev, _ = scheduler.step(velocity, t, x, t_prev)
            elif sampler.sampler == "ddim":
                x_prev, _ = scheduler.step(x0, t, x, eta=sampler.eta, generator=generator)
            else:
                # MONAI's DDPM step draws its noise on the model output's device; draw it on CPU for byte
                # reproducibility instead, through the same generator.
                x_prev, _ = scheduler.step(x0.cpu(), t, x.cpu(), generator=generator)
                x_prev = x_prev.to(device)
            if known is not None:
                x_prev = known_mask * noised_known(t_prev) + (1 - known_mask) * x_prev
                if jump < resample_jumps:
                    # RePaint jump: diffuse x_{t-1} back to x_t and denoise again, harmonising the known part.
                    noise = torch.randn(x.shape, generator=generator).to(device)
                    if sampler.sampler == "euler":
                        (s_t, n_t), (s_p, n_p) = noise_levels(scheduler, t), noise_levels(scheduler, t_prev)
                        ratio = s_t / s_p
                        spread = (n_t ** 2 - (ratio * n_p) ** 2).clamp_min(0).sqrt()
                        x = ratio.to(device) * x_prev + spread.to(device) * noise
                    else:
                        a_t, a_p = _alpha_bar(scheduler, t).to(device), _alpha_bar(scheduler, t_prev).to(device)
                        ratio = a_t / a_p
                        x = ratio.sqrt() * x_prev + (1 - ratio).sqrt() * noise
                    continue
            x = x_prev
        if progress is not None:
            progress(i + 1, len(timesteps))

    if known is not None and overwrite_known:
        x = torch.where(known_mask.bool().expand_as(x), known, x)
    if known is not None and variance is not None:  # known entries come out exact (noise level 0 at the end)
        variance = variance * (1 - known_mask)
    return SampleResult(sample=x, network_evaluations=nfe, guided_steps=guided_steps,
                        item_evaluations=item_nfe, variance=variance)

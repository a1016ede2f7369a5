"""Noise schedulers of the shared engine (MONAI's); the network is in ``medsci.diffusion.networks``."""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from medsci.diffusion.config import ScheduleConfig


def build_scheduler(cfg: ScheduleConfig, kind: str = "ddpm"):
    """A MONAI scheduler for ``cfg``: ``kind`` is "train" or a sampler name (ddpm, ddim, euler).

    Clipping of x0 is always off: in the Haar domain the low band of data in [-1, 1] reaches +-2.83, and
    MONAI's default ``clip_sample=True`` would cut it. Tasks clamp in image space instead (``x0_transform``).
    Samplers take x0 as model output (``prediction_type="sample"``): the engine converts whatever the network
    predicts to x0 first, so one sampler serves every prediction type.
    """
    if cfg.objective == "rflow":
        if kind not in ("train", "euler"):
            raise ValueError(f"scheduler kind {kind!r} does not fit the rflow objective")
        return RFlowScheduler(num_train_timesteps=cfg.num_train_timesteps, use_discrete_timesteps=True)
    common = dict(num_train_timesteps=cfg.num_train_timesteps, schedule=cfg.schedule, clip_sample=False,
                  beta_start=cfg.beta_start, beta_end=cfg.beta_end)
    if kind == "train":
        return DDPMScheduler(prediction_type=cfg.prediction_type, **common)
    if kind == "ddpm":
        return DDPMScheduler(prediction_type="sample", **common)
    if kind == "ddim":
        return DDIMScheduler(prediction_type="sample", set_alpha_to_one=True, **common)
    raise ValueError(f"unknown scheduler kind {kind!r}")


def set_inference_steps(scheduler, steps: int, device: torch.device | str | None = None) -> None:
    """Timesteps with "trailing" spacing (999, 899, ... for 10 steps) so the first step starts from pure noise.

    MONAI 1.5's DDIM spacing starts at T - T/steps (900 for 10 steps), where the signal is not fully destroyed,
    which costs quality at few steps; ``steps_offset`` shifts the grid to end at T - 1. RFlow's grid (T,
    T - T/steps, ...) starts at pure noise already.
    """
    if isinstance(scheduler, DDIMScheduler):
        scheduler.steps_offset = scheduler.num_train_timesteps // steps - 1
    scheduler.set_timesteps(steps, device=device)


def noise_levels(scheduler, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(signal, noise) coefficients of x_t = signal * x0 + noise * eps at integer timestep ``t`` (t < 0: clean)."""
    if isinstance(scheduler, RFlowScheduler):
        s = torch.tensor(max(t, 0) / scheduler.num_train_timesteps)
        return 1 - s, s
    a_bar = scheduler.alphas_cumprod[t] if t >= 0 else torch.tensor(1.0)
    return a_bar.sqrt(), (1 - a_bar).sqrt()


def training_timesteps(cfg: ScheduleConfig, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Timesteps of one training batch, drawn from ``generator`` (reproducible, resumable).

    ddpm: 0..T-1; rflow: 1..T, so the pure-noise end where every few-step sampler starts is trained on.
    """
    low, high = (1, cfg.num_train_timesteps) if cfg.objective == "rflow" else (0, cfg.num_train_timesteps - 1)
    if cfg.timestep_sampling == "uniform":
        return torch.randint(low, high + 1, (batch,), generator=generator)
    u = torch.sigmoid(cfg.logit_loc + cfg.logit_scale * torch.randn(batch, generator=generator))
    return (u * cfg.num_train_timesteps).round().long().clamp(low, high)


def training_target(cfg: ScheduleConfig, scheduler, x0: torch.Tensor, noise: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output for ``prediction_type``."""
    if cfg.prediction_type == "sample":
        return x0
    if cfg.objective == "rflow":
        return x0 - noise  # MONAI RFlow's velocity (v_prediction); epsilon is refused for rflow
    if cfg.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(x0, noise, t)

"""Noise schedulers of the shared engine (MONAI's); the network is in ``medsci.diffusion.networks``."""

from __future__ import annotations

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from medsci.diffusion.config import ScheduleConfig


def build_scheduler(cfg: ScheduleConfig, kind: str = "ddpm"):
    """A MONAI scheduler for ``cfg``.

    Clipping of x0 is always off: in the Haar domain the low band of data in [-1, 1] reaches +-2.83, and
    MONAI's default ``clip_sample=True`` would cut it. Tasks clamp in image space instead (``x0_transform``).
    Samplers take x0 as model output (``prediction_type="sample"``): the engine converts whatever the network
    predicts to x0 first, so one sampler serves every prediction type.
    """
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
    which costs quality at few steps; ``steps_offset`` shifts the grid to end at T - 1.
    """
    if isinstance(scheduler, DDIMScheduler):
        scheduler.steps_offset = scheduler.num_train_timesteps // steps - 1
    scheduler.set_timesteps(steps, device=device)

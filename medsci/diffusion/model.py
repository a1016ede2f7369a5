"""Network and schedulers of the shared engine, all from MONAI."""

from __future__ import annotations

import torch
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from medsci.diffusion.config import ScheduleConfig, UNetConfig


def build_unet(cfg: UNetConfig, spatial_dims: int, in_channels: int, out_channels: int,
               num_class_embeds: int | None = None) -> DiffusionModelUNet:
    return DiffusionModelUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(cfg.channels),
        attention_levels=tuple(cfg.attention_levels),
        num_res_blocks=cfg.num_res_blocks,
        norm_num_groups=cfg.norm_num_groups,
        # MONAI's middle block always has self-attention; heads must divide each level's width.
        num_head_channels=[min(c, cfg.num_head_channels) for c in cfg.channels],
        resblock_updown=cfg.resblock_updown,
        num_class_embeds=num_class_embeds,
    )


def model_from_spec(spec: dict) -> DiffusionModelUNet:
    """Rebuild a network from the ``model`` entry of a checkpoint's config.json."""
    return build_unet(UNetConfig.from_dict(spec["unet"], "model.unet"), spec["spatial_dims"], spec["in_channels"],
                      spec["out_channels"], spec.get("num_class_embeds"))


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


class WindowedNetwork(torch.nn.Module):
    """Runs a network on overlapping windows of its input, blended by MONAI's ``SlidingWindowInferer``.

    For networks trained on patches: GroupNorm statistics of a whole volume (much more background) differ
    from those of a training patch, so calling the network window by window at the training patch size keeps
    inference in the conditions it was trained in. Drop-in for the sampler's ``model(x, t, class_labels=...)``;
    every item of a call must share its timestep (true within a sampling step).
    """

    def __init__(self, model: torch.nn.Module, roi_size: tuple[int, ...], overlap: float = 0.5,
                 sw_batch_size: int = 8):
        super().__init__()
        from monai.inferers import SlidingWindowInferer

        self.model = model
        self.inferer = SlidingWindowInferer(roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap,
                                            mode="gaussian")

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None):
        import warnings

        if class_labels is not None and bool((class_labels != class_labels[0]).any()):
            # Windows of different items share one call: split items with different labels.
            return torch.cat([self(x[i:i + 1], timesteps[i:i + 1], class_labels[i:i + 1]) for i in range(len(x))])

        def predictor(windows: torch.Tensor) -> torch.Tensor:
            n = windows.shape[0]
            labels = None if class_labels is None else class_labels[:1].expand(n)
            return self.model(windows, timesteps[:1].expand(n), class_labels=labels)

        with warnings.catch_warnings():
            # MONAI 1.5 indexes with lists of slices, which torch >= 2.8 flags as deprecated on every window.
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            return self.inferer(x, predictor)


class HaarDomainNetwork(torch.nn.Module):
    """Runs a network in the one-level 3D Haar domain: input channels -> 8 subbands each at half resolution,
    network, 8 output subbands -> inverse transform.

    The transform is orthonormal, so Gaussian noise stays white Gaussian noise of the same variance under it:
    diffusing in image space with this network is the same process as diffusing the Haar coefficients (WDM),
    while input guidance and losses stay in image space. The network sees an 8x smaller grid with 8x the
    channels. ``inner`` must take ``8 * channels`` and return 8 channels per output channel.
    """

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None):
        from medsci.wavelets import haar_dwt3d, haar_idwt3d

        return haar_idwt3d(self.inner(haar_dwt3d(x), timesteps, class_labels=class_labels))

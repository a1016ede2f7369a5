"""Typed settings of the shared diffusion engine: network, noise schedule, training, sampling."""

from __future__ import annotations

from dataclasses import dataclass

from medsci.config_section import ConfigSection
from medsci.errors import ConfigError

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")


@dataclass
class UNetConfig(ConfigSection):
    """Arguments of MONAI's ``DiffusionModelUNet``; in/out channels are set by the task."""

    channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: tuple[bool, ...] = (False, False, False)
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32
    resblock_updown: bool = False

    def __post_init__(self):
        if len(self.attention_levels) != len(self.channels):
            raise ConfigError("unet.attention_levels needs one entry per unet.channels entry")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ConfigError(f"unet.channels {self.channels} must be multiples of norm_num_groups "
                              f"{self.norm_num_groups}")

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass
class ScheduleConfig(ConfigSection):
    """Forward process. Defaults follow cWDM: T = 1000, linear betas 1e-4 -> 0.02, x0 prediction."""

    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "sample"

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")


@dataclass
class TrainConfig(ConfigSection):
    steps: int = 1000
    batch_size: int = 2
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    condition_dropout: float = 0.0  # > 0 trains the unconditional branch for classifier-free guidance
    checkpoint_every: int = 500
    bf16: bool = True  # autocast to bfloat16 on CUDA; ignored on CPU
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None = torch's default
    max_minutes: float | None = None  # stop early (and checkpoint) after this wall time

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("train.steps and train.batch_size must be >= 1")


@dataclass
class SamplerConfig(ConfigSection):
    sampler: str = "ddim"  # ddim | ddpm
    steps: int = 25
    eta: float = 0.0
    guidance_scale: float = 1.0
    adaptive_guidance: float | None = None  # cosine threshold after which the unconditional call is skipped
    n_samples: int = 1
    use_ema: bool = True
    seed: int = 0

    def __post_init__(self):
        if self.sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"sampler must be ddim or ddpm, got {self.sampler!r}")
        if self.steps < 1:
            raise ConfigError("sampling steps must be >= 1")

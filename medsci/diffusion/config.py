"""Typed settings of the shared diffusion engine: network, noise schedule, training, sampling."""

from __future__ import annotations

from dataclasses import dataclass, field

from medsci.config_section import ConfigSection
from medsci.errors import ConfigError

PREDICTION_TYPES = ("sample", "epsilon", "v_prediction")
# Training objectives and the samplers each one can be sampled with: "ddpm" is the variance-preserving diffusion
# of the references (DDIM few-step, DDPM 1000-step); "rflow" is rectified flow / flow matching (MONAI's
# RFlowScheduler: x_t = (1 - t/T) x0 + t/T noise), integrated with Euler steps along nearly straight paths.
OBJECTIVES = ("ddpm", "rflow")
SAMPLERS = {"ddpm": ("ddim", "ddpm"), "rflow": ("euler",)}
TIMESTEP_SAMPLING = ("uniform", "logit-normal")
# Where a sample's voxelwise uncertainty comes from: the network's variance head (one pass), the spread of
# n_samples samples, or none; "auto" takes the head when the checkpoint has one, else the spread (n_samples > 1).
UNCERTAINTY = ("auto", "variance", "samples", "none")
KINDS = ("condition", "labels", "vector", "context")  # condition kinds of the engine (medsci.diffusion.conditioning)


@dataclass
class UNetConfig(ConfigSection):
    """Arguments of MONAI's ``DiffusionModelUNet``; in/out channels are set by the task."""

    channels: tuple[int, ...] = (32, 64, 128)
    attention_levels: tuple[bool, ...] = (False, False, False)
    num_res_blocks: int = 1
    norm_num_groups: int = 16
    num_head_channels: int = 32
    resblock_updown: bool = False
    # A second output per channel: the log-variance of the x0 estimate, trained with a Gaussian negative
    # log-likelihood beside the usual loss; sampling turns it into the voxelwise uncertainty (one pass).
    variance_head: bool = False

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
    objective: str = "ddpm"  # ddpm | rflow (checkpoints without the key were trained as ddpm)
    # Training timesteps: uniform, or logit-normal (SD3 / MONAI RFlow) centred on logit(t/T) = loc.
    timestep_sampling: str = "uniform"
    logit_loc: float = 0.0
    logit_scale: float = 1.0

    def __post_init__(self):
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"schedule.objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.objective == "rflow" and self.prediction_type == "epsilon":
            # x0 = (x_t - s eps) / (1 - s) diverges at the pure-noise end where few-step sampling starts.
            raise ConfigError("schedule.objective rflow takes prediction_type sample or v_prediction, not epsilon")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ConfigError(f"schedule.timestep_sampling must be one of {', '.join(TIMESTEP_SAMPLING)}, "
                              f"got {self.timestep_sampling!r}")
        if self.logit_scale <= 0:
            raise ConfigError("schedule.logit_scale must be > 0")

    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers a model trained with this schedule can be sampled with."""
        return SAMPLERS[self.objective]


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
    variance_loss_weight: float = 0.1  # weight of the variance head's Gaussian NLL (model.unet.variance_head)
    # Classifier-free guidance: probability of dropping each condition kind (condition, labels, vector,
    # context) per item, independently; a dropped kind is replaced by its null (see medsci.diffusion.conditioning).
    condition_dropout: dict = field(default_factory=dict)
    checkpoint_every: int = 500
    bf16: bool = True  # autocast to bfloat16 on CUDA; ignored on CPU
    seed: int = 0
    threads: int | None = None  # torch CPU threads; None = torch's default
    max_minutes: float | None = None  # stop early (and checkpoint) after this wall time

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("train.steps and train.batch_size must be >= 1")
        self.condition_dropout = dict(self.condition_dropout or {})
        bad = [k for k, p in self.condition_dropout.items() if k not in KINDS or not 0.0 <= float(p) <= 1.0]
        if bad:
            raise ConfigError(f"train.condition_dropout: kinds must be {', '.join(KINDS)} with probabilities in "
                              f"[0, 1], got {bad}")

    @property
    def dropout_kinds(self) -> tuple[str, ...]:
        """Kinds trained with a null (probability > 0)."""
        return tuple(k for k in KINDS if float(self.condition_dropout.get(k, 0.0)) > 0)


@dataclass
class SamplerConfig(ConfigSection):
    sampler: str = "auto"  # auto (the objective's own: ddim for ddpm, euler for rflow) | ddim | ddpm | euler
    steps: int = 25
    eta: float = 0.0
    guidance_scale: float = 1.0
    adaptive_guidance: float | None = None  # cosine threshold after which the unconditional call is skipped
    guidance: tuple[str, ...] | None = None  # kinds dropped in the unconditional call; None = all trained ones
    n_samples: int = 1
    use_ema: bool = True
    seed: int = 0
    uncertainty: str = "auto"  # see UNCERTAINTY

    def __post_init__(self):
        if self.sampler not in ("auto", "ddim", "ddpm", "euler"):
            raise ConfigError(f"sampler must be auto, ddim, ddpm or euler, got {self.sampler!r}")
        if self.uncertainty not in UNCERTAINTY:
            raise ConfigError(f"sample.uncertainty must be one of {', '.join(UNCERTAINTY)}, got {self.uncertainty!r}")
        if self.steps < 1:
            raise ConfigError("sampling steps must be >= 1")
        if self.n_samples < 1:
            raise ConfigError("n_samples must be >= 1")
        if self.guidance is not None and any(k not in KINDS for k in self.guidance):
            raise ConfigError(f"sample.guidance kinds must be among {', '.join(KINDS)}, got {list(self.guidance)}")


@dataclass
class InferenceConfig(ConfigSection):
    """How a trained model is applied to data larger than its training patches, and input guidance."""

    # Sliding windows (image voxels; None = the whole input at once), Gaussian blended. "network": every
    # network call runs window by window on the whole-volume sample (no seams between windows, one
    # sampling trajectory); "sampler": each batch of windows runs the whole reverse diffusion on its own.
    window: tuple[int, ...] | None = None
    window_mode: str = "network"
    overlap: float = 0.5
    sw_batch_size: int = 8  # windows per network (or sampler) call
    sigma_scale: float = 0.125  # Gaussian blending window (MONAI's default)
    input_guidance: bool = True  # known entries replaced by the noised observation at every step (if any)
    resample_jumps: int = 0  # RePaint resampling jumps per step (network calls x (1 + jumps))
    # Spatial axes (0-based) along which the network has no preferred direction: every evaluation averages the
    # network over all flips of them (network calls x 2 ** len(flip_axes)). () = off.
    flip_axes: tuple[int, ...] = ()

    def __post_init__(self):
        if self.window_mode not in ("network", "sampler"):
            raise ConfigError(f"inference.window_mode must be network or sampler, got {self.window_mode!r}")
        if self.resample_jumps < 0:
            raise ConfigError("inference.resample_jumps must be >= 0")
        if any(a < 0 or a > 2 for a in self.flip_axes) or len(set(self.flip_axes)) != len(self.flip_axes):
            raise ConfigError("inference.flip_axes must be distinct spatial axes 0, 1 or 2, got "
                              f"{list(self.flip_axes)}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError("inference.overlap must be in [0, 1)")
        if self.sw_batch_size < 1:
            raise ConfigError("inference.sw_batch_size must be >= 1")
        if self.window is not None and min(self.window) < 1:
            raise ConfigError("inference.window sizes must be >= 1")


def resolve_sampler(sampler: SamplerConfig, schedule: ScheduleConfig, variance_head: bool) -> SamplerConfig:
    """``sampler`` with ``auto`` settled for a model trained with ``schedule``; a sampler or uncertainty the model
    cannot provide is refused, naming what it can."""
    from dataclasses import replace

    name = schedule.samplers[0] if sampler.sampler == "auto" else sampler.sampler
    if name not in schedule.samplers:
        raise ConfigError(f"sampler {name} needs a model trained with the "
                          f"{'rflow' if name == 'euler' else 'ddpm'} objective; this one was trained with "
                          f"{schedule.objective} (samplers: {', '.join(schedule.samplers)})")
    if name != "ddpm" and sampler.steps > schedule.num_train_timesteps:
        raise ConfigError(f"{sampler.steps} sampling steps exceed the {schedule.num_train_timesteps} training "
                          "timesteps")
    can = (["variance"] if variance_head else []) + ["samples (n_samples >= 2)", "none"]
    mode = sampler.uncertainty
    if mode == "auto":
        mode = "variance" if variance_head else ("samples" if sampler.n_samples > 1 else "none")
    if mode == "variance" and not variance_head:
        raise ConfigError("uncertainty variance needs a model trained with model.unet.variance_head: true; this one "
                          f"can provide: {', '.join(can)}")
    if mode == "samples" and sampler.n_samples < 2:
        raise ConfigError(f"uncertainty samples needs n_samples >= 2 (got {sampler.n_samples}); this model can "
                          f"provide: {', '.join(can)}")
    return replace(sampler, sampler=name, uncertainty=mode)

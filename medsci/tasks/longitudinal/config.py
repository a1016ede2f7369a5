"""Settings of the longitudinal generator (the ``longitudinal:`` section of a medsci config)."""

from __future__ import annotations

from dataclasses import dataclass

from medsci.config_section import ConfigSection, preset
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig
from medsci.errors import ConfigError


@dataclass
class LongitudinalDemoConfig(ConfigSection):
    subjects: int = 12
    seed: int = 0
    shape: tuple[int, int, int] = (48, 56, 48)
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    # Acquisition voxel sizes (mm) the subjects cycle through (subject i: spacings[i % len]); each keeps the field
    # of view shape * spacing, so its grid is round(shape * spacing / spacings[i]). Empty: every subject at spacing.
    spacings: tuple[tuple[float, float, float], ...] = ()

    def __post_init__(self):
        try:
            self.spacings = tuple(tuple(float(v) for v in s) for s in self.spacings or ())
        except (TypeError, ValueError):
            raise ConfigError("longitudinal.data.demo.spacings must be a list of [x, y, z] voxel sizes (mm)") from None
        if any(len(s) != 3 or not all(0 < v < float("inf") for v in s) for s in self.spacings):
            raise ConfigError("longitudinal.data.demo.spacings: each entry must be three positive voxel sizes (mm)")

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["spacings"] = [list(s) for s in self.spacings]
        return out


@dataclass
class LongitudinalDataConfig(ConfigSection):
    raw_dir: str | None = None  # subjects (sub-*/ with sessions.tsv); null = demo subjects
    demo: LongitudinalDemoConfig
    heldout: int = 3  # the last N subjects (sorted by id) are never trained on


@dataclass
class LongitudinalPreprocessConfig(ConfigSection):
    shape: tuple[int, int, int] = (48, 56, 48)  # model grid (voxels), centred on the first session
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)  # mm
    registration: str = "rigid"  # rigid | affine, every session onto the subject's first
    min_similarity: float = 0.7  # correlation after registration below this: the session is refused
    normalise_percentile: float = 99.0  # all sessions divided by this percentile of the first session's brain

    def __post_init__(self):
        if self.registration not in ("rigid", "affine"):
            raise ConfigError(f"longitudinal.preprocess.registration must be rigid or affine, got {self.registration!r}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError("longitudinal.preprocess.min_similarity must be in [-1, 1]")


@dataclass
class LongitudinalModelConfig(ConfigSection):
    unet: UNetConfig = preset(UNetConfig, channels=(16, 32, 64), attention_levels=(False, False, True),
                              norm_num_groups=8, num_head_channels=16)
    schedule: ScheduleConfig
    domain: str = "haar"
    max_frames: int = 4  # context frames the transformer sees (the latest ones; older frames are left out)
    frame_patch: int = 8  # 3D patch of the frame embedding
    context_dim: int = 64
    context_layers: int = 2
    context_heads: int = 4
    context_dropout: float = 0.5  # each earlier frame except the last is dropped with this probability in training

    def __post_init__(self):
        if self.domain not in ("haar", "image"):
            raise ConfigError(f"longitudinal.model.domain must be haar or image, got {self.domain!r}")
        if self.max_frames < 1 or self.frame_patch < 1 or not 0 <= self.context_dropout < 1:
            raise ConfigError("longitudinal.model: max_frames, frame_patch >= 1 and context_dropout in [0, 1)")


@dataclass
class LongitudinalEvalConfig(ConfigSection):
    # "changed region": |truth - last frame| above this (normalised units), both smoothed first so that scan
    # noise (about 0.02 per voxel) does not count as change
    change_threshold: float = 0.03
    change_smoothing: float = 1.0  # Gaussian sigma, voxels
    forecast_sessions: int = 2  # autoregressive sessions generated after the last one (figures, uncertainty)
    n_samples: int = 4  # samples averaged per prediction (mean and std)


@dataclass
class LongitudinalConfig(ConfigSection):
    enabled: bool = True
    data: LongitudinalDataConfig
    preprocess: LongitudinalPreprocessConfig
    model: LongitudinalModelConfig
    train: TrainConfig = preset(TrainConfig, steps=1300, batch_size=2, lr=1e-3, warmup_steps=50, ema_decay=0.995,
                                checkpoint_every=250, condition_dropout={"context": 0.1})
    sample: SamplerConfig = preset(SamplerConfig, steps=10, n_samples=1)
    evaluation: LongitudinalEvalConfig

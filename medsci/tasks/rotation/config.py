"""Settings of the radiograph-rotation generator (the ``rotation:`` section of a medsci config)."""

from __future__ import annotations

from dataclasses import dataclass

from medsci.config_section import ConfigSection, preset
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig
from medsci.errors import ConfigError

AXES = ("x", "y", "z")  # world axes of the Euler angles: left-right (tilt), beam (in-plane), head-foot (turn)


@dataclass
class RotationDemoConfig(ConfigSection):
    cts: int = 10
    seed: int = 0
    shape: tuple[int, int, int] = (64, 64, 64)
    spacing: tuple[float, float, float] = (5.0, 5.0, 5.0)  # mm
    # Probability of each change unlike the generator per CT (noise, contrast, apices cropped, habitus, voxel
    # size; medsci.tasks.rotation.demo.vary_ct), held-out CTs included.
    variety: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.variety <= 1.0:
            raise ConfigError(f"rotation.data.demo.variety must be a probability, got {self.variety!r}")
        if self.cts < 2:
            raise ConfigError("rotation.data.demo.cts must be >= 2 (training + held-out)")


@dataclass
class RotationDataConfig(ConfigSection):
    raw_dir: str | None = None  # a folder of CT volumes in HU (NIfTI/MHA/NRRD); null = demo CTs
    demo: RotationDemoConfig
    heldout: int = 2  # the last N CTs (sorted by id) are never trained on


@dataclass
class DRRConfig(ConfigSection):
    """Cone-beam geometry of the renderer (medsci.tasks.rotation.drr; PA view, see its docstring)."""

    sdd: float = 1000.0  # source-to-detector distance, mm
    sid: float = 750.0  # source-to-isocentre distance, mm
    pixels: tuple[int, int] = (64, 64)  # detector rows, columns (the model's image size)
    spacing: tuple[float, float] = (7.0, 7.0)  # detector pixel size in mm (at the detector)
    mu_water: float = 0.02  # 1/mm
    samples: int | None = None  # points per ray; null = one per `step` voxels
    # Voxels between ray samples. 1.0 renders twice as fast as 0.5 and differs from it by at most 0.34 % of the
    # view's maximum (p99 0.13 %) on the demo's chest CTs.
    step: float = 0.5

    def __post_init__(self):
        if not self.sdd > self.sid > 0 or min(self.spacing) <= 0 or min(self.pixels) < 8 or self.mu_water <= 0:
            raise ConfigError("rotation.drr needs sdd > sid > 0, positive spacing and mu_water, >= 8 pixels")
        if not 0.1 <= self.step <= 2.0:
            raise ConfigError(f"rotation.drr.step must be 0.1 to 2 voxels, got {self.step!r}")


@dataclass
class PairsConfig(ConfigSection):
    """Training pairs: the PA view of a CT and the view of the CT turned by a random rotation."""

    max_angle: tuple[float, float, float] = (15.0, 15.0, 15.0)  # degrees, |angle| about x, y, z
    per_ct: int = 256  # rotated views rendered (and cached) per training CT
    # Fraction of those views turned about one axis only (x, y, z in turn), as a user usually asks; uniform draws
    # about all three axes almost never give the pure in-plane turn whose interior the warp already gets right.
    single_axis: float = 0.0
    seed: int = 0
    # Display window: line integrals divided by the source view's `window_percentile` (the same divisor for
    # the rotated view), then clipped to [0, 1]: images in [0, 1], bright bone, as RadRotator's.
    window_percentile: float = 99.5

    def __post_init__(self):
        if len(self.max_angle) != 3 or min(self.max_angle) < 0 or max(self.max_angle) > 90:
            raise ConfigError("rotation.pairs.max_angle must be three angles in [0, 90] degrees")
        if self.per_ct < 1:
            raise ConfigError("rotation.pairs.per_ct must be >= 1")
        if not 0.0 <= self.single_axis <= 1.0:
            raise ConfigError(f"rotation.pairs.single_axis must be a fraction in [0, 1], got {self.single_axis!r}")


@dataclass
class RotationModelConfig(ConfigSection):
    unet: UNetConfig = preset(UNetConfig, channels=(32, 64, 64), norm_num_groups=16, num_head_channels=32)
    schedule: ScheduleConfig
    # "haar": the network works on the 4 Haar subbands of its input at half resolution (as cWDM in 3D): 3.5x
    # faster training steps on the CPU at 64^2; "image": on the pixels.
    domain: str = "haar"
    # Haar levels (a wavelet packet): 2 puts a 128^2 view on a 32^2 grid of 16 subbands, so a training step costs
    # about what one level costs at 64^2 (measured in docs/radiograph-rotation.md).
    haar_levels: int = 1
    # The network diffuses target - first guess, offset back at sampling. first_guess "warp": the projective
    # warp of the source by the rotation (exact in-plane), also given as a second condition channel;
    # "source": the input view itself.
    residual: bool = True
    first_guess: str = "warp"
    # RadRotator's histogram randomisation: MONAI RandHistogramShift on input and target together.
    histogram_shift_prob: float = 0.8
    histogram_control_points: tuple[int, int] = (5, 15)
    flip_augment: bool = True  # left-right mirror of both views, with the rotation mirrored too

    def __post_init__(self):
        if self.first_guess not in ("source", "warp"):
            raise ConfigError(f"rotation.model.first_guess must be source or warp, got {self.first_guess!r}")
        if self.domain not in ("haar", "image"):
            raise ConfigError(f"rotation.model.domain must be haar or image, got {self.domain!r}")
        if not 1 <= int(self.haar_levels) <= 4:
            raise ConfigError(f"rotation.model.haar_levels must be 1 to 4, got {self.haar_levels!r}")
        if not 0 <= self.histogram_shift_prob <= 1:
            raise ConfigError("rotation.model.histogram_shift_prob must be in [0, 1]")
        lo, hi = self.histogram_control_points
        if not 3 <= lo <= hi:
            raise ConfigError("rotation.model.histogram_control_points must be [low, high] with 3 <= low <= high")


@dataclass
class RotationEvalConfig(ConfigSection):
    magnitudes: tuple[float, ...] = (5.0, 10.0, 15.0)  # degrees, each about each axis, both signs
    combined: int = 4  # and this many random rotations about all three axes per CT
    # Input histograms remapped at evaluation (input and truth alike): gamma, window, vendor-like LUT.
    remaps: tuple[str, ...] = ("gamma0.6", "gamma1.6", "window", "lut")
    figures: int = 4  # prediction grids (input, truth, prediction, error) per held-out CT

    def __post_init__(self):
        if not self.magnitudes or min(self.magnitudes) <= 0:
            raise ConfigError("rotation.evaluation.magnitudes must be positive angles")


@dataclass
class RotationConfig(ConfigSection):
    enabled: bool = True
    data: RotationDataConfig
    drr: DRRConfig
    pairs: PairsConfig
    model: RotationModelConfig
    train: TrainConfig = preset(TrainConfig, steps=2000, batch_size=8, lr=1e-3, warmup_steps=50, ema_decay=0.995,
                                checkpoint_every=250, condition_dropout={"vector": 0.1})
    # Classifier-free guidance over the rotation; adaptive guidance drops the unconditional call once the guided
    # and conditional estimates agree (cosine above the threshold).
    sample: SamplerConfig = preset(SamplerConfig, steps=10, guidance_scale=1.5, adaptive_guidance=0.9)
    evaluation: RotationEvalConfig

    def __post_init__(self):
        haar = self.model.domain == "haar"
        factor = self.model.unet.downsampling_factor * (2 ** self.model.haar_levels if haar else 1)
        if any(p % factor for p in self.drr.pixels):
            raise ConfigError(f"rotation.drr.pixels {tuple(self.drr.pixels)} must be divisible by {factor} "
                              f"(UNet levels{' x Haar levels' if haar else ''})")
        if self.enabled and float(self.train.condition_dropout.get("vector", 0.0)) <= 0 \
                and self.sample.guidance_scale != 1.0:
            raise ConfigError("rotation.sample.guidance_scale != 1 needs rotation.train.condition_dropout.vector > 0")

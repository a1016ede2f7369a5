"""Settings of the MRI modality-synthesis generator."""

from __future__ import annotations

from dataclasses import dataclass

from medsci.config_section import ConfigSection, preset
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig
from medsci.errors import ConfigError
from medsci.mri.cases import MODALITIES
from medsci.mri.preprocessing.config import PreprocessConfig
from medsci.tasks.synthesis.segmentation import SegmentationConfig


@dataclass
class DemoDataConfig(ConfigSection):
    cases: int = 16
    seed: int = 0
    shape: tuple[int, int, int] = (68, 76, 60)


@dataclass
class SynthesisDataConfig(ConfigSection):
    # Either a folder of cases (raw_dir) or generated demo data (demo).
    raw_dir: str | None = None
    layout: str = "brats"
    patterns: dict | None = None
    demo: DemoDataConfig
    heldout: int = 4  # the last N cases (sorted by id) are never seen in training


@dataclass
class SynthesisModelConfig(ConfigSection):
    unet: UNetConfig = preset(UNetConfig, channels=(32, 64, 64))
    schedule: ScheduleConfig
    # One model for any missing modality (target embedding) unless a single target is given here.
    targets: tuple[str, ...] = MODALITIES
    augment_flip: bool = True  # left-right flips in training
    # "regression": the voxelwise regression baseline (fitted on the training cases, stored in the checkpoint)
    # is given to the network as a first guess of the target; "none": the contrasts alone (cWDM).
    prior: str = "regression"
    prior_degree: int = 2  # 1 = the linear baseline itself; 2 adds products of two contrasts (see baselines.py)
    # Train on patches of this size (image voxels) centred in the brain; null = whole volumes (cWDM).
    train_patch: tuple[int, int, int] | None = None
    # Run the network at inference on overlapping windows of this size (image voxels, Gaussian blended)
    # instead of the whole volume; null = whole volume. A network trained on patches has normalisation layers
    # that never saw a whole volume's share of background: on the demo, 48^3 windows for a 32^3-patch model gave
    # held-out SSIM 0.836 vs 0.825 for whole volumes (1 DDIM step), at 3x the network cost.
    inference_window: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.prior not in ("regression", "none"):
            raise ConfigError(f"synthesis.model.prior must be regression or none, got {self.prior!r}")
        if not 1 <= self.prior_degree <= 3:
            raise ConfigError(f"synthesis.model.prior_degree must be 1, 2 or 3, got {self.prior_degree}")
        bad = [t for t in self.targets if t not in MODALITIES]
        if bad or not self.targets:
            raise ConfigError(f"synthesis.model.targets must be a non-empty subset of {MODALITIES}, got {bad}")


@dataclass
class SynthesisEvalConfig(ConfigSection):
    targets: tuple[str, ...] = MODALITIES
    steps_curve: tuple[int, ...] = (10, 25, 50, 100, 1000)
    curve_cases: int = 1
    curve_targets: tuple[str, ...] = ("t2f",)


@dataclass
class BatchConfig(ConfigSection):
    """A folder of new cases to synthesise through the workflow (one job per case, as `medsci synthesize`)."""

    input: str | None = None  # folder of case folders; null = no batch
    output: str | None = None  # null = <results>/<name>/synthesis/batch
    checkpoint: str | None = None  # null = the model this workflow trains
    dicom_mapping: str | None = None
    # Co-registration of each case's contrasts: true/false = --register/--no-register; null = the command's
    # default (DICOM input registered, NIfTI not).
    register: bool | None = None


@dataclass
class SynthesisConfig(ConfigSection):
    enabled: bool = True
    data: SynthesisDataConfig
    preprocess: PreprocessConfig
    model: SynthesisModelConfig
    train: TrainConfig
    sample: SamplerConfig
    evaluation: SynthesisEvalConfig
    # The tumour segmenter of the downstream (BraSyn) test; see segmentation.py.
    segmentation: SegmentationConfig
    batch: BatchConfig

    def __post_init__(self):
        # The UNet runs on the half-resolution Haar grid, which its levels must divide.
        need = 2 * self.model.unet.downsampling_factor
        patch = self.model.train_patch
        if patch is not None and (any(p % need for p in patch) or any(p > s for p, s in zip(patch, self.preprocess.shape))):
            raise ConfigError(f"synthesis.model.train_patch {tuple(patch)} must fit preprocess.shape and be "
                              f"divisible by {need}")
        window = self.model.inference_window
        if window is not None and (any(w % need for w in window) or any(w > s for w, s in zip(window, self.preprocess.shape))):
            raise ConfigError(f"synthesis.model.inference_window {tuple(window)} must fit preprocess.shape and be "
                              f"divisible by {need}")
        if any(s % need for s in self.preprocess.shape):
            raise ConfigError(f"synthesis.preprocess.shape {tuple(self.preprocess.shape)} must be divisible by "
                              f"{need} (Haar level x UNet downsampling)")

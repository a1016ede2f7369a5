"""Settings of the seismic trace-interpolation generator (the ``seismic:`` section of a medsci config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from medsci.config_section import ConfigSection, preset
from medsci.diffusion.config import InferenceConfig, SamplerConfig, ScheduleConfig, TrainConfig, UNetConfig
from medsci.errors import ConfigError
from medsci.tasks.seismic.masks import PATTERNS

GUESS_METHODS = ("linear", "pocs", "mssa")


def holds_patch(shape, patch) -> bool:
    """Whether a block of ``shape`` (il, xl, t) holds a training ``patch`` (il, xl, t), as it is or il<->xl
    transposed (training draws both)."""
    (n_il, n_xl, n_t), (p_il, p_xl, p_t) = shape, patch
    return n_t >= p_t and ((n_il >= p_il and n_xl >= p_xl) or (n_il >= p_xl and n_xl >= p_il))


def guess_methods(condition: str) -> tuple[str, ...]:
    """The first guesses a ``condition`` names: ``zeros`` none, ``mssa`` one, ``mssa+linear`` two (the first is
    the residual's base). Raises ValueError on an unknown or repeated method."""
    if condition == "zeros":
        return ()
    methods = tuple(m.strip() for m in str(condition).split("+"))
    unknown = [m for m in methods if m not in GUESS_METHODS]
    if unknown or len(set(methods)) != len(methods):
        raise ValueError(f"condition {condition!r}: zeros, or one or more of {', '.join(GUESS_METHODS)} joined by "
                         "'+', each at most once")
    return methods


@dataclass
class SeismicDemoConfig(ConfigSection):
    cubes: int = 10
    seed: int = 0
    shape: tuple[int, int, int] = (32, 32, 64)  # (inline, crossline, time)

    def __post_init__(self):
        if self.cubes < 2:
            raise ConfigError("seismic.data.demo.cubes must be >= 2 (training + held-out)")


@dataclass
class SeismicDataConfig(ConfigSection):
    # Either a folder of complete post-stack cubes (*.segy, *.sgy, *.npy) or generated demo cubes.
    raw_dir: str | None = None
    demo: SeismicDemoConfig
    heldout: int = 2  # the last N cubes (sorted by id) are never trained on
    iline_byte: int = 189
    xline_byte: int = 193
    # One real survey instead of cubes: the workflow cuts it into a training block and a held-out block of
    # `survey_heldout` of its lines along `survey_axis`, `survey_gap` lines apart, and fills its dead traces.
    survey: str | None = None
    survey_heldout: float = 0.3
    survey_axis: str = "crossline"
    survey_gap: int = 2

    def __post_init__(self):
        if self.survey and self.raw_dir:
            raise ConfigError("seismic.data: give either survey (one SEG-Y file) or raw_dir (a folder of cubes)")
        if not 0.0 < self.survey_heldout < 1.0:
            raise ConfigError(f"seismic.data.survey_heldout must lie in (0, 1), got {self.survey_heldout}")
        if self.survey_axis not in ("inline", "crossline"):
            raise ConfigError(f"seismic.data.survey_axis must be inline or crossline, got {self.survey_axis!r}")
        if self.survey_gap < 0:
            raise ConfigError("seismic.data.survey_gap must be >= 0")


@dataclass
class SeismicModelConfig(ConfigSection):
    # Small on purpose: on 2 CPU cores more training steps beat more width (measured, see configs/demo.yaml).
    unet: UNetConfig = preset(UNetConfig, channels=(8, 16, 32), norm_num_groups=8, num_head_channels=8)
    schedule: ScheduleConfig
    patch: tuple[int, int, int] = (16, 16, 64)  # (il, xl, t) training patch = sliding window at inference
    scale_percentile: float = 99.0  # robust amplitude scale: this percentile of |observed samples| ...
    scale_value: float = 2.5  # ... becomes this value in model space (about unit variance for seismic)
    # Training masks: probability of each pattern (drawn per patch), and the missing ratio range of `random`.
    mask_weights: dict = field(default_factory=lambda: {"random": 0.7, "block": 0.15, "decimate": 0.15})
    random_ratio: tuple[float, float] = (0.3, 0.7)
    observed_loss_weight: float = 0.1  # loss weight of observed traces (missing traces weigh 1)
    condition: str = "pocs"  # zeros: observation + mask; linear / pocs / mssa: + that method's first guess;
    # several joined by '+' (mssa+linear): one channel each, the first named is the residual's base
    residual: bool = True  # diffuse cube - first guess (needs a first guess) instead of the cube
    augment: bool = True  # random il/xl flips and il<->xl transposes
    augment_polarity: bool = False  # with augment: also reversed polarity (doubles the data of a small survey)
    # "haar": the network works on the 8 Haar subbands of its input at half resolution (as cWDM; orthonormal,
    # so it is the same diffusion process), an 8x smaller grid: same SNR on the demo cubes for 1/4 of the
    # training time; "image": on the samples.
    domain: str = "haar"
    guess_bank: int = 32  # (region, mask, first guess) triples drawn per training cube before training

    def __post_init__(self):
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ConfigError(f"seismic.model.patch must be three positive sizes, got {self.patch}")
        f = self.unet.downsampling_factor
        if any(p % f for p in self.patch):
            raise ConfigError(f"seismic.model.patch {tuple(self.patch)} must be divisible by {f} (UNet levels)")
        if self.domain not in ("image", "haar"):
            raise ConfigError(f"seismic.model.domain must be image or haar, got {self.domain!r}")
        if self.domain == "haar" and any(p % (2 * f) for p in self.patch):
            raise ConfigError(f"seismic.model.patch {tuple(self.patch)} must be divisible by {2 * f} with "
                              "domain: haar (Haar level x UNet levels)")
        if self.guess_bank < 1:
            raise ConfigError("seismic.model.guess_bank must be >= 1")
        if not 50.0 <= self.scale_percentile <= 100.0:
            raise ConfigError("seismic.model.scale_percentile must be in [50, 100]")
        if not self.scale_value > 0:
            raise ConfigError("seismic.model.scale_value must be > 0")
        bad = sorted(set(self.mask_weights) - set(PATTERNS))
        if bad or not self.mask_weights or any(float(w) < 0 for w in self.mask_weights.values()) \
                or sum(float(w) for w in self.mask_weights.values()) <= 0:
            raise ConfigError(f"seismic.model.mask_weights needs non-negative weights for {PATTERNS}, "
                              f"got {self.mask_weights}")
        lo, hi = self.random_ratio
        if not 0.0 < lo <= hi < 1.0:
            raise ConfigError("seismic.model.random_ratio must satisfy 0 < low <= high < 1")
        try:
            guess_methods(self.condition)
        except ValueError as err:
            raise ConfigError(f"seismic.model.{err}") from None
        if self.residual and self.condition == "zeros":
            raise ConfigError("seismic.model.residual needs a first guess: condition linear, pocs or mssa")
        if self.observed_loss_weight < 0:
            raise ConfigError("seismic.model.observed_loss_weight must be >= 0")


@dataclass
class SeismicInferenceConfig(InferenceConfig):
    """The engine's inference settings with this generator's defaults: windows of the training patch
    (``window: null``), each batch of windows sampled on its own (bounded memory on any survey size)."""

    window_mode: str = "sampler"


@dataclass
class SeismicEvalConfig(ConfigSection):
    # Held-out masks: pattern -> keyword arguments of medsci.tasks.seismic.masks.make_mask.
    patterns: dict = field(default_factory=lambda: {"random": {"ratio_missing": 0.5}, "block": {},
                                                    "decimate": {"factor": 2}})
    mask_seed: int = 0
    unguided: bool = True  # also reconstruct without input guidance (same table)
    pocs_iterations: int = 50
    # Sampling benchmark on the first benchmark_cubes held-out cubes, `random` pattern: [steps, jumps] or
    # [steps, jumps, samples averaged] (default 1).
    benchmark: tuple = ((25, 0), (25, 2), (100, 0), (250, 0))
    benchmark_cubes: int = 1

    def __post_init__(self):
        bad = sorted(set(self.patterns) - set(PATTERNS))
        if bad or not self.patterns:
            raise ConfigError(f"seismic.evaluation.patterns must be a non-empty subset of {PATTERNS}, got {bad}")
        for name, params in self.patterns.items():
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"seismic.evaluation.patterns.{name} must be a mapping of mask parameters")
        self.patterns = {k: dict(v or {}) for k, v in self.patterns.items()}
        pairs = []
        for item in self.benchmark:
            if (not isinstance(item, (list, tuple)) or len(item) not in (2, 3) or int(item[0]) < 1
                    or int(item[1]) < 0 or (len(item) == 3 and int(item[2]) < 1)):
                raise ConfigError(f"seismic.evaluation.benchmark entries are [steps, jumps] or [steps, jumps, "
                                  f"samples], got {item!r}")
            pairs.append((int(item[0]), int(item[1]), int(item[2]) if len(item) == 3 else 1))
        self.benchmark = tuple(pairs)
        if self.pocs_iterations < 1 or self.benchmark_cubes < 0:
            raise ConfigError("seismic.evaluation.pocs_iterations must be >= 1 and benchmark_cubes >= 0")

    def to_dict(self):
        out = super().to_dict()
        out["benchmark"] = [list(p) for p in self.benchmark]  # plain lists: YAML/JSON round trip
        return out


@dataclass
class SeismicConfig(ConfigSection):
    enabled: bool = True
    data: SeismicDataConfig
    model: SeismicModelConfig
    train: TrainConfig = preset(TrainConfig, steps=1200, batch_size=4, lr=1e-3, warmup_steps=20, ema_decay=0.995,
                                checkpoint_every=100)
    # The mean of 4 posterior samples of 5 DDIM steps: 20 evaluations per window, +0.3 dB over one sample.
    sample: SamplerConfig = preset(SamplerConfig, steps=5, n_samples=4)
    inference: SeismicInferenceConfig
    evaluation: SeismicEvalConfig

    def __post_init__(self):
        # Demo cubes are the only data whose size is known here: each must hold one training patch (as it is or
        # il<->xl transposed, as training draws it). A survey is checked when it is split (survey.py).
        if not self.enabled or self.data.survey or self.data.raw_dir:
            return
        if len(self.data.demo.shape) != 3:
            raise ConfigError(f"seismic.data.demo.shape must be (inline, crossline, time) sizes, got "
                              f"{self.data.demo.shape}")
        (n_il, n_xl, n_t), (p_il, p_xl, p_t) = self.data.demo.shape, self.model.patch
        if not holds_patch(self.data.demo.shape, self.model.patch):
            raise ConfigError(f"seismic.data.demo.shape {n_il} x {n_xl} x {n_t} cannot hold the training patch "
                              f"{p_il} x {p_xl} x {p_t} (seismic.model.patch): the smallest demo cube that works is "
                              f"{p_il} inlines x {p_xl} crosslines x {p_t} samples")


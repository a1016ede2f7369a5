"""Preprocessing settings: :class:`PreprocessConfig`, the ``synthesis.preprocess`` config section.

Pure Python on purpose (no numpy, torch, SimpleITK or nibabel): task config modules import it, and the
CLI must start fast.
"""

from __future__ import annotations

import math
import numbers
import sys
from dataclasses import dataclass

from medsci.config_section import ConfigSection
from medsci.errors import ConfigError

_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


@dataclass
class PreprocessConfig(ConfigSection):
    """How cases are brought to a common network input (the ``synthesis.preprocess`` config section).

    A :class:`ConfigSection` so the project config builds it from YAML (unknown keys refused, lists
    made tuples); values are normalised and checked on construction.
    """

    shape: tuple[int, int, int] = (64, 72, 64)
    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    n4: bool = False
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    mask_threshold: float = 0.0
    divisor: int = 8
    # Cases whose voxel size is within this relative difference of ``spacing`` are not resampled: an
    # interpolation that changes nothing but blurs is avoided (the demo's 3.529 mm vs a preset's 3.53).
    spacing_tolerance: float = 0.05
    # Largest share of brain voxels the grid may cut off before a case is refused (0.01 = 1 %).
    max_brain_cut: float = 0.01
    # A case whose voxels are coarser than ``spacing`` by more than this factor on any axis is refused: the
    # model would be fed an interpolation it never saw in training. Above ``warn_upsampling``: a warning.
    max_upsampling: float = 2.0
    warn_upsampling: float = 1.25
    # Clip percentiles are taken this many voxels inside the brain: partial-volume voxels at its edge (many
    # more after resampling) would otherwise pull the lower percentile towards the background.
    stats_erosion: int = 2
    # Largest share of the scan the brain mask may cover: more means the images are not skull-stripped.
    max_mask_fraction: float = 0.6

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Normalise types and check values; ConfigError (naming the section ``where``) if wrong."""
        def fail(msg: str):
            raise ConfigError(f"{where or 'preprocess'}: {msg}")

        try:
            self.divisor = int(self.divisor)
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError):
            fail(f"shape and divisor must be integers, got shape={self.shape!r} divisor={self.divisor!r}")
        if self.divisor < 1:
            fail(f"divisor must be >= 1, got {self.divisor}")
        if len(shape) != 3 or any(s < 1 for s in shape):
            fail(f"shape must be 3 positive integers, got {list(shape)}")
        if any(s % self.divisor for s in shape):
            fail(f"every shape entry must be divisible by {self.divisor} (network downsampling), "
                 f"got {list(shape)}")
        self.shape = shape  # type: ignore[assignment]
        if self.spacing is not None:
            sp = self.spacing
            try:  # a single number means isotropic spacing
                sp = (float(sp),) * 3 if _is_scalar(sp) else tuple(float(s) for s in sp)  # type: ignore
            except (TypeError, ValueError):
                fail(f"spacing must be 1 or 3 numbers, got {self.spacing!r}")
            if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
                fail(f"spacing must be 1 or 3 positive numbers, got {self.spacing!r}")
            self.spacing = sp  # type: ignore[assignment]
        codes = str(self.orientation).upper()
        if (len(codes) != 3 or not set(codes) <= set("LRAPSI")
                or any(sum(c in pair for c in codes) != 1 for pair in _AXIS_PAIRS)):
            fail(f"orientation must be 3 axis codes like 'RAS' or 'LPS', got {self.orientation!r}")
        self.orientation = codes
        try:
            lo, hi = (float(c) for c in self.clip_percentiles)
        except (TypeError, ValueError):
            fail(f"clip_percentiles must be 2 numbers, got {self.clip_percentiles!r}")
        if not 0.0 <= lo < hi <= 100.0:
            fail(f"clip_percentiles must satisfy 0 <= lo < hi <= 100, got {[lo, hi]}")
        self.clip_percentiles = (lo, hi)
        self.n4 = bool(self.n4)
        self.mask_threshold = float(self.mask_threshold)
        try:
            self.spacing_tolerance = float(self.spacing_tolerance)
            self.max_brain_cut = float(self.max_brain_cut)
            self.max_upsampling = float(self.max_upsampling)
            self.warn_upsampling = float(self.warn_upsampling)
            self.max_mask_fraction = float(self.max_mask_fraction)
        except (TypeError, ValueError):
            fail("spacing_tolerance, max_brain_cut, max_upsampling and warn_upsampling must be numbers")
        if isinstance(self.stats_erosion, bool) or not isinstance(self.stats_erosion, int) or self.stats_erosion < 0:
            fail(f"stats_erosion must be a non-negative integer, got {self.stats_erosion!r}")
        if not 0.0 <= self.spacing_tolerance < 0.5:
            fail(f"spacing_tolerance must lie in [0, 0.5), got {self.spacing_tolerance}")
        if not 0.0 <= self.max_brain_cut <= 1.0:
            fail(f"max_brain_cut must lie in [0, 1], got {self.max_brain_cut}")
        if not 1.0 <= self.warn_upsampling <= self.max_upsampling:
            fail(f"need 1 <= warn_upsampling <= max_upsampling, got {self.warn_upsampling}, "
                 f"{self.max_upsampling}")


def _is_scalar(value) -> bool:
    """``numpy.isscalar`` without importing numpy (a numpy scalar implies numpy is already loaded)."""
    if type(value) in (str, bytes, memoryview) or isinstance(value, numbers.Number):
        return True
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.generic)

"""Seismic cubes on disk and in memory, held-out masks, and the training patches drawn from the cubes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.training import TrainingBatch
from medsci.errors import ConfigError, InputError
from medsci.io.segy import SEGY_SUFFIXES, SeismicCube, read_cube
from medsci.tasks.seismic.conditioning import condition_channels, first_guess, normalise, robust_scale
from medsci.tasks.seismic.config import SeismicDataConfig, SeismicModelConfig
from medsci.tasks.seismic.masks import PATTERNS, block_traces, make_mask, random_traces, regular_decimation

CUBE_SUFFIXES = (*SEGY_SUFFIXES, ".npy")


def cube_files(folder: str | Path) -> dict[str, Path]:
    """``{cube id (file stem): path}`` of every cube file in ``folder``, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("cube folder not found", folder)
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in CUBE_SUFFIXES and p.is_file()}
    if not files:
        raise InputError(f"no cube files ({', '.join(CUBE_SUFFIXES)}) in folder", folder)
    return dict(sorted(files.items()))


def find_cube(folder: str | Path, cube_id: str) -> Path:
    files = cube_files(folder)
    if cube_id not in files:
        raise InputError(f"no cube named {cube_id!r}", folder)
    return files[cube_id]


def load_cube(path: str | Path, data_cfg: SeismicDataConfig | None = None) -> SeismicCube:
    data_cfg = data_cfg or SeismicDataConfig()
    path = Path(path)
    kw = {"iline_byte": data_cfg.iline_byte, "xline_byte": data_cfg.xline_byte} \
        if path.suffix.lower() in SEGY_SUFFIXES else {}
    return read_cube(path, **kw)


def evaluation_mask(cube_id: str, shape: tuple[int, ...], pattern: str, params: dict, seed: int) -> np.ndarray:
    """The held-out mask of one (cube, pattern): depends only on (seed, cube id, pattern, params)."""
    if pattern not in PATTERNS:
        raise ConfigError(f"unknown mask pattern {pattern!r}; expected one of {', '.join(PATTERNS)}")
    rng = np.random.default_rng([int(seed), zlib.crc32(cube_id.encode()), PATTERNS.index(pattern)])
    return make_mask(pattern, shape, rng, **dict(params))


@dataclass
class TrainingCube:
    cube_id: str
    data: np.ndarray  # (il, xl, t) float32, normalised by ``scale``
    scale: float


def load_training_cubes(paths: list[Path], model_cfg: SeismicModelConfig,
                        data_cfg: SeismicDataConfig | None = None) -> list[TrainingCube]:
    """Read complete cubes and normalise each by its robust scale; each must hold one patch."""
    if not paths:
        raise InputError("no training cubes")
    cubes = []
    for path in paths:
        cube = load_cube(path, data_cfg)
        p_il, p_xl, p_t = model_cfg.patch
        n_il, n_xl, n_t = cube.shape
        if n_t < p_t or not ((n_il >= p_il and n_xl >= p_xl) or (n_il >= p_xl and n_xl >= p_il)):
            raise ConfigError(f"cube {cube.shape} is smaller than the training patch {tuple(model_cfg.patch)}",
                              path)
        scale = robust_scale(cube.data, model_cfg.scale_percentile, model_cfg.scale_value)
        cubes.append(TrainingCube(Path(path).stem, normalise(cube.data, scale), scale))
    return cubes


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


class SeismicTrainingTask:
    """Random patches of the training cubes with random missing-trace masks.

    Per patch: a cube, an optional il<->xl transpose and il/xl flips (seismic has no preferred lateral
    direction), a crop, and a mask whose pattern is drawn from ``mask_weights``. Masks are drawn on the
    patch grid: ``random`` with a missing ratio in ``random_ratio``, ``block`` with 1 .. half the lines
    of a random axis, ``decimate`` keeping every 2nd or 3rd line of a random axis. The first guess
    (``condition: linear | pocs``) is computed on the patch; with ``residual`` the target is patch - guess.
    The loss weighs missing traces 1 and observed ones ``observed_loss_weight`` (input guidance overwrites
    those anyway).
    All randomness comes from the engine's per-step generator, so batches are reproducible.
    """

    null_class_label = None

    def __init__(self, cubes: list[TrainingCube], cfg: SeismicModelConfig):
        self.cubes = [torch.from_numpy(np.ascontiguousarray(c.data)) for c in cubes]
        self.patch = tuple(int(p) for p in cfg.patch)
        self.augment = cfg.augment
        names = [p for p in PATTERNS if float(cfg.mask_weights.get(p, 0.0)) > 0]
        weights = np.array([float(cfg.mask_weights[p]) for p in names])
        self.patterns, self.pattern_p = names, weights / weights.sum()
        self.random_ratio = tuple(float(r) for r in cfg.random_ratio)
        self.observed_weight = float(cfg.observed_loss_weight)
        self.guess = None if cfg.condition == "zeros" else cfg.condition
        self.residual = cfg.residual

    def sample_mask(self, rng: np.random.Generator) -> np.ndarray:
        grid = self.patch[:2]
        pattern = self.patterns[int(rng.choice(len(self.patterns), p=self.pattern_p))]
        if pattern == "random":
            return random_traces(grid, rng.uniform(*self.random_ratio), rng)
        axis = int(rng.integers(0, 2))
        if pattern == "block":
            width = int(rng.integers(1, max(1, grid[axis] // 2) + 1))
            return block_traces(grid, width, axis, rng)
        factor = int(rng.integers(2, 4))
        return regular_decimation(grid, factor, axis, offset=int(rng.integers(0, min(factor, grid[axis]))))

    def _crop(self, generator: torch.Generator) -> torch.Tensor:
        cube = self.cubes[int(torch.randint(0, len(self.cubes), (1,), generator=generator))]
        transpose, flip_il, flip_xl = (torch.rand(3, generator=generator) < 0.5).tolist()
        p_il, p_xl, p_t = self.patch
        fits_plain = cube.shape[0] >= p_il and cube.shape[1] >= p_xl
        fits_transposed = cube.shape[1] >= p_il and cube.shape[0] >= p_xl
        if (self.augment and transpose and fits_transposed) or not fits_plain:
            cube = cube.transpose(0, 1)
        starts = [int(torch.randint(0, n - p + 1, (1,), generator=generator)) for n, p in zip(cube.shape, self.patch)]
        patch = cube[starts[0]:starts[0] + p_il, starts[1]:starts[1] + p_xl, starts[2]:starts[2] + p_t]
        if self.augment and flip_il:
            patch = patch.flip(0)
        if self.augment and flip_xl:
            patch = patch.flip(1)
        return patch

    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        x0 = torch.stack([self._crop(generator) for _ in range(batch_size)]).unsqueeze(1)
        rng = np.random.default_rng(_seed_from(generator))
        masks = torch.from_numpy(np.stack([self.sample_mask(rng) for _ in range(batch_size)]))
        mask = masks.view(batch_size, 1, *self.patch[:2], 1)
        weight = torch.where(mask, torch.tensor(self.observed_weight), torch.tensor(1.0))
        guess = None
        if self.guess is not None:
            guess = torch.from_numpy(np.stack([first_guess(p, m, self.guess)
                                               for p, m in zip(x0[:, 0].numpy(), masks.numpy())]))
            guess = guess.unsqueeze(1)
        condition = condition_channels(x0, mask, guess)
        target = x0 - guess if self.residual else x0  # residual: zero on observed traces
        return TrainingBatch(x0=target.contiguous(), condition=condition, loss_weight=weight)

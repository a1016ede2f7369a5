"""Seismic cubes on disk and in memory, held-out masks, and the training patches drawn from the cubes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.training import TrainingBatch
from medsci.errors import ConfigError, InputError
from medsci.io.segy import SEGY_SUFFIXES, SeismicCube, read_cube
from medsci.tasks.seismic.conditioning import condition_channels, first_guess, normalise, robust_scale
from medsci.tasks.seismic.config import SeismicDataConfig, SeismicModelConfig, guess_methods, holds_patch
from medsci.tasks.seismic.masks import (PATTERNS, block_traces, check_mask, dead_traces, make_mask, random_traces,
                                       regular_decimation)

CUBE_SUFFIXES = (*SEGY_SUFFIXES, ".npy")
REGION_TRIES = 20  # draws of a training region before one without any observed trace is kept


def cube_files(folder: str | Path) -> dict[str, Path]:
    """``{cube id (file stem): path}`` of every cube file in ``folder``, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("cube folder not found", folder)
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in CUBE_SUFFIXES and p.is_file()}
    if not files:
        raise InputError(f"no cube files ({', '.join(CUBE_SUFFIXES)}) in folder", folder)
    return dict(sorted(files.items()))


def cube_paths(folder: str | Path, cube_ids: list[str]) -> list[Path]:
    """The files of ``cube_ids`` in ``folder``, in that order; a missing one is refused."""
    files = cube_files(folder)
    missing = [c for c in cube_ids if c not in files]
    if missing:
        raise InputError(f"no cube file for {missing}", folder)
    return [files[c] for c in cube_ids]


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
    live: np.ndarray | None = None  # (il, xl) False at the survey's own gaps (dead traces); None = all live


def load_training_cubes(paths: list[Path], model_cfg: SeismicModelConfig,
                        data_cfg: SeismicDataConfig | None = None) -> list[TrainingCube]:
    """Read complete cubes and normalise each by its robust scale; each must hold one patch."""
    if not paths:
        raise InputError("no training cubes")
    cubes = []
    for path in paths:
        cube = load_cube(path, data_cfg)
        if not holds_patch(cube.shape, model_cfg.patch):
            raise ConfigError(f"cube {cube.shape} is smaller than the training patch {tuple(model_cfg.patch)}",
                              path)
        live = dead_traces(cube.data)
        if live.mean() < 0.5:
            raise InputError(f"{100 * (1 - live.mean()):.0f} % of the traces are dead (all zero): too few to "
                             "train on", path)
        scale = robust_scale(cube.data[live], model_cfg.scale_percentile, model_cfg.scale_value)
        cubes.append(TrainingCube(Path(path).stem, normalise(cube.data, scale), scale,
                                  None if live.all() else live))
    return cubes


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


class SeismicTrainingTask:
    """Random patches of the training cubes with random missing-trace masks.

    Per patch: a region of a cube up to twice the patch laterally (the whole demo cube), a mask on that region
    whose pattern is drawn from ``mask_weights`` (``random`` with a missing ratio in ``random_ratio``, ``block``
    with 1 .. half the lines of a random axis, ``decimate`` keeping every 2nd or 3rd line of a random axis),
    an optional il<->xl transpose and il/xl flips (seismic has no preferred lateral direction), and a crop.
    The loss weighs missing traces 1 and observed ones ``observed_loss_weight`` (input guidance overwrites
    those anyway).

    The first guess (``condition: linear | pocs | mssa``, or several joined by ``+``; with ``residual`` the target
    is patch - the first named guess) is made on
    the region, not on the patch: inference makes it on the whole cube, and a POCS guess made on a small patch
    is worse, so a network trained on patch guesses over-corrects the better guesses it gets at inference.
    POCS on a region costs more than a training step, so (region, mask, guess) triples are drawn once, into a
    bank of ``guess_bank`` per cube; every step then takes a fresh crop, flip and transpose of a bank entry.
    All randomness comes from the engine's per-step generator and ``seed``, so batches are reproducible.
    """

    def __init__(self, cubes: list[TrainingCube], cfg: SeismicModelConfig, seed: int = 0):
        self.cubes = [torch.from_numpy(np.ascontiguousarray(c.data)) for c in cubes]
        # Dead traces of a real survey are unknown truth: always missing in the input, never in the loss.
        self.live = [torch.from_numpy(c.live) if c.live is not None else torch.ones(c.data.shape[:2], dtype=torch.bool)
                     for c in cubes]
        self.patch = tuple(int(p) for p in cfg.patch)
        self.augment = cfg.augment
        self.polarity = cfg.augment and cfg.augment_polarity
        names = [p for p in PATTERNS if float(cfg.mask_weights.get(p, 0.0)) > 0]
        weights = np.array([float(cfg.mask_weights[p]) for p in names])
        self.patterns, self.pattern_p = names, weights / weights.sum()
        self.random_ratio = tuple(float(r) for r in cfg.random_ratio)
        self.observed_weight = float(cfg.observed_loss_weight)
        self.guess = None if cfg.condition == "zeros" else cfg.condition
        self.residual = cfg.residual
        self.bank: list[tuple[torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]] = []
        # What the user should know about the first guesses of these cubes (printed and kept with the checkpoint).
        self.warnings: list[str] = []
        if self.guess is not None and "mssa" in guess_methods(self.guess):
            from medsci.tasks.seismic.baselines import mssa_rank_note

            for c in cubes:
                n_il, n_xl = (min(n, 2 * p) for n, p in zip(c.data.shape[:2], self.patch[:2]))
                note = mssa_rank_note(n_il, n_xl)
                if note:
                    self.warnings.append(f"{c.cube_id}: training regions of {n_il} x {n_xl} traces: {note}")
        if self.guess is not None:
            rng = np.random.default_rng([int(seed), 0x5E15])
            gen = torch.Generator().manual_seed(int(seed))
            for index in range(len(self.cubes)):
                for _ in range(cfg.guess_bank):
                    for _ in range(REGION_TRIES):  # a region inside a dead zone teaches nothing: draw again
                        region, live = self._region(index, gen)
                        mask = self.sample_mask(rng, region.shape[:2]) & live.numpy()
                        if mask.any():
                            break
                    guess = torch.from_numpy(first_guess(region.numpy(), mask, self.guess))
                    self.bank.append((region, mask, guess, live))

    def sample_mask(self, rng: np.random.Generator, grid: tuple[int, int] | None = None) -> np.ndarray:
        grid = tuple(grid or self.patch[:2])
        pattern = self.patterns[int(rng.choice(len(self.patterns), p=self.pattern_p))]
        if pattern == "random":
            return random_traces(grid, rng.uniform(*self.random_ratio), rng)
        axis = int(rng.integers(0, 2))
        if pattern == "block":
            width = int(rng.integers(1, max(1, grid[axis] // 2) + 1))
            return block_traces(grid, width, axis, rng)
        factor = int(rng.integers(2, 4))
        return regular_decimation(grid, factor, axis, offset=int(rng.integers(0, min(factor, grid[axis]))))

    def _region(self, index: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Up to twice the patch along each axis, at a random place of cube ``index`` (il<->xl transposed
        when the cube only fits the patch that way), and its (il, xl) live-trace mask."""
        cube, live = self.cubes[index], self.live[index]
        if not (cube.shape[0] >= self.patch[0] and cube.shape[1] >= self.patch[1]):
            cube, live = cube.transpose(0, 1), live.transpose(0, 1)
        size = [min(n, 2 * p) for n, p in zip(cube.shape, self.patch)]
        starts = [int(torch.randint(0, n - s + 1, (1,), generator=generator)) for n, s in zip(cube.shape, size)]
        box = tuple(slice(a, a + s) for a, s in zip(starts, size))
        return cube[box].contiguous(), live[box[:2]].contiguous()

    def _augment(self, arrays: list[torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """The same transpose/flips for a region, its (il, xl) mask and its guess; then the same crop."""
        transpose, flip_il, flip_xl = (torch.rand(3, generator=generator) < 0.5).tolist()
        if self.polarity and bool(torch.rand(1, generator=generator) < 0.5):
            # Reversed polarity is as plausible a section, and both first guesses are odd in the data.
            arrays = [-a if a.ndim == 3 else a for a in arrays]
        shape = arrays[0].shape
        if self.augment and transpose and shape[1] >= self.patch[0] and shape[0] >= self.patch[1]:
            arrays = [a.transpose(0, 1) for a in arrays]
        if self.augment and flip_il:
            arrays = [a.flip(0) for a in arrays]
        if self.augment and flip_xl:
            arrays = [a.flip(1) for a in arrays]
        shape = arrays[0].shape
        starts = [int(torch.randint(0, n - p + 1, (1,), generator=generator)) for n, p in zip(shape, self.patch)]
        crop = tuple(slice(a, a + p) for a, p in zip(starts, self.patch))
        return [a[crop[: a.ndim]] for a in arrays]

    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        rng = np.random.default_rng(_seed_from(generator))
        x0s, masks, guesses, lives = [], [], [], []
        for _ in range(batch_size):
            if self.bank:
                region, mask, guess, live = self.bank[int(torch.randint(0, len(self.bank), (1,), generator=generator))]
                several = guess.ndim == 4  # (k, il, xl, t): one cube per named first guess
                parts = list(guess.unbind(0)) if several else [guess]
                patch, mask_t, live, *parts = self._augment([region, torch.from_numpy(mask), live, *parts], generator)
                guesses.append(torch.stack(parts) if several else parts[0].unsqueeze(0))
            else:
                region, live = self._region(int(torch.randint(0, len(self.cubes), (1,), generator=generator)),
                                            generator)
                mask = self.sample_mask(rng, region.shape[:2]) & live.numpy()
                patch, mask_t, live = self._augment([region, torch.from_numpy(mask), live], generator)
            x0s.append(patch)
            masks.append(mask_t)
            lives.append(live)
        x0 = torch.stack(x0s).unsqueeze(1)
        mask = torch.stack(masks).view(batch_size, 1, *self.patch[:2], 1)
        live = torch.stack(lives).view(batch_size, 1, *self.patch[:2], 1)
        weight = torch.where(mask, torch.tensor(self.observed_weight), torch.tensor(1.0)) * live
        guess = torch.stack(guesses) if guesses else None  # (B, k, il, xl, t)
        condition = condition_channels(x0, mask, guess)
        target = x0 - guess[:, :1] if self.residual else x0  # residual over the first named guess: zero on observed traces
        return TrainingBatch(x0=target.contiguous(), conditions=Conditions(condition=condition), loss_weight=weight)


def load_mask(path: str | Path, cube_shape) -> np.ndarray:
    """A per-trace mask from ``.npy``: (n_il, n_xl), bool or 0/1; checked against the cube."""
    path = Path(path)
    if not path.is_file():
        raise InputError("mask file not found", path)
    if path.suffix.lower() != ".npy":
        raise InputError("mask must be a .npy array of shape (n_il, n_xl), 1 = observed trace", path)
    from medsci.io.volume import load_npy

    mask = load_npy(path, "mask .npy array")
    if not (mask.dtype == bool or np.issubdtype(mask.dtype, np.number)):
        raise InputError(f"mask dtype {mask.dtype} is not boolean or numeric", path)
    return check_mask(mask, cube_shape, path)

"""Train the seismic interpolation model and reconstruct missing traces with it.

Model: a 3D conditional diffusion UNet on (il, xl, t) patches, x0 prediction by default. Condition channels:
the zero-filled observation and the trace mask, plus (``condition: linear | pocs``) a classical first
guess; with ``residual: true`` the diffused quantity is cube - first guess, which is exactly zero on the
observed traces, so an untrained network already returns the first guess and training only adds to it.

Reconstruction of a whole survey: the cube is normalised by its robust scale and handed to the engine's
inference path (``medsci.diffusion.inference.generate``): overlapping windows of the training patch size, each
batch of windows sampled on its own with input guidance (at every step the observed traces are replaced by the
observation noised to that step), Gaussian blending. The blended result is mapped back to amplitudes, and
every observed sample is copied from the input unchanged.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from typing import Any
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import SamplerConfig
from medsci.diffusion.device import default_device
from medsci.diffusion.inference import generate, sampler_with
from medsci.diffusion.networks import build_network, network_spec
from medsci.diffusion.training import train
from medsci.errors import InputError
from medsci.generator import Generator, LoadedModel as EngineModel
from medsci.tasks.seismic.conditioning import (
    condition_channels,
    condition_names,
    denormalise,
    first_guess,
    normalise,
    reinsert_observed,
    robust_scale,
)
from medsci.tasks.seismic.config import SeismicConfig, SeismicInferenceConfig
from medsci.tasks.seismic.data import SeismicTrainingTask, cube_paths, load_training_cubes
from medsci.tasks.seismic.masks import check_mask

TASK = "seismic-interpolation"


def model_spec(cfg: SeismicConfig) -> dict:
    return network_spec(cfg.model.unet, 3, 1, condition_channels=len(condition_names(cfg.model.condition)),
                        haar=cfg.model.domain == "haar", dropout_kinds=cfg.train.dropout_kinds)


def checkpoint_config(cfg: SeismicConfig) -> dict:
    return {
        "task": TASK,
        "model": model_spec(cfg),
        "schedule": cfg.model.schedule.to_dict(),
        "patch": list(cfg.model.patch),
        "scale_percentile": cfg.model.scale_percentile,
        "scale_value": cfg.model.scale_value,
        "condition": cfg.model.condition,
        "residual": cfg.model.residual,
        "condition_channels": list(condition_names(cfg.model.condition)),
        "domain": ("(cube - first guess if residual else cube) * scale_value / percentile(|observed samples|, "
                   "scale_percentile), axes (il, xl, t)"),
        # Inference defaults of `medsci interpolate` when no config is given.
        "sample": cfg.sample.to_dict(),
        "inference": cfg.inference.to_dict(),
    }


def train_seismic(cfg: SeismicConfig, cube_paths: list[Path], out_dir: str | Path, device: str | None = "auto",
                  progress: bool = True) -> Path:
    cubes = load_training_cubes([Path(p) for p in cube_paths], cfg.model, cfg.data)
    torch.manual_seed(cfg.train.seed)  # network initialisation
    ckcfg = checkpoint_config(cfg)
    model = build_network(ckcfg["model"])
    task = SeismicTrainingTask(cubes, cfg.model, seed=cfg.train.seed)
    ckcfg["training_cubes"] = [c.cube_id for c in cubes]
    if task.warnings:
        ckcfg["warnings"] = task.warnings
        for line in task.warnings:
            print(f"warning: {line}", file=sys.stderr)
    return train(model, task, cfg.model.schedule, cfg.train, out_dir, ckcfg, default_device(device), progress)


@dataclass
class LoadedModel(EngineModel):
    patch: tuple[int, int, int]
    scale_percentile: float
    scale_value: float
    condition: str
    residual: bool
    sample: SamplerConfig  # defaults stored at training time
    inference: SeismicInferenceConfig


class Seismic(Generator, name="seismic", checkpoint_task=TASK, loaded_model=LoadedModel):
    def parse(self, ckcfg: dict) -> dict:
        patch = tuple(int(p) for p in ckcfg["patch"])
        scale_percentile = float(ckcfg["scale_percentile"])
        scale_value = float(ckcfg["scale_value"])
        condition = str(ckcfg.get("condition", "zeros"))
        residual = bool(ckcfg.get("residual", False))
        try:
            names = condition_names(condition)
        except ValueError as err:
            raise ValueError(f"checkpoint {err}") from None
        if ckcfg["model"]["condition_channels"] != len(names):
            raise ValueError(f"condition {condition!r} does not fit the network's input channels")
        sampler = SamplerConfig.from_dict(ckcfg.get("sample"), "sample")
        inference = SeismicInferenceConfig.from_dict(ckcfg.get("inference"), "inference")
        return {"patch": patch, "scale_percentile": scale_percentile, "scale_value": scale_value,
                "condition": condition, "residual": residual, "sample": sampler, "inference": inference}

    def train(self, section: SeismicConfig, args: Any, device, progress: bool = True) -> Path:
        return train_seismic(section, cube_paths(args.data, args.cubes), args.out, device, progress=progress)


STAGES = Seismic()
load_model = STAGES.load


@dataclass
class Reconstruction:
    data: np.ndarray  # (il, xl, t) float32 amplitudes; observed traces bit-identical to the input
    scale: float  # robust amplitude scale the model worked in
    network_evaluations: int  # network calls per window (sampler steps x (1 + jumps) x n_samples)
    windows: int  # sliding windows the cube was cut into
    window_evaluations: int  # network evaluations summed over all windows
    empty_windows: int  # windows without a single observed trace (reconstructed unconditionally)
    seconds: float
    input_guidance: bool
    resample_jumps: int
    # Voxelwise standard deviation in the cube's amplitude units (0 on observed traces), or None; and which
    # method gave it: variance (the network's variance head) | samples (spread over n_samples) | none.
    std: np.ndarray | None = None
    uncertainty: str = "none"
    warnings: list[str] = field(default_factory=list)  # what the user should know about this reconstruction


def reconstruct(loaded: LoadedModel, observed: np.ndarray, mask: np.ndarray, sampler: SamplerConfig | None = None,
                inference: SeismicInferenceConfig | None = None, source: str | Path | None = None,
                progress: bool = False) -> Reconstruction:
    """Fill the missing traces (``mask`` False) of ``observed`` (il, xl, t).

    ``sampler``/``inference`` default to what the checkpoint was trained with; ``sampler.n_samples`` > 1
    averages that many samples per window. ``std`` of the result: the engine's uncertainty map (variance head
    and/or spread over samples) in amplitude units, exactly 0 on the observed traces, which are copied. Randomness: window batch ``k`` of the sliding window uses
    generators seeded with ``(sampler.seed, k, sample)``, so the same seed and settings give the same bytes.
    """
    sampler = sampler or loaded.sample
    inference = inference or loaded.inference
    observed = np.asarray(observed, dtype=np.float32)
    if observed.ndim != 3:
        raise InputError(f"expected an (il, xl, t) cube, got shape {observed.shape}", source)
    mask = check_mask(mask, observed.shape, source)
    if not np.isfinite(observed[mask]).all():
        raise InputError("observed traces contain NaN or infinite samples", source)
    scale = robust_scale(observed[mask], loaded.scale_percentile, loaded.scale_value)
    obs_n = normalise(np.where(mask[..., None], observed, 0.0), scale)
    guess, warnings = None, []
    if "mssa" in condition_names(loaded.condition):
        from medsci.tasks.seismic.baselines import mssa_rank_note

        note = mssa_rank_note(*observed.shape[:2])
        if note:
            warnings.append(note)
    if loaded.condition != "zeros":
        guess = torch.from_numpy(first_guess(obs_n, mask, loaded.condition)).reshape(1, -1, *observed.shape)
    # (1, 2 + first guesses, il, xl, t) on the CPU; the windows of it are the sampler's condition.
    inputs = condition_channels(torch.from_numpy(obs_n)[None, None], torch.from_numpy(mask)[None, None], guess)

    # Windows of the training patch unless the inference settings name another size.
    inference = replace(inference, window=tuple(inference.window or loaded.patch))
    result = generate(loaded.model, loaded.schedule, sampler, inference, Conditions(condition=inputs),
                      (1, 1, *observed.shape), known=inputs[:, :1], known_mask=inputs[:, 1:2],
                      # Residual models diffuse cube - (first named) guess, exactly 0 on observed traces.
                      offset=inputs[:, 2:3] if loaded.residual else None, device=loaded.device, progress=progress,
                      source=None if source is None else str(source))
    recon = denormalise(result.mean[0, 0].numpy(), scale)
    std = None
    if result.std is not None:
        # A std only scales with the amplitudes: the residual's first guess shifts the mean, not the spread.
        std = np.where(mask[..., None], np.float32(0), denormalise(result.std[0, 0].numpy(), scale))
    return Reconstruction(reinsert_observed(recon, observed, mask), scale, result.network_evaluations,
                          result.windows, result.window_evaluations, result.empty_windows, result.seconds,
                          result.input_guidance, result.resample_jumps, std, result.uncertainty, warnings)


def sampler_for(loaded: LoadedModel, base: SamplerConfig | None = None, steps: int | None = None,
                seed: int | None = None, n_samples: int | None = None) -> SamplerConfig:
    """The checkpoint's (or ``base``) sampler with command-line overrides, checked against the schedule."""
    return sampler_with(base or loaded.sample, loaded.schedule, steps=steps, seed=seed, n_samples=n_samples)

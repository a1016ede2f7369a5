"""Train the seismic interpolation model and reconstruct missing traces with it.

Model: a 3D conditional diffusion UNet on (il, xl, t) patches, x0 prediction by default. Condition channels:
the zero-filled observation and the trace mask, plus (``condition: linear | pocs``) a classical first
guess; with ``residual: true`` the diffused quantity is cube - first guess, which is exactly zero on the
observed traces, so an untrained network already returns the first guess and training only adds to it.

Reconstruction of a whole survey: the cube is normalised by its robust scale, cut into overlapping
windows of the training patch size by MONAI's ``SlidingWindowInferer`` (Gaussian blending), and every batch
of windows goes through the whole reverse diffusion (``medsci.diffusion.sampling.sample``) with input
guidance: at every step the observed traces are replaced by the observation noised to that step. The
blended result is mapped back to amplitudes, and every observed sample is copied from the input unchanged.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

from medsci.diffusion.checkpoint import load_for_inference
from medsci.diffusion.config import SamplerConfig, ScheduleConfig, UNetConfig
from medsci.diffusion.device import default_device
from medsci.diffusion.model import HaarDomainNetwork, build_unet
from medsci.diffusion.sampling import sample
from medsci.diffusion.training import train
from medsci.errors import ConfigError, InputError
from medsci.tasks.seismic.conditioning import (
    CONDITIONS,
    condition_channels,
    denormalise,
    first_guess,
    normalise,
    reinsert_observed,
    robust_scale,
)
from medsci.tasks.seismic.config import SeismicConfig, SeismicInferenceConfig
from medsci.tasks.seismic.data import SeismicTrainingTask, load_training_cubes
from medsci.tasks.seismic.masks import check_mask

TASK = "seismic-interpolation"


def _bands(domain: str) -> int:
    """Channels per input channel the network sees: 8 Haar subbands, or the samples themselves."""
    return 8 if domain == "haar" else 1


def model_spec(cfg: SeismicConfig) -> dict:
    bands = _bands(cfg.model.domain)
    return {
        "unet": cfg.model.unet.to_dict(),
        "spatial_dims": 3,
        "in_channels": (1 + len(CONDITIONS[cfg.model.condition])) * bands,
        "out_channels": bands,
        "domain": cfg.model.domain,
    }


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
        "condition_channels": list(CONDITIONS[cfg.model.condition]),
        "domain": ("(cube - first guess if residual else cube) * scale_value / percentile(|observed samples|, "
                   "scale_percentile), axes (il, xl, t)"),
        # Inference defaults of `medsci interpolate` when no config is given.
        "sample": cfg.sample.to_dict(),
        "inference": cfg.inference.to_dict(),
    }


def build_model(spec: dict) -> torch.nn.Module:
    unet = build_unet(UNetConfig.from_dict(spec["unet"], "model.unet"), spec["spatial_dims"], spec["in_channels"],
                      spec["out_channels"])
    return HaarDomainNetwork(unet) if spec.get("domain", "image") == "haar" else unet


def train_seismic(cfg: SeismicConfig, cube_paths: list[Path], out_dir: str | Path, device: str | None = "auto",
                  progress: bool = True) -> Path:
    cubes = load_training_cubes([Path(p) for p in cube_paths], cfg.model, cfg.data)
    torch.manual_seed(cfg.train.seed)  # network initialisation
    ckcfg = checkpoint_config(cfg)
    model = build_model(ckcfg["model"])
    task = SeismicTrainingTask(cubes, cfg.model, seed=cfg.train.seed)
    ckcfg["training_cubes"] = [c.cube_id for c in cubes]
    return train(model, task, cfg.model.schedule, cfg.train, out_dir, ckcfg, default_device(device), progress)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    config: dict
    schedule: ScheduleConfig
    patch: tuple[int, int, int]
    scale_percentile: float
    scale_value: float
    condition: str
    residual: bool
    sample: SamplerConfig  # defaults stored at training time
    inference: SeismicInferenceConfig
    device: torch.device


def load_model(checkpoint: str | Path, device: str | None = "auto", use_ema: bool = True) -> LoadedModel:
    def parse(ckcfg: dict) -> tuple:
        schedule = ScheduleConfig.from_dict(ckcfg["schedule"], "schedule")
        patch = tuple(int(p) for p in ckcfg["patch"])
        scale_percentile = float(ckcfg["scale_percentile"])
        scale_value = float(ckcfg["scale_value"])
        condition = str(ckcfg.get("condition", "zeros"))
        residual = bool(ckcfg.get("residual", False))
        bands = _bands(ckcfg["model"].get("domain", "image"))
        if condition not in CONDITIONS or ckcfg["model"]["in_channels"] != (1 + len(CONDITIONS[condition])) * bands:
            raise ValueError(f"condition {condition!r} does not fit the network's input channels")
        sampler = SamplerConfig.from_dict(ckcfg.get("sample"), "sample")
        inference = SeismicInferenceConfig.from_dict(ckcfg.get("inference"), "inference")
        return schedule, patch, scale_percentile, scale_value, condition, residual, sampler, inference

    model, ckcfg, parsed, dev = load_for_inference(checkpoint, TASK, build_model, parse, device, use_ema)
    return LoadedModel(model, ckcfg, *parsed, dev)


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


def reconstruct(loaded: LoadedModel, observed: np.ndarray, mask: np.ndarray, sampler: SamplerConfig | None = None,
                inference: SeismicInferenceConfig | None = None, source: str | Path | None = None,
                progress: bool = False) -> Reconstruction:
    """Fill the missing traces (``mask`` False) of ``observed`` (il, xl, t).

    ``sampler``/``inference`` default to what the checkpoint was trained with; ``sampler.n_samples`` > 1
    averages that many samples per window. Randomness: window batch ``k`` of the sliding window uses
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
    guess = None if loaded.condition == "zeros" else torch.from_numpy(first_guess(obs_n, mask, loaded.condition))[
        None, None]
    # (1, 2 or 3, il, xl, t) on the CPU; the windows of it are the sampler's condition.
    inputs = condition_channels(torch.from_numpy(obs_n)[None, None], torch.from_numpy(mask)[None, None], guess)

    guided = inference.input_guidance
    jumps = inference.resample_jumps if guided else 0
    counts = {"calls": 0, "nfe": 0, "windows": 0, "window_nfe": 0, "empty": 0}

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        known_mask = windows[:, 1:2]
        counts["empty"] += int((known_mask.flatten(1).amax(1) == 0).sum())
        # Residual models diffuse cube - first guess, which is exactly 0 on observed traces.
        offset = windows[:, 2:3] if loaded.residual else torch.zeros(())
        total, nfe = None, 0
        # n_samples > 1: the mean of several posterior samples, which approaches the MMSE estimate.
        for k in range(sampler.n_samples):
            gen = torch.Generator().manual_seed((sampler.seed * 1_000_003 + counts["calls"]) * 101 + k)
            result = sample(loaded.model, loaded.schedule, sampler, windows,
                            (windows.shape[0], 1, *windows.shape[2:]), generator=gen,
                            known=windows[:, :1] - offset if guided else None,
                            known_mask=known_mask if guided else None, resample_jumps=jumps, device=loaded.device)
            total = result.sample.float() if total is None else total + result.sample.float()
            nfe += result.network_evaluations
        counts["calls"] += 1
        counts["nfe"] = nfe
        counts["windows"] += windows.shape[0]
        counts["window_nfe"] += nfe * windows.shape[0]
        return total / sampler.n_samples + offset.to(total.device)

    inferer = SlidingWindowInferer(roi_size=loaded.patch, sw_batch_size=inference.sw_batch_size,
                                   overlap=inference.overlap, mode="gaussian", sigma_scale=inference.sigma_scale,
                                   padding_mode="constant", cval=0.0, sw_device=loaded.device,
                                   device=torch.device("cpu"), progress=progress)
    started = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.5 indexes with lists of slices, which torch >= 2.8 flags as deprecated on every window.
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        out = inferer(inputs, predictor)
    seconds = time.perf_counter() - started
    recon = denormalise(out[0, 0].numpy(), scale)
    return Reconstruction(reinsert_observed(recon, observed, mask), scale, counts["nfe"], counts["windows"],
                          counts["window_nfe"], counts["empty"], seconds, guided, jumps)


def sampler_for(loaded: LoadedModel, base: SamplerConfig | None = None, steps: int | None = None,
                seed: int | None = None, n_samples: int | None = None) -> SamplerConfig:
    """The checkpoint's (or ``base``) sampler with command-line overrides, checked against the schedule."""
    cfg = base or loaded.sample
    if steps is not None:
        cfg = replace(cfg, steps=steps)
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    if n_samples is not None:
        if n_samples < 1:
            raise ConfigError("--n-samples must be >= 1", "command line")
        cfg = replace(cfg, n_samples=n_samples)
    if cfg.steps < 1:
        raise ConfigError("sampling steps must be >= 1", "command line")
    if cfg.steps > loaded.schedule.num_train_timesteps:
        raise ConfigError(f"{cfg.steps} sampling steps exceed the {loaded.schedule.num_train_timesteps} "
                          "training timesteps")
    return cfg



def bench_seismic_item(device: str | None = None, steps: int = 3,
                       sample_steps: int | None = None) -> dict:
    """``medsci bench`` item: train-step time at the default (demo) preset, and the time and network
    evaluations to reconstruct one demo-sized cube (random 50 % missing) with an untrained network and the
    default sampler (or ``sample_steps`` DDIM steps, one sample)."""
    from medsci.demo.seismic import make_seismic_cube
    from medsci.diffusion.model import build_scheduler
    from medsci.diffusion.training import diffusion_loss
    from medsci.tasks.seismic.data import TrainingCube
    from medsci.tasks.seismic.masks import random_traces

    cfg = SeismicConfig()
    dev = default_device(device)
    torch.manual_seed(0)
    ckcfg = checkpoint_config(cfg)
    model = build_model(ckcfg["model"]).to(dev)
    shape = tuple(cfg.data.demo.shape)
    cube = make_seismic_cube(shape, np.random.default_rng(0))
    task = SeismicTrainingTask([TrainingCube("bench", cube / robust_scale(cube, 99.0, 2.5), 1.0)], cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = build_scheduler(cfg.model.schedule, "train")
    times = []
    for i in range(steps + 1):
        gen = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        loss = diffusion_loss(model, scheduler, cfg.model.schedule, task.batch(gen, cfg.train.batch_size), gen,
                              0.0, None, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:  # the first step warms up kernels and allocator
            times.append(time.perf_counter() - start)
    sampler = cfg.sample if sample_steps is None else replace(cfg.sample, steps=sample_steps, n_samples=1)
    loaded = LoadedModel(model.eval(), ckcfg, cfg.model.schedule, tuple(cfg.model.patch), cfg.model.scale_percentile,
                         cfg.model.scale_value, cfg.model.condition, cfg.model.residual, sampler,
                         cfg.inference, dev)
    mask = random_traces(shape, 0.5, np.random.default_rng(0))
    rec = reconstruct(loaded, np.where(mask[..., None], cube, 0.0), mask)
    return {"device": str(dev), "cube": list(shape), "patch": list(cfg.model.patch),
            "parameters": sum(p.numel() for p in model.parameters()), "train_batch": cfg.train.batch_size,
            "domain": cfg.model.domain, "train_step_s": min(times), "sample_steps": sampler.steps,
            "samples_averaged": sampler.n_samples, "seconds_per_cube": rec.seconds,
            "network_evaluations_per_window": rec.network_evaluations, "windows_per_cube": rec.windows,
            "reference_seisfusion_network_evaluations": 2410}


try:  # `medsci bench` lists this generator's item when the bench module is part of the build
    from medsci import bench as _bench

    _bench.register_item("seismic", bench_seismic_item)
except ImportError:
    pass

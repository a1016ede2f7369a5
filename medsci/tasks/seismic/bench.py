"""``medsci bench`` item of the seismic generator (registered in ``medsci/tasks/seismic/__init__.py``)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from medsci.diffusion.device import default_device
from medsci.diffusion.schedulers import build_scheduler
from medsci.diffusion.networks import build_network
from medsci.diffusion.training import diffusion_loss
from medsci.tasks.seismic.conditioning import robust_scale
from medsci.tasks.seismic.config import SeismicConfig
from medsci.tasks.seismic.data import SeismicTrainingTask, TrainingCube
from medsci.tasks.seismic.demo import make_seismic_cube
from medsci.tasks.seismic.masks import random_traces
from medsci.tasks.seismic.pipeline import LoadedModel, checkpoint_config, reconstruct


def bench_seismic_item(device: str | None = None, steps: int = 3,
                       sample_steps: int | None = None) -> dict:
    """``medsci bench`` item: train-step time at the default (demo) preset, and the time and network
    evaluations to reconstruct one demo-sized cube (random 50 % missing) with an untrained network and the
    default sampler (or ``sample_steps`` DDIM steps, one sample)."""
    cfg = SeismicConfig()
    dev = default_device(device)
    torch.manual_seed(0)
    ckcfg = checkpoint_config(cfg)
    model = build_network(ckcfg["model"]).to(dev)
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
                              {}, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:  # the first step warms up kernels and allocator
            times.append(time.perf_counter() - start)
    sampler = cfg.sample if sample_steps is None else replace(cfg.sample, steps=sample_steps, n_samples=1)
    loaded = LoadedModel(model=model.eval(), config=ckcfg, schedule=cfg.model.schedule, device=dev,
                         patch=tuple(cfg.model.patch), scale_percentile=cfg.model.scale_percentile,
                         scale_value=cfg.model.scale_value, condition=cfg.model.condition,
                         residual=cfg.model.residual, sample=sampler, inference=cfg.inference)
    mask = random_traces(shape, 0.5, np.random.default_rng(0))
    rec = reconstruct(loaded, np.where(mask[..., None], cube, 0.0), mask)
    return {"device": str(dev), "cube": list(shape), "patch": list(cfg.model.patch),
            "parameters": sum(p.numel() for p in model.parameters()), "train_batch": cfg.train.batch_size,
            "domain": cfg.model.domain, "train_step_s": min(times), "sample_steps": sampler.steps,
            "samples_averaged": sampler.n_samples, "seconds_per_cube": rec.seconds,
            "network_evaluations_per_window": rec.network_evaluations, "windows_per_cube": rec.windows,
            "reference_seisfusion_network_evaluations": 2410}

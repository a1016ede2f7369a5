"""``medsci bench`` item of the rotation generator: DRR rendering, a training step, sampling with and without
adaptive guidance (untrained network at the default preset)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from medsci.diffusion.device import default_device


def _timed(fn, dev, repeats: int = 2) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return best


def bench_rotation_item(device: str | None = None, ct_shape: tuple[int, int, int] = (128, 128, 128),
                        detector_sizes: tuple[int, ...] = (256, 512)) -> dict:
    from medsci.diffusion.networks import build_network
    from medsci.tasks.rotation.config import RotationConfig
    from medsci.tasks.rotation.demo import chest_ct
    from medsci.tasks.rotation.drr import DetectorGeometry, hu_to_mu, render_drr
    from medsci.tasks.rotation.pipeline import LoadedModel, checkpoint_config, rotate

    cfg = RotationConfig()
    dev = default_device(device)
    spacing = tuple(320.0 / s for s in ct_shape)
    hu, affine = chest_ct(0, ct_shape, spacing)
    mu = hu_to_mu(torch.from_numpy(hu).to(dev))
    out = {"device": str(dev), "ct_shape": list(ct_shape), "drr_seconds_per_view": {}}
    for size in detector_sizes:
        geometry = DetectorGeometry(pixels=(size, size), spacing=(448.0 / size, 448.0 / size))
        angles = np.array([[5.0, -3.0, 10.0]])
        out["drr_seconds_per_view"][f"{size}x{size}"] = _timed(lambda: render_drr(mu, affine, geometry, angles), dev)
    torch.manual_seed(0)
    ckcfg = checkpoint_config(cfg)
    model = build_network(ckcfg["model"]).to(dev).eval()
    geometry = DetectorGeometry(pixels=tuple(cfg.drr.pixels), spacing=tuple(cfg.drr.spacing))
    loaded = LoadedModel(model=model, config=ckcfg, schedule=cfg.model.schedule, device=dev,
                         residual=cfg.model.residual, first_guess=cfg.model.first_guess,
                         max_angle=tuple(cfg.pairs.max_angle), pixels=tuple(cfg.drr.pixels), geometry=geometry,
                         sample=cfg.sample)
    source = np.random.default_rng(0).random((1, *cfg.drr.pixels)).astype(np.float32)
    out["image"] = list(cfg.drr.pixels)
    out["parameters"] = sum(p.numel() for p in model.parameters())
    for name, sampler in {"adaptive_guidance": cfg.sample,
                          "full_guidance": replace(cfg.sample, adaptive_guidance=None),
                          "no_guidance": replace(cfg.sample, guidance_scale=1.0, adaptive_guidance=None)}.items():
        res = rotate(loaded, source, [[0.0, 0.0, 10.0]], sampler)
        out[f"{name}_network_evaluations"] = res.network_evaluations
        out[f"{name}_seconds_per_image"] = _timed(lambda s=sampler: rotate(loaded, source, [[0.0, 0.0, 10.0]], s), dev,
                                                  repeats=1)
    out["note"] = "untrained network: adaptive guidance stops when guided and conditional estimates agree, " \
                  "which a trained model reaches (see the evaluation's guidance table for trained figures)"
    return out

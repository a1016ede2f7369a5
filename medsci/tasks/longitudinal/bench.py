"""``medsci bench`` item of the longitudinal generator: train-step time and memory against the number of
context frames, sampling time per predicted frame (untrained network, default preset)."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch

from medsci.diffusion.device import default_device


def bench_longitudinal_item(device: str | None = None, frames: tuple[int, ...] = (2, 4, 8), steps: int = 2) -> dict:
    from medsci.diffusion.schedulers import build_scheduler
    from medsci.diffusion.networks import build_network
    from medsci.diffusion.training import diffusion_loss
    from medsci.tasks.longitudinal.config import LongitudinalConfig
    from medsci.tasks.longitudinal.data import LongitudinalTrainingTask
    from medsci.tasks.longitudinal.pipeline import LoadedModel, checkpoint_config, predict

    dev = default_device(device)
    out = {"device": str(dev), "grid": None, "train_step_s": {}, "peak_memory_mb": {}}
    rng = np.random.default_rng(0)
    for n in frames:
        cfg = LongitudinalConfig()
        cfg.model = replace(cfg.model, max_frames=n, context_dropout=0.0)
        shape = tuple(cfg.preprocess.shape)
        out["grid"] = list(shape)
        torch.manual_seed(0)
        ck = checkpoint_config(cfg)
        model = build_network(ck["model"]).to(dev)
        subject = {"frames": rng.random((n + 1, *shape)).astype(np.float32), "times": np.arange(n + 1) * 200.0}
        task = LongitudinalTrainingTask([subject], cfg.model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scheduler = build_scheduler(cfg.model.schedule, "train")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for i in range(steps + 1):
            gen = torch.Generator().manual_seed(i)
            # Always the last session as target: every context slot filled.
            batch = task.batch(gen, cfg.train.batch_size)
            start = time.perf_counter()
            loss = diffusion_loss(model, scheduler, cfg.model.schedule, batch, gen, {}, dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:
                times.append(time.perf_counter() - start)
        out["train_step_s"][str(n)] = min(times)
        if dev.type == "cuda":
            out["peak_memory_mb"][str(n)] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        if n == frames[-1]:
            loaded = LoadedModel(model=model.eval(), config=ck, schedule=cfg.model.schedule, device=dev, max_frames=n,
                                 shape=shape, sample=cfg.sample)
            p = predict(loaded, subject["frames"][:-1], subject["times"][:-1], float(subject["times"][-1]))
            out["sampling_seconds_per_frame"] = p.seconds
            out["network_evaluations_per_frame"] = p.network_evaluations
    if dev.type != "cuda":
        import resource

        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out

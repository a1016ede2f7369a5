"""``medsci bench`` items of the synthesis generator (registered in ``medsci/tasks/synthesis/__init__.py``).

The synthesis items time what the pipeline runs: the preset's network, training patch and batch through the
engine's loss, then ``synthesize`` (windows, sampler, samples averaged) on one volume of the preset's grid.
PRESETS hold the model-relevant parts of ``configs/demo.yaml`` and ``configs/brats.yaml`` (a test keeps them
equal), so an installed wheel benches without the repository's configs.
"""

from __future__ import annotations

import resource
import tempfile
import time

PRESETS = {
    "demo": {
        "preprocess": {"shape": [64, 72, 64]},
        "model": {"unet": {"channels": [16, 32, 32], "attention_levels": [False, False, False],
                           "num_res_blocks": 1, "norm_num_groups": 8},
                  "train_patch": [32, 32, 32], "inference_window": [48, 48, 48]},
        "train": {"batch_size": 4},
        "sample": {"steps": 1, "n_samples": 1},
    },
    "brats": {
        "preprocess": {"shape": [224, 224, 160]},
        "model": {"unet": {"channels": [64, 128, 128, 256, 256], "attention_levels": [False] * 5,
                           "num_res_blocks": 2, "norm_num_groups": 32},
                  "train_patch": None, "inference_window": None},
        "train": {"batch_size": 1},
        "sample": {"steps": 1, "n_samples": 1},
    },
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_synthesis(preset: str | dict, device=None, steps: int = 3, sample_steps: int | None = None) -> dict:
    """Train-step time and peak memory at a preset's size; sampling time and network evaluations per volume
    with its sampler (or ``sample_steps`` DDIM steps, one sample). ``preset``: a name in PRESETS or a dict."""
    import numpy as np
    import torch

    from medsci.diffusion.device import default_device
    from medsci.diffusion.schedulers import build_scheduler
    from medsci.diffusion.networks import build_network
    from medsci.diffusion.training import diffusion_loss, step_generator
    from medsci.mri.cases import MODALITIES
    from medsci.tasks.synthesis.baselines import LinearRegressionBaseline
    from medsci.tasks.synthesis.config import SynthesisConfig
    from medsci.tasks.synthesis.data import PreparedCase, SynthesisTrainingTask
    from medsci.tasks.synthesis.pipeline import LoadedModel, checkpoint_config, synthesize

    name = preset if isinstance(preset, str) else "custom"
    cfg = SynthesisConfig.from_dict(PRESETS[preset] if isinstance(preset, str) else preset, "synthesis")
    if sample_steps is not None:
        cfg.sample = type(cfg.sample).from_dict({**cfg.sample.to_dict(), "steps": sample_steps, "n_samples": 1})
    dev = default_device(device)
    shape = tuple(cfg.preprocess.shape)
    rng = np.random.default_rng(0)
    # A random "brain": an ellipsoid of uniform noise; timing does not depend on the content.
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    mask = (grid ** 2).sum(0) < 0.8
    image = (rng.random((len(MODALITIES), *shape), dtype=np.float32) * mask).astype(np.float32)
    case = PreparedCase("bench", image, mask, None, tuple(MODALITIES), {})
    prior = LinearRegressionBaseline.fit([case], cfg.model.targets, degree=cfg.model.prior_degree) \
        if cfg.model.prior == "regression" else None
    ckcfg = checkpoint_config(cfg)
    if prior is not None:
        ckcfg["prior"] = prior.to_dict()
    torch.manual_seed(0)
    model = build_network(ckcfg["model"]).to(dev)
    task = SynthesisTrainingTask([case], cfg.model.targets, patch=cfg.model.train_patch, prior=prior,
                                 class_conditional=ckcfg["model"]["num_classes"] is not None)
    scheduler = build_scheduler(cfg.model.schedule, "train")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for i in range(steps + 1):
        gen = step_generator(0, i)
        batch = task.batch(gen, cfg.train.batch_size)
        _sync(dev)
        start = time.perf_counter()
        with autocast:
            loss = diffusion_loss(model, scheduler, cfg.model.schedule, batch, gen, {}, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i:  # the first step warms up kernels and allocator
            times.append(time.perf_counter() - start)
    out = {"preset": name, "device": str(dev), "grid": list(shape), "haar_grid": [s // 2 for s in shape],
           "parameters": sum(p.numel() for p in model.parameters()), "train_step_s": min(times),
           "train_batch": cfg.train.batch_size, "train_patch": list(cfg.model.train_patch or shape)}
    if dev.type == "cuda":
        out["train_peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        out["train_peak_rss_mb"] = _peak_rss_mb()
    loaded = LoadedModel(model=model.eval(), config=ckcfg, schedule=cfg.model.schedule, device=dev,
                         preprocess=cfg.preprocess, prior=prior)
    _sync(dev)
    result = synthesize(loaded, case, "t2f", cfg.sample)
    _sync(dev)
    out.update({"sample_s_per_volume": result.seconds, "sample_steps": cfg.sample.steps,
                "samples_averaged": cfg.sample.n_samples,
                "inference_window": list(cfg.model.inference_window) if cfg.model.inference_window else None,
                "network_evaluations_per_volume": result.network_evaluations,
                "reference_cwdm_network_evaluations": 1000})
    if dev.type == "cuda":
        out["sample_peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_demo_item(device=None) -> dict:
    return bench_synthesis("demo", device)


def bench_brats_item(device=None) -> dict:
    """The full BraTS-size network: one train step and one DDIM step (a GPU node's job)."""
    return bench_synthesis("brats", device, steps=1, sample_steps=1)


def bench_preprocessing_item(device=None) -> dict:
    from medsci.mri.preprocessing.bench import bench_preprocessing

    with tempfile.TemporaryDirectory(prefix="medsci-bench-") as tmp:
        return bench_preprocessing(tmp)

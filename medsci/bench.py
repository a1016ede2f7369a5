"""``medsci bench``: speed and memory figures, each measured in a fresh process.

Every item runs in its own spawned process so its peak memory (ru_maxrss on CPU, max_memory_allocated on CUDA)
is its own. Figures are machine-dependent: the JSON records the machine they came from.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from typing import Callable

# (volume grid, UNet channels, residual blocks, norm groups, training patch, batch, inference window,
#  DDIM steps, samples averaged) as configs/demo.yaml and configs/brats.yaml (None = the whole volume).
SYNTHESIS_PRESETS = {
    "demo": ((64, 72, 64), (16, 32, 32), 1, 8, (32, 32, 32), 4, (48, 48, 48), 5, 4),
    "brats": ((224, 224, 160), (64, 128, 128, 256, 256), 2, 32, None, 1, None, 25, 1),
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device(name: str | None):
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_haar_item(device=None) -> dict:
    from medsci.wavelets import bench_haar

    return bench_haar(device=str(_device(device)))


def bench_preprocessing_item(device=None) -> dict:
    from medsci.preprocessing.mri import bench_preprocessing

    with tempfile.TemporaryDirectory(prefix="medsci-bench-") as tmp:
        return bench_preprocessing(tmp)


def bench_synthesis_item(preset: str, device=None, steps: int = 3, sample_steps: int | None = None) -> dict:
    """Train-step time and peak memory at a preset's size (its training patch and batch); sampling time and
    network evaluations per volume with its sampler (or ``sample_steps`` DDIM steps, one sample)."""
    import torch

    from medsci.diffusion.config import SamplerConfig, ScheduleConfig, UNetConfig
    from medsci.diffusion.model import WindowedNetwork, build_unet
    from medsci.diffusion.sampling import sample
    from medsci.tasks.synthesis.conditioning import image_space_clamp

    dev = _device(device)
    shape, channels, res_blocks, groups, patch, batch, window, ddim_steps, n_samples = SYNTHESIS_PRESETS[preset]
    if sample_steps is not None:
        ddim_steps, n_samples = sample_steps, 1
    unet = UNetConfig(channels=channels, attention_levels=(False,) * len(channels), num_res_blocks=res_blocks,
                      norm_num_groups=groups)
    torch.manual_seed(0)
    # Noisy target + four contrast slots + the first guess, 8 Haar subbands each.
    model = build_unet(unet, 3, 48, 8, num_class_embeds=4).to(dev)
    params = sum(p.numel() for p in model.parameters())
    half = [s // 2 for s in shape]
    train_half = [s // 2 for s in (patch or shape)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 48, *train_half, device=dev)
    t = torch.randint(0, 1000, (batch,), device=dev)
    y = torch.zeros(batch, dtype=torch.long, device=dev)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda")
    times = []
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    for i in range(steps + 1):
        _sync(dev)
        start = time.perf_counter()
        with autocast:
            loss = model(x, t, class_labels=y).float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(dev)
        if i:  # the first step warms up kernels/allocator
            times.append(time.perf_counter() - start)
    out = {"preset": preset, "device": str(dev), "grid": list(shape), "haar_grid": half, "parameters": params,
           "train_step_s": min(times), "train_batch": batch, "train_patch": list(patch or shape)}
    if dev.type == "cuda":
        out["train_peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        out["train_peak_rss_mb"] = _peak_rss_mb()
    model.eval()
    # As the synthesis pipeline: the samples of one volume are one batch, windows on the Haar grid.
    network = WindowedNetwork(model, [w // 2 for w in window], overlap=0.5) if window else model
    sampler = SamplerConfig(steps=ddim_steps, n_samples=n_samples)
    cond = torch.randn(n_samples, 40, *half)
    mask = torch.ones(n_samples, 1, *shape, device=dev)
    _sync(dev)
    start = time.perf_counter()
    res = sample(network, ScheduleConfig(), sampler, cond, (n_samples, 8, *half),
                 generator=torch.Generator().manual_seed(0), class_labels=torch.zeros(n_samples, dtype=torch.long),
                 x0_transform=image_space_clamp(mask), device=dev)
    _sync(dev)
    out.update({"sample_s_per_volume": time.perf_counter() - start, "sample_steps": ddim_steps,
                "samples_averaged": n_samples, "inference_window": list(window) if window else None,
                "network_evaluations_per_volume": res.network_evaluations * n_samples,
                "reference_cwdm_network_evaluations": 1000})
    if dev.type == "cuda":
        out["sample_peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return out


def _run_child(fn_name: str, kwargs: dict, queue) -> None:
    try:
        _load_generator_items()  # a spawned child starts with only the built-in items
        fn = ITEMS[fn_name][0]
        result = fn(**kwargs)
        result.setdefault("peak_rss_mb", _peak_rss_mb())
        queue.put(("ok", result))
    except Exception as err:  # report, don't crash the whole benchmark
        queue.put(("error", f"{type(err).__name__}: {err}"))


ITEMS: dict[str, tuple[Callable, dict]] = {
    "haar": (bench_haar_item, {}),
    "preprocessing": (bench_preprocessing_item, {}),
    "synthesis-demo": (bench_synthesis_item, {"preset": "demo"}),
    "synthesis-brats": (bench_synthesis_item, {"preset": "brats", "steps": 1, "sample_steps": 1}),
}


def _load_generator_items() -> None:
    try:
        import medsci.tasks.seismic.pipeline  # noqa: F401  (registers "seismic")
    except ImportError:
        pass


def register_item(name: str, fn: Callable, kwargs: dict | None = None) -> None:
    """Generators add their own bench items (e.g. seismic) here."""
    ITEMS[name] = (fn, kwargs or {})


def machine() -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(names: list[str], device: str | None = None, log=print) -> dict:
    ctx = mp.get_context("spawn")
    results = {"machine": machine(), "device": str(device or "auto"), "items": {}}
    for name in names:
        fn, kwargs = ITEMS[name]
        kwargs = {**kwargs, "device": device}
        queue = ctx.Queue()
        proc = ctx.Process(target=_run_child, args=(name, kwargs, queue))
        started = time.perf_counter()
        proc.start()
        status, value = queue.get()
        proc.join()
        results["items"][name] = value if status == "ok" else {"error": value}
        log(f"bench {name}: {'done' if status == 'ok' else value} ({time.perf_counter() - started:.1f} s)")
    return results

"""``medsci bench``: speed and memory figures, each measured in a fresh process.

The engine's own item is ``haar`` (the wavelet transform every Haar-domain network runs at each call); every
generator adds its items through the registry (``Task.bench_items``), e.g. synthesis's ``load`` (memory of a
200-case batch through ``medsci synthesize`` and the workflow). Each item runs in its own spawned process
so its peak memory (ru_maxrss on CPU, max_memory_allocated on CUDA) is its own. Figures are machine-dependent:
the JSON records the machine they came from.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import resource
import time
from typing import Callable

from medsci import registry

ENGINE_ITEMS = {"haar": "medsci.bench:bench_haar_item"}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_haar_item(device=None) -> dict:
    from medsci.diffusion.device import default_device
    from medsci.wavelets import bench_haar

    return bench_haar(device=str(default_device(device)))


def items() -> dict[str, str]:
    """Every bench item: ``{name: "module:function"}``, the engine's first."""
    out = dict(ENGINE_ITEMS)
    for task in registry.tasks().values():
        out.update(task.bench_items)
    return out


def default_items() -> list[str]:
    return list(ENGINE_ITEMS) + [n for t in registry.tasks().values() for n in t.default_bench]


def _run_child(name: str, kwargs: dict, queue) -> None:
    try:
        fn: Callable = registry.resolve(items()[name])
        result = fn(**kwargs)
        result.setdefault("peak_rss_mb", _peak_rss_mb())
        queue.put(("ok", result))
    except Exception as err:  # report, don't crash the whole benchmark
        queue.put(("error", f"{type(err).__name__}: {err}"))


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
        queue = ctx.Queue()
        proc = ctx.Process(target=_run_child, args=(name, {"device": device}, queue))
        started = time.perf_counter()
        proc.start()
        status, value = queue.get()
        proc.join()
        results["items"][name] = value if status == "ok" else {"error": value}
        log(f"bench {name}: {'done' if status == 'ok' else value} ({time.perf_counter() - started:.1f} s)")
    return results

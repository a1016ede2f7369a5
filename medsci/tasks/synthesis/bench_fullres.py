"""``medsci bench --items synthesis-fullres``: one full-resolution case through ``medsci synthesize``.

A BraTS-size case (240x240x155 voxels of 1 mm, t1n/t1c/t2w as NIfTI, synthetic content, t2f left out) and the
configs/brats.yaml preset's synthesis network with random, seeded weights saved as a real checkpoint folder; then
``medsci synthesize`` in a child process (reading the NIfTI files, preprocessing, the preset's default sampler,
writing the NIfTI back on the input grid), timed end to end, interpreter start and model load included, with the
child's own peak resident memory (wait4). The weights do not change time or memory: the network and sampler do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PRESET = REPO / "configs" / "brats.yaml"
NATIVE_SHAPE = (240, 240, 155)
TARGET = "t2f"


def preset_section(overrides: dict | None = None) -> dict:
    """The brats preset's synthesis settings (the repository's file, else the bench's copy in an installed
    wheel) with ``overrides`` merged over them."""
    from medsci.config import merge_settings, read_preset
    from medsci.tasks.synthesis.bench import PRESETS

    section = read_preset(PRESET).get("synthesis", {}) if PRESET.is_file() else PRESETS["brats"]
    return merge_settings(section, overrides or {})


def write_random_checkpoint(cfg, folder: Path, seed: int = 0) -> int:
    """A checkpoint folder of the preset's network with seeded random weights; returns its parameter count."""
    import numpy as np
    import torch

    from medsci.diffusion.checkpoint import save_checkpoint
    from medsci.diffusion.networks import build_network
    from medsci.mri.cases import MODALITIES
    from medsci.tasks.synthesis.baselines import LinearRegressionBaseline
    from medsci.tasks.synthesis.data import PreparedCase
    from medsci.tasks.synthesis.pipeline import checkpoint_config

    ckcfg = checkpoint_config(cfg)
    if cfg.model.prior == "regression":  # a first guess fitted on noise: its coefficients cost nothing at inference
        rng = np.random.default_rng(seed)
        noise = PreparedCase("noise", rng.random((len(MODALITIES), 8, 8, 8), dtype=np.float32),
                             np.ones((8, 8, 8), bool), None, tuple(MODALITIES), {})
        ckcfg["prior"] = LinearRegressionBaseline.fit([noise], cfg.model.targets,
                                                      degree=cfg.model.prior_degree).to_dict()
    spacing = [float(s) for s in (cfg.preprocess.spacing or (1.0, 1.0, 1.0))]
    ckcfg.update({"training_cases": [], "step": 0, "bench": "random weights (medsci bench synthesis-fullres)",
                  "geometry": {"spacing": spacing, "orientation": cfg.preprocess.orientation,
                               "shape": list(cfg.preprocess.shape),
                               "field_of_view_mm": [s * n for s, n in zip(spacing, cfg.preprocess.shape)]}})
    torch.manual_seed(seed)
    model = build_network(ckcfg["model"])
    save_checkpoint(folder, ckcfg, model)
    return sum(p.numel() for p in model.parameters())


def write_case(root: Path, shape, seed: int = 0) -> Path:
    """One synthetic four-contrast case of ``shape`` spanning BraTS' field of view (1 mm voxels at 240x240x155,
    larger ones for the smaller grids of tests); the target and the segmentation are moved out of the input
    folder (to ``root/truth``), so the case misses exactly the target."""
    from medsci.tasks.synthesis.demo import write_brats_dataset

    (case_dir,) = write_brats_dataset(root / "input", cases=1, seed=seed, shape=shape)
    (root / "input" / "dataset.json").unlink(missing_ok=True)
    (root / "truth").mkdir()
    for path in sorted(case_dir.iterdir()):
        if path.name.endswith((f"-{TARGET}.nii.gz", "-seg.nii.gz")):
            shutil.move(str(path), str(root / "truth" / path.name))
    return case_dir


def run_measured(cmd: list[str], log: Path) -> tuple[int, float, float]:
    """(exit status, wall seconds, peak RSS GB) of ``cmd`` run as a child: ru_maxrss of that child alone."""
    from medsci.tasks.synthesis.bench_load import _env

    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    return proc.returncode, seconds, usage.ru_maxrss / 2**20  # kB on Linux


def bench_fullres(device=None, shape=NATIVE_SHAPE, overrides: dict | None = None, threads: int | None = None,
                  workdir: str | None = None, keep: bool = False, log=print) -> dict:
    """Seconds, network evaluations and peak memory of ``medsci synthesize`` on one ``shape`` case with the
    brats preset (``overrides`` merged over it: tests use a tiny network, and a preprocess grid and spacing that
    fit the smaller case, see ``write_case``). ``keep``: leave the work
    folder (input, checkpoint, output) and report its path."""
    import nibabel as nib
    import numpy as np
    import torch

    from medsci.diffusion.config import resolve_sampler
    from medsci.diffusion.device import default_device
    from medsci.tasks.synthesis.config import SynthesisConfig

    cfg = SynthesisConfig.from_dict(preset_section(overrides), "synthesis")
    dev = default_device(device)
    root = Path(tempfile.mkdtemp(prefix="medsci-fullres-", dir=workdir))
    try:
        case_dir = write_case(root, tuple(int(n) for n in shape))
        parameters = write_random_checkpoint(cfg, root / "model")
        log(f"synthesis-fullres: {tuple(shape)} case and {parameters / 1e6:.1f} M-parameter checkpoint in {root}")
        cmd = [sys.executable, "-m", "medsci", "synthesize", "--checkpoint", str(root / "model"),
               "--input", str(root / "input"), "--output", str(root / "output"), "--no-progress",
               "--device", dev.type, *(["--threads", str(threads)] if threads else [])]
        code, seconds, rss_gb = run_measured(cmd, root / "synthesize.log")
        if code != 0:
            tail = (root / "synthesize.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"medsci synthesize exited with {code}:\n{tail}")
        cid = case_dir.name
        record = json.loads((root / "output" / cid / f"{cid}.json").read_text(encoding="utf-8"))
        out_file = root / "output" / cid / f"{cid}_{TARGET}_SYNTHETIC.nii.gz"
        ref, made = nib.load(case_dir / f"{cid}-t1n.nii.gz"), nib.load(out_file)
        sampler = resolve_sampler(cfg.sample, cfg.model.schedule, cfg.model.unet.variance_head)
        result = {
            "preset": str(PRESET) if PRESET.is_file() else "medsci.tasks.synthesis.bench.PRESETS['brats']",
            "input_shape": list(ref.shape), "spacing_mm": [float(v) for v in ref.header.get_zooms()[:3]],
            "grid": list(cfg.preprocess.shape), "parameters": parameters, "weights": "random (seed 0)",
            "device": str(dev), "threads": threads or torch.get_num_threads(), "sampler": sampler.to_dict(),
            "network_evaluations": record["network_evaluations"], "seconds_per_volume": round(seconds, 2),
            "case_seconds": record["seconds"],  # inside the process: reading to writing, model load excluded
            # The synthesize process's, also under the name `medsci bench` gives every item's own peak.
            "peak_rss_gb": round(rss_gb, 3), "peak_rss_mb": round(rss_gb * 1024, 1),
            "uncertainty": record.get("uncertainty") or "none",
            "output": str(out_file.relative_to(root)) if keep else out_file.name,
            "output_on_input_grid": bool(made.shape == ref.shape and np.allclose(made.affine, ref.affine,
                                                                                   atol=1e-5)),
        }
        if keep:
            result["workdir"] = str(root)
        return result
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def bench_fullres_item(device=None) -> dict:
    """The full 240x240x155 case with the brats preset (minutes on a CPU)."""
    return bench_fullres(device)

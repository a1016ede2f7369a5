"""Train the radiograph-rotation model and rotate radiographs with it.

Model: a 2D conditional diffusion UNet (the engine's ``ConditionalUNet``) on the detector grid. The source view
is concatenated as a channel, the rotation is a vector condition (sin/cos features, embedded by an MLP and
added to the time embedding), and with probability ``train.condition_dropout.vector`` the rotation is replaced
by a learned null: classifier-free guidance over the rotation at sampling, adaptive guidance skipping the
unconditional call once guided and conditional estimates agree. The network predicts the clean residual
``2 * (target - first guess)`` by default (x0 prediction; the first guess is the projective warp of the source,
exact for in-plane rotations), so an untrained network returns the warp.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.config import InferenceConfig, SamplerConfig
from medsci.diffusion.device import default_device
from medsci.diffusion.inference import generate
from medsci.diffusion.networks import build_network, network_spec
from medsci.diffusion.training import train
from medsci.errors import InputError
from medsci.generator import Generator, LoadedModel as EngineModel
from medsci.tasks.rotation.config import DRRConfig, RotationConfig
from medsci.tasks.rotation.data import MODEL_SCALE, RotationTrainingTask, geometry_of, load_pairs, model_inputs
from medsci.tasks.rotation.drr import DetectorGeometry

TASK = "radiograph-rotation"


def checkpoint_config(cfg: RotationConfig) -> dict:
    return {
        "task": TASK,
        "model": network_spec(cfg.model.unet, 2, 1, condition_channels=2 if cfg.model.first_guess == "warp" else 1,
                              vector_dim=6,
                              haar=cfg.model.domain == "haar", haar_levels=cfg.model.haar_levels,
                              dropout_kinds=cfg.train.dropout_kinds),
        "schedule": cfg.model.schedule.to_dict(),
        "residual": cfg.model.residual,
        "first_guess": cfg.model.first_guess,
        "max_angle": list(cfg.pairs.max_angle),
        "drr": cfg.drr.to_dict(),
        "window_percentile": cfg.pairs.window_percentile,
        "domain": "2 * (target - first guess if residual else target), images in [0, 1]; vector: sin/cos of "
                  "angle / max_angle * pi / 2 per axis (x, y, z)",
        "sample": cfg.sample.to_dict(),
    }


def train_rotation(cfg: RotationConfig, pair_paths: list[Path], out_dir: str | Path, device: str | None = "auto",
                   progress: bool = True) -> Path:
    from medsci.tasks.rotation.data import refusal_of

    refused = {Path(p).stem: refusal_of(p) for p in pair_paths}
    for name, reason in refused.items():
        if reason is not None:
            print(f"warning: {name} left out of training: {reason}")
    pair_paths = [p for p in pair_paths if refused[Path(p).stem] is None]
    if not pair_paths:
        raise InputError("every training CT was refused")
    pairs = [load_pairs(p) for p in pair_paths]
    shapes = {p.source.shape for p in pairs}
    if shapes != {tuple(cfg.drr.pixels)}:
        raise InputError(f"pair images {sorted(shapes)} do not match rotation.drr.pixels {tuple(cfg.drr.pixels)}",
                         pair_paths[0].parent if pair_paths else None)
    torch.manual_seed(cfg.train.seed)
    ckcfg = checkpoint_config(cfg)
    ckcfg["training_cts"] = [Path(p).stem for p in pair_paths]
    model = build_network(ckcfg["model"])
    task = RotationTrainingTask(pairs, cfg.model, cfg.pairs.max_angle, geometry_of(cfg.drr))
    return train(model, task, cfg.model.schedule, cfg.train, out_dir, ckcfg, default_device(device), progress)


@dataclass
class LoadedModel(EngineModel):
    residual: bool
    first_guess: str
    max_angle: tuple[float, float, float]
    pixels: tuple[int, int]
    geometry: DetectorGeometry
    sample: SamplerConfig


class Rotation(Generator, name="rotation", checkpoint_task=TASK, loaded_model=LoadedModel):
    def parse(self, ck: dict) -> dict:
        geometry = geometry_of(DRRConfig.from_dict(ck["drr"], "drr"))
        max_angle = tuple(float(a) for a in ck["max_angle"])
        if len(max_angle) != 3:
            raise ValueError("max_angle")
        sampler = SamplerConfig.from_dict(ck.get("sample"), "sample")
        first_guess = str(ck.get("first_guess", "source"))
        channels = 2 if first_guess == "warp" else 1
        if ck["model"]["condition_channels"] != channels:
            raise ValueError(f"first_guess {first_guess!r} does not fit the network's condition channels")
        return {"residual": bool(ck["residual"]), "first_guess": first_guess, "max_angle": max_angle,
                "pixels": geometry.pixels, "geometry": geometry, "sample": sampler}

    def train(self, section: RotationConfig, args: Any, device, progress: bool = True) -> Path:
        return train_rotation(section, args.pairs, args.out, device, progress=progress)

    def sample(self, section: RotationConfig, loaded: LoadedModel, args: Any) -> int:
        """Held-out views rotated by the model and the baselines: one <ct>.npz each (a refused CT: its reason)."""
        from medsci.io.atomic import safe_join
        from medsci.tasks.rotation.data import refusal_of, save_refusal
        from medsci.tasks.rotation.evaluation import save_predictions

        loaded.sample = section.sample
        for path in args.pairs:
            reason = refusal_of(path)
            if reason is not None:  # refused at the pairs step: recorded, and the other CTs go on
                save_refusal(safe_join(args.out, path.name), reason)
                print(f"{path.stem}: refused earlier ({reason})")
                continue
            result = predict_heldout(loaded, load_pairs(path), section, geometry_of(section.drr))
            save_predictions(safe_join(args.out, path.name), result)
            print(f"{path.stem}: {result['nfe']} network evaluations")
        return 0


def predict_heldout(loaded, pairs, cfg, geometry) -> dict:
    """{remap: {method: (K, H, W)}}, and network evaluations / seconds per model variant; the model's (K, H, W)
    std on the plain inputs (``std``, absent without one) and where it came from (``uncertainty``)."""
    from medsci.tasks.rotation.baselines import BASELINES
    from medsci.tasks.rotation.evaluation import REMAPS, guidance_variants

    out: dict = {"predictions": {}, "nfe": {}, "seconds": {}, "std": {}, "uncertainty": "none"}
    for remap in ("none", *cfg.evaluation.remaps):
        f = REMAPS[remap]
        src = f(pairs.source)
        preds = {name: np.stack([fn(src, a, geometry) if name == "warp" else fn(src, a) for a in pairs.angles])
                 for name, fn in BASELINES.items()}
        variants = guidance_variants(loaded.sample) if remap == "none" else {"model": loaded.sample}
        for name, sampler in variants.items():
            res = rotate(loaded, np.repeat(src[None], len(pairs.angles), 0), pairs.angles, sampler)
            preds[name] = res.image
            if remap == "none":
                # Per image: adaptive guidance stops each view's unconditional calls on its own.
                out["nfe"][name] = float(np.mean(res.view_evaluations))
                out["seconds"][name] = res.seconds / len(pairs.angles)
            if remap == "none" and name == "model" and res.std is not None:
                out["std"]["model"], out["uncertainty"] = res.std, res.uncertainty
        out["predictions"][remap] = preds
    return out


STAGES = Rotation()
load_model = STAGES.load


@dataclass
class Rotated:
    image: np.ndarray  # (B, H, W) float32 in [0, 1]
    std: np.ndarray | None  # (B, H, W) on the image's [0, 1] scale, or None
    network_evaluations: int  # network calls for the batch
    seconds: float
    uncertainty: str = "none"  # where std came from: variance | samples | none
    view_evaluations: np.ndarray | None = None  # (B,) network evaluations each view took part in
    first_guess: np.ndarray | None = None  # (B, H, W) what the model corrects: the source or its warp


def rotate(loaded: LoadedModel, sources: np.ndarray, angles, sampler: SamplerConfig | None = None) -> Rotated:
    """Rotated views of (B, H, W) source views in [0, 1] (the model's detector size) by (B, 3) angles."""
    src = torch.as_tensor(np.asarray(sources, dtype=np.float32))
    if src.ndim == 2:
        src = src[None]
    if tuple(src.shape[1:]) != tuple(loaded.pixels):
        raise InputError(f"images of {tuple(src.shape[1:])} pixels do not match the model's {loaded.pixels}")
    ang = np.asarray(angles, dtype=np.float64).reshape(-1, 3)
    if ang.shape[0] == 1 and src.shape[0] > 1:
        ang = np.repeat(ang, src.shape[0], 0)
    conditions, offset = model_inputs(src[:, None], ang, loaded.max_angle, loaded.residual, loaded.first_guess,
                                      loaded.geometry)
    result = generate(loaded.model, loaded.schedule, sampler or loaded.sample, InferenceConfig(window=None),
                      conditions, (src.shape[0], 1, *src.shape[1:]), offset=offset, device=loaded.device)
    image = (result.mean[:, 0] / MODEL_SCALE).clamp(0.0, 1.0).numpy()
    std = None if result.std is None else (result.std[:, 0] / MODEL_SCALE).numpy()
    guess = (conditions.condition[:, -1] / MODEL_SCALE).numpy()  # the last condition channel: source or its warp
    return Rotated(image, std, result.network_evaluations, result.seconds, result.uncertainty,
                   result.item_evaluations.numpy(), guess)

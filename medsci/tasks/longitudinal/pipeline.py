"""Train the longitudinal model; predict a subject's volume at any time, and forecast sessions autoregressively.

Model: the engine's 3D ``ConditionalUNet`` (Haar domain by default) with a ``FrameSequenceEncoder`` as its context
encoder (a transformer over the earlier frames, each patch-embedded, with embeddings of its time relative to the
target; missing frames masked out), the last frame as condition channels and the time gap as a vector.
Classifier-free guidance drops the whole context (learned null token). The network predicts the change since
the last frame (x0 prediction of ``CHANGE_SCALE * (target - last)``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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
from medsci.tasks.longitudinal.checks import training_times
from medsci.tasks.longitudinal.config import LongitudinalConfig
from medsci.tasks.longitudinal.data import (CHANGE_SCALE, CONDITION_CHANNELS, VECTOR_DIM, LongitudinalTrainingTask,
                                           model_inputs)
from medsci.tasks.longitudinal.preprocess import load_subject

TASK = "longitudinal"


def checkpoint_config(cfg: LongitudinalConfig) -> dict:
    m = cfg.model
    encoder = {"frame_shape": list(cfg.preprocess.shape), "patch": m.frame_patch, "dim": m.context_dim,
               "layers": m.context_layers, "heads": m.context_heads}
    return {
        "task": TASK,
        "model": network_spec(m.unet, 3, 1, condition_channels=CONDITION_CHANNELS, vector_dim=VECTOR_DIM,
                              haar=m.domain == "haar", dropout_kinds=cfg.train.dropout_kinds,
                              context_encoder=encoder),
        "schedule": m.schedule.to_dict(),
        "max_frames": m.max_frames,
        "preprocess": cfg.preprocess.to_dict(),
        "domain": f"{CHANGE_SCALE:g} * (target - last frame), frames divided by the first session's percentile",
        "sample": cfg.sample.to_dict(),
    }


def train_longitudinal(cfg: LongitudinalConfig, subject_paths: list[Path], out_dir: str | Path,
                       device: str | None = "auto", progress: bool = True) -> Path:
    subjects = [load_subject(p) for p in subject_paths]
    shapes = {tuple(s["frames"].shape[1:]) for s in subjects}
    if shapes != {tuple(cfg.preprocess.shape)}:
        raise InputError(f"preprocessed frames {sorted(shapes)} do not match preprocess.shape "
                         f"{tuple(cfg.preprocess.shape)}")
    torch.manual_seed(cfg.train.seed)
    ckcfg = checkpoint_config(cfg)
    ckcfg["training_subjects"] = [s["subject"] for s in subjects]
    ckcfg["acquisition_spacing"] = acquisition_spacing_range(subjects)
    ckcfg["training_times"] = training_times(subjects)  # medsci forecast checks time units and horizons by them
    model = build_network(ckcfg["model"])
    task = LongitudinalTrainingTask(subjects, cfg.model)
    return train(model, task, cfg.model.schedule, cfg.train, out_dir, ckcfg, default_device(device), progress)


def acquisition_spacing_range(subjects: list[dict]) -> dict:
    """{"min": [x, y, z], "max": [x, y, z]} mm: the voxel sizes the training subjects were acquired at (their first
    sessions' native grids), per axis; ``medsci forecast`` resamples a subject inside this range to the model grid."""
    acquired = np.array([np.linalg.norm(np.asarray(s["first_affine"], np.float64)[:3, :3], axis=0) for s in subjects])
    return {"min": [round(float(v), 4) for v in acquired.min(0)], "max": [round(float(v), 4) for v in acquired.max(0)]}


@dataclass
class LoadedModel(EngineModel):
    max_frames: int
    shape: tuple[int, int, int]
    sample: SamplerConfig


class Longitudinal(Generator, name="longitudinal", checkpoint_task=TASK, loaded_model=LoadedModel):
    def parse(self, ck: dict) -> dict:
        shape = tuple(int(s) for s in ck["preprocess"]["shape"])
        return {"shape": shape, "max_frames": int(ck["max_frames"]),
                "sample": SamplerConfig.from_dict(ck.get("sample"), "sample")}

    def train(self, section: LongitudinalConfig, args: Any, device, progress: bool = True) -> Path:
        return train_longitudinal(section, args.subjects, args.out, device, progress=progress)

    def sample(self, section: LongitudinalConfig, loaded: LoadedModel, args: Any) -> int:
        """Held-out subjects' last sessions (model and baselines): <subject>.npz arrays + <subject>.json."""
        from medsci.io.atomic import safe_join, write_json_atomic
        from medsci.preprocessing.store import write_npz

        for path in args.subjects:
            record = load_subject(path)
            pred = predict_subject(loaded, record, section.evaluation, section.sample)
            arrays, targets = {}, []
            for target in pred["targets"]:
                key = f"s{target['session']}_"
                arrays[key + "truth"] = target["truth"]
                arrays.update({f"{key}method_{k}": v for k, v in target["methods"].items()})
                if target["std"] is not None:
                    arrays[key + "std"] = target["std"]
                targets.append({k: target[k] for k in ("session", "horizon_days", "network_evaluations", "seconds",
                                                       "uncertainty", "extrapolation")})
            for i, fut in enumerate(pred.get("future", [])):
                arrays[f"future_{i}"] = fut
            write_npz(safe_join(args.out, path.name), arrays)
            write_json_atomic(safe_join(args.out, path.with_suffix(".json").name),
                              {"targets": targets, "forecast": pred["forecast"]})
            print(f"{record['subject']}: sessions " + ", ".join(
                f"{t['session']} ({t['horizon_days']:.0f} d)" for t in targets))
        return 0


def predict_subject(loaded, record: dict, eval_cfg, sampler) -> dict:
    """{"targets": [{"session", "truth", "methods": {name: volume}, "std", "horizon_days", ...}],
    "forecast": [{horizon_days, mean_std, uncertainty}], "future": [volumes]} for one held-out subject.

    Each target session is predicted from the sessions before it only. The forecast continues autoregressively
    after the subject's last session (``forecast_sessions`` sessions at its median interval)."""

    from medsci.tasks.longitudinal.baselines import BASELINES, extrapolation_factor
    from medsci.tasks.longitudinal.evaluation import brain_mask, target_sessions

    frames, times = np.asarray(record["frames"], np.float32), np.asarray(record["times"], np.float64)
    spacing = tuple(float(s) for s in np.abs(np.diag(record["grid_affine"])[:3]))
    sampler = replace(sampler, n_samples=max(sampler.n_samples, eval_cfg.n_samples))
    mask = brain_mask(frames[0])
    targets = []
    for k in target_sessions(len(times)):
        context, ctx_times, t = frames[:k], times[:k], float(times[k])
        pred = predict(loaded, context, ctx_times, t, sampler)
        methods = {"model": pred.mean}
        for name, fn in BASELINES.items():
            kwargs = {"spacing": spacing} if name == "deformation" else {}
            methods[name] = fn(list(context), list(ctx_times), t, **kwargs)
        targets.append({"session": k, "truth": frames[k], "methods": methods, "std": pred.std,
                        "horizon_days": t - float(ctx_times[-1]), "network_evaluations": pred.network_evaluations,
                        "seconds": pred.seconds, "uncertainty": pred.uncertainty,
                        "extrapolation": dict(zip(("asked", "used"), extrapolation_factor(ctx_times, t))),
                        "mean_std": float(pred.std[mask].mean()) if pred.std is not None else None})
    last = targets[-1]
    out = {"targets": targets, "forecast": [{"horizon_days": last["horizon_days"], "mean_std": last["mean_std"],
                                             "uncertainty": last["uncertainty"]}]}
    if eval_cfg.forecast_sessions:
        step = float(np.median(np.diff(times))) if len(times) > 1 else 365.0
        t_last = float(times[-1])
        future = [t_last + step * (i + 1) for i in range(eval_cfg.forecast_sessions)]
        sessions = forecast(loaded, frames, times, future, sampler)
        for ft, p in zip(future, sessions):
            # horizon from the last acquired session before the target (the last context frame of the target)
            out["forecast"].append({"horizon_days": ft - float(times[-2]),
                                    "mean_std": float(p.std[mask].mean()) if p.std is not None else None,
                                    "uncertainty": p.uncertainty})
        out["future"] = [p.mean for p in sessions]
    return out


STAGES = Longitudinal()
load_model = STAGES.load


@dataclass
class Prediction:
    mean: np.ndarray  # (X, Y, Z) normalised intensities
    std: np.ndarray | None
    network_evaluations: int
    seconds: float
    uncertainty: str = "none"  # what std is: variance (the network's variance head) | samples (their spread) | none


def predict(loaded: LoadedModel, frames: np.ndarray, times_days, target_days: float,
            sampler: SamplerConfig | None = None) -> Prediction:
    """The volume at ``target_days`` from earlier (or surrounding) ``frames`` (S, X, Y, Z) at ``times_days``.

    Frames after the target time are left out of the context (the model was trained on earlier frames only);
    the requested time must come after the first frame.
    """
    frames = np.asarray(frames, np.float32)
    times = np.asarray(times_days, np.float64)
    if frames.shape[1:] != loaded.shape:
        raise InputError(f"frames of shape {frames.shape[1:]} do not match the model grid {loaded.shape}")
    earlier = times < target_days
    if not earlier.any():
        raise InputError(f"requested time {target_days:g} days is not after the first session ({times[0]:g} days)")
    conditions, offset = model_inputs(frames[earlier], times[earlier], float(target_days), loaded.max_frames)
    result = generate(loaded.model, loaded.schedule, sampler or loaded.sample, InferenceConfig(window=None),
                      conditions, (1, 1, *loaded.shape), offset=offset, device=loaded.device)
    mean = (result.mean[0, 0] / CHANGE_SCALE).numpy()
    std = None if result.std is None else (result.std[0, 0] / CHANGE_SCALE).numpy()
    return Prediction(mean, std, result.network_evaluations, result.seconds, result.uncertainty)


def forecast(loaded: LoadedModel, frames: np.ndarray, times_days, future_days, sampler: SamplerConfig | None = None
             ) -> list[Prediction]:
    """Sessions at each of ``future_days`` (increasing, after the last frame), each predicted from the frames
    and the predictions before it (autoregressive).

    Each step's std is the model's for one step from its (predicted) last frame; the model predicts the change
    since that frame, so the error of the frame it starts from carries into its output one to one. The std of
    step k is therefore the root of the summed variances of steps 1..k: it grows with the horizon.
    """
    frames = list(np.asarray(frames, np.float32))
    times = list(np.asarray(times_days, np.float64))
    out = []
    carried = None  # variance of the last predicted frame
    for t in future_days:
        p = predict(loaded, np.stack(frames), np.array(times), float(t), sampler)
        if p.std is not None:
            variance = p.std.astype(np.float64) ** 2 + (carried if carried is not None else 0.0)
            carried = variance
            p = replace(p, std=np.sqrt(variance).astype(np.float32))
        out.append(p)
        frames.append(p.mean)
        times.append(float(t))
    return out

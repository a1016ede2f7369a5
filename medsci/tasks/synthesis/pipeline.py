"""Train the synthesis model and synthesise a missing modality with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.config import InferenceConfig, SamplerConfig
from medsci.diffusion.device import default_device
from medsci.diffusion.inference import generate, sampler_with
from medsci.diffusion.networks import build_network, network_spec
from medsci.diffusion.training import train
from medsci.errors import ConfigError, InputError
from medsci.generator import Generator, LoadedModel as EngineModel
from medsci.mri.cases import MODALITIES
from medsci.mri.preprocessing.stage import PreprocessConfig
from medsci.tasks.synthesis.conditioning import (
    condition_channels,
    image_space_clamp,
    target_index,
    to_image_space,
    to_model_space,
)
from medsci.tasks.synthesis.baselines import LinearRegressionBaseline
from medsci.tasks.synthesis.config import SynthesisConfig
from medsci.tasks.synthesis.data import PreparedCase, SynthesisTrainingTask, load_training_cases
from medsci.tasks.synthesis.domain import training_summary

TASK = "mri-synthesis"


def model_spec(cfg: SynthesisConfig) -> dict:
    multi = len(cfg.model.targets) > 1
    prior = 1 if cfg.model.prior == "regression" else 0
    return network_spec(cfg.model.unet, 3, 1, condition_channels=len(MODALITIES) + prior,
                        num_classes=len(MODALITIES) if multi else None, haar=True,
                        dropout_kinds=cfg.train.dropout_kinds)


def checkpoint_config(cfg: SynthesisConfig) -> dict:
    return {
        "task": TASK,
        "model": model_spec(cfg),
        "schedule": cfg.model.schedule.to_dict(),
        "preprocess": cfg.preprocess.to_dict(),
        "targets": list(cfg.model.targets),
        "modalities": list(MODALITIES),
        "domain": "image*2-1, image in [0,1]; the network works on its 3D Haar subbands",
        # Network windows at inference (image voxels); null = the whole volume.
        "window": list(cfg.model.inference_window) if cfg.model.inference_window else None,
        # Sampler of `medsci sample synthesis` when no config is given (what the checkpoint was tuned with).
        "sample": cfg.sample.to_dict(),
    }


def train_synthesis(cfg: SynthesisConfig, data_dir: str | Path, case_ids: list[str], out_dir: str | Path,
                    device: str | None = "auto", progress: bool = True) -> Path:
    cases = load_training_cases(data_dir, case_ids)
    shape = tuple(cases[0].image.shape[1:])
    if shape != tuple(cfg.preprocess.shape):
        raise ConfigError(f"preprocessed shape {shape} differs from config preprocess.shape "
                          f"{tuple(cfg.preprocess.shape)}", data_dir)
    torch.manual_seed(cfg.train.seed)  # network initialisation
    ckcfg = checkpoint_config(cfg)
    prior = None
    if cfg.model.prior == "regression":
        prior = LinearRegressionBaseline.fit(cases, cfg.model.targets, degree=cfg.model.prior_degree)
        ckcfg["prior"] = prior.to_dict()
    model = build_network(ckcfg["model"])
    task = SynthesisTrainingTask(cases, cfg.model.targets, cfg.model.augment_flip,
                                 class_conditional=ckcfg["model"]["num_classes"] is not None,
                                 patch=cfg.model.train_patch, prior=prior)
    ckcfg["training_cases"] = list(case_ids)
    ckcfg["geometry"] = training_geometry(cfg.preprocess, cases, data_dir)
    ckcfg["training_data"] = training_summary(cases)  # what `medsci synthesize` compares a new case with
    return train(model, task, cfg.model.schedule, cfg.train, out_dir, ckcfg, default_device(device), progress)


def training_geometry(prep: PreprocessConfig, cases: list[PreparedCase], where) -> dict:
    """Voxel spacing, orientation and field of view the model is trained at, checked against its cases.

    Inference resamples every new case to this spacing, so it must be one spacing: cases preprocessed
    without ``preprocess.spacing`` are accepted only when they already share one.
    """
    spacings = np.array([c.sidecar["resampled"]["spacing"] for c in cases], dtype=np.float64)
    spacing = np.array(prep.spacing) if prep.spacing is not None else np.median(spacings, axis=0)
    off = np.abs(spacings / spacing - 1.0).max(axis=1)
    if off.max() > prep.spacing_tolerance:
        worst = cases[int(off.argmax())]
        raise ConfigError(f"training case {worst.case_id} has voxels of {spacings[int(off.argmax())].round(3).tolist()} "
                          f"mm, not {spacing.round(3).tolist()} mm like the others: set synthesis.preprocess.spacing "
                          "so every case is resampled to one voxel size", where)
    return {"spacing": [round(float(v), 6) for v in spacing], "orientation": prep.orientation,
            "shape": list(prep.shape), "field_of_view_mm": [round(float(v), 3) for v in spacing * np.array(prep.shape)]}


@dataclass
class LoadedModel(EngineModel):
    preprocess: PreprocessConfig
    prior: LinearRegressionBaseline | None = None  # the first guess the network refines, parsed once at load


class Synthesis(Generator, name="synthesis", checkpoint_task=TASK, loaded_model=LoadedModel):
    def parse(self, ckcfg: dict) -> dict:
        prior = LinearRegressionBaseline.from_dict(ckcfg["prior"]) if "prior" in ckcfg else None
        prep = PreprocessConfig.from_dict(ckcfg["preprocess"])
        if prep.spacing is None and ckcfg.get("geometry"):  # trained on data sharing one, unresampled, spacing
            prep.spacing = tuple(ckcfg["geometry"]["spacing"])
        return {"preprocess": prep, "prior": prior}

    def train(self, section: SynthesisConfig, args: Any, device, progress: bool = True) -> Path:
        return train_synthesis(section, args.data, args.cases, args.out, device, progress=progress)


STAGES = Synthesis()
load_model = STAGES.load


def sampler_for(config, loaded: LoadedModel, overrides: dict) -> SamplerConfig:
    """The config's sampler (or the one stored with the checkpoint) with command-line overrides checked."""
    if config is not None:
        base = config.synthesis.sample
    else:  # the sampler stored with the checkpoint
        base = SamplerConfig.from_dict(loaded.config.get("sample"), "checkpoint sample")
    return sampler_with(base, loaded.schedule, **overrides)


@dataclass
class Synthesis:
    mean: np.ndarray  # (X, Y, Z) in [0, 1]
    std: np.ndarray | None  # voxelwise standard deviation on the [0, 1] scale of ``mean``, per ``uncertainty``
    network_evaluations: int
    seconds: float
    uncertainty: str = "none"  # where ``std`` came from: variance (head) | samples (spread) | none


def check_fits(loaded: LoadedModel, case: PreparedCase, target: str, path: str | Path) -> None:
    shape = tuple(case.image.shape[1:])
    if shape != tuple(loaded.preprocess.shape):
        raise ConfigError(f"case grid {shape} does not match the checkpoint's {tuple(loaded.preprocess.shape)}",
                          path)
    if target not in loaded.config["targets"]:
        raise ConfigError(f"checkpoint was trained for targets {loaded.config['targets']}, not {target}", path)
    prior = 1 if loaded.prior is not None else 0
    if case.image.shape[0] + prior != loaded.config["model"]["condition_channels"]:
        raise ConfigError("case channels do not match the checkpoint", path)


def synthesize(loaded: LoadedModel, case: PreparedCase, target: str, sampler: SamplerConfig,
               available: tuple[str, ...] | None = None) -> Synthesis:
    """Synthesise ``target`` for ``case`` from the ``available`` modalities (default: all others present)."""
    available = tuple(m for m in (available or case.available) if m != target)
    missing = [m for m in MODALITIES if m not in available and m != target]
    if missing:
        raise InputError(f"cannot synthesise {target}: {', '.join(missing)} also missing (one missing modality "
                         "at a time)", case.case_id)
    check_fits(loaded, case, target, case.case_id)
    image = torch.from_numpy(case.image).unsqueeze(0)
    avail = torch.tensor([[float(m in available) for m in MODALITIES]])
    mask = torch.from_numpy(case.mask).view(1, 1, *case.mask.shape)
    prior = None
    if loaded.prior is not None:
        prior = loaded.prior.predict_torch(image * avail.view(1, -1, 1, 1, 1), torch.tensor([target_index(target)]),
                                           mask)
    labels = None
    if loaded.config["model"]["num_classes"] is not None:
        labels = torch.tensor([target_index(target)], dtype=torch.long)
    conditions = Conditions(condition=condition_channels(image, avail, prior), labels=labels)
    # With a prior the network diffuses the residual (target - prior); the engine adds the prior back.
    offset = to_model_space(prior) if prior is not None else None
    dev_offset = offset.to(loaded.device) if offset is not None else None
    inference = InferenceConfig(window=tuple(loaded.config["window"]) if loaded.config.get("window") else None)
    result = generate(loaded.model, loaded.schedule, sampler, inference, conditions, (1, 1, *case.mask.shape),
                      offset=offset, x0_transform=image_space_clamp(mask.to(loaded.device), dev_offset),
                      device=loaded.device, source=case.case_id)
    mean = to_image_space(result.mean)[0, 0].numpy() * case.mask
    # The std of the [-1, 1] model space is twice that of [0, 1] images.
    std = (result.std[0, 0].numpy() / 2 * case.mask).astype(np.float32) if result.std is not None else None
    return Synthesis(mean.astype(np.float32), std, result.network_evaluations, result.seconds,
                     result.uncertainty if std is not None else "none")

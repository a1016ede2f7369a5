"""Preprocessed synthesis cases in memory, and the training batches drawn from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.training import TrainingBatch
from medsci.errors import InputError
from medsci.mri.cases import MODALITIES
from medsci.mri.preprocessing.stage import load_preprocessed
from medsci.tasks.synthesis.baselines import LinearRegressionBaseline
from medsci.tasks.synthesis.conditioning import condition_channels, target_index, to_model_space


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # (4, X, Y, Z) float32 in [0, 1], MODALITIES order, missing slots zero
    mask: np.ndarray  # (X, Y, Z) bool brain mask
    seg: np.ndarray | None  # (X, Y, Z) uint8 labels
    available: tuple[str, ...]
    sidecar: dict


def load_case(data_dir: str | Path, case_id: str) -> PreparedCase:
    path = Path(data_dir) / f"{case_id}.npz"
    arrays, sidecar = load_preprocessed(path)
    available = tuple(m for m in MODALITIES if m in sidecar.get("available", MODALITIES))
    seg = arrays.get("seg")
    return PreparedCase(case_id, arrays["image"].astype(np.float32), arrays["mask"].astype(bool),
                        None if seg is None else seg.astype(np.uint8), available, sidecar)


def load_training_cases(data_dir: str | Path, case_ids: list[str]) -> list[PreparedCase]:
    cases = [load_case(data_dir, c) for c in case_ids]
    for case in cases:
        if set(case.available) != set(MODALITIES):
            raise InputError(f"training case lacks {sorted(set(MODALITIES) - set(case.available))}",
                             Path(data_dir) / f"{case.case_id}.npz")
    if not cases:
        raise InputError("no training cases", data_dir)
    return cases


class SynthesisTrainingTask:
    """Draws (case, missing modality) pairs; the missing one is the target, its slot zero-filled.

    With ``patch`` set, each item is a patch centred on a random brain voxel: many more steps per CPU minute,
    and the fully convolutional network still runs on the whole volume at inference. Patch corners are even
    so the Haar subbands of a patch line up with those of the whole volume.
    """

    def __init__(self, cases: list[PreparedCase], targets: tuple[str, ...], augment_flip: bool = True,
                 class_conditional: bool = True, patch: tuple[int, int, int] | None = None,
                 prior: LinearRegressionBaseline | None = None):
        # The brain mask rides along as a fifth channel so crops and flips treat it like the images.
        self.images = torch.from_numpy(np.stack([np.concatenate([c.image, c.mask[None].astype(np.float32)])
                                                 for c in cases]))
        self.prior = prior
        self.brain_voxels = [torch.from_numpy(np.argwhere(c.mask)) for c in cases]
        self.targets = torch.tensor([target_index(t) for t in targets])
        self.augment_flip = augment_flip
        self.class_conditional = class_conditional
        self.patch = tuple(patch) if patch else None

    def _crop(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = torch.tensor(self.images.shape[2:])
        size = torch.tensor(self.patch)
        out = []
        for i in idx.tolist():
            vox = self.brain_voxels[i]
            centre = vox[torch.randint(0, len(vox), (1,), generator=generator)][0]
            start = torch.minimum(torch.clamp(centre - size // 2, min=0), shape - size)
            start = start - start % 2
            sl = tuple(slice(int(a), int(a + b)) for a, b in zip(start, size))
            out.append(self.images[i][(slice(None), *sl)].clone())
        return torch.stack(out)

    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        idx = torch.randint(0, len(self.images), (batch_size,), generator=generator)
        tgt = self.targets[torch.randint(0, len(self.targets), (batch_size,), generator=generator)]
        flip = torch.rand(batch_size, generator=generator) < 0.5
        stack = self._crop(idx, generator) if self.patch else self.images[idx].clone()
        if self.augment_flip and flip.any():
            # Axis 0 of RAS-oriented data is left-right: a mirrored brain is still a brain.
            stack[flip] = stack[flip].flip(2)
        images, mask = stack[:, : len(MODALITIES)], stack[:, len(MODALITIES):]
        available = torch.ones(batch_size, len(MODALITIES))
        available[torch.arange(batch_size), tgt] = 0
        x0 = to_model_space(images[torch.arange(batch_size), tgt].unsqueeze(1))
        prior = None
        if self.prior is not None:
            prior = self.prior.predict_torch(images, tgt, mask)
            # Diffuse the residual target - prior: an untrained (zero-output) network already gives the prior.
            x0 = x0 - to_model_space(prior)
        conditions = Conditions(condition=condition_channels(images, available, prior),
                                labels=tgt if self.class_conditional else None)
        return TrainingBatch(x0=x0, conditions=conditions)

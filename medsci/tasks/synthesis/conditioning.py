"""How a synthesis case becomes model input: Haar subbands of every modality slot + a target embedding.

Image space: each modality normalised to [0, 1] by preprocessing, mapped to [-1, 1] for diffusion. Model
space: one-level orthonormal 3D Haar transform (8 subbands at half resolution). The condition is the four
modality slots in fixed order, 8 subbands each (32 channels); the slot of the target and any other missing slot
are zero-filled. The target modality is also given to the network as a class label, so one network serves
every missing modality.
"""

from __future__ import annotations

import torch

from medsci.io.cases import MODALITIES
from medsci.wavelets import haar_dwt3d, haar_idwt3d

SUBBANDS = 8


def to_model_space(image01: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y, Z) in [0, 1] -> (B, 8C, X/2, Y/2, Z/2) Haar subbands of the [-1, 1] image."""
    return haar_dwt3d(image01 * 2 - 1)


def to_image_space(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_space`, clamped to [0, 1]."""
    return ((haar_idwt3d(coeffs) + 1) / 2).clamp(0, 1)


def condition_channels(images01: torch.Tensor, available: torch.Tensor,
                       prior01: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4, X, Y, Z) images + (B, 4) availability -> (B, 32, ...) condition with missing slots zero-filled.

    ``prior01`` (B, 1, X, Y, Z), when given, is a first guess of the target (the voxelwise regression
    baseline) appended as 8 more channels: the network then learns a correction of a strong baseline instead of
    the whole mapping (residual learning, as in RDDM), which is what makes a few CPU minutes of training enough.
    """
    coeffs = to_model_space(images01)
    keep = available.to(coeffs.dtype).repeat_interleave(SUBBANDS, dim=1)
    cond = coeffs * keep.view(*keep.shape, 1, 1, 1)
    if prior01 is not None:
        cond = torch.cat([cond, to_model_space(prior01)], 1)
    return cond


def target_index(modality: str) -> int:
    return MODALITIES.index(modality)


def image_space_clamp(brain_mask: torch.Tensor | None, offset: torch.Tensor | None = None):
    """An ``x0_transform`` for the sampler: clamp the x0 estimate in image space, zero outside the brain.

    ``brain_mask`` (B, 1, X, Y, Z) comes from the available modalities, so it is known at inference.
    ``offset`` (model space) is added before and removed after, for models that diffuse a residual.
    """

    def transform(x0: torch.Tensor) -> torch.Tensor:
        full = x0 if offset is None else x0 + offset
        img = haar_idwt3d(full).clamp(-1, 1)
        if brain_mask is not None:
            img = torch.where(brain_mask.bool(), img, torch.full_like(img, -1.0))
        out = haar_dwt3d(img)
        return out if offset is None else out - offset

    return transform

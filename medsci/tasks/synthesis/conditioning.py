"""How a synthesis case becomes model input: every modality slot as condition channels + a target label.

Image space: each modality normalised to [0, 1] by preprocessing; the model space is the same grid mapped to
[-1, 1]. The network itself works on the one-level 3D Haar subbands of its input (the engine's ``haar`` network
option, as cWDM), so diffusing here is diffusing the wavelet coefficients (the transform is orthonormal) while
clamping and masking stay simple image-space operations. The condition is the four modality slots in fixed
order; the slot of the target and any other missing slot are zero (mid-grey) in model space. The target
modality is also given to the network as a class label, so one network serves every missing modality.
"""

from __future__ import annotations

import torch

from medsci.mri.cases import MODALITIES


def to_model_space(image01: torch.Tensor) -> torch.Tensor:
    """(B, C, X, Y, Z) in [0, 1] -> the same in [-1, 1]."""
    return image01 * 2 - 1


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_space`, clamped to [0, 1]."""
    return ((x + 1) / 2).clamp(0, 1)


def condition_channels(images01: torch.Tensor, available: torch.Tensor,
                       prior01: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4, X, Y, Z) images + (B, 4) availability -> (B, 4 or 5, ...) condition, missing slots zero-filled.

    ``prior01`` (B, 1, X, Y, Z), when given, is a first guess of the target (the voxelwise regression
    baseline) appended as a fifth channel: the network then learns a correction of a strong baseline instead
    of the whole mapping (residual learning, as in RDDM), which is what makes a few CPU minutes of training enough.
    """
    keep = available.to(images01.dtype).view(*available.shape, 1, 1, 1)
    cond = to_model_space(images01) * keep
    if prior01 is not None:
        cond = torch.cat([cond, to_model_space(prior01)], 1)
    return cond


def target_index(modality: str) -> int:
    return MODALITIES.index(modality)


def image_space_clamp(brain_mask: torch.Tensor | None, offset: torch.Tensor | None = None):
    """An ``x0_transform`` for the sampler: clamp the x0 estimate to [-1, 1], background (-1) outside the brain.

    ``brain_mask`` (B, 1, X, Y, Z) comes from the available modalities, so it is known at inference.
    ``offset`` is added before and removed after, for models that diffuse a residual.
    """

    def transform(x0: torch.Tensor) -> torch.Tensor:
        full = (x0 if offset is None else x0 + offset).clamp(-1, 1)
        if brain_mask is not None:
            full = torch.where(brain_mask.bool(), full, torch.full_like(full, -1.0))
        return full if offset is None else full - offset

    return transform

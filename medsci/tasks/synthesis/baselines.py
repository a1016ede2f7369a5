"""Baselines the synthesis model must beat, evaluated in the same table.

- ``mean``: the voxelwise mean of the available (normalised) modalities.
- ``regression``: per target modality, a voxelwise linear regression (with intercept) from the available
  modalities, fitted by least squares on the brain voxels of the training cases.
"""

from __future__ import annotations

import numpy as np

from medsci.io.cases import MODALITIES


def mean_of_available(image: np.ndarray, available: tuple[str, ...], mask: np.ndarray) -> np.ndarray:
    idx = [MODALITIES.index(m) for m in available]
    return np.where(mask, image[idx].mean(axis=0), 0.0).astype(np.float32)


class LinearRegressionBaseline:
    """``coef[target]`` holds weights for the other three modalities (MODALITIES order) and an intercept."""

    def __init__(self, coef: dict[str, list[float]]):
        self.coef = coef

    @classmethod
    def fit(cls, cases, targets=MODALITIES, max_voxels: int = 2_000_000, seed: int = 0) -> "LinearRegressionBaseline":
        rng = np.random.default_rng(seed)
        per_case = max(1, max_voxels // max(1, len(cases)))
        rows = []
        for case in cases:
            vox = case.image[:, case.mask]  # (4, n)
            if vox.shape[1] > per_case:
                vox = vox[:, rng.choice(vox.shape[1], per_case, replace=False)]
            rows.append(vox)
        data = np.concatenate(rows, axis=1).astype(np.float64)
        coef = {}
        for target in targets:
            t = MODALITIES.index(target)
            others = [i for i in range(len(MODALITIES)) if i != t]
            design = np.concatenate([data[others].T, np.ones((data.shape[1], 1))], axis=1)
            w, *_ = np.linalg.lstsq(design, data[t], rcond=None)
            coef[target] = w.tolist()
        return cls(coef)

    def predict(self, image: np.ndarray, target: str, mask: np.ndarray) -> np.ndarray:
        t = MODALITIES.index(target)
        others = [i for i in range(len(MODALITIES)) if i != t]
        w = np.asarray(self.coef[target])
        pred = np.tensordot(w[:-1], image[others], axes=1) + w[-1]
        return np.where(mask, np.clip(pred, 0, 1), 0.0).astype(np.float32)

    def coef_matrix(self) -> np.ndarray:
        """(4, 4): row t = weights of the four slots (0 for the target's own) + intercept, for target t."""
        out = np.zeros((len(MODALITIES), len(MODALITIES) + 1))
        for target, w in self.coef.items():
            t = MODALITIES.index(target)
            others = [i for i in range(len(MODALITIES)) if i != t]
            out[t, others] = w[:-1]
            out[t, -1] = w[-1]
        return out

    def to_dict(self) -> dict:
        return {"kind": "voxelwise_linear_regression", "inputs": "other three modalities + intercept",
                "coef": self.coef}


def regression_prior(images01, targets, coef_matrix, mask):
    """Torch version of :meth:`LinearRegressionBaseline.predict` for a batch with per-item targets.

    ``images01`` (B, 4, *spatial), ``targets`` (B,) slot indices, ``coef_matrix`` (4, 5) as from
    :meth:`LinearRegressionBaseline.coef_matrix`, ``mask`` (B, 1, *spatial) -> (B, 1, *spatial) in [0, 1].
    """
    import torch

    w = torch.as_tensor(coef_matrix, dtype=images01.dtype)[targets]  # (B, 5)
    w_slots = w[:, :-1].clone()
    w_slots[torch.arange(len(targets)), targets] = 0  # never read the target's own slot
    shape = (len(targets), -1) + (1,) * (images01.ndim - 2)
    pred = (images01 * w_slots.view(shape)).sum(1, keepdim=True) + w[:, -1].view(shape)
    return pred.clamp(0, 1) * mask.to(images01.dtype)

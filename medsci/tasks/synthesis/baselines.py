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

    def to_dict(self) -> dict:
        return {"kind": "voxelwise_linear_regression", "inputs": "other three modalities + intercept",
                "coef": self.coef}

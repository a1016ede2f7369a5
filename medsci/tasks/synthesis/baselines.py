"""Baselines the synthesis model must beat, evaluated in the same table, and the model's first guess.

- ``mean``: the voxelwise mean of the available (normalised) modalities.
- ``regression``: per target modality, a voxelwise linear regression (with intercept) from the available
  modalities, fitted by least squares on the brain voxels of the training cases.

The same class with ``degree`` 2 (all products of two available modalities as extra features) is the first
guess the diffusion model refines (``synthesis.model.prior``). Contrasts relate non-linearly (FLAIR nulls CSF,
which is dark on T1 and bright on T2), and a per-voxel function of the inputs is cheap to fit exactly, but slow
for a network to learn from Haar subbands, where a voxelwise product mixes all eight bands.
"""

from __future__ import annotations

from itertools import combinations_with_replacement

import numpy as np

from medsci.mri.cases import MODALITIES


def mean_of_available(image: np.ndarray, available: tuple[str, ...], mask: np.ndarray) -> np.ndarray:
    idx = [MODALITIES.index(m) for m in available]
    return np.where(mask, image[idx].mean(axis=0), 0.0).astype(np.float32)


def _others(target: str) -> list[int]:
    t = MODALITIES.index(target)
    return [i for i in range(len(MODALITIES)) if i != t]


def _monomials(n_inputs: int, degree: int) -> list[tuple[int, ...]]:
    """Exponent-free monomials as index tuples: (0,), (1,), ..., (0, 0), (0, 1), ... up to ``degree``."""
    return [combo for d in range(1, degree + 1) for combo in combinations_with_replacement(range(n_inputs), d)]


def polynomial_features(inputs, degree: int):
    """``inputs`` (k, ...) numpy or torch -> (n_features, ...): monomials up to ``degree``, then a constant 1."""
    feats = []
    for combo in _monomials(len(inputs), degree):
        f = inputs[combo[0]]
        for i in combo[1:]:
            f = f * inputs[i]
        feats.append(f)
    ones = inputs[0] * 0 + 1
    return (np.stack if isinstance(inputs, np.ndarray) else _torch_stack)(feats + [ones])


def _torch_stack(items):
    import torch

    return torch.stack(items)


class LinearRegressionBaseline:
    """Voxelwise polynomial regression of a target from the other three modalities, fitted exactly.

    ``coef[target]`` holds one weight per feature of :func:`polynomial_features` (the other three modalities
    in MODALITIES order, their products up to ``degree``) and the intercept last; ``degree`` 1 is the linear
    baseline.
    """

    def __init__(self, coef: dict[str, list[float]], degree: int = 1):
        self.coef = coef
        self.degree = int(degree)

    @classmethod
    def fit(cls, cases, targets=MODALITIES, degree: int = 1, max_voxels: int = 2_000_000,
            seed: int = 0) -> "LinearRegressionBaseline":
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
            design = polynomial_features(data[_others(target)], degree).T
            w, *_ = np.linalg.lstsq(design, data[MODALITIES.index(target)], rcond=None)
            coef[target] = w.tolist()
        return cls(coef, degree)

    @classmethod
    def from_dict(cls, data: dict) -> "LinearRegressionBaseline":
        return cls(data["coef"], data.get("degree", 1))

    def predict(self, image: np.ndarray, target: str, mask: np.ndarray) -> np.ndarray:
        w = np.asarray(self.coef[target])
        pred = np.tensordot(w, polynomial_features(image[_others(target)].astype(np.float64), self.degree), axes=1)
        return np.where(mask, np.clip(pred, 0, 1), 0.0).astype(np.float32)

    def predict_torch(self, images01, targets, mask):
        """Batch version for training and sampling: ``images01`` (B, 4, *spatial), ``targets`` (B,) slot
        indices, ``mask`` (B or 1, 1, *spatial) -> (B, 1, *spatial) in [0, 1]. Never reads a target's own slot."""
        import torch

        out = torch.zeros((images01.shape[0], 1, *images01.shape[2:]), dtype=images01.dtype)
        for t in torch.unique(targets).tolist():
            items = (targets == t).nonzero().flatten()
            target = MODALITIES[t]
            w = torch.as_tensor(self.coef[target], dtype=torch.float64)
            x = images01[items][:, _others(target)].to(torch.float64).transpose(0, 1)  # (3, b, *spatial)
            pred = torch.tensordot(w, polynomial_features(x, self.degree), dims=1)
            out[items, 0] = pred.to(images01.dtype)
        return out.clamp(0, 1) * mask.to(images01.dtype)

    def to_dict(self) -> dict:
        kind = "voxelwise_linear_regression" if self.degree == 1 else "voxelwise_polynomial_regression"
        return {"kind": kind, "degree": self.degree,
                "inputs": "other three modalities (t1n, t1c, t2w, t2f order), their products up to degree, "
                          "intercept last",
                "coef": self.coef}

"""Held-out evaluation of radiograph rotation: the model beside the identity and the projective warp.

Angles: every magnitude of ``evaluation.magnitudes`` about each axis alone, both signs, plus ``combined`` random
rotations about all three axes (seeded per CT). Each held-out CT's views are rendered with the training
geometry and display window. Predictions of every method are stored per CT; the evaluation scores them
against the true views (SSIM, PSNR, MAE on the [0, 1] display), also on inputs whose histograms were remapped
(the same monotone curve applied to input and truth: gamma, a narrower window, a vendor-like sigmoid LUT).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from medsci.tasks.rotation.config import AXES

METRICS = ("ssim", "psnr", "mae")
STD = "std"  # key prefix of the model's uncertainty maps in a prediction file


def _sigmoid_lut(x: np.ndarray) -> np.ndarray:
    s = lambda v: 1.0 / (1.0 + np.exp(-8.0 * (v - 0.45)))  # noqa: E731
    return ((s(x) - s(0.0)) / (s(1.0) - s(0.0))).astype(np.float32)


REMAPS = {
    "none": lambda x: np.asarray(x, dtype=np.float32),
    "gamma0.6": lambda x: np.power(np.clip(x, 0, 1), 0.6).astype(np.float32),
    "gamma1.6": lambda x: np.power(np.clip(x, 0, 1), 1.6).astype(np.float32),
    "window": lambda x: np.clip((np.asarray(x) - 0.15) / 0.7, 0, 1).astype(np.float32),
    "lut": _sigmoid_lut,
}


def evaluation_angles(eval_cfg, max_angle, seed: int) -> np.ndarray:
    """(K, 3) degrees: each magnitude about x, y and z alone (both signs), then random combined rotations."""
    rows = []
    for axis_index in range(len(AXES)):
        for m in eval_cfg.magnitudes:
            for sign in (1.0, -1.0):
                a = np.zeros(3)
                a[axis_index] = sign * m
                rows.append(a)
    rng = np.random.default_rng([int(seed), 0xE7A1])
    for _ in range(eval_cfg.combined):
        rows.append(rng.uniform(-1, 1, 3) * np.asarray(max_angle, dtype=np.float64))
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def guidance_variants(sampler) -> dict:
    """Sampler variants scored side by side: the configured one, full guidance (no adaptive skipping) and no
    guidance (scale 1, one call per step)."""
    variants = {"model": sampler}
    if sampler.guidance_scale != 1.0:
        if sampler.adaptive_guidance is not None:
            variants["model_full_guidance"] = replace(sampler, adaptive_guidance=None)
        variants["model_no_guidance"] = replace(sampler, guidance_scale=1.0, adaptive_guidance=None)
    return variants


def save_predictions(path: str | Path, result: dict) -> None:
    from medsci.io.atomic import atomic_path, refuse_non_finite

    arrays = {f"{remap}/{method}": v for remap, preds in result["predictions"].items() for method, v in preds.items()}
    # The model's uncertainty under its own prefix: "std" is no remap, so scoring never takes it for a method.
    arrays.update({f"{STD}/{method}": v for method, v in result.get("std", {}).items()})
    for arr in arrays.values():
        refuse_non_finite(arr, path)
    info = {"nfe": result["nfe"], "seconds": result["seconds"], "uncertainty": result.get("uncertainty", "none")}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays, info=np.frombuffer(json.dumps(info).encode("utf-8"), dtype=np.uint8))


def load_predictions(path: str | Path) -> dict:
    from medsci.errors import InputError

    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(bytes(z["info"]).decode("utf-8"))
            preds: dict = {}
            std: dict = {}
            for key in z.files:
                if key != "info":
                    remap, method = key.split("/")
                    (std if remap == STD else preds.setdefault(remap, {}))[method] = z[key]
    except (OSError, KeyError, ValueError) as err:
        raise InputError(f"not a rotation prediction file ({str(err).splitlines()[0][:100]})", path) from None
    return {"uncertainty": "none", **info, "predictions": preds, "std": std}  # files of before issue 24: none


def score(ct: str, pairs, predicted: dict, axes: list[str], mags: list[float]) -> list[dict]:
    from medsci.evaluation.metrics import image_metrics

    rows = []
    for remap, preds in predicted["predictions"].items():
        f = REMAPS[remap]
        for k, angle in enumerate(pairs.angles):
            truth = f(pairs.targets[k])
            for method, images in preds.items():
                m = image_metrics(images[k], truth, data_range=1.0)
                rows.append({"ct": ct, "remap": remap, "method": method, "axis": axes[k], "magnitude": mags[k],
                             "rx": round(float(angle[0]), 3), "ry": round(float(angle[1]), 3),
                             "rz": round(float(angle[2]), 3), **{x: float(m[x]) for x in METRICS}})
    return rows


def uncertainty_rows(pairs, predicted: dict, axes: list[str]) -> list[dict]:
    """Per held-out view, how well the model's std predicts its error on the plain input; [] without a std.

    Scored on the whole detector image, as SSIM is (the views have no body mask)."""
    from medsci.evaluation.uncertainty import uncertainty_scores

    std = predicted.get("std", {}).get("model")
    if std is None:
        return []
    model = predicted["predictions"]["none"]["model"]
    return [{"axis": axes[k], **uncertainty_scores(std[k], model[k] - pairs.targets[k])}
            for k in range(len(pairs.angles))]

"""Held-out evaluation: every session of a held-out subject that has at least two earlier sessions is predicted
from the sessions before it, beside copy-last, linear extrapolation and deformation extrapolation; metrics over
the brain and inside the region that changed, by horizon (days from the last earlier session to the target).

The changed region is where the truth differs from the last earlier session by more than ``change_threshold``
(normalised intensity) inside the brain, both smoothed by a Gaussian of ``change_smoothing`` voxels first: scan
noise alone differs by more than the threshold in a fifth of the voxels. Forecast uncertainty: the model's
voxelwise std over ``n_samples`` samples, for the last session and for ``forecast_sessions`` autoregressive
sessions after it, against the horizon."""

from __future__ import annotations

import numpy as np

METRICS = ("ssim", "psnr", "mae")


def brain_mask(frame: np.ndarray) -> np.ndarray:
    from medsci.preprocessing.registration import foreground_mask

    return foreground_mask(frame)


def changed_region(truth: np.ndarray, last: np.ndarray, eval_cfg) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    sigma = eval_cfg.change_smoothing
    difference = gaussian_filter(truth - last, sigma) if sigma > 0 else truth - last
    return np.abs(difference) > eval_cfg.change_threshold


def target_sessions(n_sessions: int) -> list[int]:
    """Sessions scored in a held-out subject: every one with at least two earlier sessions (so that every baseline
    applies and horizons vary), or the last one of a two-session subject."""
    return list(range(2, n_sessions)) if n_sessions >= 3 else [n_sessions - 1]


def score_subject(subject: str, predicted: dict, eval_cfg) -> list[dict]:
    """Metric rows of every target session of one subject (``predicted["targets"]``)."""
    return [row for target in predicted["targets"] for row in score_target(subject, target, eval_cfg)]


def scored_regions(predicted: dict, eval_cfg) -> dict[str, np.ndarray]:
    """The masks a target is scored in: the brain of the last earlier session, and the changed region in it."""
    last = predicted["methods"]["copy_last"]
    brain = brain_mask(last)
    return {"brain": brain, "changed": brain & changed_region(predicted["truth"], last, eval_cfg)}


def score_target(subject: str, predicted: dict, eval_cfg) -> list[dict]:
    from medsci.evaluation.metrics import image_metrics

    truth = predicted["truth"]
    regions = scored_regions(predicted, eval_cfg)
    brain, changed = regions["brain"], regions["changed"]
    data_range = float(np.percentile(truth[brain], 99.5)) if brain.any() else 1.0
    rows = []
    for method, volume in predicted["methods"].items():
        m = image_metrics(volume, truth, data_range=data_range, masks={"brain": brain, "changed": changed})
        rows.append({"subject": subject, "session": int(predicted["session"]), "method": method,
                     "horizon_days": round(predicted["horizon_days"], 1),
                     "changed_voxels": int(changed.sum()),
                     **{f"{region}_{x}": float(m[f"{region}_{x}"]) for region in ("brain", "changed") for x in METRICS},
                     "ssim": float(m["ssim"])})
    return rows


def uncertainty_subject(subject: str, predicted: dict, eval_cfg) -> list[dict]:
    """Does the model's std predict its error? One row per target session: the scores of
    ``medsci.evaluation.uncertainty`` in the brain and in the changed region (None without a std), the mean std
    and mean |error| over the brain, and the horizon."""
    from medsci.evaluation.uncertainty import SCORES, uncertainty_scores

    rows = []
    for target in predicted["targets"]:
        std, error = target.get("std"), target["methods"]["model"] - target["truth"]
        regions = scored_regions(target, eval_cfg)
        brain = regions["brain"]
        row = {"subject": subject, "session": int(target["session"]), "horizon_days": float(target["horizon_days"]),
               # predictions written before the method was recorded: a std of unknown kind
               "uncertainty": target.get("uncertainty") or ("none" if std is None else "unknown"),
               "mean_std": None if std is None or not brain.any() else float(std[brain].mean()),
               "brain_abs_error": float(np.abs(error[brain]).mean()) if brain.any() else None}
        for name, region in regions.items():
            scores = uncertainty_scores(std, error, region) if std is not None else dict.fromkeys(SCORES)
            row.update({f"{name}_{k}": v for k, v in scores.items()})
        rows.append(row)
    return rows

"""Held-out evaluation: each held-out subject's last session predicted from the earlier ones, beside copy-last,
linear extrapolation and deformation extrapolation; metrics over the brain and inside the region that changed.

The changed region is where the truth differs from the last context frame by more than ``change_threshold``
(normalised intensity) inside the brain. Horizon = days from the last context frame to the target. Forecast
uncertainty: the model's voxelwise std over ``n_samples`` samples, for the target and for
``forecast_sessions`` autoregressive sessions after it, against the horizon.
"""

from __future__ import annotations

import numpy as np

from medsci.tasks.longitudinal.baselines import BASELINES

METRICS = ("ssim", "psnr", "mae")


def brain_mask(frame: np.ndarray) -> np.ndarray:
    from medsci.tasks.longitudinal.registration import foreground_mask

    return foreground_mask(frame)


def predict_subject(loaded, record: dict, eval_cfg, sampler) -> dict:
    """{"truth", "methods": {name: volume}, "std", "horizon_days", "forecast": [{horizon_days, mean_std}]}."""
    from dataclasses import replace

    from medsci.tasks.longitudinal.pipeline import forecast, predict

    frames, times = np.asarray(record["frames"], np.float32), np.asarray(record["times"], np.float64)
    context, ctx_times, truth, t = frames[:-1], times[:-1], frames[-1], float(times[-1])
    spacing = tuple(float(s) for s in np.abs(np.diag(record["grid_affine"])[:3]))
    sampler = replace(sampler, n_samples=max(sampler.n_samples, eval_cfg.n_samples))
    pred = predict(loaded, context, ctx_times, t, sampler)
    methods = {"model": pred.mean}
    for name, fn in BASELINES.items():
        kwargs = {"spacing": spacing} if name == "deformation" else {}
        methods[name] = fn(list(context), list(ctx_times), t, **kwargs)
    mask = brain_mask(context[0])
    out = {"truth": truth, "methods": methods, "std": pred.std, "horizon_days": t - float(ctx_times[-1]),
           "network_evaluations": pred.network_evaluations, "seconds": pred.seconds,
           "forecast": [{"horizon_days": t - float(ctx_times[-1]),
                         "mean_std": float(pred.std[mask].mean()) if pred.std is not None else None}]}
    if eval_cfg.forecast_sessions:
        step = float(np.median(np.diff(times))) if len(times) > 1 else 365.0
        future = [t + step * (i + 1) for i in range(eval_cfg.forecast_sessions)]
        sessions = forecast(loaded, frames, times, future, sampler)
        for ft, p in zip(future, sessions):
            out["forecast"].append({"horizon_days": ft - float(ctx_times[-1]),
                                    "mean_std": float(p.std[mask].mean()) if p.std is not None else None})
        out["future"] = [p.mean for p in sessions]
    return out


def score_subject(subject: str, predicted: dict, eval_cfg) -> list[dict]:
    from medsci.evaluation.metrics import image_metrics

    truth = predicted["truth"]
    last = predicted["methods"]["copy_last"]
    brain = brain_mask(last)
    changed = brain & (np.abs(truth - last) > eval_cfg.change_threshold)
    data_range = float(np.percentile(truth[brain], 99.5)) if brain.any() else 1.0
    rows = []
    for method, volume in predicted["methods"].items():
        m = image_metrics(volume, truth, data_range=data_range, masks={"brain": brain, "changed": changed})
        rows.append({"subject": subject, "method": method, "horizon_days": round(predicted["horizon_days"], 1),
                     "changed_voxels": int(changed.sum()),
                     **{f"{region}_{x}": float(m[f"{region}_{x}"]) for region in ("brain", "changed") for x in METRICS},
                     "ssim": float(m["ssim"])})
    return rows

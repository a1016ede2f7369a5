"""Held-out evaluation of the synthesis model beside its baselines, and the figures of the report."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsci.evaluation.metrics import image_metrics
from medsci.evaluation.tables import metric_stats
from medsci.io.atomic import atomic_path
from medsci.io.cases import MODALITIES
from medsci.tasks.synthesis.baselines import LinearRegressionBaseline, mean_of_available
from medsci.tasks.synthesis.data import PreparedCase

METHODS = ("model", "first_guess", "regression", "mean")
REGIONS = {"volume": "", "brain": "brain_", "tumour": "tumour_"}
METRICS = ("ssim", "psnr", "mse", "mae")


def regions(case: PreparedCase) -> dict[str, np.ndarray]:
    masks = {"brain": case.mask}
    if case.seg is not None and case.seg.any():
        masks["tumour"] = case.seg > 0
    return masks


def case_rows(case: PreparedCase, target: str, predictions: dict[str, np.ndarray]) -> list[dict]:
    truth = case.image[MODALITIES.index(target)]
    rows = []
    for method, pred in predictions.items():
        values = image_metrics(pred, truth, data_range=1.0, masks=regions(case))
        for region, prefix in REGIONS.items():
            row = {"case": case.case_id, "target": target, "method": method, "region": region}
            for metric in METRICS:
                row[metric] = float(values.get(prefix + metric, math.nan))
            rows.append(row)
    return rows


def baseline_predictions(case: PreparedCase, target: str, regression: LinearRegressionBaseline) -> dict:
    available = tuple(m for m in MODALITIES if m != target)
    return {"regression": regression.predict(case.image, target, case.mask),
            "mean": mean_of_available(case.image, available, case.mask)}


def summarize(rows: list[dict]) -> dict:
    """Mean and standard deviation per (target, method, region, metric), plus "all" over targets."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["target"], r["method"], r["region"])].append(r)
        groups[("all", r["method"], r["region"])].append(r)
    out: dict = {}
    for (target, method, region), items in sorted(groups.items()):
        out.setdefault(target, {}).setdefault(method, {})[region] = metric_stats(items, METRICS)
    return out


def markdown_table(summary: dict, region: str = "brain", target: str = "all") -> str:
    lines = [f"| method | SSIM ({region}) | PSNR dB ({region}) | MAE ({region}) |", "|---|---|---|---|"]
    for method in METHODS:
        entry = summary.get(target, {}).get(method, {}).get(region)
        if entry is None or entry["ssim"]["mean"] is None:  # e.g. no tumour in any case
            continue
        lines.append(f"| {method} | {entry['ssim']['mean']:.4f} ± {entry['ssim']['std']:.4f} | "
                     f"{entry['psnr']['mean']:.2f} ± {entry['psnr']['std']:.2f} | {entry['mae']['mean']:.4f} |")
    return "\n".join(lines)


def curve_markdown(curve: list[dict]) -> tuple[str, dict | None]:
    """The SSIM-vs-steps table, and the default sampler against the full-length DDPM reference where both ran.

    The comparison is (default - reference) brain SSIM averaged over the curve's cases and targets; the
    benchmark target is a difference of at least -0.005 with at most 50 network evaluations.
    """
    lines = ["| case | target | sampler | steps | network evaluations | brain SSIM | brain PSNR dB | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in curve:
        lines.append(f"| {r['case']} | {r['target']} | {r['sampler']} | {r['steps']} | {r['network_evaluations']} "
                     f"| {r['brain_ssim']:.4f} | {r['brain_psnr']:.2f} | {r['seconds']:.1f} |")
    pairs = []
    for key in sorted({(r["case"], r["target"]) for r in curve}):
        rows = [r for r in curve if (r["case"], r["target"]) == key]
        default = [r for r in rows if "(default)" in r["sampler"]]
        reference = [r for r in rows if r["sampler"] == "ddpm"]  # all training timesteps (1000 in cWDM)
        if default and reference:
            pairs.append((default[-1], reference[-1]))
    if not pairs:
        return "\n".join(lines), None
    comparison = {
        "default_brain_ssim": float(np.mean([d["brain_ssim"] for d, _ in pairs])),
        "reference_brain_ssim": float(np.mean([r["brain_ssim"] for _, r in pairs])),
        "default_network_evaluations": int(max(d["network_evaluations"] for d, _ in pairs)),
        "reference_network_evaluations": int(max(r["network_evaluations"] for _, r in pairs)),
        "volumes": len(pairs),
    }
    comparison["difference"] = comparison["default_brain_ssim"] - comparison["reference_brain_ssim"]
    comparison["target_met"] = bool(comparison["difference"] >= -0.005
                                    and comparison["default_network_evaluations"] <= 50)
    lines.append("")
    c = comparison
    lines.append(f"Default sampler ({c['default_network_evaluations']} network evaluations) against the "
                 f"{c['reference_network_evaluations']}-step DDPM reference: brain SSIM "
                 f"{c['default_brain_ssim']:.4f} vs {c['reference_brain_ssim']:.4f} "
                 f"(difference {c['difference']:+.4f}; "
                 f"target >= -0.005 with <= 50 evaluations: {'met' if c['target_met'] else 'NOT met'}).")
    return "\n".join(lines), comparison


def save_montage(path: str | Path, case: PreparedCase, target: str, synthesis: np.ndarray,
                 std: np.ndarray | None, regression: np.ndarray | None = None) -> None:
    """One axial slice through the tumour (or the brain centre): inputs, truth, synthesis, |error|, uncertainty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    focus = case.seg > 0 if case.seg is not None and case.seg.any() else case.mask
    z = int(np.round(np.nonzero(focus)[2].mean()))
    truth = case.image[MODALITIES.index(target)]
    panels = [(f"input {m}", case.image[MODALITIES.index(m)]) for m in MODALITIES if m != target]
    panels += [(f"truth {target}", truth), ("synthesis", synthesis)]
    if regression is not None:
        panels.append(("regression baseline", regression))
    panels.append(("|error| synthesis", np.abs(synthesis - truth)))
    if std is not None:
        panels.append(("uncertainty (std)", std))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), dpi=100)
    for ax, (title, vol) in zip(axes, panels):
        err = title.startswith("|error|") or title.startswith("uncertainty")
        ax.imshow(np.rot90(vol[:, :, z]), cmap="magma" if err else "gray", vmin=0,
                  vmax=(0.5 if title.startswith("|error|") else max(float(vol.max()), 1e-6)) if err else 1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{case.case_id} — synthesised {target} (axial slice {z})", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def save_steps_curve(path: str | Path, curve: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_sampler = defaultdict(list)
    for row in curve:
        by_sampler[row["sampler"]].append(row)
    fig, ax = plt.subplots(figsize=(4.5, 3.2), dpi=100)
    for sampler, rows in by_sampler.items():
        steps = sorted({r["network_evaluations"] for r in rows})
        ssim = [np.mean([r["brain_ssim"] for r in rows if r["network_evaluations"] == s]) for s in steps]
        ax.plot(steps, ssim, "o-", label=sampler)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per volume")
    ax.set_ylabel("brain SSIM (held-out)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)

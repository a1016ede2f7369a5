"""Held-out evaluation of the synthesis model beside its baselines, and the figures of the report."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsci.evaluation.figures import Panel, new_figure, save_image_grid, save_png
from medsci.evaluation.metrics import image_metrics
from medsci.evaluation.tables import metric_stats
from medsci.evaluation.uncertainty import SCORES, mean_scores, scores_markdown, uncertainty_scores
from medsci.mri.cases import MODALITIES
from medsci.preprocessing.store import read_npz
from medsci.tasks.synthesis.baselines import LinearRegressionBaseline, mean_of_available
from medsci.tasks.synthesis.data import PreparedCase

# cubic: the voxelwise degree-3 regression, the strongest classical method measured on the demo (docs/measurements.md)
METHODS = ("model", "first_guess", "cubic", "regression", "mean")
CUBIC_DEGREE = 3
METHOD_LEGEND = ("model = the network; first_guess = its regression prior alone; cubic = voxelwise cubic regression "
                 "of the available contrasts; regression = linear regression; mean = their voxelwise mean.")
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


def baseline_predictions(case: PreparedCase, target: str, regression: LinearRegressionBaseline,
                         cubic: LinearRegressionBaseline | None = None) -> dict:
    available = tuple(m for m in MODALITIES if m != target)
    preds = {"regression": regression.predict(case.image, target, case.mask),
             "mean": mean_of_available(case.image, available, case.mask)}
    if cubic is not None:
        preds["cubic"] = cubic.predict(case.image, target, case.mask)
    return preds


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
    """The SSIM-vs-steps table, and the default sampler against the full-length reference where both ran: the
    1000-step DDPM sampler of a ddpm-trained model, else the curve's longest point.

    The comparison is (default - reference) brain SSIM averaged over the curve's cases and targets; the
    benchmark target is a difference of at least -0.005 with at most 50 network evaluations. The few-step
    check: the best point at <= 2 network evaluations within 0.003 brain SSIM of the curve's best point.
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
        if not reference:
            reference = sorted((r for r in rows if "(default)" not in r["sampler"]), key=lambda r: r["steps"])
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
    comparison["reference_sampler"] = pairs[0][1]["sampler"]
    best = float(np.mean([max(r["brain_ssim"] for r in curve if (r["case"], r["target"]) == (d["case"], d["target"]))
                          for d, _ in pairs]))
    few = [max((r["brain_ssim"] for r in curve if (r["case"], r["target"]) == (d["case"], d["target"])
                and r["network_evaluations"] <= 2), default=None) for d, _ in pairs]
    comparison["best_brain_ssim"] = best
    comparison["best_at_most_2_evaluations"] = float(np.mean(few)) if None not in few else None
    comparison["few_step_within_0.003"] = (None if None in few else
                                           bool(best - comparison["best_at_most_2_evaluations"] <= 0.003))
    lines.append("")
    c = comparison
    kind = "DDPM" if c["reference_sampler"] == "ddpm" else c["reference_sampler"]
    lines.append(f"Default sampler ({c['default_network_evaluations']} network evaluations) against the "
                 f"{c['reference_network_evaluations']}-step {kind} reference: brain SSIM "
                 f"{c['default_brain_ssim']:.4f} vs {c['reference_brain_ssim']:.4f} "
                 f"(difference {c['difference']:+.4f}; "
                 f"target >= -0.005 with <= 50 evaluations: {'met' if c['target_met'] else 'NOT met'}).")
    if c["best_at_most_2_evaluations"] is not None:
        lines.append(f"Best point at <= 2 network evaluations: brain SSIM {c['best_at_most_2_evaluations']:.4f} "
                     f"against the curve's best {c['best_brain_ssim']:.4f} (within 0.003: "
                     f"{'yes' if c['few_step_within_0.003'] else 'NO'}).")
    return "\n".join(lines), comparison


UNCERTAINTY_COLUMNS = ("uncertainty", "unc_spearman", "unc_top_decile_ratio", "unc_coverage90")
UNCERTAINTY_SOURCES = {"variance": "the variance head", "samples": "the spread over samples"}


def uncertainty_method(z) -> str:
    """Where a saved sample's ``std`` came from; samples written before the method was stored had only the
    spread over samples."""
    if "std" not in z:
        return "none"
    return str(z["uncertainty"]) if "uncertainty" in z else "samples"


def volume_uncertainty(case: PreparedCase, target: str, synthesis: np.ndarray, std: np.ndarray | None,
                       method: str) -> dict:
    """Does the model's std map predict its error on this volume (inside the brain)? Both are on the [0, 1]
    image scale: the pipeline halves the model-space std when it maps the mean back to images."""
    truth = case.image[MODALITIES.index(target)]
    scores = uncertainty_scores(std, synthesis - truth, case.mask) if std is not None else dict.fromkeys(SCORES)
    return {"case": case.case_id, "target": target, "uncertainty": method, **scores}


def uncertainty_summary(per_volume: list[dict]) -> tuple[dict, str]:
    """The ``uncertainty`` block of summary.json (scores averaged over volumes, overall and per target) and its
    summary.md line."""
    scored = [r for r in per_volume if r["uncertainty"] != "none"]
    methods = sorted({r["uncertainty"] for r in scored})
    block = {"method": "mixed: " + ", ".join(methods) if len(methods) > 1 else (methods or ["none"])[0],
             **mean_scores(scored), "volumes": len(scored),
             "targets": {t: {**mean_scores([r for r in scored if r["target"] == t]),
                             "volumes": sum(r["target"] == t for r in scored)}
                         for t in dict.fromkeys(r["target"] for r in scored)}}
    source = ", ".join(UNCERTAINTY_SOURCES.get(m, m) for m in methods)
    line = scores_markdown(block, f" of the model ({source}; {len(scored)} volumes)") if scored \
        else scores_markdown(None, " of the model")
    return block, f"\n{line}\n"


def save_montage(path: str | Path, case: PreparedCase, target: str, synthesis: np.ndarray,
                 std: np.ndarray | None, regression: np.ndarray | None = None) -> None:
    """One axial slice through the tumour (or the brain centre): inputs, truth, synthesis, |error|, uncertainty."""
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
    row = []
    for title, vol in panels:
        err = title.startswith("|error|") or title.startswith("uncertainty")
        row.append(Panel(np.rot90(vol[:, :, z]), title, cmap="magma" if err else "gray", vmin=0,
                         vmax=(0.5 if title.startswith("|error|") else max(float(vol.max()), 1e-6)) if err else 1))
    save_image_grid(path, [row], figsize=(2.2 * len(panels), 2.6), dpi=100, tight_layout=True,
                    suptitle=f"{case.case_id} — synthesised {target} (axial slice {z})")


def save_steps_curve(path: str | Path, curve: list[dict]) -> None:
    by_sampler = defaultdict(list)
    for row in curve:
        by_sampler[row["sampler"]].append(row)
    fig, ax = new_figure(figsize=(4.5, 3.2), dpi=100)
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
    save_png(fig, path)


def evaluate_heldout(data, train_cases: list[str], cases: list[str], samples, out, targets=None, curves=(),
                     checkpoint=None, segmenter=None) -> str:
    """Score the held-out syntheses in ``samples`` beside the baselines (and the model's first guess when
    ``checkpoint`` is given); writes summary.json, summary.md, metrics.csv, montages and the steps curve to
    ``out``. With ``segmenter`` (a folder of segmentation.py), also BraSyn's downstream test: the Dice of its
    tumour segmentation with each method's prediction in place of the real contrast (rows with a ``dice`` column
    in metrics.csv, ``segmentation`` in summary.json, a table in summary.md). Returns the brain table (markdown)."""
    import json

    from medsci.errors import MedsciError
    from medsci.io.atomic import write_json_atomic
    from medsci.mri.cases import MODALITIES
    from medsci.evaluation.tables import write_tables
    from medsci.tasks.synthesis.baselines import LinearRegressionBaseline
    from medsci.tasks.synthesis.data import load_case, load_training_cases

    overlap = set(train_cases) & set(cases)
    if overlap:
        raise MedsciError(f"held-out cases also in training: {sorted(overlap)}")
    out = Path(out)
    targets = targets or list(MODALITIES)
    training = load_training_cases(data, train_cases)
    regression = LinearRegressionBaseline.fit(training, targets)
    cubic = LinearRegressionBaseline.fit(training, targets, degree=CUBIC_DEGREE)
    del training
    first_guess = None
    if checkpoint:
        from medsci.diffusion.checkpoint import read_checkpoint_config
        from medsci.tasks.synthesis.pipeline import TASK

        prior = read_checkpoint_config(checkpoint, TASK).get("prior")
        first_guess = LinearRegressionBaseline.from_dict(prior) if prior else None
    seg_model = None
    if segmenter:
        from medsci.tasks.synthesis.segmentation import case_dice_rows, load_segmenter, real_contrasts_dice

        seg_model = load_segmenter(segmenter, device="auto")
    rows, timings, dice_rows, unc_rows = [], [], [], []
    for case_id in cases:
        case = load_case(data, case_id)
        folder = Path(samples) / case_id
        timing_file = folder / f"{case_id}-timing.json"
        real_dice = None  # the four real contrasts' Dice: once per case
        if timing_file.is_file():
            timings.append(json.loads(timing_file.read_text(encoding="utf-8")))
        for target in targets:
            sample_file = folder / f"{case_id}-{target}.npz"
            if not sample_file.is_file():
                raise MedsciError("missing synthesis (run `medsci sample synthesis` first)", sample_file)
            z = read_npz(sample_file, ("mean",), what="synthesis sample")  # NaN scored as a result before
            synthesis, std, method = z["mean"], z.get("std"), uncertainty_method(z)
            preds = {"model": synthesis, **baseline_predictions(case, target, regression, cubic)}
            if first_guess is not None:
                # What the diffusion model starts from: shows how much the network itself adds.
                preds["first_guess"] = first_guess.predict(case.image, target, case.mask)
            rows += case_rows(case, target, preds)
            unc = volume_uncertainty(case, target, synthesis, std, method)
            unc_rows.append(unc)
            for row in rows[-len(REGIONS) * len(preds):]:  # scored inside the brain: on the model's brain row
                if row["method"] == "model" and row["region"] == "brain":
                    row.update({"uncertainty": method, **{f"unc_{k}": unc[k] for k in SCORES}})
            if seg_model is not None and case.seg is not None:
                real_dice = real_dice or real_contrasts_dice(seg_model, case)
                dice_rows += case_dice_rows(seg_model, case, target, preds, real_dice)
            save_montage(out / "montages" / f"{case_id}-{target}.png", case, target, synthesis, std,
                            preds["regression"])
    summary = {"cases": cases, "training_cases": train_cases, "targets": targets,
               "metrics": summarize(rows)}
    summary["uncertainty"], uncertainty_text = uncertainty_summary(unc_rows)
    curve = [row for path in curves for row in json.loads(Path(path).read_text(encoding="utf-8"))]
    curve_text = ""
    if curve:
        summary["steps_curve"] = curve
        save_steps_curve(out / "steps_curve.png", curve)
        curve_table, comparison = curve_markdown(curve)
        if comparison is not None:
            summary["default_vs_reference_sampler"] = comparison
        curve_text = ("\n## Brain SSIM against sampling steps (one sample each; the default sampler as configured)"
                      f"\n\n{curve_table}\n")
    if timings:
        nfe = [t["network_evaluations"] for tm in timings for t in tm["targets"].values()]
        secs = [t["seconds"] for tm in timings for t in tm["targets"].values()]
        summary["sampling"] = {"network_evaluations_per_volume": float(np.mean(nfe)),
                               "seconds_per_volume": float(np.mean(secs)), "device": timings[0]["device"],
                               "sampler": timings[0]["sampler"]}
    if seg_model is not None:
        from medsci.tasks.synthesis.segmentation import EMPTY_CONVENTION, summarize_dice

        summary["segmentation"] = {
            "segmenter": str(segmenter), "training_cases": seg_model.config.get("training_cases"),
            "regions": seg_model.config.get("regions"), "empty_regions": EMPTY_CONVENTION,
            "metrics": summarize_dice(dice_rows)}
    # One long table: image-metric rows have an empty dice, Dice rows (region WT/TC/ET) empty image metrics, and
    # only the model's brain rows have uncertainty scores (last columns, so the others keep their places).
    columns = list(dict.fromkeys([*(rows[0] if rows else {}), *(dice_rows[0] if dice_rows else {}),
                                  *(UNCERTAINTY_COLUMNS if rows else ())]))
    rows = [{**dict.fromkeys(columns, ""), **r} for r in rows + dice_rows]
    # Written only now that every case was scored: a failed evaluation leaves no partial results behind.
    write_json_atomic(out / "regression_baseline.json", regression.to_dict())
    table = markdown_table(summary["metrics"], "brain")
    sections = [f"# MRI synthesis, held-out cases ({len(cases)})\n\n{table}\n\n{METHOD_LEGEND}\n", uncertainty_text]
    tumour = summary["metrics"]["all"].get("model", {}).get("tumour")
    if tumour is not None and tumour["ssim"]["n"] > 0:  # some held-out case has a tumour segmentation
        sections.append(f"\n## Inside the tumour\n\n{markdown_table(summary['metrics'], 'tumour')}\n")
    for target in targets:
        sections.append(f"\n## Missing {target}\n\n{markdown_table(summary['metrics'], 'brain', target)}\n")
    if "segmentation" in summary:
        from medsci.tasks.synthesis.segmentation import dice_markdown

        sections.append(dice_markdown(summary["segmentation"]["metrics"], list(targets),
                                      len({r["case"] for r in dice_rows})))
    write_tables(out, rows, summary, [*sections, curve_text])
    return table

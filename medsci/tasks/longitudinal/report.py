"""Tables and figures of the longitudinal evaluation: metrics.csv, summary.json, summary.md, sequence figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsci.evaluation.figures import Panel, save_image_grid
from medsci.evaluation.tables import metric_stats, write_tables

METHODS = ("model", "copy_last", "linear", "deformation")
COLUMNS = ("brain_ssim", "brain_psnr", "brain_mae", "changed_ssim", "changed_psnr", "changed_mae")


def _rank_correlation(x: list, y: list) -> float | None:
    """Spearman's rho of paired values (None left out); None with fewer than 3 pairs or a constant side."""
    from scipy.stats import spearmanr

    pairs = np.array([(a, b) for a, b in zip(x, y) if a is not None and b is not None], dtype=np.float64)
    if len(pairs) < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return None
    return float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic)


def summarise_uncertainty(rows: list[dict], forecasts: dict) -> dict:
    """Mean scores of the model's std against its error over the predicted sessions (brain, changed region), and
    whether the std grows with the horizon: over the held-out sessions beside the error's growth (the truth's),
    and over the forecasts (the last session and the autoregressive ones after it, all subjects pooled)."""
    from medsci.evaluation.uncertainty import SCORES, mean_scores

    kinds = sorted({r["uncertainty"] for r in rows if r["uncertainty"] != "none"})
    by_region = {region: mean_scores([{k: r[f"{region}_{k}"] for k in SCORES} for r in rows])
                 for region in ("brain", "changed")}
    horizons = [r["horizon_days"] for r in rows]
    chain = [f for v in forecasts.values() for f in v]
    std_chain = _rank_correlation([f["horizon_days"] for f in chain], [f["mean_std"] for f in chain])
    # how much: each subject's std at its longest forecast horizon over the one at its shortest (a rank
    # correlation counts a 0.1 % rise as growth)
    ratios = [v[-1]["mean_std"] / v[0]["mean_std"] for v in forecasts.values()
              if len(v) > 1 and v[0]["mean_std"] and v[-1]["mean_std"] is not None]
    return {"method": ", ".join(kinds) or "none", "region": "brain", **by_region["brain"],
            "changed_region": by_region["changed"], "predictions": len(rows),
            "predictions_with_std": sum(r["mean_std"] is not None for r in rows),
            "horizon": {
                "heldout_std_spearman": _rank_correlation(horizons, [r["mean_std"] for r in rows]),
                "heldout_error_spearman": _rank_correlation(horizons, [r["brain_abs_error"] for r in rows]),
                "forecast_std_spearman": std_chain, "forecasts": sum(f["mean_std"] is not None for f in chain),
                "forecast_std_last_over_first": float(np.mean(ratios)) if ratios else None,
                "forecast_std_grows": None if std_chain is None else std_chain > 0}}


def summarise(rows: list[dict], forecasts: dict, nfe: dict, uncertainty: list[dict] | None = None,
              clamped: list[dict] | None = None, refused: list[dict] | None = None) -> dict:
    """``clamped``: the targets whose baselines' extrapolation was capped ({subject, session, asked, used});
    ``refused``: the subjects the workflow left out ({folder, reason}); both recorded in the report."""
    from medsci.tasks.longitudinal.baselines import MAX_EXTRAPOLATION

    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    table = {m: metric_stats([r for r in rows if r["method"] == m], COLUMNS) for m in methods}
    horizons = sorted({r["horizon_days"] for r in rows})
    bins = [(0, 180), (180, 270), (270, 365), (365, 730), (730, 10 ** 6)]
    by_horizon = {}
    for lo, hi in bins:
        sel = [r for r in rows if lo <= r["horizon_days"] < hi]
        if sel:
            by_horizon[f"{lo}-{hi if hi < 10 ** 6 else 'inf'} d"] = {
                m: metric_stats([r for r in sel if r["method"] == m], ("changed_ssim", "brain_ssim"))
                for m in methods}
    model = table.get("model", {})
    base_changed = {m: table[m]["changed_ssim"]["mean"] for m in methods if m != "model"}
    out = {
        "subjects": sorted({r["subject"] for r in rows}), "horizons_days": horizons, "metrics": table,
        "predictions": len({(r["subject"], r.get("session")) for r in rows}),
        "by_horizon": by_horizon, "forecast_uncertainty": forecasts, "network_evaluations": nfe,
        "baseline_extrapolation": {"max_intervals": MAX_EXTRAPOLATION, "clamped": clamped or []},
        "refused_subjects": refused or [],
        "quality_bar": {
            "model_changed_ssim": model.get("changed_ssim", {}).get("mean"),
            "baselines_changed_ssim": base_changed,
            "beats_all_baselines_in_changed_region": None if not model else bool(
                model["changed_ssim"]["mean"] > max(v for v in base_changed.values() if v is not None)),
            "beats_copy_last_over_brain": None if not model or "copy_last" not in table else bool(
                model["brain_ssim"]["mean"] > table["copy_last"]["brain_ssim"]["mean"]),
        },
    }
    if uncertainty is not None:
        out["uncertainty"] = summarise_uncertainty(uncertainty, forecasts)
    return out


def markdown(s: dict) -> str:
    def f(v, d=3):
        return "—" if v is None else f"{v:.{d}f}"

    lines = ["# Longitudinal: held-out subjects' sessions", "",
             f"Subjects: {', '.join(s['subjects'])}; {s['predictions']} predicted sessions: every session with at "
             "least two earlier ones, predicted from those only (registered to the first session, normalised by "
             "its 99th percentile). Changed region: where the smoothed truth differs from the smoothed last earlier "
             "session by more than the threshold. Means over the predicted sessions.", "",
             "| method | SSIM brain | PSNR brain | MAE brain | SSIM changed | PSNR changed | MAE changed |",
             "|---|---|---|---|---|---|---|"]
    for m, v in s["metrics"].items():
        lines.append(f"| {m} | {f(v['brain_ssim']['mean'])} | {f(v['brain_psnr']['mean'], 2)} | "
                     f"{f(v['brain_mae']['mean'], 4)} | {f(v['changed_ssim']['mean'])} | "
                     f"{f(v['changed_psnr']['mean'], 2)} | {f(v['changed_mae']['mean'], 4)} |")
    lines += ["", "## By horizon (SSIM in the changed region)", "", "| horizon | " + " | ".join(s["metrics"]) + " |",
              "|---|" + "---|" * len(s["metrics"])]
    for h, v in s["by_horizon"].items():
        lines.append(f"| {h} | " + " | ".join(f(v[m]['changed_ssim']['mean']) for m in s["metrics"]) + " |")
    lines += ["", "## Forecast uncertainty (mean voxelwise std of the model, brain)", "",
              "| subject | " + " | ".join(f"session +{i}" for i in range(max((len(v) for v in
                                                                                s['forecast_uncertainty'].values()),
                                                                               default=0))) + " |"]
    lines.append("|---|" + "---|" * max((len(v) for v in s["forecast_uncertainty"].values()), default=0))
    for subj, v in s["forecast_uncertainty"].items():
        lines.append(f"| {subj} | " + " | ".join(f"{f(e['mean_std'], 4)} ({e['horizon_days']:.0f} d)" for e in v)
                     + " |")
    if "uncertainty" in s:
        lines += ["", "## Does the uncertainty predict the error?", "", *uncertainty_lines(s["uncertainty"])]
    cap = s.get("baseline_extrapolation", {})
    if cap.get("clamped"):
        capped = ", ".join(f"{c['subject']} session {c['session']} ({c['asked']:.1f} intervals ahead)"
                           for c in cap["clamped"])
        lines += ["", f"Linear and deformation extrapolation capped at {cap['max_intervals']:g} last intervals for: "
                  f"{capped}."]
    if s.get("refused_subjects"):
        lines += ["", f"**{len(s['refused_subjects'])} subject(s) left out** (refused when the data were read):", ""]
        lines += [f"- {Path(r['folder']).name}: {r['reason']}" for r in s["refused_subjects"]]
    q = s["quality_bar"]
    lines += ["", "## Quality bar", "",
              f"- SSIM in the changed region: model {f(q['model_changed_ssim'])}; " +
              ", ".join(f"{k} {f(v)}" for k, v in q["baselines_changed_ssim"].items()) +
              f" -> beats all baselines: {q['beats_all_baselines_in_changed_region']}",
              f"- over the brain, beats copy-last: {q['beats_copy_last_over_brain']}", ""]
    return "\n".join(lines)


def uncertainty_lines(u: dict) -> list[str]:
    """The uncertainty section of summary.md: the scores in the brain and in the changed region, and the std's
    rank correlation with the horizon beside the error's."""
    from medsci.evaluation.uncertainty import scores_markdown

    def f(v):
        return "n/a (fewer than 3 values, or one side constant)" if v is None else f"{v:.2f}"

    h = u["horizon"]
    return ["- " + scores_markdown(u, f" ({u['method']}, brain)"),
            "- " + scores_markdown(u["changed_region"], " (changed region)"),
            f"- Spearman over the {u['predictions']} predicted sessions against the horizon: mean std "
            f"{f(h['heldout_std_spearman'])}, mean |error| {f(h['heldout_error_spearman'])}; over the forecasts "
            f"(last session and autoregressive ones): mean std {f(h['forecast_std_spearman'])} -> grows with the "
            f"horizon: {h['forecast_std_grows']} (longest / shortest horizon's std: "
            f"{f(h['forecast_std_last_over_first'])}x)."]


def sequence_figure(path: Path, record: dict, predicted: dict) -> None:
    """Middle axial slice of every session, the truth, each method and the model's error and std."""
    frames = np.asarray(record["frames"])
    z = frames.shape[3] // 2
    panels = [(f"{t:.0f} d", fr[:, :, z]) for t, fr in zip(record["times"][:-1], frames[:-1])]
    panels.append((f"truth {record['times'][-1]:.0f} d", predicted["truth"][:, :, z]))
    panels += [(m, predicted["methods"][m][:, :, z]) for m in METHODS if m in predicted["methods"]]
    err = np.abs(predicted["methods"]["model"] - predicted["truth"])[:, :, z]
    vmax = float(np.percentile(frames, 99.5))
    std = predicted.get("std")
    row = [Panel(np.rot90(img), title, vmin=0, vmax=vmax) for title, img in panels]
    row.append(Panel(np.rot90(err), "|model - truth|", cmap="magma", vmin=0, vmax=0.2 * vmax))
    row.append(Panel(None if std is None else np.rot90(std[:, :, z]), "model std", cmap="viridis"))
    save_image_grid(path, [row], figsize=(1.8 * (len(panels) + 2), 2.2), fontsize=7, frame=True, png_dpi=100,
                    tight=True)


def write_evaluation(out: Path, rows: list[dict], forecasts: dict, nfe: dict,
                     uncertainty: list[dict] | None = None, clamped: list[dict] | None = None,
                     refused: list[dict] | None = None) -> dict:
    summary = summarise(rows, forecasts, nfe, uncertainty, clamped, refused)
    write_tables(out, rows, summary, markdown(summary))
    return summary

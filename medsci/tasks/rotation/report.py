"""Tables and figures of the rotation evaluation: metrics.csv, summary.json, summary.md, prediction grids, a sweep
strip and GIF."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medsci.evaluation.figures import Panel, save_image_grid
from medsci.evaluation.tables import metric_stats, write_tables
from medsci.evaluation.uncertainty import scores_markdown
from medsci.io.atomic import write_bytes_atomic
from medsci.tasks.rotation.data import load_pairs
from medsci.tasks.rotation.evaluation import METRICS, load_predictions, score, uncertainty_rows

BASE_METHODS = ("identity", "warp")


def _mean(rows, metric, **where) -> float | None:
    sel = [r[metric] for r in rows if all(r[k] == v if not callable(v) else v(r[k]) for k, v in where.items())]
    return metric_stats([{metric: v} for v in sel], (metric,))[metric]["mean"] if sel else None


def _fmt(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def write_evaluation(cfg, pair_paths: list[Path], predictions_dir: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    from medsci.tasks.rotation.data import refusal_of

    rows, info, first, refused, unc_rows = [], {}, None, {}, []
    for i, path in enumerate(sorted(pair_paths)):
        ct = path.name[:-4] if path.name.endswith(".npz") else path.stem
        reason = refusal_of(path)
        if reason is not None:
            refused[ct] = reason
            continue
        pairs = load_pairs(path)
        predicted = load_predictions(predictions_dir / path.name)
        axes, mags = angle_labels(pairs.angles)
        rows += score(ct, pairs, predicted, axes, mags)
        unc_rows += uncertainty_rows(pairs, predicted, axes)
        info[ct] = {"nfe": predicted["nfe"], "seconds": predicted["seconds"], "uncertainty": predicted["uncertainty"]}
        if i < cfg.evaluation.figures or first is None:
            _prediction_grid(out / "figures" / f"{ct}_grid.png", pairs, predicted["predictions"]["none"], axes, mags)
        if first is None:
            first = (ct, pairs, predicted["predictions"]["none"])
    methods = list(dict.fromkeys(r["method"] for r in rows))
    summary = _summary(cfg, rows, methods, info)
    summary["refused"] = refused
    summary["uncertainty"] = _uncertainty_summary(unc_rows, info)
    write_tables(out, rows, summary, _markdown(cfg, summary, methods))
    if first is not None:
        _sweep(out / "figures", *first, axes, mags)
    return summary


def angle_labels(angles: np.ndarray) -> tuple[list[str], list[float]]:
    """Each rotation's axis (x, y, z when only that angle is non-zero, else xyz) and magnitude (max |angle|)."""
    axes, mags = [], []
    for a in np.asarray(angles, dtype=np.float64):
        nonzero = np.flatnonzero(np.abs(a) > 1e-9)
        axes.append("xyz"[int(nonzero[0])] if len(nonzero) == 1 else "xyz")
        mags.append(float(np.abs(a).max()))
    return axes, mags


def _uncertainty_summary(unc_rows: list[dict], info: dict) -> dict:
    """Mean uncertainty scores of the model over held-out views, overall and in-plane (about the beam axis y)
    vs out-of-plane (any turn about x or z, combined rotations included)."""
    from medsci.evaluation.uncertainty import mean_scores

    kinds = sorted({v["uncertainty"] for v in info.values() if v["uncertainty"] != "none"})
    out = {"method": "+".join(kinds) or "none", **mean_scores(unc_rows), "images": len(unc_rows)}
    for name, keep in (("in_plane", lambda a: a == "y"), ("out_of_plane", lambda a: a != "y")):
        sel = [r for r in unc_rows if keep(r["axis"])]
        out[name] = {**mean_scores(sel), "images": len(sel)}
    return out


def _summary(cfg, rows, methods, info) -> dict:
    plain = [r for r in rows if r["remap"] == "none"]
    by_axis = {}
    for axis in ("x", "y", "z", "xyz"):
        for mag in sorted({r["magnitude"] for r in plain if r["axis"] == axis}) if axis != "xyz" else [None]:
            key = f"{axis}" if mag is None else f"{axis}{mag:g}"
            where = {"axis": axis} if mag is None else {"axis": axis, "magnitude": mag}
            by_axis[key] = {m: {x: _mean(plain, x, method=m, **where) for x in METRICS} for m in methods}
    out_of_plane = lambda r: r["axis"] in ("x", "z") and r["magnitude"] >= 10  # noqa: E731
    remaps = {}
    for remap in dict.fromkeys(r["remap"] for r in rows):
        sel = [r for r in rows if r["remap"] == remap]
        remaps[remap] = {m: _mean(sel, "ssim", method=m) for m in ("model", *BASE_METHODS)}
        remaps[remap]["model_out_of_plane_10"] = _mean([r for r in sel if out_of_plane(r)], "ssim", method="model")
    nfe = {m: float(np.mean([v["nfe"][m] for v in info.values()])) for m in methods if m.startswith("model")}
    seconds = {m: float(np.mean([v["seconds"][m] for v in info.values()])) for m in nfe}
    oop = {m: _mean([r for r in plain if out_of_plane(r)], "ssim", method=m) for m in methods}
    base = remaps.get("none", {}).get("model_out_of_plane_10")
    worst_remap = min((v["model_out_of_plane_10"] - base for k, v in remaps.items() if k != "none"
                       and v["model_out_of_plane_10"] is not None), default=None) if base is not None else None
    return {
        "cts": sorted(info), "views_per_ct": len(plain) // max(1, len(info) * len(methods)),
        "by_axis_magnitude": by_axis, "remaps": remaps, "network_evaluations": nfe, "seconds_per_image": seconds,
        "overall": {m: {x: _mean(plain, x, method=m) for x in METRICS} for m in methods},
        "quality_bar": {
            "out_of_plane_10_ssim": oop,
            "model_beats_identity_and_warp": None if oop.get("model") is None else
            bool(oop["model"] > max(oop.get("identity") or -1, oop.get("warp") or -1)),
            "worst_remap_ssim_change": worst_remap,
            "remaps_within_0.02": None if worst_remap is None else bool(worst_remap >= -0.02),
            "nfe_at_most_20": bool(nfe.get("model", 99) <= 20),
        },
    }


def _markdown(cfg, s, methods) -> str:
    lines = ["# Radiograph rotation: held-out CTs", "",
             f"CTs: {', '.join(s['cts'])}; {s['views_per_ct']} rotated views each. Images in [0, 1]; SSIM / PSNR "
             "(dB) / MAE against the true DRR at the target angle. identity = the unrotated input; warp = the "
             "homography of the isocentre plane (exact about the beam axis y).", "",
             "## SSIM by axis and magnitude (x: tilt, y: in-plane, z: turn; xyz: random combined)", "",
             "| rotation | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for key, vals in s["by_axis_magnitude"].items():
        best = max((vals[m]["ssim"] or -1) for m in methods)
        cells = [("**" + _fmt(vals[m]["ssim"]) + "**") if vals[m]["ssim"] == best else _fmt(vals[m]["ssim"])
                 for m in methods]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += ["", "## Overall (all held-out views)", "", "| method | SSIM | PSNR | MAE |", "|---|---|---|---|"]
    for m in methods:
        v = s["overall"][m]
        lines.append(f"| {m} | {_fmt(v['ssim'])} | {_fmt(v['psnr'], 2)} | {_fmt(v['mae'], 4)} |")
    lines += ["", "## Histogram-remapped inputs (input and truth through the same curve), SSIM", "",
              "| remap | model | model, out-of-plane >= 10 deg | identity | warp |", "|---|---|---|---|---|"]
    for remap, v in s["remaps"].items():
        lines.append(f"| {remap} | {_fmt(v['model'])} | {_fmt(v['model_out_of_plane_10'])} | "
                     f"{_fmt(v['identity'])} | {_fmt(v['warp'])} |")
    lines += ["", "## Guidance: network evaluations per image and quality", "",
              "| sampler | network evaluations | seconds per image | SSIM |", "|---|---|---|---|"]
    for m, n in s["network_evaluations"].items():
        lines.append(f"| {m} | {n:g} | {s['seconds_per_image'][m]:.3f} | {_fmt(s['overall'][m]['ssim'])} |")
    q = s["quality_bar"]
    lines += ["", "## Quality bar", "",
              "- out-of-plane rotations >= 10 deg, SSIM: " +
              ", ".join(f"{m} {_fmt(v)}" for m, v in q["out_of_plane_10_ssim"].items()) +
              f" -> model beats identity and warp: {q['model_beats_identity_and_warp']}",
              f"- worst change on remapped inputs (out-of-plane >= 10 deg): {_fmt(q['worst_remap_ssim_change'])} "
              f"-> within 0.02: {q['remaps_within_0.02']}",
              f"- network evaluations per image at the default sampler <= 20: {q['nfe_at_most_20']}", "",
              scores_markdown(s.get("uncertainty"), f" of the model ({s.get('uncertainty', {}).get('method', 'none')}"
                              ", held-out views, whole image)"), ""]
    return "\n".join(lines)


def _prediction_grid(path: Path, pairs, preds: dict, axes, mags, per_axis: int = 1) -> None:
    """Rows: the largest rotation about each axis and one combined; columns: input, truth, each method, error."""
    picks = []
    for axis in ("x", "y", "z", "xyz"):
        idx = [k for k, a in enumerate(axes) if a == axis]
        if idx:
            picks.append(max(idx, key=lambda k: (mags[k], pairs.angles[k].sum())))
    methods = ["identity", "warp", "model"]
    cols = ["input", "truth", *methods, "|model - truth|"]
    rows = []
    for r, k in enumerate(picks):
        imgs = [pairs.source, pairs.targets[k], *[preds[m][k] for m in methods],
                np.abs(preds["model"][k] - pairs.targets[k])]
        rows.append([Panel(img, title if r == 0 else None, cmap="gray" if c < len(cols) - 1 else "magma", vmin=0,
                           vmax=1 if c < len(cols) - 1 else 0.25) for c, (img, title) in enumerate(zip(imgs, cols))])
        a = pairs.angles[k]
        rows[-1][0].ylabel = f"{a[0]:+.0f},{a[1]:+.0f},{a[2]:+.0f}"
    save_image_grid(path, rows, figsize=(2 * len(cols), 2 * len(picks)), fontsize=9, frame=True, png_dpi=100,
                    tight=True)


def _sweep(folder: Path, ct: str, pairs, preds: dict, axes, mags) -> None:
    """One input swept about z (turning the patient): predictions above the truths, as a strip and a GIF."""
    from PIL import Image

    idx = sorted([k for k, a in enumerate(axes) if a == "z"], key=lambda k: pairs.angles[k][2])
    if not idx:
        return
    angles = [pairs.angles[k][2] for k in idx]
    order = sorted(range(len(idx) + 1), key=lambda j: (angles + [0.0])[j])
    frames_pred = [(preds["model"][idx[j]] if j < len(idx) else pairs.source) for j in order]
    frames_true = [(pairs.targets[idx[j]] if j < len(idx) else pairs.source) for j in order]
    labels = [(angles + [0.0])[j] for j in order]
    rows = [[Panel(img, vmin=0, vmax=1) for img in frames] for frames in (frames_pred, frames_true)]
    for panel, a in zip(rows[0], labels):
        panel.title = f"z {a:+.0f} deg"
    rows[0][0].ylabel, rows[1][0].ylabel = "model", "true DRR"
    save_image_grid(folder / f"{ct}_sweep.png", rows, figsize=(1.6 * len(order), 3.4), frame=True, png_dpi=100,
                    tight=True)
    frames = [Image.fromarray((np.clip(f, 0, 1) * 255).astype(np.uint8)).resize((f.shape[1] * 3, f.shape[0] * 3))
              for f in frames_pred + frames_pred[-2:0:-1]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=250, loop=0)
    write_bytes_atomic(folder / f"{ct}_sweep.gif", buf.getvalue())

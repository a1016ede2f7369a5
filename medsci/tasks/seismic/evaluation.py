"""Held-out evaluation of the interpolation model beside linear interpolation, POCS and MSSA, and the figures.

Metrics per (cube, pattern, method): SNR in dB (``10 log10(|truth|^2 / |truth - pred|^2)``) and MSE, over the
whole cube and over the missing traces only, and the mean 2D SSIM of inline and of crossline sections
(data range = the truth's peak-to-peak amplitude).

Figures in ``sections/``: ``{cube}-{pattern}.png`` (inline and crossline sections) and
``{cube}-{pattern}-spectrum.png`` (mean amplitude spectrum of the missing traces, every method beside the truth).

Uncertainty (the guided model only, when ``medsci sample seismic`` wrote its ``..._std.npy``): whether the std
predicts the error on the missing traces (:mod:`medsci.evaluation.uncertainty`), per (cube, pattern) in the
model's metrics.csv rows and averaged per pattern in summary.json ``uncertainty`` and summary.md.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from medsci.evaluation.figures import Panel, new_figure, save_image_grid, save_png
from medsci.evaluation.metrics import section_ssim, snr_db
from medsci.evaluation.tables import metric_stats
from medsci.evaluation.uncertainty import SCORES, mean_scores, scores_markdown, uncertainty_scores
from medsci.tasks.seismic.baselines import linear_interpolation, mssa_interpolation, pocs_interpolation

METHODS = ("model", "model_unguided", "linear", "pocs", "mssa")
METRICS = ("snr_missing", "snr", "mse_missing", "mse", "ssim_inline", "ssim_crossline")


def cube_metrics(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """All metrics of one reconstruction; ``mask`` (il, xl) True = observed."""
    truth64 = np.asarray(truth, dtype=np.float64)
    err = np.asarray(pred, dtype=np.float64) - truth64
    missing = np.broadcast_to(~mask[..., None], truth.shape)
    data_range = float(truth64.max() - truth64.min()) or 1.0
    return {
        "snr_missing": snr_db(pred, truth, missing),
        "snr": snr_db(pred, truth),
        "mse_missing": float(np.mean(err[missing] ** 2)) if missing.any() else math.nan,
        "mse": float(np.mean(err**2)),
        "ssim_inline": section_ssim(pred, truth, axis=0, data_range=data_range),
        "ssim_crossline": section_ssim(pred, truth, axis=1, data_range=data_range),
    }


def baseline_predictions(observed: np.ndarray, mask: np.ndarray, pocs_iterations: int = 50,
                         mssa_rank: int | None = None) -> dict[str, np.ndarray]:
    """Linear interpolation, POCS and MSSA (``mssa_rank`` None: the default of
    :func:`~medsci.tasks.seismic.baselines.mssa_interpolation`)."""
    return {"linear": linear_interpolation(observed, mask),
            "pocs": pocs_interpolation(observed, mask, n_iter=pocs_iterations),
            "mssa": mssa_interpolation(observed, mask, rank=mssa_rank)}


def cube_rows(cube_id: str, pattern: str, truth: np.ndarray, mask: np.ndarray,
              predictions: dict[str, np.ndarray]) -> list[dict]:
    missing_fraction = float((~mask).mean())
    rows = []
    for method, pred in predictions.items():
        row = {"cube": cube_id, "pattern": pattern, "method": method, "missing_fraction": missing_fraction}
        row.update(cube_metrics(pred, truth, mask))
        rows.append(row)
    return rows


def model_uncertainty(std: np.ndarray | None, pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """The uncertainty scores of one reconstruction on its missing traces (``mask`` True = observed); NaN
    scores without a std."""
    if std is None:
        return {key: math.nan for key in SCORES}
    missing = np.broadcast_to(~mask[..., None], truth.shape)
    return uncertainty_scores(std, np.asarray(pred, dtype=np.float64) - truth, missing)


def summarize_uncertainty(rows: list[dict]) -> dict:
    """``{pattern: {spearman, top_decile_ratio, coverage90, method, n}}``: the model's mean scores over the cubes
    that had an uncertainty map (``n`` of them), from its metrics rows."""
    out: dict = {}
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        scored = [r for r in rows if r["pattern"] == pattern and r["method"] == GUIDED
                  and r.get("uncertainty", "none") != "none"]
        means = mean_scores([{k: r[f"uncertainty_{k}"] for k in SCORES} for r in scored])
        out[pattern] = {**means, "method": "/".join(sorted({r["uncertainty"] for r in scored})) or "none",
                        "n": len(scored)}
    return out


def uncertainty_lines(uncertainty: dict) -> str:
    """One summary.md line per pattern: the model's mean uncertainty scores, or why there are none."""
    lines = []
    for pattern, u in uncertainty.items():
        what = f" ({pattern}, {u['method']}, {u['n']} cube{'s' if u['n'] != 1 else ''})" if u["n"] else f" ({pattern})"
        lines.append(f"- {scores_markdown(u, what)}\n")
    return "".join(lines)


def summarize(rows: list[dict]) -> dict:
    """``{pattern: {method: {metric: {mean, std, n}}}}`` over cubes (non-finite values left out)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["pattern"], r["method"])].append(r)
    out: dict = {}
    for (pattern, method), items in groups.items():
        out.setdefault(pattern, {})[method] = metric_stats(items, METRICS)
    return out


def _fmt(entry: dict | None, metric: str, digits: int) -> str:
    if entry is None or entry[metric]["mean"] is None:
        return "-"
    return f"{entry[metric]['mean']:.{digits}f}"


def markdown_table(summary: dict) -> str:
    lines = ["| pattern | method | SNR missing dB | SNR dB | MSE missing | SSIM inline | SSIM crossline |",
             "|---|---|---|---|---|---|---|"]
    for pattern, methods in summary.items():
        for method in (*METHODS, *sorted(set(methods) - set(METHODS))):
            entry = methods.get(method)
            if entry is None:
                continue
            lines.append(f"| {pattern} | {method} | {_fmt(entry, 'snr_missing', 2)} | {_fmt(entry, 'snr', 2)} | "
                         f"{_fmt(entry, 'mse_missing', 5)} | {_fmt(entry, 'ssim_inline', 4)} | "
                         f"{_fmt(entry, 'ssim_crossline', 4)} |")
    return "\n".join(lines)


def benchmark_table(rows: list[dict]) -> str:
    lines = ["| cube | steps | jumps | samples | network evaluations per window | seconds per cube | SNR missing dB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cube']} | {r['steps']} | {r['resample_jumps']} | {r.get('n_samples', 1)} | "
                     f"{r['network_evaluations']} | "
                     f"{r['seconds']:.1f} | {r['snr_missing']:.2f} |")
    return "\n".join(lines)


def _most_missing(mask: np.ndarray, axis: int) -> int:
    """Index of the section (inline for axis 0) with the most missing traces, nearest the centre on ties."""
    counts = (~mask).sum(axis=1 - axis)
    centre = (len(counts) - 1) / 2
    order = np.lexsort((np.abs(np.arange(len(counts)) - centre), -counts))
    return int(order[0])


def save_sections(path: str | Path, cube_id: str, pattern: str, observed: np.ndarray, truth: np.ndarray,
                  reconstruction: np.ndarray, mask: np.ndarray, linear: np.ndarray | None = None) -> None:
    """Inline (top) and crossline (bottom) sections: observed, truth, reconstruction, [linear], difference."""
    clip = float(np.percentile(np.abs(truth), 99)) or 1.0
    panels = [("observed", observed), ("truth", truth), ("reconstruction", reconstruction)]
    if linear is not None:
        panels.append(("linear", linear))
    panels.append(("reconstruction - truth", reconstruction - truth))
    rows = []
    for axis in (0, 1):
        index = _most_missing(mask, axis)
        name = "inline" if axis == 0 else "crossline"
        # np.take: the (other lateral axis, t) section, shown with time down
        rows.append([Panel(np.take(cube, index, axis=axis).T, f"{title}\n{name} {index}", cmap="seismic",
                           vmin=-clip, vmax=clip) for title, cube in panels])
    save_image_grid(path, rows, figsize=(2.3 * len(panels), 5.2), dpi=100, frame=True, tight_layout=True,
                    suptitle=f"{cube_id} - {pattern} ({(~mask).mean():.0%} traces missing)",
                    aspect="auto", interpolation="nearest")


# (method, colour, line width) of the spectrum figure; "model" is the guided reconstruction.
SPECTRUM_METHODS = (("truth", "k", 1.6), ("model", "C3", 1.2), ("linear", "C0", 1.0), ("pocs", "C1", 1.0),
                    ("mssa", "C2", 1.0))


def mean_amplitude_spectrum(cube: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the missing traces (mask False) of the rfft amplitude along time; float64 ``(n_t // 2 + 1,)``."""
    traces = np.asarray(cube, dtype=np.float64)[~np.asarray(mask, bool)]
    return np.abs(np.fft.rfft(traces, axis=-1)).mean(axis=0)


def save_spectra(path: str | Path, cube_id: str, pattern: str, truth: np.ndarray, mask: np.ndarray,
                 predictions: dict[str, np.ndarray], sample_interval_ms: float | None = None) -> None:
    """Mean amplitude spectrum (dB, 0 dB = the truth's peak) of the missing traces: truth and each method
    (left), and of each method's error ``prediction - truth`` (right). Methods absent from ``predictions``
    are left out; frequency in Hz with a sample interval, else in cycles per sample."""
    n_t = truth.shape[-1]
    if sample_interval_ms:
        freqs, unit = np.fft.rfftfreq(n_t, d=sample_interval_ms / 1000.0), "Hz"
    else:
        freqs, unit = np.fft.rfftfreq(n_t), "cycles/sample"
    ref = mean_amplitude_spectrum(truth, mask)
    peak = float(ref.max()) or 1.0

    def db(amp: np.ndarray) -> np.ndarray:
        return 20.0 * np.log10(np.maximum(amp / peak, 1e-6))

    fig, axes = new_figure(1, 2, figsize=(9.0, 3.4), dpi=100, sharey=True)
    for name, color, width in SPECTRUM_METHODS:
        cube = truth if name == "truth" else predictions.get(name)
        if cube is None:
            continue
        axes[0].plot(freqs, db(mean_amplitude_spectrum(cube, mask)), color=color, lw=width, label=name)
        if name != "truth":
            err = np.asarray(cube, dtype=np.float64) - truth
            axes[1].plot(freqs, db(mean_amplitude_spectrum(err, mask)), color=color, lw=width, label=name)
    axes[1].plot(freqs, db(ref), color="k", lw=0.8, ls=":", label="truth")
    axes[0].set_title("amplitude spectrum, missing traces", fontsize=9)
    axes[1].set_title("spectrum of the error (prediction - truth)", fontsize=9)
    axes[0].set_ylabel("mean amplitude (dB re truth peak)")
    for ax in axes:
        ax.set_xlabel(f"frequency ({unit})")
        ax.set_xlim(float(freqs[0]), float(freqs[-1]))
        ax.set_ylim(-60, 5)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{cube_id} - {pattern} ({(~mask).mean():.0%} traces missing)", fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


def save_benchmark(path: str | Path, rows: list[dict], baselines: dict[str, float] | None = None) -> None:
    """SNR on the missing traces against network evaluations per window, one line per jump setting."""
    fig, ax = new_figure(figsize=(5.0, 3.4), dpi=100)
    by_jumps: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_jumps[(int(r["resample_jumps"]), int(r.get("n_samples", 1)))].append(r)
    for (jumps, n_samples), items in sorted(by_jumps.items()):
        nfes = sorted({r["network_evaluations"] for r in items})
        snr = [np.mean([r["snr_missing"] for r in items if r["network_evaluations"] == n]) for n in nfes]
        secs = [np.mean([r["seconds"] for r in items if r["network_evaluations"] == n]) for n in nfes]
        label = f"DDIM, {jumps} resampling jumps" + (f", mean of {n_samples} samples" if n_samples > 1 else "")
        ax.plot(nfes, snr, "o-", label=label)
        for n, s, t in zip(nfes, snr, secs):
            ax.annotate(f"{t:.1f} s" if t < 10 else f"{t:.0f} s", (n, s), textcoords="offset points",
                        xytext=(4, -10), fontsize=7)
    for i, (name, value) in enumerate(sorted((baselines or {}).items())):
        ax.axhline(value, color=f"C{len(by_jumps) + i}", ls="--", lw=1, label=name)
    ax.axvline(250, color="grey", ls=":", lw=1, label="250 evaluations (budget)")
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per window (seconds per cube annotated)")
    ax.set_ylabel("SNR on missing traces (dB)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


GUIDED, UNGUIDED = "model", "model_unguided"


def observed_cube(cfg, cube_id: str, path, masks, pattern: str):
    """(truth, zero-filled observation, trace mask) of one held-out cube under one evaluation mask."""
    from medsci.tasks.seismic.data import load_cube, load_mask

    truth = load_cube(path, cfg.data).data
    mask = load_mask(Path(masks) / f"{cube_id}-{pattern}.npy", truth.shape)
    return truth, np.where(mask[..., None], truth, np.float32(0)), mask


def evaluate_heldout(cfg, data, cubes: list[str], train_cubes: list[str], masks, samples, out,
                     benchmark=()) -> str:
    """Score the held-out reconstructions in ``samples`` beside linear interpolation, POCS and MSSA; writes
    summary.json, summary.md, metrics.csv, section and spectrum figures and the benchmark figure to ``out``.
    Returns the markdown summary."""
    import json

    from medsci.errors import InputError, MedsciError
    from medsci.evaluation.tables import write_tables
    from medsci.tasks.seismic.data import find_cube, load_cube

    overlap = set(train_cubes) & set(cubes)
    if overlap:
        raise MedsciError(f"held-out cubes also in training: {sorted(overlap)}")
    out = Path(out)
    methods = [GUIDED, UNGUIDED] if cfg.evaluation.unguided else [GUIDED]
    rows, timings = [], []
    for cube_id, path in zip(cubes, [find_cube(data, c) for c in cubes]):
        timing_file = Path(samples) / cube_id / f"{cube_id}-timing.json"
        if not timing_file.is_file():
            raise MedsciError("missing reconstructions (run `medsci sample seismic` first)", timing_file)
        timings.append(json.loads(timing_file.read_text(encoding="utf-8")))
        sample_interval_ms = load_cube(path, cfg.data).sample_interval_ms
        for pattern in cfg.evaluation.patterns:
            truth, observed, mask = observed_cube(cfg, cube_id, path, masks, pattern)
            preds = {}
            for method in methods:
                f = Path(samples) / cube_id / f"{cube_id}-{pattern}-{method}.npy"
                if not f.is_file():
                    raise MedsciError("missing reconstruction", f)
                preds[method] = np.load(f, allow_pickle=False)
                if preds[method].shape != truth.shape:
                    raise InputError(f"reconstruction shape {preds[method].shape} != cube {truth.shape}", f)
            std, unc = None, timings[-1]["reconstructions"].get(pattern, {}).get(GUIDED, {}).get("uncertainty", "none")
            if unc != "none":  # the timing says whether a _std.npy beside the reconstruction belongs to this run
                f = Path(samples) / cube_id / f"{cube_id}-{pattern}-{GUIDED}_std.npy"
                if not f.is_file():
                    raise MedsciError(f"missing uncertainty map (the {unc} std of the reconstruction)", f)
                std = np.load(f, allow_pickle=False)
                if std.shape != truth.shape:
                    raise InputError(f"uncertainty map shape {std.shape} != cube {truth.shape}", f)
            preds.update(baseline_predictions(observed, mask, cfg.evaluation.pocs_iterations,
                                              getattr(cfg.evaluation, "mssa_rank", None)))
            new = cube_rows(cube_id, pattern, truth, mask, preds)
            scores = model_uncertainty(std, preds[GUIDED], truth, mask)
            for row in new:  # the model's own columns; empty for the other methods
                model = row["method"] == GUIDED
                row["uncertainty"] = unc if model else None
                row.update({f"uncertainty_{k}": scores[k] if model else None for k in SCORES})
            rows += new
            save_sections(out / "sections" / f"{cube_id}-{pattern}.png", cube_id, pattern, observed, truth,
                             preds[GUIDED], mask, preds["linear"])
            save_spectra(out / "sections" / f"{cube_id}-{pattern}-spectrum.png", cube_id, pattern, truth, mask,
                         preds, sample_interval_ms)
    summary = {"cubes": cubes, "training_cubes": train_cubes,
               "patterns": cfg.evaluation.patterns, "metrics": summarize(rows),
               "uncertainty": summarize_uncertainty(rows)}
    # Seconds and network evaluations per cube, per reconstruction mode.
    per_mode: dict = {}
    for tm in timings:
        for pattern_timings in tm["reconstructions"].values():
            for method, t in pattern_timings.items():
                per_mode.setdefault(method, []).append(t)
    summary["sampling"] = {
        method: {"seconds_per_cube": float(np.mean([t["seconds"] for t in ts])),
                 "network_evaluations_per_window": float(np.mean([t["network_evaluations"] for t in ts])),
                 "windows_per_cube": float(np.mean([t["windows"] for t in ts])),
                 "empty_windows": int(sum(t["empty_windows"] for t in ts))}
        for method, ts in per_mode.items()}
    if timings:
        summary["sampling"]["device"] = timings[0]["device"]
        summary["sampling"]["sampler"] = timings[0]["sampler"]
    bench = [row for f in benchmark for row in json.loads(Path(f).read_text(encoding="utf-8"))]
    sections = [f"# Seismic trace interpolation, held-out cubes ({len(cubes)})\n\n"
                f"{markdown_table(summary['metrics'])}\n",
                f"\n## Uncertainty of the model (missing traces)\n\n{uncertainty_lines(summary['uncertainty'])}"]
    if bench:
        summary["benchmark"] = bench
        # Baselines on the same cube(s) and mask as the benchmark runs, so the lines compare like with like.
        bench_cubes = {r["cube"] for r in bench}
        baselines = {}
        for m in ("linear", "pocs", "mssa"):
            vals = [r["snr_missing"] for r in rows if r["method"] == m and r["cube"] in bench_cubes
                    and r["pattern"] == bench[0]["pattern"] and np.isfinite(r["snr_missing"])]
            if vals:
                baselines[f"{m} (same cube{'s' if len(bench_cubes) > 1 else ''})"] = float(np.mean(vals))
        save_benchmark(out / "benchmark.png", bench, baselines)
        sections.append(f"\n## Sampling benchmark (pattern {bench[0]['pattern']})\n\n{benchmark_table(bench)}\n")
    write_tables(out, rows, summary, sections)
    return "".join(sections)

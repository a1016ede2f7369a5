"""``medsci export RUN OUT``: a shareable synthesis model folder with a model card.

OUT keeps the checkpoint layout, so ``load_model(OUT)`` and ``medsci sample synthesis --checkpoint OUT`` work
unchanged and give the same bytes as RUN:

    config.json          byte-identical copy of RUN's
    ema.safetensors      EMA weights (what sampling loads by default), byte-identical copy
    model.safetensors    raw weights (left out with --ema-only)
    MODEL_CARD.md        for people: what the model does, what it was trained on, how well it did, limits
    model_card.json      the same facts for programs, with the SHA-256 of every file above
    evaluation_summary.json   copy of the held-out evaluation summary, when one was found

The optimizer / training state (training_state.pt) and the loss log are not exported. OUT is built in a
temporary folder beside it and renamed into place at the end, so it is either complete or absent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from medsci.errors import ConfigError, InputError, check_plain_text
from medsci.io.atomic import output_mode
from medsci.mri.cases import MODALITIES
from medsci.io.paths import inside, resolved

CARD_FORMAT = "medsci-model-card"
CARD_VERSION = 1
EVALUATION_COPY = "evaluation_summary.json"
WEIGHT_FILES = ("ema.safetensors", "model.safetensors")

WARNING = ("Outputs are SYNTHETIC images computed from the other contrasts. They are not acquisitions and must "
           "not be used for diagnosis, treatment planning or any other clinical decision.")
INTENDED_USE = ("Research: filling in one missing brain-MRI contrast (t1n, t1c, t2w or t2f) from the three "
                "acquired ones, e.g. so that downstream tools that need all four contrasts (segmentation, "
                "BraSyn-style benchmarks) can run. The output is a plausible image of the missing contrast, "
                "not a diagnostic acquisition.")
LIMITATIONS = [
    "Synthesised intensities are a plausible guess given the other contrasts: lesions, enhancement or "
    "oedema not visible in the inputs cannot be recovered and may be invented or missed.",
    "Trained only on the training cases named in this card; scanners, protocols, field strengths, pathologies, "
    "ages and preprocessing that differ from them are out of distribution and may fail silently.",
    "Inputs must be skull-stripped and co-registered like the training data, with exactly one contrast "
    "missing; they are reoriented and cropped/padded to the training grid, so a head larger than the grid's "
    "field of view is cut.",
    "Intensities are normalised per case (0..1 inside the brain), not quantitative.",
    "Evaluation figures (if any) come from a small held-out set of the same source as the training data; "
    "they do not predict performance on other data.",
]


# ---------------------------------------------------------------------------------------------- facts
def safetensors_parameters(path: str | Path) -> dict[str, int]:
    """``{"tensors": n, "parameters": elements}`` of a safetensors file, read from its header only."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            if not 0 < size <= min(100 * 2**20, path.stat().st_size - 8):
                raise ValueError("bad header length")
            header = json.loads(fh.read(size))
        shapes = [v["shape"] for k, v in header.items() if k != "__metadata__"]
        return {"tensors": len(shapes), "parameters": int(sum(math.prod(s) for s in shapes))}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ConfigError(f"not a valid safetensors file ({type(err).__name__})", path) from None


def _preprocessing(config: dict) -> dict[str, Any]:
    prep = dict(config.get("preprocess") or {})
    geometry = config.get("geometry") if isinstance(config.get("geometry"), dict) else {}
    shape = geometry.get("shape") or prep.get("shape")
    spacing = geometry.get("spacing")
    if spacing is None:
        spacing = prep.get("spacing")
    if isinstance(spacing, (int, float)):
        spacing = [float(spacing)] * 3
    orientation = geometry.get("orientation") or prep.get("orientation")
    fov = geometry.get("field_of_view_mm")
    if fov is None and spacing is not None and shape is not None:
        fov = [round(float(n) * float(s), 3) for n, s in zip(shape, spacing)]
    return {
        "grid_shape": shape,
        "voxel_spacing_mm": spacing,  # None: not recorded (cases kept their native spacing)
        "orientation": orientation,
        "field_of_view_mm": fov,
        "geometry_recorded": bool(geometry),
        "settings": prep,
    }


def _loss(run: Path) -> dict[str, Any] | None:
    path = run / "loss.csv"
    if not path.is_file():
        return None
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("loss")]
        tail = [float(r["loss"]) for r in rows[-50:]]
    except (OSError, ValueError, csv.Error):
        return None
    if not tail:
        return None
    return {"steps_logged": len(rows), "mean_of_last_steps": sum(tail) / len(tail), "last_steps": len(tail)}


def find_evaluation(run: Path, evaluation: str | Path | None = None) -> Path | None:
    """``--evaluation`` if given (must exist), else ``<RUN>/../evaluation/summary.json`` if present."""
    if evaluation is not None:
        path = Path(evaluation)
        if path.is_dir():
            path = path / "summary.json"
        if not path.is_file():
            raise InputError("evaluation summary not found", path)
        return path
    guess = run.resolve().parent / "evaluation" / "summary.json"
    return guess if guess.is_file() else None


def _stat(node: Any) -> dict[str, float] | None:
    if isinstance(node, dict) and isinstance(node.get("mean"), (int, float)):
        return {k: node[k] for k in ("mean", "std", "n") if isinstance(node.get(k), (int, float))}
    return None


def _evaluation(path: Path, config: dict, explicit: bool) -> dict[str, Any] | None:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"unreadable evaluation summary ({getattr(err, 'msg', None) or type(err).__name__})",
                         path) from None
    if not isinstance(summary, dict) or not isinstance(summary.get("metrics"), dict):
        raise InputError("not a synthesis evaluation summary (no 'metrics')", path)
    trained_on = summary.get("training_cases")
    if trained_on is not None and config.get("training_cases") is not None \
            and sorted(trained_on) != sorted(config["training_cases"]):
        if explicit:
            raise InputError("evaluation summary is of a model trained on other cases than this checkpoint", path)
        return None
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for target, methods in summary["metrics"].items():
        if not isinstance(methods, dict):
            continue
        for method, regions in methods.items():
            if not isinstance(regions, dict):
                continue
            for region, metrics in regions.items():
                if not isinstance(metrics, dict):
                    continue
                row = {m: s for m in ("ssim", "psnr", "mae") if (s := _stat(metrics.get(m))) is not None}
                if row:
                    table.setdefault(target, {}).setdefault(method, {})[region] = row
    held_out = summary.get("cases") or []
    overlap = sorted(set(held_out) & set(config.get("training_cases") or []))
    return {
        "source": path.name,
        "held_out_cases": list(held_out),
        "n_held_out_cases": len(held_out),
        "overlap_with_training": overlap,
        "targets": summary.get("targets"),
        "sampling": summary.get("sampling"),
        "default_vs_reference_sampler": summary.get("default_vs_reference_sampler"),
        "metrics": table,
    }


def model_card(run: str | Path, evaluation: str | Path | None = None, name: str | None = None) -> dict[str, Any]:
    """The facts of ``model_card.json`` for the checkpoint folder ``run`` (nothing is written)."""
    from medsci import __version__
    from medsci.diffusion.checkpoint import read_checkpoint_config
    from medsci.provenance import git_commit, sha256_file
    from medsci.tasks.synthesis.pipeline import TASK

    run = Path(run)
    config = read_checkpoint_config(run, TASK)
    weights = [f for f in WEIGHT_FILES if (run / f).is_file()]
    if not weights:
        raise ConfigError("checkpoint has no weights file (ema.safetensors or model.safetensors)", run)
    size = safetensors_parameters(run / weights[0])
    eval_path = find_evaluation(run, evaluation)
    targets = list(config.get("targets") or [])
    cases = list(config.get("training_cases") or [])
    modalities = list(config.get("modalities") or [])
    prior = config.get("prior")
    # What the Markdown card prints verbatim: one line each (a run folder or case id could hold a newline).
    name = check_plain_text(name or (run.resolve().parent.parent.name if run.resolve().name == "model"
                                     else run.resolve().name), "model name", run)
    for case in cases:
        check_plain_text(str(case), "training case id", run / "config.json")
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "name": name,
        "task": config.get("task"),
        "synthesizes": targets,
        "inputs": f"the other contrasts of {', '.join(modalities)} (exactly one missing per case)",
        "warning": WARNING,
        "intended_use": INTENDED_USE,
        "limitations": LIMITATIONS,
        "training": {
            "cases": cases,
            "n_cases": len(cases),
            "steps": config.get("step"),
            "total_steps": config.get("total_steps"),
            "loss": _loss(run),
            "preprocessing": _preprocessing(config),
        },
        "network": {
            "parameters": size["parameters"],
            "tensors": size["tensors"],
            "counted_from": weights[0],
            "spec": config.get("model"),
            "first_guess": ({"kind": "polynomial regression of the available contrasts",
                             "degree": prior.get("degree", 1)} if isinstance(prior, dict) else None),
            "inference_window": config.get("window"),
        },
        "schedule": config.get("schedule"),
        "default_sampler": config.get("sample"),
        "evaluation": _evaluation(eval_path, config, evaluation is not None) if eval_path else None,
        "files": {},  # filled by export_model with what OUT holds
        "software": {
            "trained_with_medsci": config.get("medsci_version"),
            "exported_with_medsci": __version__,
            "exported_from_git": git_commit(),
        },
        "source_run_sha256": {f: sha256_file(run / f) for f in ("config.json", *weights)},
    }


# ---------------------------------------------------------------------------------------------- card
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return " x ".join(_fmt(v, digits) for v in value)
    return str(value)


def _stat_cell(row: dict | None, metric: str, digits: int) -> str:
    stat = (row or {}).get(metric)
    if not stat:
        return "-"
    text = f"{stat['mean']:.{digits}f}"
    return text + (f" ± {stat['std']:.{digits}f}" if "std" in stat else "")


def render_model_card(card: dict[str, Any]) -> str:
    """MODEL_CARD.md text from :func:`model_card`'s dict."""
    tr, net, prep = card["training"], card["network"], card["training"]["preprocessing"]
    lines = [
        f"# medsci MRI contrast synthesis model: {card['name']}",
        "",
        f"> **WARNING: {card['warning']}**",
        "",
        "## What it does",
        "",
        f"- Task: `{card['task']}` — synthesises a missing brain-MRI contrast from {card['inputs']}.",
        f"- Contrasts it can synthesise: {', '.join(card['synthesizes']) or 'not recorded'}.",
        f"- Intended use: {card['intended_use']}",
        "",
        "## Training data",
        "",
        f"- {tr['n_cases']} training case(s): " + (", ".join(f"`{c}`" for c in tr["cases"]) or "not recorded"),
        f"- Grid: {_fmt(prep['grid_shape'])} voxels, orientation {_fmt(prep['orientation'])}.",
    ]
    if prep["voxel_spacing_mm"] is None:
        lines.append("- Voxel spacing: not recorded (the cases kept their native spacing; this checkpoint "
                     "stores no geometry), so the field of view is not recorded either.")
    else:
        lines.append(f"- Voxel spacing: {_fmt(prep['voxel_spacing_mm'], 6)} mm; field of view "
                     f"{_fmt(prep['field_of_view_mm'], 6)} mm.")
    settings = prep["settings"]
    clip = "-".join(_fmt(v) for v in settings.get("clip_percentiles") or []) or "not recorded"
    lines += [
        f"- Preprocessing: N4 bias correction {'on' if settings.get('n4') else 'off'}, intensities clipped to "
        f"percentiles {clip} inside the brain mask and scaled to 0..1.",
        "",
        "## Network and training",
        "",
        f"- Parameters: {net['parameters']:,} ({net['tensors']} tensors in `{net['counted_from']}`).",
        f"- Training steps: {_fmt(tr['steps'])}" + (f" of {tr['total_steps']}" if tr.get("total_steps") else "")
        + (f"; mean loss over the last {tr['loss']['last_steps']} logged steps "
           f"{tr['loss']['mean_of_last_steps']:.4g}" if tr.get("loss") else "") + ".",
        "- First guess refined by the network: "
        + (f"polynomial regression (degree {net['first_guess']['degree']})" if net["first_guess"] else "none") + ".",
        f"- Diffusion schedule: `{json.dumps(card['schedule'], sort_keys=True)}`",
        f"- Default sampler (used by `medsci sample synthesis` without a config): "
        f"`{json.dumps(card['default_sampler'], sort_keys=True)}`",
        "",
        "## Evaluation",
        "",
    ]
    ev = card.get("evaluation")
    if not ev:
        lines.append("No evaluation summary was found for this model.")
    else:
        lines.append(f"Held-out cases: {ev['n_held_out_cases']} (" + ", ".join(f"`{c}`" for c in ev["held_out_cases"])
                     + "), none of them used for training." if not ev["overlap_with_training"] else
                     f"Held-out cases: {ev['n_held_out_cases']}. NOTE: {len(ev['overlap_with_training'])} of them "
                     "were also training cases.")
        overall = ev["metrics"].get("all") or {}
        if overall:
            lines += ["", "Inside the brain, all synthesised contrasts (mean ± std over volumes):", "",
                      "| method | SSIM | PSNR dB | MAE |", "|---|---|---|---|"]
            from medsci.tasks.synthesis.evaluation import METHOD_LEGEND, METHODS as order

            for method in sorted(overall, key=lambda m: (order.index(m) if m in order else len(order), m)):
                regions = overall[method]
                row = regions.get("brain")
                lines.append(f"| {method} | {_stat_cell(row, 'ssim', 4)} | {_stat_cell(row, 'psnr', 2)} | "
                             f"{_stat_cell(row, 'mae', 4)} |")
            lines += ["", METHOD_LEGEND]
        per_target = [(t, ev["metrics"][t]["model"].get("brain")) for t in sorted(
            (t for t in ev["metrics"] if t != "all" and "model" in ev["metrics"][t]),
            key=lambda t: (MODALITIES.index(t) if t in MODALITIES else len(MODALITIES), t))]
        if per_target:
            lines += ["", "This model, per synthesised contrast (brain):", "",
                      "| contrast | SSIM | PSNR dB |", "|---|---|---|"]
            lines += [f"| {t} | {_stat_cell(r, 'ssim', 4)} | {_stat_cell(r, 'psnr', 2)} |" for t, r in per_target]
        sampling = ev.get("sampling") or {}
        if sampling:
            lines += ["", f"Sampled with `{json.dumps(sampling.get('sampler'), sort_keys=True)}` on "
                          f"{sampling.get('device')}: {_fmt(sampling.get('network_evaluations_per_volume'))} network "
                          f"evaluations and {_fmt(sampling.get('seconds_per_volume'), 3)} s per volume."]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]]
    lines += ["", "## Files", "", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| `{f}` | {rec['bytes']} | `{rec['sha256']}` |" for f, rec in card["files"].items()]
    sw = card["software"]
    git = sw.get("exported_from_git")
    lines += ["", "## Software", "",
              f"- Trained with medsci {_fmt(sw.get('trained_with_medsci'))}; exported with medsci "
              f"{sw['exported_with_medsci']}"
              + (f" (git {git['commit'][:12]}{', uncommitted changes' if git.get('dirty') else ''})" if git else "")
              + ".",
              "- Load with `medsci.tasks.synthesis.pipeline.load_model(<this folder>)` or "
              "`medsci sample synthesis --checkpoint <this folder> --input <cases> --out <folder>`.",
              "", f"**{card['warning']}**", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- export
def _check_destination(run: Path, out: Path, force: bool) -> None:
    run_r, out_r = resolved(run), resolved(out)
    if out_r == run_r:
        raise InputError("OUT is the run folder itself; export to a new folder", out)
    if inside(out_r, run_r):
        raise InputError(f"OUT is inside the run folder {run}; export to a folder outside it", out)
    if inside(run_r, out_r):
        raise InputError(f"OUT contains the run folder {run}; replacing it would delete the run", out)
    if out.exists() or out.is_symlink():
        if not out.is_dir() or out.is_symlink():
            raise InputError("OUT exists and is not a folder", out)
        if any(out.iterdir()):
            if not force:
                raise InputError("OUT exists and is not empty (use --force to replace it)", out)
            if (out / "training_state.pt").exists():
                raise InputError("OUT holds a training run (training_state.pt); refusing to replace it", out)


def _copy_verified(src: Path, dest: Path) -> dict[str, Any]:
    from medsci.provenance import sha256_file

    before = sha256_file(src)
    shutil.copyfile(src, dest)
    after = sha256_file(dest)
    if after != before:
        raise InputError("file changed while it was copied (is training still writing this run?)", src)
    return {"sha256": after, "bytes": dest.stat().st_size}


def _load_test(run: Path, tmp: Path, weights: list[str]) -> None:
    """The exported folder must load as it is, with every weight file it ships (not only the EMA that sampling
    reads: a truncated or diverged model.safetensors would pass unnoticed); errors name the file in RUN."""
    from medsci.diffusion.checkpoint import EMA_FILE, load_weights
    from medsci.tasks.synthesis.pipeline import load_model

    try:
        loaded = load_model(tmp, device="cpu")
        for weight in weights:
            load_weights(tmp, loaded.model, use_ema=weight == EMA_FILE)
    except ConfigError as err:
        where = Path(err.path or tmp)
        raise ConfigError(err.reason, run / where.relative_to(tmp) if where.is_relative_to(tmp) else where) from None


def export_model(run: str | Path, out: str | Path, evaluation: str | Path | None = None, force: bool = False,
                 ema_only: bool = False, name: str | None = None) -> Path:
    """Write the shareable model folder ``out`` from the checkpoint folder ``run``; returns ``out``.

    Refuses ``out`` equal to, inside or containing ``run``, a ``run`` that is not a synthesis checkpoint,
    and a non-empty existing ``out`` unless ``force``. The folder is assembled beside ``out``, checked to
    load with :func:`~medsci.tasks.synthesis.pipeline.load_model`, then renamed into place.
    """
    from medsci.io.atomic import write_error, write_json_atomic, write_text_atomic

    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise InputError("run folder not found", run)
    _check_destination(run, out, force)
    card = model_card(run, evaluation, name)  # refuses a folder that is not a synthesis checkpoint
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
    except OSError as err:
        raise write_error(err, out) from None
    old: Path | None = None
    try:
        files = {"config.json": _copy_verified(run / "config.json", tmp / "config.json")}
        for weight in WEIGHT_FILES:
            if (run / weight).is_file() and not (ema_only and weight == "model.safetensors"
                                                  and (run / "ema.safetensors").is_file()):
                files[weight] = _copy_verified(run / weight, tmp / weight)
        if card["source_run_sha256"]["config.json"] != files["config.json"]["sha256"]:
            raise InputError("config.json changed during the export (is training still writing this run?)", run)
        eval_path = find_evaluation(run, evaluation)
        if card["evaluation"] is not None and eval_path is not None:
            files[EVALUATION_COPY] = _copy_verified(eval_path, tmp / EVALUATION_COPY)
        card["files"] = files
        _load_test(run, tmp, [f for f in files if f in WEIGHT_FILES])
        write_json_atomic(tmp / "model_card.json", card)
        write_text_atomic(tmp / "MODEL_CARD.md", render_model_card(card))
        mode = output_mode()  # mkdtemp/mkstemp create owner-only entries; a shared model should be readable
        for path in tmp.iterdir():
            os.chmod(path, mode)
        os.chmod(tmp, mode | ((mode & 0o444) >> 2))  # folders: x wherever r
        if out.exists():
            if any(out.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / "x")
            else:
                out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "x").exists() and not out.exists():
            os.replace(old / "x", out)  # put the replaced folder back
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def register_export(subparsers) -> None:
    from medsci.commands.args import add_command, plain_text

    p = add_command(subparsers, "export", run_export)
    p.add_argument("run", type=Path, metavar="RUN", help="checkpoint folder of a training run")
    p.add_argument("out", type=Path, metavar="OUT", help="folder to create (outside RUN)")
    p.add_argument("--evaluation", type=Path, help="evaluation summary.json (or its folder) to quote in the card")
    p.add_argument("--name", type=plain_text("model name"), help="model name in the card (default: the results name of the run)")
    p.add_argument("--ema-only", action="store_true", help="leave out the raw weights (model.safetensors)")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT")


def run_export(args) -> int:
    """shareable synthesis model folder (weights, config, MODEL_CARD.md) from a training run

    Copy a synthesis training run's config.json and weights (EMA, and raw unless --ema-only) into OUT without the
    optimizer state, and write MODEL_CARD.md + model_card.json: the contrasts it synthesises, its training cases and
    preprocessing, network size, schedule, default sampler, held-out evaluation (RUN/../evaluation/summary.json or
    --evaluation), intended use and limitations, and the SHA-256 of every file. OUT loads and samples exactly like
    RUN.
    """
    out = export_model(args.run, args.out, evaluation=args.evaluation, force=args.force, ema_only=args.ema_only,
                       name=args.name)
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    print(f"exported {card['network']['parameters']:,}-parameter model ({', '.join(card['synthesizes'])}) to {out}")
    return 0

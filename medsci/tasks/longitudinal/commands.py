"""CLI of the longitudinal generator: ``medsci demo-data|preprocess|train|sample|evaluate longitudinal`` and the
user command ``medsci forecast`` (one subject's volume at a requested time, on its native grid)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from medsci.commands.args import (add_command, add_common_args, add_demo_data, add_sampler_args, check_outputs,
                                  check_steps_fit, device_name, finite_float, sampler_overrides, setup_torch,
                                  spacing_mm, thread_count, write_demo)
from medsci.errors import InputError, MedsciError
from medsci.generator import add_evaluate, add_sample, add_train


def register_commands(subparsers) -> None:
    p = add_command(subparsers, "forecast", run_forecast)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--subject", required=True, type=Path)
    p.add_argument("--time", required=True, type=finite_float, nargs="+",
                   help="days; several = autoregressive sequence")
    p.add_argument("--output", required=True, type=Path,
                   help="output .nii.gz or .nii, kept as given (several times: _<time>d suffixes)")
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--threads", type=thread_count)
    p.add_argument("--allow-other-spacing", action="store_true",
                   help="forecast a subject scanned at a voxel size more than 10 %% away from the model's")
    p.add_argument("--allow-other-subject", action="store_true",
                   help="forecast although a session correlates less than 0.90 with the first after registration "
                        "(the same-subject check; its margin was measured on synthetic heads only)")
    add_sampler_args(p)

def std_description(t: float, uncertainty: str, n_samples: int) -> str:
    """What OUT_std.nii.gz holds (Generated.uncertainty), short enough for the 80-byte NIfTI description."""
    spread = f"spread of {n_samples} samples"
    what = {"variance": "variance head" + (f" + {spread}" if n_samples > 1 else ""), "samples": spread}
    return f"SYNTHETIC medsci forecast std t={t:g} d: {what.get(uncertainty, uncertainty)}"


def run_forecast(args) -> int:
    """a subject's volume at a requested time from its earlier sessions

    Reads SUBJECT (sessions.tsv + one volume per session, or BIDS sub-*/ses-*), registers every session to the
    first, predicts the volume at --time (days, on the sessions.tsv clock; between sessions: from the earlier ones;
    after the last: extrapolated) and writes it on the first session's native grid as OUT (.nii.gz or .nii, as
    given), with OUT_std when the model gives an uncertainty (the voxelwise std of its variance head, plus the
    spread over --n-samples when there are several; or the spread alone) and OUT.json, whose "uncertainty" says
    which. Implausible requests (time units, horizon, mirrored or foreign sessions) are refused first.
    """
    import torch

    from medsci.diffusion.checkpoint import read_checkpoint_config
    from medsci.diffusion.inference import sampler_with
    from medsci.io.atomic import write_json_atomic
    from medsci.io.paths import refuse_links_outside
    from medsci.io.volume import write_nifti
    from medsci.tasks.longitudinal.checks import check_headers, check_same_subject, check_times
    from medsci.tasks.longitudinal.config import LongitudinalPreprocessConfig
    from medsci.tasks.longitudinal.layout import read_subject
    from medsci.tasks.longitudinal.pipeline import forecast, load_model, predict
    from medsci.tasks.longitudinal.preprocess import preprocess_subject, to_native

    if args.threads:
        torch.set_num_threads(args.threads)
    suffix = next((x for x in (".nii.gz", ".nii") if args.output.name.endswith(x)), None)
    if suffix is None:
        raise InputError("output must end in .nii.gz or .nii", args.output)
    check_outputs(args.output, [args.subject, args.checkpoint], folder=False)
    subject = read_subject(args.subject)  # the table and file names only: cheap, so before the model loads
    refuse_links_outside([s.path for s in subject.sessions], args.subject)
    times = sorted(float(t) for t in args.time)
    if times[0] <= subject.sessions[0].time:
        raise InputError(f"requested time {times[0]:g} days is not after the first session "
                         f"({subject.sessions[0].time:g} days)", args.subject)
    check_steps_fit(args.checkpoint, args.steps, args)
    # the plausibility checks read headers and config.json only: a request that cannot be right is refused
    # before the weights load and the sessions are registered
    ck = read_checkpoint_config(args.checkpoint, "longitudinal")
    notes = check_times(times, subject.times, ck.get("training_times"), subject.table or args.subject)
    spacing = ck["preprocess"].get("spacing") if isinstance(ck.get("preprocess"), dict) else None
    check_headers([s.path for s in subject.sessions], spacing, args.allow_other_spacing)
    for note in notes:
        print(f"medsci forecast: warning: {note}", file=sys.stderr)
    loaded = load_model(args.checkpoint, args.device)
    prep = LongitudinalPreprocessConfig.from_dict(loaded.config["preprocess"], "preprocess")
    record = preprocess_subject(subject, prep, threads=args.threads or 1)
    for note in check_same_subject(record, subject, args.allow_other_subject):
        notes.append(note)  # forecast anyway, with the warning in OUT.json
        print(f"medsci forecast: warning: {note}", file=sys.stderr)
    sampler = sampler_with(loaded.sample, loaded.schedule, **sampler_overrides(args))
    last = float(record["times"][-1])
    if len(times) == 1 or times[0] <= last:
        preds = [predict(loaded, record["frames"], record["times"], t, sampler) for t in times]
    else:
        preds = forecast(loaded, record["frames"], record["times"], times, sampler)
    written = []
    for t, p in zip(times, preds):
        stem = args.output.name[: -len(suffix)]
        name = stem if len(times) == 1 else f"{stem}_{t:g}d"
        out = args.output.with_name(name + suffix)
        vol, affine = to_native(p.mean, record)
        write_nifti(out, vol, affine, description=f"SYNTHETIC medsci forecast t={t:g} d")
        std_file = None
        if p.std is not None:
            std, _ = to_native(p.std, record)
            std_file = out.with_name(name + "_std" + suffix)
            write_nifti(std_file, std, affine, description=std_description(t, p.uncertainty, sampler.n_samples))
        written.append({"time_days": t, "file": str(out), "network_evaluations": p.network_evaluations,
                        "uncertainty": p.uncertainty, "std_file": None if std_file is None else str(std_file),
                        "horizon_days": t - max([x for x in record["times"] if x < t] or [record["times"][0]]),
                        "extrapolated": t > last})
    write_json_atomic(args.output.with_name(Path(written[0]["file"]).name + ".json"),
                      {"subject": subject.id, "sessions": record["session_ids"], "times_days": record["times"].tolist(),
                       "registration_similarity": record["similarity"], "outputs": written, "synthetic": True,
                       "sampler": sampler.to_dict(), "warnings": notes})
    print(f"medsci forecast: wrote {', '.join(Path(w['file']).name for w in written)} for {subject.id}")
    return 0


def register_demo_data(tasks) -> None:
    p = add_demo_data(tasks, "longitudinal", run_demo_data, ("--subjects", "subjects", 12), [48, 56, 48])
    p.add_argument("--spacing", type=spacing_mm, nargs=3, default=[4.0, 4.0, 4.0])
    p.add_argument("--spacings", type=voxel_size, nargs="+", default=[], metavar="X,Y,Z",
                   help="acquisition voxel sizes (mm) the subjects cycle through, e.g. 4 3 2.5 or 4,4,4 3,3,2; each "
                        "on the field of view --shape x --spacing (default: every subject at --spacing)")


def voxel_size(text: str) -> tuple[float, float, float]:
    """``X,Y,Z`` or one number (isotropic), in mm: an argparse type."""
    import argparse

    parts = text.split(",")
    try:
        values = tuple(spacing_mm(p) for p in parts)
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a voxel size X,Y,Z or X (mm): {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"not a voxel size X,Y,Z or X (mm): {text!r}")
    return values


def run_demo_data(args) -> int:
    """synthetic subjects with timestamped, gappy brain MRI sequences

    sub-XXX/ses-YY.nii.gz + sessions.tsv; ventricles enlarge, cortex thins, a lesion grows or shrinks at per-subject
    rates; the same seed gives the same bytes.
    """
    from medsci.tasks.longitudinal.demo import write_demo_subjects

    return write_demo(args, ("sub-*",), "synthetic subjects", lambda: write_demo_subjects(
        args.out, n=args.subjects, seed=args.seed, shape=tuple(args.shape), spacing=tuple(args.spacing),
        spacings=tuple(args.spacings)))


def register_preprocess(tasks) -> None:
    p = tasks.add_parser("longitudinal", help="register a subject's sessions to its first, on the model grid")
    add_common_args(p)
    p.add_argument("--subjects", nargs="+", required=True, type=Path, help="subject folders")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(handler=run_preprocess)


def run_preprocess(args) -> int:
    from medsci.config import load_config
    from medsci.io.atomic import safe_join
    from medsci.tasks.longitudinal.layout import read_subject
    from medsci.tasks.longitudinal.preprocess import preprocess_subject, save_subject

    check_outputs(args.out, [*args.subjects, args.config])
    config = load_config(args.config)
    setup_torch(args, config)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for folder in args.subjects:
        try:
            subject = read_subject(folder)
            record = preprocess_subject(subject, config.longitudinal.preprocess, threads=args.threads or 1)
            save_subject(safe_join(args.out, f"{subject.id}.npz"), record)
            print(f"{subject.id}: {len(record['times'])} sessions, similarity "
                  f"{min(record['similarity']):.3f}..{max(record['similarity'][1:] or [1.0]):.3f}")
        except MedsciError as err:  # one bad subject must not stop the others
            failed += 1
            print(f"medsci preprocess: error: {err}", file=sys.stderr)
    if failed:
        print(f"medsci preprocess: {failed} of {len(args.subjects)} subjects failed", file=sys.stderr)
    return 1 if failed else 0


def refused_subjects(data: Path | None) -> list[dict]:
    """The subjects under ``data`` that are refused (find_subjects), each printed once as a warning: the
    workflow leaves them out, and the report must say so."""
    from medsci.tasks.longitudinal.layout import find_subjects

    refused = find_subjects(data)[1] if data is not None else []
    for folder, reason in refused:
        print(f"medsci evaluate longitudinal: warning: subject {folder.name} left out: {reason}", file=sys.stderr)
    return [{"folder": str(folder), "reason": reason} for folder, reason in refused]


STAGES = "medsci.tasks.longitudinal.pipeline:STAGES"
SUBJECT_FILES = "preprocessed subject files (.npz)"


def register_train(tasks) -> None:
    p = add_train(tasks, "longitudinal", STAGES, "train the longitudinal model", inputs=lambda a: a.subjects)
    p.add_argument("--subjects", nargs="+", required=True, type=Path, help=SUBJECT_FILES)


def register_sample(tasks) -> None:
    p = add_sample(tasks, "longitudinal", STAGES, "predict held-out subjects' last session (model and baselines)",
                   inputs=lambda a: a.subjects)
    p.add_argument("--subjects", nargs="+", required=True, type=Path, help=SUBJECT_FILES)


def register_evaluate(tasks) -> None:
    p = add_evaluate(tasks, "longitudinal", run_evaluate, "score held-out predictions beside the baselines")
    p.add_argument("--subjects", nargs="+", required=True, type=Path, help=SUBJECT_FILES)
    p.add_argument("--data", type=Path, help="the raw subjects' folder: the subjects refused there are named in "
                                             "the report (the workflow leaves them out)")


def run_evaluate(args) -> int:
    import numpy as np

    from medsci.config import load_config
    from medsci.tasks.longitudinal.evaluation import score_subject, uncertainty_subject
    from medsci.tasks.longitudinal.preprocess import load_subject
    from medsci.tasks.longitudinal.report import sequence_figure, write_evaluation

    check_outputs(args.out, [*args.subjects, args.predictions, args.config])
    config = load_config(args.config)
    cfg = config.longitudinal
    rows, uncertainty, forecasts, nfe, clamped = [], [], {}, {}, []
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    for path in sorted(args.subjects):
        record = load_subject(path)
        info = json.loads((args.predictions / path.with_suffix(".json").name).read_text(encoding="utf-8"))
        targets = []
        with np.load(args.predictions / path.name, allow_pickle=False) as z:
            for t in info["targets"]:
                key = f"s{t['session']}_"
                targets.append({**t, "truth": z[key + "truth"],
                                "std": z[key + "std"] if key + "std" in z.files else None,
                                "methods": {k[len(key + "method_"):]: z[k] for k in z.files
                                            if k.startswith(key + "method_")}})
        pred = {"targets": targets}
        clamped += [{"subject": record["subject"], "session": t["session"], **t["extrapolation"]} for t in targets
                    if t.get("extrapolation") and t["extrapolation"]["asked"] != t["extrapolation"]["used"]]
        rows += score_subject(record["subject"], pred, cfg.evaluation)
        uncertainty += uncertainty_subject(record["subject"], pred, cfg.evaluation)
        forecasts[record["subject"]] = info["forecast"]
        nfe[record["subject"]] = targets[-1]["network_evaluations"]
        sequence_figure(args.out / "figures" / f"{record['subject']}.png", record, targets[-1])
    write_evaluation(args.out, rows, forecasts, nfe, uncertainty, clamped, refused_subjects(args.data))
    print(f"wrote {args.out / 'summary.md'}")
    return 0

"""CLI of the synthesis generator: ``medsci train|sample|evaluate synthesis``."""

from __future__ import annotations

from pathlib import Path

from medsci.commands.args import (add_command, add_common_args, add_demo_data, add_sampler_args, check_outputs,
                                  check_steps_fit, count_of, sampler_overrides, setup_torch, spacing_mm, thread_count,
                                  write_demo)
from medsci.errors import MedsciError
from medsci.generator import add_train
from medsci.tasks.synthesis.preprocess_cli import register_preprocess, register_summarize  # noqa: F401  (verb hooks)


def register_commands(subparsers) -> None:
    """Top-level commands of this generator."""
    from medsci.tasks.synthesis.clinical_cli import register_clinical_commands
    from medsci.tasks.synthesis.segmentation import register_segmentation_commands
    from medsci.tasks.synthesis.submission import register_submission_commands

    register_summarize(subparsers)
    register_segmentation_commands(subparsers)
    register_clinical_commands(subparsers)
    register_submission_commands(subparsers)


# ---------------------------------------------------------------------------------------------- demo-data
def register_demo_data(tasks) -> None:
    p = add_demo_data(tasks, "synthesis", run_demo_data, ("--cases", "cases", 16), [68, 76, 60],
                      metavar=("X", "Y", "Z"), help="voxels per axis, NIfTI order (default 68 76 60; BraTS is 240 240 "
                                                    "155)")
    p.add_argument("--spacing", type=spacing_mm, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                   help="voxel size in mm (default: the BraTS 240x240x155 mm field of view divided by the shape)")


def run_demo_data(args) -> int:
    """BraTS-like brain MRI (t1n, t1c, t2w, t2f + tumour labels)

    Synthetic skull-stripped brain MRI with glioma labels, in BraTS layout and geometry. The same seed gives the
    same bytes.
    """
    from medsci.tasks.synthesis.demo import write_brats_dataset

    return write_demo(args, ("BraTS-DEMO-*", "dataset.json"), "synthetic BraTS-like cases", lambda: write_brats_dataset(
        args.out, cases=args.cases, seed=args.seed, shape=tuple(args.shape), spacing=args.spacing))


# ---------------------------------------------------------------------------------------------- train
def register_train(tasks) -> None:
    p = add_train(tasks, "synthesis", "medsci.tasks.synthesis.pipeline:STAGES",
                  "train the MRI modality-synthesis model", inputs=lambda a: [a.data])
    p.add_argument("--data", required=True, help="folder of preprocessed cases (<case>.npz + .json)")
    p.add_argument("--cases", nargs="+", required=True, help="training case ids")


# ---------------------------------------------------------------------------------------------- sample
def register_sample(tasks) -> None:
    p = add_command(tasks, "synthesis", run_sample)
    add_common_args(p, config_required=False)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output folder")
    mode = p.add_mutually_exclusive_group()  # new cases, or the evaluation of preprocessed ones
    mode.add_argument("--input", help="folder of cases (or one case folder) with one missing contrast each")
    mode.add_argument("--data", help="preprocessed folder (evaluation mode)")
    p.add_argument("--case", nargs="+", help="preprocessed case id(s) (evaluation mode; several share one model load)")
    p.add_argument("--targets", nargs="+", help="modalities to synthesise in evaluation mode")
    add_sampler_args(p)
    p.add_argument("--raw-weights", action="store_true", help="use raw instead of EMA weights")
    p.add_argument("--steps-curve", type=count_of("steps"), nargs="+",
                   help="evaluation mode: sample at each of these step counts (1000 = DDPM reference) and "
                        "write brain SSIM/PSNR per count to <out>/<case>-curve.json instead of volumes")


def run_sample(args) -> int:
    """synthesise missing MRI contrasts

    Either --input: a folder of cases each missing one contrast (BraTS layout) -> one flat folder of
    <case>-<missing>.nii.gz on the input grid and affine (BraSyn format); or --data/--case: a preprocessed case and
    the --targets to synthesise (held-out evaluation).
    """
    from medsci.config import load_config

    check_outputs(args.out, [args.input, args.data, args.checkpoint, args.config])
    if args.input:
        from medsci.tasks.synthesis.clinical import check_locations

        check_locations(Path(args.input), Path(args.out))
    elif not (args.data and args.case):
        raise MedsciError("give either --input, or --data and --case")
    config = load_config(args.config) if args.config else None
    device = setup_torch(args, config)
    use_ema = not args.raw_weights and (config is None or config.synthesis.sample.use_ema)
    check_steps_fit(args.checkpoint, args.steps, args)
    if args.steps_curve:
        check_steps_fit(args.checkpoint, args.steps_curve, flag="--steps-curve")
    from medsci.tasks.synthesis.pipeline import load_model, sampler_for  # torch and MONAI: after the checks

    loaded = load_model(args.checkpoint, device, use_ema=use_ema)
    sampler = sampler_for(config, loaded, {**sampler_overrides(args),
                                           **({"use_ema": False} if args.raw_weights else {})})
    if args.input:
        return _sample_new_cases(args, loaded, sampler)
    each = _steps_curve_case if args.steps_curve else _sample_prepared_case
    for case_id in args.case:
        each(args, case_id, loaded, sampler)
    return 0


def _sample_prepared_case(args, case_id, loaded, sampler) -> None:
    from medsci.io.atomic import atomic_path, refuse_non_finite, safe_join, write_json_atomic
    from medsci.mri.cases import MODALITIES
    from medsci.mri.preprocessing.stage import save_native
    from medsci.tasks.synthesis.data import load_case
    from medsci.tasks.synthesis.pipeline import synthesize

    import numpy as np

    case = load_case(args.data, case_id)
    out = safe_join(args.out, case.case_id)
    targets = args.targets or list(MODALITIES)
    timings = {}
    for target in targets:
        available = tuple(m for m in case.available if m != target)
        result = synthesize(loaded, case, target, sampler, available)
        stem = f"{case.case_id}-{target}"
        refuse_non_finite(result.mean, out / f"{stem}.npz")
        refuse_non_finite(result.std if result.std is not None else 0.0, out / f"{stem}.npz")
        with atomic_path(out / f"{stem}.npz") as tmp:
            with open(tmp, "wb") as fh:
                # The method is kept with the map: the evaluation table says which one it scored.
                np.savez(fh, mean=result.mean, **({"std": result.std, "uncertainty": np.array(result.uncertainty)}
                                                  if result.std is not None else {}))
        save_native(result.mean, case.sidecar, out / f"{stem}.nii.gz", modality=None)
        if result.std is not None:
            save_native(result.std, case.sidecar, out / f"{stem}-std.nii.gz", modality=None)
        timings[target] = {"seconds": round(result.seconds, 3), "network_evaluations": result.network_evaluations,
                           "uncertainty": result.uncertainty}
        print(f"{stem}: {result.network_evaluations} network evaluations, {result.seconds:.1f} s")
    write_json_atomic(out / f"{case.case_id}-timing.json",
                      {"sampler": sampler.to_dict(), "device": str(loaded.device), "targets": timings})


def _steps_curve_case(args, case_id, loaded, sampler) -> None:
    from dataclasses import replace

    from medsci.evaluation.metrics import image_metrics
    from medsci.io.atomic import safe_join, write_json_atomic
    from medsci.mri.cases import MODALITIES
    from medsci.tasks.synthesis.data import load_case
    from medsci.tasks.synthesis.pipeline import synthesize

    case = load_case(args.data, case_id)
    rows = []
    T = loaded.schedule.num_train_timesteps
    for target in args.targets or ["t2f"]:
        truth = case.image[MODALITIES.index(target)]
        # One sample per step count, plus the configured default sampler (which may average several).
        # All T timesteps is the 1000-step DDPM reference for a ddpm-trained model (Euler at T steps for rflow).
        few = loaded.schedule.samplers[0]
        full = "ddpm" if loaded.schedule.objective == "ddpm" else few
        configs = [replace(sampler, sampler=full if s >= T else few, steps=min(s, T), n_samples=1)
                   for s in args.steps_curve] + [replace(sampler, sampler=few if sampler.sampler == "auto"
                                                         else sampler.sampler)]
        for i, cfg in enumerate(configs):
            kind = cfg.sampler
            if i == len(configs) - 1:
                kind += (f" x{cfg.n_samples}" if cfg.n_samples > 1 else "") + " (default)"
            result = synthesize(loaded, case, target, cfg)
            m = image_metrics(result.mean, truth, data_range=1.0, masks={"brain": case.mask})
            rows.append({"case": case.case_id, "target": target, "sampler": kind, "steps": cfg.steps,
                         "network_evaluations": result.network_evaluations, "seconds": round(result.seconds, 3),
                         "brain_ssim": m["brain_ssim"], "brain_psnr": m["brain_psnr"], "ssim": m["ssim"]})
            print(f"{case.case_id} {target} {kind} {cfg.steps:5d} steps: brain SSIM {m['brain_ssim']:.4f} "
                  f"PSNR {m['brain_psnr']:.2f} dB ({result.seconds:.1f} s)")
    write_json_atomic(safe_join(args.out, f"{case.case_id}-curve.json"), rows)


def _sample_new_cases(args, loaded, sampler) -> int:
    """A flat folder of <case>-<missing>.nii.gz (BraSyn layout); `medsci submit` adds a manifest."""
    from medsci.tasks.synthesis.clinical import BatchSettings, run_batch
    from medsci.tasks.synthesis.clinical_cli import _exit_code, _printer

    settings = BatchSettings(Path(args.out), layout="flat", dicom=False, qc=False, uncertainty=False)
    records = run_batch(loaded, sampler, Path(args.checkpoint), Path(args.input), settings,
                        progress=not args.no_progress, on_record=_printer("sample synthesis"))
    return _exit_code(records)


# ---------------------------------------------------------------------------------------------- evaluate
def register_evaluate(tasks) -> None:
    p = tasks.add_parser("synthesis", help="score held-out syntheses beside the baselines")
    p.add_argument("--data", required=True, help="preprocessed folder")
    p.add_argument("--train-cases", nargs="+", required=True, help="cases the regression baseline is fitted on")
    p.add_argument("--cases", nargs="+", required=True, help="held-out cases to score")
    p.add_argument("--samples", required=True, help="folder written by `medsci sample synthesis --data`")
    p.add_argument("--targets", nargs="+", help="default: all four")
    p.add_argument("--curves", nargs="*", default=[], help="<case>-curve.json files of --steps-curve runs")
    p.add_argument("--checkpoint", help="model folder: its first guess (prior) is scored too, as an ablation")
    p.add_argument("--segmenter", help="segmenter folder (medsci train-segmenter): adds the downstream "
                                       "segmentation (BraSyn) Dice table")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> int:
    from medsci.tasks.synthesis.evaluation import evaluate_heldout

    check_outputs(args.out, [args.data, args.samples, args.checkpoint, args.segmenter, *args.curves])
    setup_torch(args)
    table = evaluate_heldout(args.data, args.train_cases, args.cases, args.samples, args.out,
                             targets=args.targets, curves=args.curves, checkpoint=args.checkpoint,
                             segmenter=args.segmenter)
    print(table)
    return 0

"""CLI of the seismic interpolation generator: ``medsci train|sample|evaluate seismic``.

``medsci interpolate`` (interpolate.py beside this file) is the single-survey path for users; these commands
serve the workflow's held-out evaluation.
"""

from __future__ import annotations

from pathlib import Path

from medsci.commands.args import (add_command, add_demo_data, bounded_int, check_outputs, check_steps_fit, fraction,
                                  non_negative_int, positive_int, setup_torch, write_demo)

from medsci.errors import MedsciError
from medsci.generator import add_train
from medsci.tasks.seismic.interpolate import limit_blas_threads

# Method names in the tables; numpy and torch are imported inside the handlers (fast `medsci --help`).
GUIDED, UNGUIDED = "model", "model_unguided"


def register_commands(subparsers) -> None:
    """Top-level commands of this generator: ``medsci interpolate`` (one survey, for users)."""
    from medsci.tasks.seismic.interpolate import register_interpolate

    register_interpolate(subparsers)
    p = add_command(subparsers, "split-survey", run_split_survey)
    p.add_argument("survey", help="SEG-Y file (3D post-stack, regular geometry)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", help="medsci config: split settings from seismic.data, patch checked from seismic.model")
    p.add_argument("--heldout", type=fraction, help="fraction of lines held out (default 0.3)")
    p.add_argument("--axis", choices=["inline", "crossline"], help="axis to cut along (default crossline)")
    p.add_argument("--gap", type=bounded_int(0, 10_000, "a line count"), help="lines left out between the blocks (default 2)")


def run_split_survey(args) -> int:
    """cut one SEG-Y survey into training and held-out blocks

    Writes OUT/train.segy, OUT/heldout.segy (the survey's line numbers) and OUT/split.json. The held-out block is
    the last FRACTION of the lines along --axis, --gap lines away from the training block.
    """
    from medsci.tasks.seismic.config import SeismicConfig
    from medsci.tasks.seismic.data import load_cube
    from medsci.tasks.seismic.survey import split_survey

    check_outputs(args.out, [args.survey, args.config])
    if args.config:
        from medsci.config import load_config

        cfg = load_config(args.config).seismic
    else:
        cfg = SeismicConfig()
    data = cfg.data
    cube = load_cube(args.survey, data)
    record = split_survey(cube, args.out, args.heldout if args.heldout is not None else data.survey_heldout,
                          args.axis or data.survey_axis, args.gap if args.gap is not None else data.survey_gap,
                          patch=tuple(cfg.model.patch))
    for name, part in record["parts"].items():
        print(f"{name}: {part['shape']} ({args.axis or data.survey_axis}s {part[f'{args.axis or data.survey_axis}_range']}), "
              f"{part['dead_traces']} dead traces")
    return 0


# ---------------------------------------------------------------------------------------------- demo-data
def register_demo_data(tasks) -> None:
    add_demo_data(tasks, "seismic", run_demo_data, ("--cubes", "cubes", 8), [32, 32, 128], metavar=("IL", "XL", "T"),
                  min_side=2,  # a cube needs two samples per axis (a gradient, a fault)
                  help="inlines, crosslines, time samples (default 32 32 128)")


def run_demo_data(args) -> int:
    """synthetic post-stack seismic cubes (SEG-Y)

    Synthetic seismic cubes for the trace-interpolation task; the same seed gives the same bytes.
    """
    from medsci.tasks.seismic.demo import write_seismic_dataset

    return write_demo(args, ("cube_*.segy", "dataset.json"), "synthetic seismic cubes", lambda: write_seismic_dataset(
        args.out, cubes=args.cubes, seed=args.seed, shape=tuple(args.shape)))




def mask_file(folder: str | Path, cube_id: str, pattern: str) -> Path:
    return Path(folder) / f"{cube_id}-{pattern}.npy"


def sample_file(folder: str | Path, cube_id: str, pattern: str, method: str, std: bool = False) -> Path:
    """A held-out reconstruction, or (``std``) its uncertainty map beside it."""
    return Path(folder) / cube_id / f"{cube_id}-{pattern}-{method}{'_std' if std else ''}.npy"


def _save_npy(path: Path, array) -> None:
    from medsci.io.atomic import write_npy_atomic

    write_npy_atomic(path, array)


# ---------------------------------------------------------------------------------------------- train
def register_train(tasks) -> None:
    p = add_train(tasks, "seismic", "medsci.tasks.seismic.pipeline:STAGES",
                  "train the seismic trace-interpolation model", inputs=_train_inputs)
    p.add_argument("--data", required=True, help="folder of complete cubes (.segy/.sgy/.npy)")
    p.add_argument("--cubes", nargs="+", required=True, help="training cube ids (file stems)")


def _train_inputs(args) -> list:
    limit_blas_threads()  # first: before numpy is imported
    return [args.data]


# ---------------------------------------------------------------------------------------------- sample
def register_sample(tasks) -> None:
    p = add_command(tasks, "seismic", run_sample, common=True)
    p.add_argument("--data", required=True, help="folder of complete cubes")
    p.add_argument("--cubes", nargs="+", required=True, help="cube ids")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--make-masks", action="store_true", help="only write the held-out masks")
    p.add_argument("--masks", help="folder of masks written by --make-masks")
    p.add_argument("--checkpoint", help="trained model folder")
    p.add_argument("--benchmark", action="store_true", help="network evaluations / time / SNR benchmark")
    p.add_argument("--steps", type=positive_int, help="DDIM steps (default: config)")
    p.add_argument("--seed", type=non_negative_int)


def run_sample(args) -> int:
    """held-out masks and reconstructions of seismic cubes

    Three modes for the held-out evaluation: --make-masks writes <cube>-<pattern>.npy for every evaluation pattern
    of the config; with --checkpoint, each of --cubes is reconstructed for every pattern, with and without input
    guidance (and <cube>-<pattern>-<method>_std.npy, the voxelwise standard deviation, when the model gives an
    uncertainty map); --benchmark instead runs the config's [steps, jumps] list on the `random` pattern and writes
    <cube>-benchmark.json. For a single survey use `medsci interpolate`.
    """
    limit_blas_threads()
    from medsci.config import load_config

    check_outputs(args.out, [args.data, args.masks, args.checkpoint, args.config])
    config = load_config(args.config)
    cfg = config.seismic
    from medsci.tasks.seismic.data import cube_paths

    paths = cube_paths(args.data, args.cubes)
    if args.make_masks:
        return _make_masks(cfg, args.cubes, paths, args.out)
    if not (args.checkpoint and args.masks):
        raise MedsciError("give --make-masks, or --checkpoint and --masks")
    from medsci.tasks.seismic.pipeline import load_model, sampler_for

    device = setup_torch(args, config)
    check_steps_fit(args.checkpoint, args.steps, args)
    loaded = load_model(args.checkpoint, device, use_ema=cfg.sample.use_ema)
    sampler = sampler_for(loaded, cfg.sample, args.steps, args.seed)
    for cube_id, path in zip(args.cubes, paths):
        if args.benchmark:
            _benchmark(cfg, loaded, sampler, cube_id, path, args.masks, args.out)
        else:
            _reconstruct_cube(cfg, loaded, sampler, cube_id, path, args.masks, args.out)
    return 0


def _make_masks(cfg, cube_ids, paths, out) -> int:
    from medsci.tasks.seismic.data import evaluation_mask, load_cube

    for cube_id, path in zip(cube_ids, paths):
        shape = load_cube(path, cfg.data).shape
        for pattern, params in cfg.evaluation.patterns.items():
            mask = evaluation_mask(cube_id, shape, pattern, params, cfg.evaluation.mask_seed)
            _save_npy(mask_file(out, cube_id, pattern), mask)
            print(f"{cube_id} {pattern}: {int((~mask).sum())} of {mask.size} traces missing")
    return 0


def _timing(rec) -> dict:
    return {"seconds": round(rec.seconds, 3), "network_evaluations": rec.network_evaluations,
            "windows": rec.windows, "window_evaluations": rec.window_evaluations,
            "empty_windows": rec.empty_windows, "scale": rec.scale, "input_guidance": rec.input_guidance,
            "resample_jumps": rec.resample_jumps, "uncertainty": rec.uncertainty}


def _reconstruct_cube(cfg, loaded, sampler, cube_id, path, masks, out) -> None:
    from dataclasses import replace

    from medsci.tasks.seismic.evaluation import observed_cube

    from medsci.io.atomic import safe_join, write_json_atomic
    from medsci.io.segy import SEGY_SUFFIXES, write_segy_like
    from medsci.tasks.seismic.pipeline import reconstruct

    modes = {GUIDED: cfg.inference}
    if cfg.evaluation.unguided:
        modes[UNGUIDED] = replace(cfg.inference, input_guidance=False, resample_jumps=0)
    timings: dict = {}
    for pattern in cfg.evaluation.patterns:
        _, observed, mask = observed_cube(cfg, cube_id, path, masks, pattern)
        for method, inference in modes.items():
            rec = reconstruct(loaded, observed, mask, sampler, inference, source=path)
            _save_npy(safe_join(out, str(sample_file("", cube_id, pattern, method))), rec.data)
            if rec.std is not None:  # the timing's "uncertainty" says whether it belongs to this run
                _save_npy(safe_join(out, str(sample_file("", cube_id, pattern, method, std=True))), rec.std)
            if method == GUIDED and Path(path).suffix.lower() in SEGY_SUFFIXES:
                # What a user gets from `medsci interpolate`: the input's headers, reconstructed samples.
                write_segy_like(path, safe_join(out, f"{cube_id}/{cube_id}-{pattern}-{method}.segy"), rec.data,
                                iline_byte=cfg.data.iline_byte, xline_byte=cfg.data.xline_byte)
            timings.setdefault(pattern, {})[method] = _timing(rec)
            print(f"{cube_id} {pattern} {method}: {rec.network_evaluations} network evaluations x "
                  f"{rec.windows} windows, {rec.seconds:.1f} s")
    write_json_atomic(safe_join(out, f"{cube_id}/{cube_id}-timing.json"),
                      {"cube": cube_id, "device": str(loaded.device), "sampler": sampler.to_dict(),
                       "inference": cfg.inference.to_dict(), "reconstructions": timings})


def _benchmark(cfg, loaded, sampler, cube_id, path, masks, out) -> None:
    from dataclasses import replace

    from medsci.tasks.seismic.evaluation import observed_cube

    from medsci.evaluation.metrics import snr_db
    from medsci.io.atomic import safe_join, write_json_atomic
    from medsci.tasks.seismic.pipeline import reconstruct, sampler_for

    import numpy as np

    pattern = "random" if "random" in cfg.evaluation.patterns else next(iter(cfg.evaluation.patterns))
    truth, observed, mask = observed_cube(cfg, cube_id, path, masks, pattern)
    missing = np.broadcast_to(~mask[..., None], truth.shape)
    rows = []
    for steps, jumps, n_samples in cfg.evaluation.benchmark:
        few = loaded.schedule.samplers[0]  # ddim for ddpm-trained models, euler for rflow
        run_sampler = sampler_for(loaded, replace(sampler, sampler=few), steps, n_samples=n_samples)
        inference = replace(cfg.inference, input_guidance=True, resample_jumps=jumps)
        rec = reconstruct(loaded, observed, mask, run_sampler, inference, source=path)
        row = {"cube": cube_id, "pattern": pattern, "sampler": few, "steps": steps, "resample_jumps": jumps,
               "n_samples": n_samples,
               "snr_missing": snr_db(rec.data, truth, missing), **_timing(rec), "device": str(loaded.device)}
        rows.append(row)
        print(f"{cube_id} {steps} steps x {jumps + 1} x {n_samples} samples: {rec.network_evaluations} network "
              "evaluations, "
              f"SNR missing {row['snr_missing']:.2f} dB, {rec.seconds:.1f} s")
    write_json_atomic(safe_join(out, f"{cube_id}-benchmark.json"), rows)


# ---------------------------------------------------------------------------------------------- evaluate
def register_evaluate(tasks) -> None:
    p = tasks.add_parser("seismic", help="score held-out reconstructions beside linear interpolation and POCS")
    p.add_argument("--config", required=True, help="medsci config YAML")
    p.add_argument("--data", required=True, help="folder of complete cubes (the truth)")
    p.add_argument("--cubes", nargs="+", required=True, help="held-out cube ids")
    p.add_argument("--train-cubes", nargs="*", default=[], help="training cube ids (refused if they overlap)")
    p.add_argument("--masks", required=True, help="folder written by `medsci sample seismic --make-masks`")
    p.add_argument("--samples", required=True, help="folder written by `medsci sample seismic --checkpoint`")
    p.add_argument("--benchmark", nargs="*", default=[], help="<cube>-benchmark.json files")
    p.add_argument("--out", required=True)
    p.set_defaults(handler=run_evaluate)


def run_evaluate(args) -> int:
    limit_blas_threads()
    from medsci.config import load_config
    from medsci.tasks.seismic.evaluation import evaluate_heldout

    check_outputs(args.out, [args.data, args.masks, args.samples, args.config, *args.benchmark])
    cfg = load_config(args.config).seismic
    text = evaluate_heldout(cfg, args.data, args.cubes, args.train_cubes, args.masks, args.samples, args.out,
                            benchmark=args.benchmark)
    print(text)
    return 0

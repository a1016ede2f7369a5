"""``medsci interpolate``: reconstruct the missing traces of one 3D post-stack survey.

    medsci interpolate --checkpoint MODEL --input in.segy --output out.segy [--mask mask.npy]

Without ``--mask`` the missing traces are the dead ones (every sample zero) of the input. SEG-Y output
copies every header of the input byte for byte and replaces only the samples; ``.npy`` output is the
(inline, crossline, time) float32 cube. Observed traces are returned bit-exact. When the model gives an
uncertainty map (a variance head, or ``--n-samples`` >= 2), its voxelwise standard deviation in the cube's
amplitude units is written beside the output as ``<output stem>_std.npy`` (float32, the cube's shape, 0 on the
observed traces). Everything is checked before the (slow) reconstruction starts, and the outputs are written
atomically: on any error no file is left.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def limit_blas_threads() -> None:
    """One OpenBLAS thread unless the user chose otherwise; call before numpy/scipy are imported.

    scipy's Delaunay triangulation (linear-interpolation baseline and first guess) calls OpenBLAS, whose
    worker threads busy-wait: on a 2-core machine shared with another job one small call took ~1-4 s
    instead of ~3 ms. torch (MKL, its own thread pool) is not affected.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def register_interpolate(subparsers) -> None:
    from medsci.commands.args import (add_command, bounded_float, bounded_int, device_name, non_negative_float,
                                      non_negative_int, positive_int, thread_count)

    header_byte = bounded_int(1, 237, "a trace-header byte")  # a 4-byte word inside the 240-byte header
    p = add_command(subparsers, "interpolate", run)
    p.add_argument("--checkpoint", required=True, help="model folder from `medsci train seismic`")
    p.add_argument("--input", required=True, help="survey: .segy/.sgy (regular inline/crossline grid) or .npy")
    p.add_argument("--output", required=True, help=".segy/.sgy (headers from --input) or .npy; the uncertainty "
                   "map, when the model gives one, goes beside it as <output stem>_std.npy")
    p.add_argument("--mask", help=".npy (n_il, n_xl) bool or 0/1, 1 = observed; default: dead traces of the input")
    p.add_argument("--dead-tolerance", type=non_negative_float, default=0.0,
                   help="without --mask: a trace whose every |sample| <= this is missing (default 0)")
    p.add_argument("--config", help="medsci config; its seismic sample/inference settings replace the checkpoint's")
    p.add_argument("--steps", type=positive_int, help="DDIM steps (default: the checkpoint's sampler; demo preset 5)")
    p.add_argument("--jumps", type=bounded_int(0, 100, "a jump count"), help="resampling jumps per step (default: the checkpoint's, 0)")
    p.add_argument("--n-samples", type=positive_int, help="average this many samples per window (higher SNR, n x time)")
    p.add_argument("--no-guidance", action="store_true", help="condition only, no input guidance")
    p.add_argument("--overlap", type=bounded_float(0.0, 1.0, "an overlap", high_open=True), help="sliding-window overlap in [0, 1)")
    p.add_argument("--batch-size", type=positive_int, help="windows per sampler call")
    p.add_argument("--seed", type=non_negative_int, help="sampling seed (same seed, same bytes)")
    p.add_argument("--raw-weights", action="store_true", help="use raw instead of EMA weights")
    p.add_argument("--iline-byte", type=header_byte, default=189, help="SEG-Y inline header byte (default 189)")
    p.add_argument("--xline-byte", type=header_byte, default=193, help="SEG-Y crossline header byte (default 193)")
    p.add_argument("--report", help="also write a JSON report (mask counts, scale, timing) here")
    p.add_argument("--device", type=device_name, default=None, help="auto | cpu | cuda")
    p.add_argument("--threads", type=thread_count, help="CPU threads for torch")
    p.add_argument("--progress", action="store_true", help="progress bar over the sliding windows")


def _check_output(args, inp: Path, out: Path) -> None:
    from medsci.commands.args import check_outputs
    from medsci.errors import InputError
    from medsci.io.segy import SEGY_SUFFIXES

    suffixes = (*SEGY_SUFFIXES, ".npy")
    if out.suffix.lower() not in suffixes:
        raise InputError(f"unsupported output suffix {out.suffix!r}; use .segy, .sgy or .npy", out)
    if out.suffix.lower() in SEGY_SUFFIXES and inp.suffix.lower() not in SEGY_SUFFIXES:
        raise InputError("SEG-Y output needs a SEG-Y input to copy the headers from; write .npy instead", out)
    inputs = (inp, args.mask, args.checkpoint, args.config)
    check_outputs([out, std_file(out), args.report], inputs, folder=False)


def std_file(out: Path) -> Path:
    """Where the uncertainty map of the reconstruction ``out`` goes: ``<output stem>_std.npy`` beside it."""
    return out.with_name(f"{out.stem}_std.npy")


def run(args) -> int:
    """fill missing traces of a seismic survey with a trained model

    Reconstruct the missing traces of a 3D post-stack cube (SEG-Y or .npy) with a trained seismic model: patch-wise
    diffusion sampling with input guidance and Gaussian blending. When the model gives an uncertainty map (a
    variance head, or --n-samples of 2 or more), its voxelwise standard deviation (amplitude units, float32, the
    cube's shape, 0 on the observed traces) is written beside the output as <output stem>_std.npy.
    """
    limit_blas_threads()  # before numpy/scipy load OpenBLAS

    import numpy as np
    import torch

    from medsci.commands.args import check_steps_fit
    from medsci.errors import ConfigError
    from medsci.io.atomic import write_json_atomic
    from medsci.io.segy import SEGY_SUFFIXES, read_cube, write_cube, write_segy_like
    from medsci.tasks.seismic.data import load_mask
    from medsci.tasks.seismic.masks import check_mask, dead_traces
    from medsci.tasks.seismic.pipeline import load_model, reconstruct, sampler_for

    if args.threads:
        torch.set_num_threads(args.threads)
    inp, out = Path(args.input), Path(args.output)
    _check_output(args, inp, out)
    segy_kw = {"iline_byte": args.iline_byte, "xline_byte": args.xline_byte} \
        if inp.suffix.lower() in SEGY_SUFFIXES else {}
    cube = read_cube(inp, **segy_kw)
    if args.mask:
        mask = load_mask(args.mask, cube.shape)
    else:
        mask = check_mask(dead_traces(cube.data, args.dead_tolerance), cube.shape, inp)

    config = None
    if args.config:
        from medsci.config import load_config

        config = load_config(args.config)
    device = args.device or (config.device if config is not None else "auto")
    check_steps_fit(args.checkpoint, args.steps, args)
    loaded = load_model(args.checkpoint, device, use_ema=not args.raw_weights)
    base_sampler = config.seismic.sample if config is not None else loaded.sample
    sampler = sampler_for(loaded, base_sampler, args.steps, args.seed, n_samples=args.n_samples)
    inference = config.seismic.inference if config is not None else loaded.inference
    overrides = {}
    if args.jumps is not None:
        overrides["resample_jumps"] = args.jumps
    if args.no_guidance:
        overrides["input_guidance"] = False
    if args.overlap is not None:
        overrides["overlap"] = args.overlap
    if args.batch_size is not None:
        overrides["sw_batch_size"] = args.batch_size
    try:
        inference = type(inference).from_dict({**inference.to_dict(), **overrides}, "inference")
    except ConfigError as err:
        raise ConfigError(err.reason, "command line") from None

    n_missing = int((~mask).sum())
    report = {"input": str(inp), "output": str(out), "shape": list(cube.shape), "traces": int(mask.size),
              "missing_traces": n_missing, "mask": str(args.mask) if args.mask else "dead traces of the input",
              "checkpoint": str(args.checkpoint)}
    std = None
    if n_missing == 0:
        data = cube.data
        print(f"{inp}: no missing traces; writing the input samples unchanged", file=sys.stderr)
    else:
        rec = reconstruct(loaded, cube.data, mask, sampler, inference, source=inp, progress=args.progress)
        data, std = rec.data, rec.std
        report.update({"uncertainty": rec.uncertainty,
                       "std_output": str(std_file(out)) if std is not None else None,
                       "scale": rec.scale, "network_evaluations_per_window": rec.network_evaluations,
                       "windows": rec.windows, "empty_windows": rec.empty_windows, "seconds": round(rec.seconds, 3),
                       "input_guidance": rec.input_guidance, "resample_jumps": rec.resample_jumps,
                       "sampler": sampler.to_dict(), "device": str(loaded.device), "warnings": rec.warnings})
        for line in rec.warnings:
            print(f"{inp}: warning: {line}", file=sys.stderr)
        if rec.empty_windows:
            print(f"{inp}: warning: {rec.empty_windows} window(s) had no observed trace and were filled "
                  "without data support", file=sys.stderr)
    if std is not None:
        write_cube(std_file(out), std)  # .npy: atomic
    try:
        if out.suffix.lower() in SEGY_SUFFIXES:
            write_segy_like(inp, out, data, iline_byte=args.iline_byte, xline_byte=args.xline_byte)
        else:
            write_cube(out, np.asarray(data, dtype=np.float32))
    except BaseException:
        if std is not None:  # no uncertainty map without its reconstruction
            std_file(out).unlink(missing_ok=True)
        raise
    if args.report:
        write_json_atomic(args.report, report)
    print(f"{out}: {n_missing} of {mask.size} traces reconstructed"
          + (f" ({report['network_evaluations_per_window']} network evaluations x {report['windows']} windows, "
             f"{report['seconds']:.1f} s)" if n_missing else "")
          + (f"; uncertainty ({report['uncertainty']}) in {std_file(out)}" if std is not None else ""))
    return 0

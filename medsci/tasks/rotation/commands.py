"""CLI of the radiograph-rotation generator: ``medsci demo-data|preprocess|train|sample|evaluate rotation``, and
the user commands ``medsci rotate`` (one radiograph, a rotation) and ``medsci drr`` (render a CT)."""

from __future__ import annotations

import sys
from pathlib import Path

from medsci.commands.args import (add_command, add_demo_data, add_sampler_args, bounded_float, bounded_int,
                                  check_outputs, check_steps_fit, device_name, non_negative_int, sampler_overrides,
                                  setup_torch, spacing_mm, thread_count, write_demo)
from medsci.errors import InputError
from medsci.generator import add_evaluate, add_sample, add_train


# Beyond the trained range `rotate` warns up to WARN_LIMIT x the range and refuses further out unless
# --allow-extrapolation, which still stops short of HARD_LIMIT x: the angle features (sin, cos of
# angle / max * 90 deg) repeat at 2 x the range (+30 and -30 deg look alike to a model trained on +-15).
WARN_LIMIT = 1.5
HARD_LIMIT = 1.9
# An image whose longer side spans less than MIN_SPAN of the model's field of view (after resampling by its pixel
# spacing) is refused: a handful of model pixels, or a wrong spacing. Below WARN_SPAN (a hand on a chest model,
# ~200 of 448 mm) it is rotated with a warning.
MIN_SPAN = 0.25
WARN_SPAN = 0.6
# The models are trained on frontal chest DRRs (the PA geometry of drr.py): a DICOM that says it is another view
# or body part is rotated with a warning, or refused with --strict.
FRONTAL_VIEWS = ("PA", "AP")
CHEST_PARTS = ("CHEST", "THORAX", "LUNG")


def view_warnings(radiograph) -> list[str]:
    """What the DICOM's ViewPosition / BodyPartExamined say that the model was not trained on."""
    ds = radiograph.meta.get("dataset")
    if ds is None:
        return []
    out = []
    view = str(ds.get("ViewPosition") or "").strip().upper()
    if view and view not in FRONTAL_VIEWS:
        out.append(f"ViewPosition {view!r}: the model is trained on frontal (PA) chest views, not a lateral or "
                   "oblique one")
    part = str(ds.get("BodyPartExamined") or "").strip().upper()
    if part and part not in CHEST_PARTS:
        out.append(f"BodyPartExamined {part!r}: the model is trained on chest views")
    return out


def parse_angles(text) -> tuple[float, float, float]:
    """``"RX,RY,RZ"`` or three numbers (``["-5", "0", "0"]``: argparse takes a leading minus sign there)."""
    import math

    tokens = [text] if isinstance(text, str) else list(text)
    joined = ",".join(str(t) for t in tokens)
    try:
        values = tuple(float(v) for v in joined.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and abs(v) <= 180 for v in values):
        raise InputError(f"--angles must be RX,RY,RZ in degrees within [-180, 180] (a negative first angle: "
                         f"--angles=-5,0,0 or --angles -5 0 0), got {joined!r}")
    return values


def register_commands(subparsers) -> None:
    p = add_command(subparsers, "rotate", run_rotate)
    p.add_argument("--checkpoint", required=True, help="trained rotation model folder")
    p.add_argument("--input", required=True, type=Path, help="radiograph: .png, .dcm, .nii/.nii.gz")
    p.add_argument("--angles", required=True, nargs="+",
                   help="RX,RY,RZ in degrees, e.g. 0,0,10 (negative first angle: --angles=-5,0,0 or --angles -5 0 0)")
    p.add_argument("--output", required=True, type=Path, help="output file (same format as the input)")
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--threads", type=thread_count)
    p.add_argument("--detail", choices=["shift", "warp"], default="shift",
                   help="how the input's detail finer than the model's pixels reaches the output: 'shift' moves the "
                        "warped input as the model moved the anatomy (default), 'warp' keeps the projective warp")
    p.add_argument("--allow-extrapolation", action="store_true",
                   help="rotate up to 1.9x the trained angle range (otherwise refused beyond 1.5x; beyond the "
                        "range itself, a warning in the output's metadata)")
    p.add_argument("--strict", action="store_true",
                   help="refuse instead of warning: another view or body part (DICOM ViewPosition, "
                        "BodyPartExamined), an image far smaller than the model's views, an unusual modality, "
                        "angles beyond the trained range")
    p.add_argument("--pixel-spacing", type=bounded_float(0.0, 100.0, "a pixel size in mm", low_open=True), nargs=2,
                   metavar=("ROW_MM", "COL_MM"),
                   help="detector pixel size when the file has none (PNG) or to override ImagerPixelSpacing/"
                        "PixelSpacing; without either, the image is fitted to the model's field of view")
    add_sampler_args(p)

    d = add_command(subparsers, "drr", run_drr)
    d.add_argument("--ct", required=True, type=Path)
    d.add_argument("--angles", action="extend", nargs="+", metavar="RX,RY,RZ",
                   help="one or more rotations in degrees, e.g. --angles 0,0,0 0,0,10 (default 0,0,0); the option "
                        "may be repeated; a negative first angle: --angles=-5,0,0")
    d.add_argument("--output", required=True, type=Path, help="output folder")
    d.add_argument("--config", help="medsci config (rotation.drr geometry); default: the built-in geometry")
    d.add_argument("--pixels", type=bounded_int(8, 4096, "a pixel count"), nargs=2, metavar=("ROWS", "COLS"))
    d.add_argument("--spacing", type=bounded_float(0.0, 100.0, "a pixel size in mm", low_open=True), nargs=2,
                   metavar=("ROW_MM", "COL_MM"))
    d.add_argument("--format", choices=["png", "nifti"], default="png")
    d.add_argument("--beer-lambert", action="store_true", help="write exp(-line integral) instead of the display")
    d.add_argument("--device", type=device_name, default="cpu")
    d.add_argument("--threads", type=thread_count)


def run_drr(args) -> int:
    """render digitally reconstructed radiographs of a CT (HU)

    Cone-beam PA DRR of a CT volume (NIfTI/MHA/NRRD/DICOM folder, HU) turned by each rotation; one PNG (16-bit) or
    NIfTI per rotation.
    """
    import numpy as np

    from medsci.io.atomic import safe_join
    from medsci.tasks.rotation.config import RotationConfig
    from medsci.tasks.rotation.data import display, geometry_of, load_ct, window_divisor
    from medsci.tasks.rotation.drr import render_ct

    check_outputs(args.output, [args.ct, args.config])
    cfg = RotationConfig()
    if args.config:
        from medsci.config import load_config

        cfg = load_config(args.config).rotation
    drr_cfg = cfg.drr
    if args.pixels or args.spacing:
        from dataclasses import replace

        drr_cfg = replace(drr_cfg, pixels=tuple(args.pixels or drr_cfg.pixels),
                          spacing=tuple(args.spacing or drr_cfg.spacing))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    angles = np.array([parse_angles(a) for a in (args.angles or ["0,0,0"])])
    hu, affine = load_ct(args.ct)
    views = render_ct(hu, affine, geometry_of(drr_cfg), angles, drr_cfg.mu_water,
                      output="beer_lambert" if args.beer_lambert else "line_integral", device=args.device)
    images = views if args.beer_lambert else display(views, window_divisor(views[0], cfg.pairs.window_percentile))
    args.output.mkdir(parents=True, exist_ok=True)
    for a, img in zip(angles, images):
        name = "drr_" + "_".join(f"{v:+g}" for v in a)
        if args.format == "png":
            from medsci.io.radiograph import write_png

            write_png(safe_join(args.output, name + ".png"), img, 16, note=f"DRR rx,ry,rz={a.tolist()} deg")
        else:
            from medsci.io.volume import write_nifti

            sp = drr_cfg.spacing[::-1]
            # (columns, rows, 1): NIfTI i runs along image columns, as medsci.io.radiograph reads it back.
            write_nifti(safe_join(args.output, name + ".nii.gz"), np.ascontiguousarray(img.T)[:, :, None],
                        np.diag([sp[0], sp[1], 1.0, 1.0]), description=f"DRR rx,ry,rz={a.tolist()} deg")
    print(f"wrote {len(images)} DRR(s) of {args.ct} to {args.output}")
    return 0


def run_rotate(args) -> int:
    """a radiograph seen from a rotated viewpoint (PNG, DICOM CR/DX, NIfTI)

    Writes OUT in the input's format (PNG bit depth, DICOM derived image, NIfTI affine), marked as synthetic, plus
    OUT.json with the rotation, sampler, network evaluations and warnings. With a model uncertainty (a variance
    head, or several samples), OUT_std beside it (a float32 .npy for DICOM) and its method, file and mean/max on the
    [0, 1] intensity scale in OUT.json. Angles (degrees) turn the patient about x
    (left-right, tilt), y (beam, in-plane) and z (head-foot, turn), applied x, then y, then z. The image is
    resampled to the model's pixel size by its own spacing, centred on the model's detector (padded or cropped,
    never squashed); the output is the input's projective warp plus the model's correction, at the input's size
    (``resampling`` in OUT.json, the geometry line in the note).
    """
    import numpy as np
    import torch

    from medsci.diffusion.inference import sampler_with
    from medsci.io.atomic import write_json_atomic
    from medsci.io.radiograph import read_radiograph, write_radiograph
    from medsci.tasks.rotation.pipeline import load_model, rotate

    angles = parse_angles(args.angles)
    check_outputs(args.output, [args.input, args.checkpoint], folder=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    radiograph = read_radiograph(args.input)  # a bad file is refused before the model is loaded
    check_outputs(std_path_of(args.output, radiograph.format), [args.input, args.checkpoint], folder=False)
    check_steps_fit(args.checkpoint, args.steps, args)
    loaded = load_model(args.checkpoint, args.device)
    warnings = list(radiograph.warnings) + view_warnings(radiograph)  # recorded in the note and OUT.json
    beyond = [f"{axis} {a:g} deg > {m:g}" for axis, a, m in zip("xyz", angles, loaded.max_angle) if abs(a) > m + 1e-9]
    if beyond:
        message = f"rotation outside the trained range ({', '.join(beyond)})"
        ratio = max(abs(a) / max(m, 1e-9) for a, m in zip(angles, loaded.max_angle))
        if ratio > HARD_LIMIT or (ratio > WARN_LIMIT and not args.allow_extrapolation):
            hint = "" if ratio > HARD_LIMIT else "; --allow-extrapolation to rotate anyway"
            raise InputError(f"{message}: {ratio:.2g}x the trained range is too far for this model{hint}",
                             args.input)
        warnings.append(message + ": extrapolated, expect lower fidelity")
    # Onto the model's detector by physical pixel size, centred, padded or cropped: never squashed.
    from medsci.tasks.rotation.baselines import homography_warp
    from medsci.tasks.rotation.data import window_divisor
    from medsci.tasks.rotation.detector_fit import DetectorFit

    spacing = radiograph.spacing
    spacing_source = radiograph.meta.get("spacing_tag") or ("NIfTI affine" if radiograph.format == "nifti" else "")
    if args.pixel_spacing:
        spacing, spacing_source = tuple(args.pixel_spacing), "--pixel-spacing"
    fit = DetectorFit.plan(radiograph.pixels.shape, spacing, spacing_source, loaded.geometry)
    span = fit.span_fraction()
    if span < MIN_SPAN:
        raise InputError(f"the image spans {fit.extent_mm()} mm ({spacing_source}), {100 * span:.0f} % of the model's "
                         f"{fit.field_mm()} mm field of view: at the model's {fit.model_spacing[0]:g} mm pixels it "
                         f"would be {fit.scaled[0]}x{fit.scaled[1]} px; a wrong pixel spacing (--pixel-spacing ROW_MM "
                         f"COL_MM) or not a view the model was trained on", args.input)
    if span < WARN_SPAN:
        warnings.append(f"the image spans {fit.extent_mm()} mm, {100 * span:.0f} % of the model's {fit.field_mm()} mm "
                        f"training views (a smaller body part than the training views?)")
    if args.strict and warnings:
        raise InputError(f"--strict: {warnings[0]}", args.input)
    if fit.covered_fraction() < 0.999:
        warnings.append(f"{100 * (1 - fit.covered_fraction()):.0f} % of the image lies outside the model's "
                        f"field of view: only warped there")
    # The display window of training (the source's window percentile -> 1, data.display) for the model's input;
    # the input itself is never clipped.
    divisor = window_divisor(radiograph.pixels, float(loaded.config.get("window_percentile", 99.5)))
    small = np.clip(fit.to_model(radiograph.pixels) / divisor, 0.0, 1.0)
    sampler = sampler_with(loaded.sample, loaded.schedule, **sampler_overrides(args))
    result = rotate(loaded, small[None], np.array([angles]), sampler)
    # Back at the input's resolution: the projective warp of the input (its full detail), moved as the model moved
    # the anatomy over its first guess, plus what a displacement does not explain, upsampled (rotation.detail).
    from medsci.tasks.rotation.detail import carry_detail

    base = homography_warp(radiograph.pixels, angles, fit.input_geometry(loaded.geometry))
    # A turn about the beam axis alone is exact in the warp: no parallax to carry.
    in_plane = angles[0] == 0 and angles[2] == 0
    out, detail = carry_detail(base, result.image[0], result.first_guess[0], fit, divisor,
                               shift=args.detail == "shift" and not in_plane)
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    note = (f"SYNTHETIC: medsci radiograph rotation of {args.input.name} by rx,ry,rz={list(angles)} deg "
            f"(diffusion model, {result.network_evaluations} network evaluations); not an acquired image. "
            f"Geometry: {fit.summary()}")
    if warnings:
        note += ". WARNING: " + "; ".join(warnings)
    written = write_radiograph(args.output, radiograph, out, note)
    # The model's std, back on the output's grid and intensity scale (out = image * divisor).
    std = None if result.std is None else np.clip(fit.to_input(result.std[0]) * divisor, 0.0, None)
    uncertainty = {"method": result.uncertainty if std is not None else "none", "std_file": None}
    if std is not None:
        std_path, units = _write_std(written, radiograph, std, f"SYNTHETIC: uncertainty (std) of {written.name}")
        uncertainty.update(std_file=std_path.name, std_units=units, std_mean=float(std.mean()),
                           std_max=float(std.max()))
    record = {"input": str(args.input), "output": str(written), "angles_deg": list(angles),
              "trained_max_angle_deg": list(loaded.max_angle), "resampling": fit.to_dict(),
              "display_divisor": divisor, "detail": detail, "sampler": sampler.to_dict(),
              "network_evaluations": result.network_evaluations, "seconds": round(result.seconds, 3),
              "warnings": warnings, "synthetic": True, "checkpoint": str(args.checkpoint),
              "uncertainty": uncertainty}
    write_json_atomic(Path(str(written) + ".json"), record)
    for line in warnings:
        print(f"medsci rotate: warning: {args.input}: {line}")
    print(f"wrote {written} ({result.network_evaluations} network evaluations, {result.seconds:.1f} s)")
    return 0


def std_path_of(output: Path, fmt: str) -> Path:
    """``<output stem>_std`` beside the output: the output's format, a float32 .npy for DICOM."""
    name = output.name
    for suffix in (".nii.gz", ".nii", ".png", ".dcm", ".dicom"):
        if name.lower().endswith(suffix):
            stem, ext = name[: -len(suffix)], suffix
            break
    else:
        stem, ext = name, ""
    return output.with_name(stem + "_std" + (".npy" if fmt == "dicom" else ext))


def _write_std(output: Path, like, std, note: str) -> tuple[Path, str]:
    """Write the (H, W) std (the output's [0, 1] intensity scale) beside ``output``; its path and units."""
    from dataclasses import replace

    import numpy as np

    from medsci.io.radiograph import write_radiograph

    path = std_path_of(output, like.format)
    if like.format == "dicom":
        from medsci.io.atomic import write_npy_atomic

        write_npy_atomic(path, np.asarray(std, dtype=np.float32))
        return path, "the output's [0, 1] intensity scale (0 = the input's darkest, 1 = its brightest value)"
    if like.format == "png":
        # Always 16-bit grey: an 8-bit std would round most of the map to 0.
        write_radiograph(path, replace(like, bit_depth=16, rgb=False), std, note)
        return path, "the output's [0, 1] intensity scale: PNG value / 65535"
    # NIfTI: in the input's value units, a spread (no offset): the writer's lo + x (hi - lo) with lo = 0.
    lo, hi = float(like.meta["value_min"]), float(like.meta["value_max"])
    write_radiograph(path, replace(like, meta={**like.meta, "value_min": 0.0, "value_max": hi - lo}), std, note)
    return path, "the input's value units (as the output image)"


# ---------------------------------------------------------------------------------------------- workflow verbs
def register_demo_data(tasks) -> None:
    p = add_demo_data(tasks, "rotation", run_demo_data, ("--cts", "CTs", 10), [64, 64, 64])
    p.add_argument("--spacing", type=spacing_mm, nargs=3, default=[5.0, 5.0, 5.0])
    p.add_argument("--variety", type=bounded_float(0.0, 1.0, "a probability"), default=0.0,
                   help="probability of each change unlike the generator (noise, contrast, apices cropped, habitus, "
                        "voxel size) per CT (default 0: as generated)")


def run_demo_data(args) -> int:
    """synthetic chest CTs in HU (NIfTI)

    Synthetic chest CTs (body, lungs, heart, liver, spine, ribs) in HU with an affine; the same seed gives the same
    bytes.
    """
    from medsci.tasks.rotation.demo import write_demo_cts

    return write_demo(args, ("ct_*.nii.gz",), "synthetic chest CTs", lambda: write_demo_cts(
        args.out, n=args.cts, seed=args.seed, shape=tuple(args.shape), spacing=tuple(args.spacing),
        variety=args.variety))


def register_preprocess(tasks) -> None:
    p = add_command(tasks, "rotation", run_preprocess, common=True)
    p.add_argument("--cts", nargs="+", required=True, type=Path, help="CT files (HU)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--evaluation", action="store_true")
    p.add_argument("--record-refusals", action="store_true",
                   help="a refused CT gets a <ct>.npz that records why (exit 0), so a workflow's other CTs go on")
    p.add_argument("--index", type=non_negative_int, default=0,
                   help="position of the first CT in the data set: CT i draws its angles from (seed, i)")


def run_preprocess(args) -> int:
    """render (source view, rotated view, rotation) pairs of CTs

    One <ct>.npz per CT: its PA view and rotated views. Training CTs get rotation.pairs.per_ct random rotations;
    with --evaluation, the evaluation angles (every magnitude about each axis, and random combined rotations).
    """
    import numpy as np

    from medsci.config import load_config
    from medsci.errors import MedsciError
    from medsci.io.atomic import safe_join
    from medsci.tasks.rotation.data import geometry_of, load_ct, random_angles, render_pairs, save_pairs
    from medsci.tasks.rotation.evaluation import evaluation_angles

    check_outputs(args.out, [*args.cts, args.config])
    config = load_config(args.config)
    cfg = config.rotation
    device = setup_torch(args, config)
    device = "cpu" if device == "auto" else device
    failed = 0
    args.out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(args.cts, start=args.index):
        name = _ct_id(path)
        try:
            hu, affine = load_ct(path)
            if args.evaluation:
                angles = evaluation_angles(cfg.evaluation, cfg.pairs.max_angle, cfg.pairs.seed + i)
            else:
                rng = np.random.default_rng([cfg.pairs.seed, i, 0xD22])
                angles = random_angles(rng, cfg.pairs.per_ct, cfg.pairs.max_angle, cfg.pairs.single_axis)
            pairs = render_pairs(hu, affine, geometry_of(cfg.drr), angles, cfg.drr.mu_water,
                                 cfg.pairs.window_percentile, device)
            save_pairs(safe_join(args.out, f"{name}.npz"), pairs)
            print(f"{name}: {len(angles)} views")
        except MedsciError as err:
            print(f"medsci preprocess: error: {err}", file=sys.stderr)  # as the other preprocess verbs
            if args.record_refusals:
                from medsci.tasks.rotation.data import save_refusal

                save_refusal(safe_join(args.out, f"{name}.npz"), err.reason)
            else:
                failed += 1
    return 1 if failed else 0


def _ct_id(path: Path) -> str:
    """The id the workflow gives a CT (medsci.tasks.rotation.workflow.ct_files): a DICOM folder's name, a file's
    name without its volume suffix."""
    from medsci.tasks.rotation.workflow import CT_SUFFIXES

    name = Path(path).name
    if Path(path).is_dir():
        return name
    for suffix in (*CT_SUFFIXES, ".npz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


STAGES = "medsci.tasks.rotation.pipeline:STAGES"


def register_train(tasks) -> None:
    p = add_train(tasks, "rotation", STAGES, "train the radiograph-rotation model", inputs=lambda a: a.pairs)
    p.add_argument("--pairs", nargs="+", required=True, type=Path, help="training pair files (<ct>.npz)")


def register_sample(tasks) -> None:
    p = add_sample(tasks, "rotation", STAGES, "rotate the held-out views with the model and the baselines",
                   inputs=lambda a: a.pairs, out_help="folder of <ct>.npz predictions")
    p.add_argument("--pairs", nargs="+", required=True, type=Path, help="held-out pair files (--evaluation)")


def register_evaluate(tasks) -> None:
    p = add_evaluate(tasks, "rotation", run_evaluate,
                     "score held-out rotations beside the identity and the projective warp")
    p.add_argument("--pairs", nargs="+", required=True, type=Path)


def run_evaluate(args) -> int:
    from medsci.config import load_config
    from medsci.tasks.rotation.report import write_evaluation

    check_outputs(args.out, [*args.pairs, args.predictions, args.config])
    config = load_config(args.config)
    write_evaluation(config.rotation, args.pairs, args.predictions, args.out)
    print(f"wrote {args.out / 'summary.md'}")
    return 0

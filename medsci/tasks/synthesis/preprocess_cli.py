"""``medsci preprocess synthesis`` (cases -> network-ready npz + sidecar) and ``medsci summarize``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register_preprocess(tasks) -> None:
    from medsci.commands.args import add_command, add_shape_arg, bounded_float, bounded_int, finite_float, spacing_mm

    p = add_command(tasks, "synthesis", run_preprocess)
    p.add_argument("--case-dir", type=Path, required=True, help="a case folder, or a folder of cases with --all")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--all", action="store_true", help="--case-dir holds one sub-folder per case")
    p.add_argument("--config", type=Path, help="project config (YAML); its synthesis.preprocess section is used")
    p.add_argument("--layout", choices=("brats", "generic"), default="brats",
                   help="file naming: brats = <case>/<case>-<mod>.nii.gz; generic = --pattern per modality")
    p.add_argument("--pattern", action="append", default=[], metavar="MOD=GLOB",
                   help="generic layout: glob of a modality's file in a case folder, {case} = folder name "
                        "(repeatable), e.g. t1n='{case}_T1.nii.gz'")
    p.add_argument("--seg-pattern", metavar="GLOB", help="generic layout: glob of the segmentation file")
    add_shape_arg(p, "--shape", metavar=("X", "Y", "Z"), help="output shape")
    p.add_argument("--spacing", type=spacing_mm, nargs="+", metavar="MM",
                   help="resample to this spacing (1 or 3 values)")
    p.add_argument("--orientation", help="target axis codes, e.g. RAS")
    p.add_argument("--n4", action="store_true", default=None, help="N4 bias-field correction")
    p.add_argument("--clip", type=bounded_float(0.0, 100.0, "a percentile"), nargs=2, metavar=("LO", "HI"),
                   help="percentiles (inside the mask) to clip to")
    p.add_argument("--mask-threshold", type=finite_float, help="brain mask = voxels above this in any modality")
    p.add_argument("--max-missing", type=bounded_int(0, 3, "a number of modalities"), default=3,
                   help="refuse cases missing more modalities than this (default 3: at least one present)")


def register_summarize(subparsers) -> None:
    from medsci.commands.args import add_command

    s = add_command(subparsers, "summarize", run_summarize)
    s.add_argument("preprocessed_dir", type=Path, help="folder written by medsci preprocess")
    s.add_argument("--out", type=Path, required=True, help="summary JSON to write")


def parse_patterns(items: list[str]) -> dict[str, str]:
    from medsci.errors import ConfigError

    patterns = {}
    for item in items:
        mod, sep, glob = item.partition("=")
        if not sep or not mod or not glob:
            raise ConfigError(f"--pattern expects MOD=GLOB, got {item!r}")
        patterns[mod.strip()] = glob.strip()
    return patterns


def build_config(args: argparse.Namespace):
    """PreprocessConfig from --config (if any) with the command-line flags applied on top."""
    from medsci.mri.preprocessing.stage import PreprocessConfig

    if args.config is not None:
        from medsci.config import load_config  # written elsewhere; imported only when asked for

        base = load_config(args.config).synthesis.preprocess
        values = base.to_dict() if isinstance(base, PreprocessConfig) else dict(base)
    else:
        values = PreprocessConfig().to_dict()
    overrides = {
        "shape": args.shape,
        "spacing": args.spacing[0] if args.spacing and len(args.spacing) == 1 else args.spacing,
        "orientation": args.orientation,
        "n4": args.n4,
        "clip_percentiles": args.clip,
        "mask_threshold": args.mask_threshold,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return PreprocessConfig.from_dict(values, "preprocess")


def run_preprocess(args: argparse.Namespace) -> int:
    """reorient, mask, normalise and crop multi-modal MRI cases to npz + JSON sidecars

    Preprocess one case folder (or, with --all, every case folder below --case-dir) into OUT/<case>.npz (image [4,
    X, Y, Z] in t1n,t1c,t2w,t2f order, mask, seg) and OUT/<case>.json (everything needed to map results back to the
    native grid).
    """
    from medsci.commands.args import check_outputs
    from medsci.errors import InputError, MedsciError
    from medsci.mri.cases import check_case, discover_cases, load_case
    from medsci.io.paths import refuse_links_outside
    from medsci.mri.preprocessing.stage import preprocess_case

    check_outputs(args.out, [args.case_dir, args.config])
    if args.spacing and len(args.spacing) not in (1, 3):
        raise InputError(f"--spacing takes 1 or 3 values, got {len(args.spacing)}")
    cfg = build_config(args)
    patterns = parse_patterns(args.pattern) if args.pattern else None
    refused: list[MedsciError] = []
    if args.all:
        cases = discover_cases(args.case_dir, args.layout, patterns=patterns, seg_pattern=args.seg_pattern,
                               refused=refused)
    else:
        cases = [load_case(args.case_dir, args.layout, patterns=patterns, seg_pattern=args.seg_pattern)]

    failed = len(refused)
    for err in refused:  # case folders that could not even be scanned; the others still run
        print(f"medsci preprocess: error: {err}", file=sys.stderr)
    for case in cases:
        try:
            refuse_links_outside([case.folder, *case.files.values(), *([case.seg] if case.seg else [])],
                                 args.case_dir)
            check_case(case, max_missing=args.max_missing)
            sidecar = preprocess_case(case, cfg, args.out)
        except MedsciError as err:
            if not args.all:
                raise
            # One bad case must not stop a batch: report it on one line and go on.
            failed += 1
            print(f"medsci preprocess: error: {err}", file=sys.stderr)
            continue
        for warning in sidecar["warnings"]:
            print(f"medsci preprocess: warning: {case.case_id}: {warning}", file=sys.stderr)
        missing = f" (missing: {', '.join(sidecar['missing'])})" if sidecar["missing"] else ""
        print(f"{case.case_id}: {args.out / sidecar['npz']}{missing}")
    if failed:
        print(f"medsci preprocess: {failed} of {len(cases) + len(refused)} cases failed", file=sys.stderr)
        return 1
    return 0


def run_summarize(args: argparse.Namespace) -> int:
    """dataset summary of a folder of preprocessed cases (JSON)

    Count cases, collect per-modality intensity statistics inside the brain mask, shapes, available modalities and
    tumour voxel counts of a preprocessed folder.
    """
    from medsci.commands.args import check_outputs
    from medsci.io.atomic import write_json_atomic
    from medsci.mri.preprocessing.stage import summarize_preprocessed

    check_outputs(args.out, folder=False)  # the workflow keeps summary.json beside the cases it summarises
    summary = summarize_preprocessed(args.preprocessed_dir)
    write_json_atomic(args.out, summary)
    print(f"{summary['n_cases']} cases -> {args.out}")
    return 0

"""``medsci synthesize`` (a clinical folder of cases) and ``medsci submit`` (a BraSyn challenge submission)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medsci.commands.args import (add_sampler_args, check_outputs, check_steps_fit, device_name, sampler_overrides,
                                  setup_torch, thread_count)

_DESCRIPTION = (
    "INPUT holds one folder per case with NIfTI files (contrast from the file name: t1n/t1/t1w, t1c/t1ce/"
    "t1-post, t2w/t2, t2f/flair, or --pattern) or DICOM series (contrast from SeriesDescription / sequence "
    "tags, or --dicom-mapping). For every case missing exactly one contrast, that contrast is synthesised on "
    "the case's own grid. Nothing is written inside INPUT."
)


def _add_batch_args(p, *, dicom: bool) -> None:
    p.add_argument("--checkpoint", required=True, help="model folder: a training run or a `medsci export` folder")
    p.add_argument("--input", required=True, type=Path, help="folder of case folders (or one case folder)")
    p.add_argument("--output", required=True, type=Path, help="output folder (must not lie inside --input)")
    p.add_argument("--config", help="medsci config YAML whose synthesis.sample overrides the checkpoint's sampler")
    p.add_argument("--pattern", action="append", metavar="MOD=GLOB",
                   help="file pattern of a contrast, e.g. t2f='*FLAIR*.nii.gz' ({case} = folder name); repeatable")
    if dicom:
        p.add_argument("--dicom-mapping", type=Path,
                       help="YAML {t1n: [regex, ...], ...} matched on SeriesDescription/ProtocolName/SequenceName")
    p.add_argument("--register", action=argparse.BooleanOptionalAction, default=None,
                   help="rigidly co-register every contrast onto the first one (Mattes mutual information); "
                        "default: on for DICOM series, off for NIfTI. Either way a contrast that does not line "
                        "up with the first one, or is flipped left-right, refuses the case")
    p.add_argument("--case", action="append", dest="cases", metavar="ID", help="only this case (repeatable)")
    p.add_argument("--record-refusals", action="store_true",
                   help="exit 0 when cases are refused (their reasons are in the records): for workflow jobs")
    p.add_argument("--device", type=device_name, default=None, help="auto | cpu | cuda (default: auto)")
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_sampler_args(p)


def register_clinical_commands(subparsers) -> None:
    p = subparsers.add_parser("synthesize", help="synthesise the missing MRI contrast of every case in a folder",
                              description=_DESCRIPTION + " Per case: <case>_<contrast>_SYNTHETIC.nii.gz (+ _std "
                              "uncertainty, a derived DICOM series for DICOM input, a QC PNG); for the batch: "
                              "summary.csv and report.html. A rerun skips cases already done with the same "
                              "inputs, model and sampler.")
    _add_batch_args(p, dicom=True)
    p.add_argument("--no-qc", action="store_true", help="no QC figure per case")
    p.add_argument("--no-dicom", action="store_true", help="NIfTI only, also for DICOM input")
    p.add_argument("--redo", action="store_true", help="redo cases already done")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild summary.csv and report.html from the case records in --output")
    p.set_defaults(handler=run_synthesize)

    p = subparsers.add_parser("submit", help="write a BraSyn challenge submission with a manifest",
                              description="INPUT: BraTS-layout validation cases, one contrast missing each. "
                              "OUTPUT: one flat folder of <case-id>-<missing>.nii.gz on the input grid and "
                              "affine, and manifest.json (checksums of every input, output and the checkpoint, "
                              "config, seeds, versions, hardware). Check it with `medsci verify-submission`.")
    _add_batch_args(p, dicom=False)
    p.add_argument("--force", action="store_true",
                   help="replace an earlier submission in --output (only its volumes and manifest.json are removed)")
    p.set_defaults(handler=run_submit)


def _check_paths(args) -> None:
    """Before the model is loaded: the output folder outside every input, creatable."""
    from medsci.tasks.synthesis.clinical import check_locations

    check_locations(args.input, args.output)
    check_outputs(args.output, [args.checkpoint, args.config, getattr(args, "dicom_mapping", None)])


def _prepare(args):
    from medsci.config import load_config
    from medsci.provenance import enable_determinism
    from medsci.tasks.synthesis.pipeline import load_model, sampler_for
    from medsci.tasks.synthesis.preprocess_cli import parse_patterns

    config = load_config(args.config) if args.config else None
    device = setup_torch(args, config)
    check_steps_fit(args.checkpoint, args.steps, args)
    loaded = load_model(args.checkpoint, device)
    sampler = sampler_for(config, loaded, sampler_overrides(args))
    enable_determinism(sampler.seed)
    patterns = parse_patterns(args.pattern) if args.pattern else None
    return loaded, sampler, patterns


def _printer(verb: str):
    """Prints one record as its case ends; refusals and warnings name the command, as its errors do."""
    return lambda record: _print_record(record, f"medsci {verb}: ")


def _print_record(record, prog: str = "") -> None:
    if record.status == "refused":
        print(f"{prog}{record.case_id}: refused: {record.reason}", file=sys.stderr)
        return
    took = "done earlier" if record.status == "skipped" else f"{record.seconds:.1f} s"
    print(f"{prog}{record.case_id}: {record.target} {record.status} ({took}) -> {', '.join(record.outputs)}")
    for warning in record.warnings:
        print(f"{prog}{record.case_id}: warning: {warning}", file=sys.stderr)


def _exit_code(records, tolerate: bool = False) -> int:
    refused = sum(r.status == "refused" for r in records)
    if refused:
        print(f"{refused} of {len(records)} case(s) refused (reasons above and in the summary)", file=sys.stderr)
    return 1 if refused and not tolerate else 0


def run_synthesize(args) -> int:
    from medsci.tasks.synthesis.clinical import BatchSettings, load_records, run_batch, write_summary

    settings = BatchSettings(args.output, layout="folders", dicom=not args.no_dicom, qc=not args.no_qc,
                             skip_done=not args.redo, register=args.register)
    _check_paths(args)
    if args.report_only:
        records = load_records(args.output)
    else:
        from medsci.mri.contrasts import load_mapping

        mapping = load_mapping(args.dicom_mapping) if args.dicom_mapping else None
        loaded, sampler, patterns = _prepare(args)
        records = run_batch(loaded, sampler, Path(args.checkpoint), args.input, settings, patterns=patterns,
                            dicom_mapping=mapping, cases=args.cases, progress=not args.no_progress,
                            on_record=_printer("synthesize"))
        if args.cases:  # one job of a workflow batch: the gather job writes the batch summary
            return _exit_code(records, args.record_refusals)
        # Every case the folder holds (earlier runs' too), and this run's refusals whose record could not be written.
        on_disk = load_records(args.output)
        records = sorted(on_disk + [r for r in records if r.case_id not in {d.case_id for d in on_disk}],
                         key=lambda r: r.case_id)
    write_summary(args.output, records)
    print(f"summary: {args.output / 'summary.csv'}, {args.output / 'report.html'}")
    return _exit_code(records, args.record_refusals)


def run_submit(args) -> int:
    from medsci.tasks.synthesis.clinical import BatchSettings, run_batch
    from medsci.tasks.synthesis.submission import earlier_submission, write_manifest

    _check_paths(args)
    earlier = earlier_submission(args.output, args.force)  # refused before the model is loaded
    loaded, sampler, patterns = _prepare(args)
    for path in earlier:
        path.unlink()
    settings = BatchSettings(args.output, layout="flat", dicom=False, qc=False, uncertainty=False,
                             register=args.register)
    records = run_batch(loaded, sampler, Path(args.checkpoint), args.input, settings, patterns=patterns,
                        cases=args.cases, progress=not args.no_progress, on_record=_printer("submit"))
    done = [r for r in records if r.status in ("done", "skipped")]
    write_manifest(args.output, outputs={o: args.output / o for r in done for o in r.outputs},
                   inputs={r.case_id: [Path(p) for p in r.inputs] for r in done},
                   checkpoint_dir=Path(args.checkpoint), config=loaded.config, sampler=sampler.to_dict(),
                   seeds={"sampler": sampler.seed},
                   extra={"refused": {r.case_id: r.reason for r in records if r.status == "refused"}},
                   roots={"<input>": args.input, "<checkpoint>": args.checkpoint, "<output>": args.output})
    print(f"{len(done)} case(s) in {args.output}; manifest: {args.output / 'manifest.json'}")
    return _exit_code(records, args.record_refusals)

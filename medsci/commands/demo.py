"""``medsci demo-data``: write deterministic synthetic data sets to try the pipelines without real data.

    medsci demo-data synthesis OUT [--cases N] [--seed S] [--shape X Y Z] [--spacing SX SY SZ]
    medsci demo-data seismic OUT [--cubes N] [--seed S] [--shape IL XL T]

Everything is written under OUT (created if missing; same-named files are replaced atomically).
"""

from __future__ import annotations

import argparse
from collections.abc import Sized
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo-data",
        help="write synthetic demo data sets (BraTS-like MRI, seismic cubes)",
        description="Write deterministic synthetic data: the same seed gives the same bytes.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True

    syn = kinds.add_parser(
        "synthesis",
        help="BraTS-like brain MRI (t1n, t1c, t2w, t2f + tumour labels)",
        description="Synthetic skull-stripped brain MRI with glioma labels, in BraTS layout and geometry.",
    )
    syn.add_argument("out", type=Path, metavar="OUT", help="output folder")
    syn.add_argument("--cases", type=int, default=16, help="number of cases (default 16)")
    syn.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    syn.add_argument(
        "--shape", type=int, nargs=3, default=[68, 76, 60], metavar=("X", "Y", "Z"),
        help="voxels per axis, NIfTI order (default 68 76 60; BraTS is 240 240 155)",
    )
    syn.add_argument(
        "--spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
        help="voxel size in mm (default: the BraTS 240x240x155 mm field of view divided by the shape)",
    )
    syn.set_defaults(handler=_synthesis)

    seis = kinds.add_parser(
        "seismic",
        help="synthetic post-stack seismic cubes",
        description="Synthetic seismic cubes for the trace-interpolation task.",
    )
    seis.add_argument("out", type=Path, metavar="OUT", help="output folder")
    seis.add_argument("--cubes", type=int, default=8, help="number of cubes (default 8)")
    seis.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    seis.add_argument(
        "--shape", type=int, nargs=3, default=[32, 32, 128], metavar=("IL", "XL", "T"),
        help="inlines, crosslines, time samples (default 32 32 128)",
    )
    seis.set_defaults(handler=_seismic)


def _synthesis(args: argparse.Namespace) -> int:
    from medsci.demo.brain import write_brats_dataset

    cases = write_brats_dataset(
        args.out, cases=args.cases, seed=args.seed, shape=tuple(args.shape), spacing=args.spacing
    )
    print(f"wrote {len(cases)} synthetic BraTS-like cases to {args.out}")
    return 0


def _seismic(args: argparse.Namespace) -> int:
    from medsci.demo.seismic import write_seismic_dataset

    written = write_seismic_dataset(args.out, cubes=args.cubes, seed=args.seed, shape=tuple(args.shape))
    count = len(written) if isinstance(written, Sized) else args.cubes
    print(f"wrote {count} synthetic seismic cubes to {args.out}")
    return 0

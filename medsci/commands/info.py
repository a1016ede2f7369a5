"""``medsci info FILE``: geometry and intensity summary of one volume, as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    from medsci.commands.args import add_command

    parser = add_command(subparsers, "info", run)
    parser.add_argument("file", type=Path, help="volume file (.nii, .nii.gz, .mha, .mhd, .nrrd) or DICOM folder")


def run(args: argparse.Namespace) -> int:
    """print a volume's shape, spacing, orientation and intensity range as JSON

    Read a NIfTI / MetaImage / NRRD file or a DICOM series folder and print its geometry (voxel -> RAS+ affine) and
    intensity summary as JSON.
    """
    from medsci.io.volume import describe, read_volume

    print(json.dumps(describe(read_volume(args.file)), indent=2))
    return 0

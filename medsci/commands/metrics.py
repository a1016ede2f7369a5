"""``medsci metrics --pred P --target T [--mask M] [--data-range R]``: similarity of two volumes, as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


# Affine entries (mm) two volumes may differ by and still count as one grid (rounding in headers).
GRID_TOLERANCE_MM = 1e-3


RANGE_FACTOR = 100.0  # --data-range further than this factor from the target's max - min gets a warning


def register(subparsers) -> None:
    from medsci.commands.args import add_command, bounded_float

    parser = add_command(subparsers, "metrics", run)
    parser.add_argument("--pred", type=Path, required=True, help="predicted volume (.nii, .nii.gz, .mha, .nrrd, ...)")
    parser.add_argument("--target", type=Path, required=True, help="reference volume, same shape as --pred")
    parser.add_argument("--mask", type=Path, default=None, help="optional mask volume; voxels > 0 are inside")
    parser.add_argument(
        "--data-range", type=bounded_float(0.0, 1e12, "an intensity range", low_open=True), default=None,
        help="intensity range for SSIM/PSNR (default: target max - min)",
    )


def run(args: argparse.Namespace) -> int:
    """compare a predicted volume with its target (SSIM, PSNR, MSE, MAE) and print JSON

    Read two volumes of the same shape (and optionally a mask) and print SSIM (MONAI's formula, Gaussian window 11,
    sigma 1.5), PSNR, MSE and MAE as JSON; with --mask also mask_ssim, mask_psnr, mask_mse, mask_mae over the voxels
    where the mask is > 0. PSNR of identical volumes is Infinity; metrics of an empty mask are NaN. A volume shorter
    than the SSIM window (11 voxels) along any axis gets SSIM null and the reason in ssim_note (and a warning). A
    --data-range more than 100 times larger or smaller than the target's max - min is warned about and recorded in
    data_range_warning.
    """
    import numpy as np

    from medsci.errors import InputError
    from medsci.evaluation.metrics import image_metrics, ssim_window_gap
    from medsci.io.volume import read_volume

    target_vol = read_volume(args.target)
    target = target_vol.array

    def same_grid(vol, path):
        # Voxel-by-voxel comparison only means something when both volumes sample the same points in space.
        if vol.array.shape != target.shape:
            raise InputError(f"shape {vol.array.shape} does not match target {args.target} shape {target.shape}",
                             path)
        shift = float(np.abs(vol.affine - target_vol.affine).max())
        if shift > GRID_TOLERANCE_MM:
            raise InputError(f"voxel grid differs from target {args.target} (affines differ by up to {shift:.4g} "
                             "mm): not the same positions in space; resample it onto the target's grid first", path)
        return vol.array

    pred = same_grid(read_volume(args.pred), args.pred)
    masks = None
    if args.mask is not None:
        masks = {"mask": same_grid(read_volume(args.mask), args.mask) > 0}

    if args.data_range is None:
        data_range = float(np.max(target)) - float(np.min(target))
        if data_range <= 0:
            raise InputError("target is constant, so its range is 0; pass --data-range", args.target)
    else:
        data_range = args.data_range  # checked by its argparse type

    result = {"data_range": data_range, **image_metrics(pred, target, data_range=data_range, masks=masks)}
    spans = float(np.max(target)) - float(np.min(target))
    if args.data_range is not None and spans > 0 and not 1 / RANGE_FACTOR <= data_range / spans <= RANGE_FACTOR:
        # PSNR and SSIM's constants scale with the range: a wrong unit makes them meaningless, not an error.
        warning = (f"--data-range {data_range:g} is {data_range / spans:.3g} times the target's range {spans:g} "
                   f"(more than {RANGE_FACTOR:g} times off): SSIM and PSNR are not comparable with other results")
        result["data_range_warning"] = warning
        print(f"medsci metrics: warning: {args.target}: {warning}", file=sys.stderr)
    note = ssim_window_gap(target.shape)
    if note is not None:  # a shrunk window is not the SSIM --help promises: reported as n/a, not as a number
        result.update({k: None for k in result if k.endswith("ssim")}, ssim_note=f"{args.target}: {note}")
        print(f"medsci metrics: warning: {args.target}: {note}; PSNR, MSE and MAE are still reported",
              file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0

"""Issue 26's full-resolution check of `medsci rotate` (docs/radiograph-rotation.md, "Clinical use").

Renders a held-out CT at radiograph-like resolution (default 640x560 px of 0.7 mm), writes the 0-degree view as a
15-bit MONOCHROME1 DX DICOM with ImagerPixelSpacing, rotates it with a trained checkpoint and scores:
- at 0,0,0: mean absolute difference to the input in % of the stored range, shape, polarity, bit depth;
- per rotation: SSIM / MAE of the model (its fine detail moved with the anatomy, the default, and as the plain
  warp plus the upsampled correction: `--detail warp`), the full-resolution projective warp and the identity
  against the DRR rendered at that rotation.

    python tests/scripts/rotation_full_resolution.py --checkpoint results/demo/rotation/model \\
        --ct results/demo/rotation/demo_data/ct_009.nii.gz --work /tmp/r26
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROTATIONS = ("0,0,10", "0,0,-10", "10,0,0", "-10,0,0", "0,0,15", "15,0,0", "0,10,0")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--ct", required=True, help="a held-out CT in HU")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--pixels", nargs=2, type=int, default=[640, 560])
    ap.add_argument("--spacing", type=float, default=0.7)
    args = ap.parse_args()

    import pydicom
    from PIL import Image
    from skimage.metrics import structural_similarity

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_radiograph_io import _make_dicom

    from medsci.io.radiograph import read_radiograph
    from medsci.tasks.rotation.baselines import homography_warp
    from medsci.tasks.rotation.drr import DetectorGeometry

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    angles = ("0,0,0", *ROTATIONS)
    subprocess.run(["medsci", "drr", "--ct", args.ct, *(f"--angles={a}" for a in angles),
                    "--output", str(work / "drr"),
                    "--pixels", *map(str, args.pixels), "--spacing", str(args.spacing), str(args.spacing),
                    "--format", "png"], check=True)
    spacing = [f"{args.spacing:g}"] * 2
    views = {}
    for a in angles:
        name = "drr_" + "_".join(f"{float(v):+g}" for v in a.split(","))
        grey = np.asarray(Image.open(work / "drr" / f"{name}.png")).astype(np.float64) / 65535
        views[a] = _make_dicom(work / f"view_{a.replace(',', '_')}.dcm", np.round((1 - grey) * 32767).astype(np.uint16),
                               photometric="MONOCHROME1", bits_stored=15, modality="DX",
                               extra={"ImagerPixelSpacing": spacing})
    source = read_radiograph(views["0,0,0"])
    geometry = DetectorGeometry(1000.0, 750.0, source.pixels.shape, (args.spacing, args.spacing))
    report = {}
    for a in angles:
        out = work / f"out_{a.replace(',', '_')}.dcm"
        subprocess.run(["medsci", "rotate", "--checkpoint", args.checkpoint, "--input", str(views["0,0,0"]),
                        f"--angles={a}", "--output", str(out)], check=True)
        if a == "0,0,0":
            ds_in, ds_out = pydicom.dcmread(views[a]), pydicom.dcmread(out)
            x, y = ds_in.pixel_array.astype(float), ds_out.pixel_array.astype(float)
            report[a] = {"mad_percent_of_range": round(100 * np.abs(x - y).mean() / (x.max() - x.min()), 3),
                         "shape_kept": ds_out.pixel_array.shape == ds_in.pixel_array.shape,
                         "photometric": ds_out.PhotometricInterpretation, "bits_stored": int(ds_out.BitsStored)}
            continue
        truth = read_radiograph(views[a]).pixels
        plain = work / f"out_{a.replace(',', '_')}_warp.dcm"
        subprocess.run(["medsci", "rotate", "--checkpoint", args.checkpoint, "--input", str(views["0,0,0"]),
                        f"--angles={a}", "--detail", "warp", "--output", str(plain)], check=True)
        methods = {"model": read_radiograph(out).pixels, "model, --detail warp": read_radiograph(plain).pixels,
                   "warp": homography_warp(source.pixels, [float(v) for v in a.split(",")], geometry),
                   "identity": source.pixels}
        report[a] = {m: {"ssim": round(float(structural_similarity(v, truth, data_range=1.0)), 4),
                         "mae": round(float(np.abs(v - truth).mean()), 4)} for m, v in methods.items()}
    report["resampling"] = json.loads(Path(str(work / "out_0_0_10.dcm") + ".json").read_text())["resampling"]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

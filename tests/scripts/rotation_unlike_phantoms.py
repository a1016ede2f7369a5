"""Issue 26: the rotation model on held-out CTs changed to be unlike its training phantoms
(docs/radiograph-rotation.md, "CTs unlike the phantoms").

Each held-out CT is changed one way at a time: noise, a contrast-enhanced mediastinum, a scan cropped at the lung
apices, a broader body habitus, a smaller voxel size (the patient smaller on the detector). Views are rendered
with the checkpoint's own geometry and rotated 10 deg out of plane (x and z, both signs) and in plane (y); the
table is the mean SSIM of the model, the projective warp and the identity against the rendered truth.

    python tests/scripts/rotation_unlike_phantoms.py --checkpoint results/demo/rotation/model \\
        --ct results/demo/rotation/demo_data/ct_008.nii.gz results/demo/rotation/demo_data/ct_009.nii.gz
"""

from __future__ import annotations

import argparse
import json

import numpy as np

ANGLES = {"out of plane": [[10, 0, 0], [-10, 0, 0], [0, 0, 10], [0, 0, -10]], "in plane": [[0, 10, 0], [0, -10, 0]]}


def variants(hu: np.ndarray, affine: np.ndarray, rng: np.random.Generator) -> dict:
    from medsci.tasks.rotation.demo import add_noise, broaden, crop_apices, enhance_mediastinum, rescale_voxels

    return {
        "as generated": (hu, affine),
        "noise 40 HU": add_noise(hu, affine, rng, 40.0),
        "contrast-enhanced mediastinum (+250 HU)": enhance_mediastinum(hu, affine, rng, 250.0),
        "cropped at the lung apices": crop_apices(hu, affine, rng, 0.25),
        "broader habitus (1.2x across)": broaden(hu, affine, rng, 1.2),
        "voxels 0.8x (smaller on the detector)": rescale_voxels(hu, affine, rng, 0.8),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--ct", nargs="+", required=True, help="held-out CTs in HU")
    args = ap.parse_args()

    from medsci.evaluation.metrics import image_metrics
    from medsci.tasks.rotation.baselines import homography_warp
    from medsci.tasks.rotation.data import load_ct, render_pairs
    from medsci.tasks.rotation.pipeline import load_model, rotate

    loaded = load_model(args.checkpoint, "cpu")
    drr = loaded.config["drr"]
    table: dict = {}
    for ct in args.ct:
        hu, affine = load_ct(ct)
        for name, (vol, aff) in variants(hu, affine, np.random.default_rng(0)).items():
            for kind, angles in ANGLES.items():
                pairs = render_pairs(vol, aff, loaded.geometry, np.asarray(angles, np.float64), float(drr["mu_water"]),
                                     float(loaded.config.get("window_percentile", 99.5)))
                model = rotate(loaded, np.repeat(pairs.source[None], len(angles), 0), pairs.angles).image
                for k in range(len(angles)):
                    preds = {"model": model[k], "warp": homography_warp(pairs.source, pairs.angles[k], loaded.geometry),
                             "identity": pairs.source}
                    for method, image in preds.items():
                        s = image_metrics(image, pairs.targets[k], data_range=1.0)["ssim"]
                        table.setdefault(name, {}).setdefault(kind, {}).setdefault(method, []).append(float(s))
    rows = {name: {kind: {m: round(float(np.mean(v)), 4) for m, v in methods.items()} for kind, methods in kinds.items()}
            for name, kinds in table.items()}
    print(json.dumps(rows, indent=1))
    print("| CT | out of plane: model / warp / identity | in plane: model / warp / identity |")
    print("|---|---|---|")
    for name, kinds in rows.items():
        cells = [" / ".join(f"{kinds[k][m]:.3f}" for m in ("model", "warp", "identity")) for k in ANGLES]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

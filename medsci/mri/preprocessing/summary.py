"""Dataset summary of a folder of preprocessed cases: pooled intensity statistics inside the brain mask,
shapes, missing modalities and tumour label counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsci.errors import InputError
from medsci.mri.cases import MODALITIES
from medsci.preprocessing.store import load_preprocessed


def summarize_preprocessed(folder: str | Path) -> dict:
    """Dataset summary of a folder of preprocessed cases (intensity stats inside the mask, shapes, ...)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("preprocessed folder not found", folder)
    npzs = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
    if not npzs:
        raise InputError("no preprocessed cases (*.npz) found", folder)
    # Pooled sums per modality: mean/std over all in-mask voxels of all cases.
    acc = {m: {"n": 0, "s": 0.0, "ss": 0.0, "min": np.inf, "max": -np.inf, "cases": 0} for m in MODALITIES}
    cases, shapes = [], set()
    for p in npzs:
        arrays, side = load_preprocessed(p)
        image, mask = arrays["image"], arrays["mask"].astype(bool)
        shapes.add(tuple(int(s) for s in image.shape))
        entry: dict[str, Any] = {
            "case_id": side.get("case_id", p.stem),
            "shape": list(image.shape),
            "available": side.get("available", []),
            "mask_voxels": int(mask.sum()),
        }
        for m in side.get("available", []):
            vals = image[MODALITIES.index(m)][mask].astype(np.float64)
            a = acc[m]
            a["n"] += vals.size
            a["s"] += float(vals.sum())
            a["ss"] += float(np.square(vals).sum())
            if vals.size:
                a["min"] = min(a["min"], float(vals.min()))
                a["max"] = max(a["max"], float(vals.max()))
            a["cases"] += 1
        if "seg" in arrays:
            labels, counts = np.unique(arrays["seg"], return_counts=True)
            entry["seg_voxels"] = {str(int(k)): int(c) for k, c in zip(labels, counts) if k != 0}
            entry["tumour_voxels"] = int(counts[labels != 0].sum())
        cases.append(entry)
    stats = {}
    for m, a in acc.items():
        if a["n"] == 0:
            stats[m] = {"cases": 0}
            continue
        mean = a["s"] / a["n"]
        stats[m] = {"cases": a["cases"], "voxels": a["n"], "mean": mean,
                    "std": float(np.sqrt(max(a["ss"] / a["n"] - mean * mean, 0.0))),
                    "min": a["min"], "max": a["max"]}
    return {
        "n_cases": len(cases),
        "shapes": sorted(list(s) for s in shapes),
        "modalities": list(MODALITIES),
        "intensity_inside_mask": stats,
        "missing_counts": {m: sum(m not in c["available"] for c in cases) for m in MODALITIES},
        "cases": cases,
    }

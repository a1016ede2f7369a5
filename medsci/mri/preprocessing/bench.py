"""Benchmark of :func:`~medsci.mri.preprocessing.stage.preprocess_case` on a synthetic BraTS-sized case against
the plain nibabel read/write floor (used by ``medsci bench``)."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from medsci.mri.cases import MODALITIES, Case
from medsci.mri.preprocessing.config import PreprocessConfig
from medsci.mri.preprocessing.stage import preprocess_case


def _synthetic_case(folder: Path, case_id: str, shape: Sequence[int], seed: int = 0) -> Case:
    """Four smooth random int16 modalities inside an ellipsoidal 'brain', LPS-like affine."""
    from scipy import ndimage

    import nibabel as nib

    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = [(s - 1) / 2 for s in shape]
    radii = [0.36 * s for s in shape]
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [(shape[0] - 1) / 2, (shape[1] - 1) / 2, -(shape[2] - 1) / 2]
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, m in enumerate(MODALITIES):
        coarse = rng.standard_normal(tuple(max(2, s // 8) for s in shape)).astype(np.float32)
        smooth = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape)], order=1)
        vol = np.where(brain, 400.0 + 100.0 * i + 120.0 * smooth, 0.0)
        path = folder / f"{case_id}-{m}.nii.gz"
        img = nib.Nifti1Image(np.clip(vol, 0, 32767).astype(np.int16), affine)
        img.header.set_qform(affine, code=1)
        nib.save(img, str(path))
        files[m] = path
    return Case(case_id=case_id, folder=folder, files=files, seg=None)


def bench_preprocessing(workdir: str | Path, shape: Sequence[int] = (240, 240, 155),
                        target_shape: Sequence[int] = (224, 224, 160), repeats: int = 3) -> dict:
    """Time :func:`preprocess_case` on one synthetic BraTS-sized case against the nibabel I/O floor.

    Both are timed ``repeats`` times, alternating, and the best run is reported (steady state: imports
    done, files in the page cache for both); the first, cold preprocessing run is reported as well.
    """
    import nibabel as nib
    import nibabel.orientations  # noqa: F401  (warm the imports preprocess_case needs)
    import scipy.ndimage  # noqa: F401

    workdir = Path(workdir)
    case = _synthetic_case(workdir / "bench_case" / "bench", "bench", shape)
    floor_dir = workdir / "io_floor"
    floor_dir.mkdir(parents=True, exist_ok=True)
    cfg = PreprocessConfig(shape=tuple(target_shape), n4=False)

    floor_times, pre_times = [], []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        for p in case.files.values():
            img = nib.load(str(p))
            data = np.asanyarray(img.dataobj)
            nib.save(nib.Nifti1Image(data, img.affine, img.header), str(floor_dir / p.name))
        floor_times.append(time.perf_counter() - t0)
        del img, data

        t0 = time.perf_counter()
        preprocess_case(case, cfg, workdir / "preprocessed")
        pre_times.append(time.perf_counter() - t0)
    pre, io_floor = min(pre_times), min(floor_times)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes, process-wide peak
    return {"preprocess_s": round(pre, 6), "io_floor_s": round(io_floor, 6),
            "ratio": round(pre / io_floor, 4) if io_floor > 0 else None,
            "preprocess_first_s": round(pre_times[0], 4),
            "peak_rss_mb": round(peak_kb / 1024.0, 1), "shape": [int(s) for s in shape],
            "target_shape": list(cfg.shape), "repeats": len(pre_times)}

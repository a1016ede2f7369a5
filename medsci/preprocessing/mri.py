"""MRI preprocessing stage: one case, all modalities on one grid, reoriented to ``cfg.orientation``,
optionally resampled to ``cfg.spacing``, brain-masked, optionally N4-corrected, clipped to in-mask
percentiles and scaled to [0, 1], then cropped/padded to ``cfg.shape`` around the brain. Writes
``<case>.npz`` (``image`` float32 [4, *shape] in :data:`MODALITIES` order, missing modalities zero;
``mask`` uint8; ``seg`` uint8 when present) and a ``<case>.json`` sidecar with all :func:`to_native`
needs to put a result back on the native grid. The concern modules of :mod:`medsci.preprocessing` do the
work; this module is the stage's public face and re-exports what its callers use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsci.errors import InputError
from medsci.io.atomic import safe_join, write_json_atomic
from medsci.io.cases import MODALITIES, Case, check_consistent_geometry
from medsci.io.volume import Volume, read_volume
from medsci.preprocessing.config import PreprocessConfig
from medsci.preprocessing.geometry import (crop_record, crop_window, extract_window, orientation_transform,
                                           reorient, reoriented_affine, resample_to_spacing, voxel_spacing)
from medsci.preprocessing.intensity import clip_window, n4, normalise_into
from medsci.preprocessing.masking import brain_mask_in_bbox, union_mask
from medsci.preprocessing.native import save_native, to_native
from medsci.preprocessing.store import SIDECAR_VERSION, load_preprocessed, write_npz
from medsci.preprocessing.summary import summarize_preprocessed

__all__ = ["PreprocessConfig", "SIDECAR_VERSION", "load_preprocessed", "preprocess_case", "save_native",
           "summarize_preprocessed", "to_native"]


def _check_seg(seg: np.ndarray, source: Path) -> None:
    if np.issubdtype(seg.dtype, np.floating) and not np.array_equal(seg, np.round(seg)):
        raise InputError("segmentation holds non-integer labels", source)
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise InputError(f"segmentation labels must lie in 0..255, got {seg.min()}..{seg.max()}", source)


def preprocess_case(case: Case, cfg: PreprocessConfig | None = None, out_dir: str | Path = ".") -> dict:
    """Preprocess one case into ``out_dir/<case_id>.npz`` + ``.json``; returns the sidecar dict."""
    cfg = cfg or PreprocessConfig()
    out_dir = Path(out_dir)
    available = [m for m in MODALITIES if m in case.files]
    if not available:
        raise InputError(f"case {case.case_id} has none of the modalities {list(MODALITIES)}", case.folder)

    vols: dict[str, Volume] = {m: read_volume(case.files[m]) for m in available}
    seg_vol = read_volume(case.seg) if case.seg is not None else None
    check_consistent_geometry({**vols, **({"seg": seg_vol} if seg_vol is not None else {})})
    ref = vols[available[0]]
    native_affine, native_shape = ref.affine, tuple(int(s) for s in ref.array.shape)
    if seg_vol is not None:
        _check_seg(seg_vol.array, seg_vol.source)

    # 1. reorientation (views only)
    ornt = orientation_transform(native_affine, cfg.orientation)
    reor_affine = reoriented_affine(native_affine, ornt, native_shape)
    arrays = {m: reorient(v.array, ornt) for m, v in vols.items()}
    seg = reorient(seg_vol.array, ornt) if seg_vol is not None else None
    reor_shape = tuple(int(s) for s in arrays[available[0]].shape)

    # 2. optional resampling: all modalities in one MONAI call, the segmentation nearest-neighbour.
    grid_affine, grid_shape = reor_affine, reor_shape
    if cfg.spacing is not None:
        stacked, grid_affine = resample_to_spacing(np.stack([arrays[m] for m in available]), reor_affine,
                                                   cfg.spacing, "bilinear")
        arrays = dict(zip(available, stacked))
        grid_shape = tuple(int(s) for s in stacked.shape[1:])
        if seg is not None:
            seg, _ = resample_to_spacing(seg[None], reor_affine, cfg.spacing, "nearest", grid_shape)
            seg = seg[0]
    if seg is not None:
        seg = np.rint(seg).astype(np.uint8) if seg.dtype != np.uint8 else seg

    # 3. brain mask. The union is taken in the arrays' own memory order (before reorientation, which is
    # only a view) because comparing flipped/transposed views into a C-ordered mask is ~10x slower.
    if cfg.spacing is None:
        raw = reorient(union_mask([vols[m].array for m in available], cfg.mask_threshold), ornt)
    else:
        raw = union_mask([arrays[m] for m in available], cfg.mask_threshold)
    if not raw.any():
        raise InputError(f"case {case.case_id}: no voxel above mask_threshold={cfg.mask_threshold} in any "
                         "modality", case.folder)
    b0, b1, mask_b = brain_mask_in_bbox(raw)
    del raw
    bbox = tuple(slice(int(s), int(e)) for s, e in zip(b0, b1))

    # 6 (geometry). Window of cfg.shape centred on the bounding box; may extend past the volume (padding).
    start, stop, (src_b, dst_w) = crop_window(b0, b1, cfg.shape)
    image = np.zeros((len(MODALITIES), *cfg.shape), dtype=np.float32)
    mask_out = np.zeros(cfg.shape, dtype=np.uint8)
    mask_out[dst_w] = mask_b[src_b]
    mask_win = mask_out[dst_w].astype(bool)
    spacing = voxel_spacing(grid_affine)

    # 4/5. per modality, only inside the bounding box, written straight into the output window.
    scaling: dict[str, dict[str, float]] = {}
    for m in available:
        region = np.asarray(arrays[m][bbox], dtype=np.float32)
        if cfg.n4:
            region = n4(region, mask_b, spacing, case.files[m])
        lo, hi = clip_window(region, mask_b, cfg.clip_percentiles)
        scaling[m] = {"lo": lo, "hi": hi}
        normalise_into(image[MODALITIES.index(m)][dst_w], region[src_b], lo, hi, mask_win)
        del region

    outputs: dict[str, np.ndarray] = {"image": image, "mask": mask_out}
    seg_counts = None
    if seg is not None:
        outputs["seg"] = seg_out = extract_window(seg, start, cfg.shape)
        labels, counts = np.unique(seg_out, return_counts=True)
        seg_counts = {str(int(k)): int(c) for k, c in zip(labels, counts) if k != 0}

    npz_path = safe_join(out_dir, f"{case.case_id}.npz")
    sidecar = {
        "version": SIDECAR_VERSION,
        "case_id": case.case_id,
        "modalities": list(MODALITIES),
        "available": available,
        "missing": [m for m in MODALITIES if m not in available],
        "sources": {m: str(Path(case.files[m]).resolve()) for m in available},
        "seg_source": None if case.seg is None else str(Path(case.seg).resolve()),
        "reference": {"modality": available[0], "path": str(Path(case.files[available[0]]).resolve())},
        "native": {
            "shape": list(native_shape),
            "affine": native_affine.tolist(),
            "orientation": ref.orientation,
            "spacing": list(ref.spacing),
            "dtype": ref.meta.get("dtype"),
        },
        "reoriented": {
            "orientation": cfg.orientation,
            "ornt": ornt.tolist(),
            "shape": list(reor_shape),
            "affine": reor_affine.tolist(),
        },
        "resampled": {
            "applied": cfg.spacing is not None,
            "spacing": list(spacing),
            "shape": list(grid_shape),
            "affine": grid_affine.tolist(),
        },
        "bbox": {"start": b0.tolist(), "stop": b1.tolist()},
        "crop": crop_record(start, stop, grid_shape, b0, b1),
        "shape": list(cfg.shape),
        "scaling": scaling,
        "mask_voxels": int(mask_b.sum()),
        "seg_voxels": seg_counts,
        "n4": cfg.n4,
        "config": cfg.to_dict(),
        "npz": npz_path.name,
    }
    # npz first: a sidecar on disk implies its arrays are complete.
    write_npz(npz_path, outputs)
    write_json_atomic(npz_path.with_suffix(".json"), sidecar)
    return sidecar

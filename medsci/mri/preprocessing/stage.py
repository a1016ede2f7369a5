"""MRI preprocessing stage: one case, all modalities on one grid, reoriented to ``cfg.orientation``,
optionally resampled to ``cfg.spacing``, brain-masked, optionally N4-corrected, clipped to in-mask
percentiles and scaled to [0, 1], then cropped/padded to ``cfg.shape`` around the brain. Writes
``<case>.npz`` (``image`` float32 [4, *shape] in :data:`MODALITIES` order, missing modalities zero;
``mask`` uint8; ``seg`` uint8 when present) and a ``<case>.json`` sidecar with all :func:`to_native`
needs to put a result back on the native grid. The concern modules of :mod:`medsci.mri.preprocessing` and
:mod:`medsci.preprocessing` do the work; this module is the stage's public face and re-exports what its
callers use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsci.errors import InputError
from medsci.io.atomic import safe_join, write_json_atomic
from medsci.mri.cases import MODALITIES, Case, check_consistent_geometry
from medsci.io.volume import Volume, read_volume
from medsci.mri.preprocessing.config import PreprocessConfig
from medsci.preprocessing.geometry import (crop_record, crop_window, extract_window, orientation_transform,
                                           reorient, reoriented_affine, resample_to_spacing, voxel_spacing)
from medsci.mri.preprocessing.intensity import clip_window, n4, normalise_into
from medsci.mri.preprocessing.masking import brain_mask_in_bbox, union_mask
from medsci.mri.preprocessing.native import save_native, to_native
from medsci.preprocessing.store import SIDECAR_VERSION, load_preprocessed, write_npz
from medsci.mri.preprocessing.summary import summarize_preprocessed

__all__ = ["PreprocessConfig", "SIDECAR_VERSION", "load_preprocessed", "preprocess_case", "save_native",
           "summarize_preprocessed", "to_native"]


# BraTS labels (2023 numbering, as medsci.tasks.synthesis.segmentation scores them): 1 necrotic core, 2 oedema,
# 3 enhancing tumour. BraTS 2018-2021 numbered the enhancing tumour 4 (3 unused): a well-known one-to-one
# renumbering, so such a segmentation is mapped 4 -> 3 with a note in the sidecar's warnings. Any other label
# (a 255 "segmentation", a label map of another atlas) is refused.
SEG_LABELS = (0, 1, 2, 3)
BRATS2021_ET, BRATS_ET = 4, 3


def _check_seg(seg: np.ndarray, source: Path, warnings: list[str]) -> np.ndarray:
    """``seg`` with BraTS-2021's label 4 renumbered to 3 (noted in ``warnings``); refuses other labels."""
    if np.issubdtype(seg.dtype, np.floating) and not np.array_equal(seg, np.round(seg)):
        raise InputError("segmentation holds non-integer labels", source)
    found = [int(v) for v in np.unique(seg)]
    outside = [v for v in found if v not in (*SEG_LABELS, BRATS2021_ET)]
    if outside or (BRATS2021_ET in found and BRATS_ET in found):
        why = (f"labels {outside} are outside" if outside
               else "labels 3 and 4 together (BraTS-2023 and BraTS-2021 enhancing tumour) do not fit")
        raise InputError(f"segmentation {why} the BraTS label set 0, 1, 2, 3 (1 necrotic core, 2 oedema, "
                         f"3 enhancing tumour; found {found}); a BraTS-2021 label 4 without 3 is read as 3", source)
    if BRATS2021_ET in found:
        warnings.append(f"segmentation {source.name}: BraTS-2021 label 4 (enhancing tumour) mapped to 3, the "
                        "BraTS-2023 numbering")
        seg = np.where(seg == BRATS2021_ET, BRATS_ET, seg)
    return seg


def _fmt(values) -> str:
    return "x".join(f"{v:.3g}" for v in values)


def check_spacing(native: tuple[float, ...], cfg: PreprocessConfig, case: Case, warnings: list[str],
                  contrast: str | None = None, where=None) -> bool:
    """Whether the case must be resampled to ``cfg.spacing``; refuses voxels far coarser than it. ``contrast``:
    a contrast other than the reference (the output grid), checked before it is resampled onto it."""
    if cfg.spacing is None:
        return False
    ratio = np.array(native) / np.array(cfg.spacing)
    voxels = f"{contrast} voxels" if contrast else "voxels"
    if ratio.max() > cfg.max_upsampling:
        raise InputError(f"case {case.case_id}: {voxels} of {_fmt(native)} mm are more than {cfg.max_upsampling:g}x "
                         f"coarser than the model's {_fmt(cfg.spacing)} mm; the model would see detail the scan "
                         "does not hold", where or case.folder)
    if ratio.max() > cfg.warn_upsampling:
        warnings.append(f"{voxels} of {_fmt(native)} mm are coarser than the model's {_fmt(cfg.spacing)} mm: "
                        "the synthesis is made from upsampled inputs")
    elif ratio.min() < 1.0 / cfg.warn_upsampling and contrast is None:
        warnings.append(f"the synthesis has the model's resolution ({_fmt(cfg.spacing)} mm), interpolated onto "
                        f"the {_fmt(native)} mm input grid")
    return bool(np.any(np.abs(ratio - 1.0) > cfg.spacing_tolerance))


def oriented_spacing(vol: Volume, orientation: str) -> tuple[float, ...]:
    """Voxel size of ``vol`` along the axes of ``orientation`` (so a sagittal and an axial series compare)."""
    ornt = orientation_transform(vol.affine, orientation)
    return voxel_spacing(reoriented_affine(vol.affine, ornt, vol.array.shape))


def check_fit(mask_b: np.ndarray, b0: np.ndarray, b1: np.ndarray, mask_win: np.ndarray, grid_shape, spacing,
              cfg: PreprocessConfig, case: Case, warnings: list[str]) -> dict:
    """Refuse a case whose brain the model grid cuts by more than ``cfg.max_brain_cut``; note milder cuts
    and a brain that touches the edge of the scan (a field of view that already cut it)."""
    total = int(mask_b.sum())
    cut = 1.0 - int(mask_win.sum()) / max(total, 1)
    brain_mm = (b1 - b0) * np.array(spacing)
    grid_mm = np.array(cfg.shape) * np.array(spacing)
    if cut > cfg.max_brain_cut:
        raise InputError(f"case {case.case_id}: the brain ({_fmt(brain_mm)} mm) does not fit the model grid "
                         f"({_fmt(cfg.shape)} voxels of {_fmt(spacing)} mm = {_fmt(grid_mm)} mm): {100 * cut:.1f} % "
                         "of it would be cut off (set preprocess.spacing coarser or preprocess.shape larger)",
                         case.folder)
    if cut > 0:
        warnings.append(f"{100 * cut:.2f} % of the brain lies outside the model grid and is left empty")
    at_edge = [f"{'lower' if side == 0 else 'upper'} edge of axis {axis}"
               for axis in range(3) for side, hit in ((0, b0[axis] == 0), (1, b1[axis] == grid_shape[axis])) if hit]
    if at_edge:
        warnings.append("the brain touches the " + ", ".join(at_edge) + " of the scan: the field of view may cut it")
    return {"brain_cut_fraction": round(cut, 6), "brain_extent_mm": [round(float(v), 2) for v in brain_mm],
            "grid_extent_mm": [round(float(v), 2) for v in grid_mm], "fov_touches_brain": bool(at_edge)}


def align_to_reference(vols: dict[str, Volume], reference: str, warnings: list[str], *, register: bool = False,
                       threshold: float = 0.0, min_overlap: float = 0.5) -> tuple[dict[str, Volume], dict]:
    """Every volume on the grid of ``vols[reference]``: in scanner coordinates, or rigidly registered onto it
    when ``register`` (:mod:`.coregister`), and checked to line up with it; returns the volumes and what
    registration did. Refuses a volume covering less than ``min_overlap`` of the reference's field of view."""
    from medsci.mri.preprocessing.coregister import MOVED_DEG, MOVED_MM, coregister

    ref = vols[reference]
    for name, vol in vols.items():
        share = fov_overlap(ref, vol)
        if share < min_overlap:
            raise InputError(f"{name} covers only {100 * share:.0f} % of the {reference} field of view: the "
                             "contrasts do not overlap in space", vol.source)
        if share < 0.95:
            warnings.append(f"{name} covers {100 * share:.0f} % of the {reference} field of view; the rest is empty")
    out, report = coregister(vols, reference, register=register, threshold=threshold)
    for name, vol in vols.items():
        entry = report["contrasts"].get(name, {})
        if entry.get("applied") and (entry["rotation_deg"] > MOVED_DEG
                                     or np.linalg.norm(entry["shift_mm"]) > MOVED_MM):
            warnings.append(f"{name} was registered onto {reference}: rotated {entry['rotation_deg']:.1f} degrees, "
                            f"shifted {np.linalg.norm(entry['shift_mm']):.1f} mm (patient motion between series?)")
        elif name != reference and not (vol.array.shape == ref.array.shape
                                        and np.allclose(vol.affine, ref.affine, atol=1e-3, rtol=0)):
            warnings.append(f"{name} was resampled onto the {reference} grid")
    return out, report


def fov_overlap(ref: Volume, other: Volume, samples: int = 12) -> float:
    """Share of the reference's field of view (a lattice of points in it) inside the other volume's."""
    axes = [np.linspace(0, s - 1, samples) for s in ref.array.shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ ref.affine[:3, :3].T + ref.affine[:3, 3]
    inv = np.linalg.inv(other.affine)
    ijk_other = world @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((ijk_other >= -0.5) & (ijk_other <= np.array(other.array.shape) - 0.5), axis=1)
    return float(inside.mean())


def interior(mask: np.ndarray, voxels: int) -> np.ndarray:
    """``mask`` eroded by ``voxels`` (the mask itself when that would leave under half of it)."""
    if voxels <= 0:
        return mask
    from scipy import ndimage

    inner = ndimage.binary_erosion(mask, iterations=voxels)
    return inner if inner.sum() >= 0.5 * mask.sum() else mask


def preprocess_case(case: Case, cfg: PreprocessConfig | None = None, out_dir: str | Path = ".", *,
                    volumes: dict[str, Volume] | None = None, align: bool = False, register: bool = False) -> dict:
    """Preprocess one case into ``out_dir/<case_id>.npz`` + ``.json``; returns the sidecar dict.

    ``volumes``: the case's volumes already read (e.g. DICOM series), by modality. ``align``: contrasts on
    different grids (usual for clinical DICOM) are resampled onto the first one's grid in scanner space
    (``register``: rigidly registered onto it) instead of refused, each checked for its voxel size first; a
    contrast that barely overlaps it or does not line up with it is refused, and the brain mask comes from
    the first one alone. Raises InputError when the brain does
    not fit ``cfg.shape`` or the voxels are far coarser than ``cfg.spacing``; milder misfits are listed under
    ``warnings`` in the sidecar.
    """
    cfg = cfg or PreprocessConfig()
    out_dir = Path(out_dir)
    available = [m for m in MODALITIES if m in (volumes if volumes is not None else case.files)]
    if not available:
        raise InputError(f"case {case.case_id} has none of the modalities {list(MODALITIES)}", case.folder)

    vols: dict[str, Volume] = (dict(volumes) if volumes is not None
                               else {m: read_volume(case.files[m]) for m in available})
    seg_vol = read_volume(case.seg) if case.seg is not None else None
    warnings: list[str] = []
    alignment = None
    if align:
        for m in available[1:]:  # each contrast at its own voxel size: resampling would hide a coarse one
            check_spacing(oriented_spacing(vols[m], cfg.orientation), cfg, case, warnings, m, vols[m].source)
        vols, alignment = align_to_reference(vols, available[0], warnings, register=register,
                                             threshold=cfg.mask_threshold)
    check_consistent_geometry({**vols, **({"seg": seg_vol} if seg_vol is not None else {})})
    ref = vols[available[0]]
    native_affine, native_shape = ref.affine, tuple(int(s) for s in ref.array.shape)
    seg_native = _check_seg(seg_vol.array, seg_vol.source, warnings) if seg_vol is not None else None

    # 1. reorientation (views only)
    ornt = orientation_transform(native_affine, cfg.orientation)
    reor_affine = reoriented_affine(native_affine, ornt, native_shape)
    arrays = {m: reorient(v.array, ornt) for m, v in vols.items()}
    seg = reorient(seg_native, ornt) if seg_native is not None else None
    reor_shape = tuple(int(s) for s in arrays[available[0]].shape)

    # 2. optional resampling: all modalities in one MONAI call, the segmentation nearest-neighbour.
    grid_affine, grid_shape = reor_affine, reor_shape
    resample = check_spacing(voxel_spacing(reor_affine), cfg, case, warnings)
    if resample:
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
    # only a view) because comparing flipped/transposed views into a C-ordered mask is ~10x slower. Aligned
    # contrasts give the reference's mask alone: a union would grow by every other contrast's interpolation
    # blur and thicker slices, into voxels where the reference is 0: its clip window collapses there.
    masked = available[:1] if align else available
    if not resample:
        raw = reorient(union_mask([vols[m].array for m in masked], cfg.mask_threshold), ornt)
    else:
        raw = union_mask([arrays[m] for m in masked], cfg.mask_threshold)
    if not raw.any():
        raise InputError(f"case {case.case_id}: no voxel above mask_threshold={cfg.mask_threshold} in any "
                         "modality", case.folder)
    b0, b1, mask_b = brain_mask_in_bbox(raw)
    del raw
    # A brain fills at most about half of its bounding box (an ellipsoid: 52 %), and far less of a scan; a
    # "brain mask" covering most of the scan means a head with skull or a noisy background, not a brain.
    covered = float(mask_b.sum()) / float(np.prod(grid_shape))
    if covered > cfg.max_mask_fraction:
        raise InputError(f"case {case.case_id}: {100 * covered:.0f} % of the scan lies above mask_threshold="
                         f"{cfg.mask_threshold:g}; the model expects skull-stripped brains on a zero background "
                         "(strip the skull first, e.g. with SynthStrip or HD-BET)", case.folder)
    bbox = tuple(slice(int(s), int(e)) for s, e in zip(b0, b1))

    # 6 (geometry). Window of cfg.shape centred on the bounding box; may extend past the volume (padding).
    start, stop, (src_b, dst_w) = crop_window(b0, b1, cfg.shape)
    image = np.zeros((len(MODALITIES), *cfg.shape), dtype=np.float32)
    mask_out = np.zeros(cfg.shape, dtype=np.uint8)
    mask_out[dst_w] = mask_b[src_b]
    mask_win = mask_out[dst_w].astype(bool)
    spacing = voxel_spacing(grid_affine)
    fit = check_fit(mask_b, b0, b1, mask_win, grid_shape, spacing, cfg, case, warnings)

    # 4/5. per modality, only inside the bounding box, written straight into the output window.
    scaling: dict[str, dict[str, float]] = {}
    stats_mask = interior(mask_b, cfg.stats_erosion)
    for m in available:
        region = np.asarray(arrays[m][bbox], dtype=np.float32)
        if not np.any(region[mask_b]):  # an empty export: would train and score as a real, black contrast
            raise InputError(f"case {case.case_id}: {m} is zero everywhere in the brain (no signal); replace the "
                             "file, or remove it so that the contrast counts as missing", vols[m].source or case.folder)
        if cfg.n4:
            region = n4(region, mask_b, spacing, case.files[m])
        lo, hi = clip_window(region, stats_mask, cfg.clip_percentiles)
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
            "applied": resample,
            "spacing": list(spacing),
            "shape": list(grid_shape),
            "affine": grid_affine.tolist(),
        },
        "bbox": {"start": b0.tolist(), "stop": b1.tolist()},
        "crop": crop_record(start, stop, grid_shape, b0, b1),
        "shape": list(cfg.shape),
        "scaling": scaling,
        "mask_voxels": int(mask_b.sum()),
        "fit": fit,
        "warnings": warnings,
        "alignment": alignment,
        "seg_voxels": seg_counts,
        "n4": cfg.n4,
        "config": cfg.to_dict(),
        "npz": npz_path.name,
    }
    # npz first: a sidecar on disk implies its arrays are complete.
    write_npz(npz_path, outputs)
    write_json_atomic(npz_path.with_suffix(".json"), sidecar)
    return sidecar

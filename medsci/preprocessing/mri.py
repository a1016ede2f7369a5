"""Multi-modal brain MRI preprocessing with an exact way back to the native grid.

Pipeline for one case (all modalities share one grid, checked first):

1. reorient to ``cfg.orientation`` (axis permutation + flips: exact, done with numpy views),
2. optionally resample to ``cfg.spacing`` (MONAI ``Spacing``; segmentation nearest-neighbour),
3. brain mask = union over present modalities of voxels > ``mask_threshold``, holes filled,
4. optional N4 bias-field correction (SimpleITK) inside the mask,
5. per modality: clip to percentiles computed *inside the mask*, scale to [0, 1], zero outside the mask,
6. crop/pad to ``cfg.shape`` centred on the mask's bounding box.

Outputs ``<case>.npz`` (``image`` float32 [4, *shape] in :data:`MODALITIES` order, missing modalities
zero-filled; ``mask`` uint8; ``seg`` uint8 when present) and a ``<case>.json`` sidecar recording every
parameter needed by :func:`to_native` to put a (synthesized) result back on the native grid.
"""

from __future__ import annotations

import json
import resource
import time
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from medsci.config_section import ConfigSection
from medsci.errors import ConfigError, InputError
from medsci.io.atomic import atomic_path, safe_join, write_json_atomic
from medsci.io.cases import MODALITIES, Case, check_consistent_geometry
from medsci.io.volume import Volume, read_volume, write_nifti

SIDECAR_VERSION = 1
_AXIS_PAIRS = ({"L", "R"}, {"A", "P"}, {"S", "I"})


# ----------------------------------------------------------------------------------------------- config
@dataclass
class PreprocessConfig(ConfigSection):
    """How cases are brought to a common network input (the ``synthesis.preprocess`` config section).

    A :class:`ConfigSection` so the project config builds it from YAML; errors name the section.
    """

    shape: tuple[int, int, int] = (64, 72, 64)
    spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    n4: bool = False
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    mask_threshold: float = 0.0
    divisor: int = 8

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, where: str = "") -> None:
        """Normalise types and check values; ConfigError (naming the section ``where``) if wrong."""
        def fail(msg: str):
            raise ConfigError(f"{where or 'preprocess'}: {msg}")

        try:
            self.divisor = int(self.divisor)
            shape = tuple(int(s) for s in self.shape)
        except (TypeError, ValueError):
            fail(f"shape and divisor must be integers, got shape={self.shape!r} divisor={self.divisor!r}")
        if self.divisor < 1:
            fail(f"divisor must be >= 1, got {self.divisor}")
        if len(shape) != 3 or any(s < 1 for s in shape):
            fail(f"shape must be 3 positive integers, got {list(shape)}")
        if any(s % self.divisor for s in shape):
            fail(f"every shape entry must be divisible by {self.divisor} (network downsampling), "
                 f"got {list(shape)}")
        self.shape = shape  # type: ignore[assignment]
        if self.spacing is not None:
            sp = self.spacing
            try:
                sp = (float(sp),) * 3 if np.isscalar(sp) else tuple(float(s) for s in sp)  # type: ignore
            except (TypeError, ValueError):
                fail(f"spacing must be 1 or 3 numbers, got {self.spacing!r}")
            if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
                fail(f"spacing must be 1 or 3 positive numbers, got {self.spacing!r}")
            self.spacing = sp  # type: ignore[assignment]
        codes = str(self.orientation).upper()
        if (len(codes) != 3 or not set(codes) <= set("LRAPSI")
                or any(sum(c in pair for c in codes) != 1 for pair in _AXIS_PAIRS)):
            fail(f"orientation must be 3 axis codes like 'RAS' or 'LPS', got {self.orientation!r}")
        self.orientation = codes
        try:
            lo, hi = (float(c) for c in self.clip_percentiles)
        except (TypeError, ValueError):
            fail(f"clip_percentiles must be 2 numbers, got {self.clip_percentiles!r}")
        if not 0.0 <= lo < hi <= 100.0:
            fail(f"clip_percentiles must satisfy 0 <= lo < hi <= 100, got {[lo, hi]}")
        self.clip_percentiles = (lo, hi)
        self.n4 = bool(self.n4)
        self.mask_threshold = float(self.mask_threshold)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, where: str = "") -> "PreprocessConfig":
        d = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where or 'preprocess'}: unknown keys {unknown}; expected some of {sorted(known)}")
        cfg = cls.__new__(cls)
        for f in fields(cls):
            setattr(cfg, f.name, d.get(f.name, f.default))
        cfg.validate(where)
        return cfg

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing": None if self.spacing is None else list(self.spacing),
            "orientation": self.orientation,
            "n4": self.n4,
            "clip_percentiles": list(self.clip_percentiles),
            "mask_threshold": self.mask_threshold,
            "divisor": self.divisor,
        }


# ------------------------------------------------------------------------------------- geometry helpers
def _orientation_transform(affine: np.ndarray, axcodes: str) -> np.ndarray:
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    return ornt_transform(io_orientation(affine), axcodes2ornt(tuple(axcodes)))


def _invert_ornt(ornt: np.ndarray) -> np.ndarray:
    """Inverse of a nibabel orientation transform (input axis i -> output axis ornt[i,0], flip ornt[i,1])."""
    ornt = np.asarray(ornt, dtype=np.float64)
    inv = np.empty_like(ornt)
    for i, (j, flip) in enumerate(ornt):
        inv[int(j)] = (i, flip)
    return inv


def _reorient(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    from nibabel.orientations import apply_orientation

    # apply_orientation only flips and transposes: numpy views, no copy of the volume.
    return apply_orientation(array, ornt)


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open bounding box [start, stop) of a non-empty boolean mask."""
    start, stop = [], []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=others))
        start.append(int(idx[0]))
        stop.append(int(idx[-1]) + 1)
    return np.array(start), np.array(stop)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed background, like scipy.ndimage.binary_fill_holes but in one labelling pass.

    binary_fill_holes iterates a dilation until convergence, which takes seconds on a 240^3 volume;
    labelling the background and keeping the components that touch the border is the same result
    (both use 6-connectivity for the background).
    """
    from scipy import ndimage

    labels, n = ndimage.label(~mask)
    if n == 0:
        return mask
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    outside = np.zeros(n + 1, dtype=bool)
    for face in faces:
        outside[np.unique(face)] = True
    is_hole = ~outside
    is_hole[0] = False  # label 0 is the foreground itself
    return mask | is_hole[labels]


def _union_mask(arrays: Sequence[np.ndarray], threshold: float) -> np.ndarray:
    """Voxels above ``threshold`` in any array, allocated in the arrays' memory order."""
    raw = np.zeros_like(arrays[0], dtype=bool)
    for a in arrays:
        raw |= a > threshold
    return raw


def _overlap(a0: Sequence[int], a1: Sequence[int], b0: Sequence[int], b1: Sequence[int]):
    """Slices of the overlap of boxes A and B, in A's and in B's local coordinates."""
    lo = np.maximum(a0, b0)
    hi = np.minimum(a1, b1)
    if np.any(hi <= lo):
        return None
    in_a = tuple(slice(int(l - s), int(h - s)) for l, h, s in zip(lo, hi, a0))
    in_b = tuple(slice(int(l - s), int(h - s)) for l, h, s in zip(lo, hi, b0))
    return in_a, in_b


def _n4(region: np.ndarray, mask: np.ndarray, spacing: Sequence[float], source: Path) -> np.ndarray:
    """N4 bias-field correction of a float32 region inside ``mask``, fitted on a shrunk copy for speed."""
    import SimpleITK as sitk

    fit_mask = mask & (region > 0)  # N4 works on log intensities
    if not fit_mask.any():
        return region
    # SimpleITK arrays are (k, j, i): transpose so the physical spacing lines up.
    img = sitk.GetImageFromArray(np.ascontiguousarray(region.T))
    img.SetSpacing([float(s) for s in spacing])
    msk = sitk.GetImageFromArray(np.ascontiguousarray(fit_mask.T.astype(np.uint8)))
    msk.CopyInformation(img)
    factor = int(max(1, min(4, min(region.shape) // 16)))
    try:
        corrector = sitk.N4BiasFieldCorrectionImageFilter()
        corrector.SetMaximumNumberOfIterations([50, 50, 30, 20])
        corrector.Execute(sitk.Shrink(img, [factor] * 3), sitk.Shrink(msk, [factor] * 3))
        log_bias = sitk.GetArrayFromImage(corrector.GetLogBiasFieldAsImage(img)).T
    except RuntimeError as err:
        raise InputError(f"N4 bias correction failed: {str(err).splitlines()[-1]}", source) from None
    return (region / np.exp(log_bias)).astype(np.float32, copy=False)


# ------------------------------------------------------------------------------------------ resampling
def _meta_tensor(array: np.ndarray, affine: np.ndarray):
    import torch
    from monai.data import MetaTensor

    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)),
                      affine=torch.as_tensor(affine, dtype=torch.float64))


def _resample_to_spacing(channels: np.ndarray, affine: np.ndarray, spacing: Sequence[float],
                         mode: str, spatial_shape: Sequence[int] | None = None):
    """MONAI Spacing on a channel-first stack; returns (array float32, new affine float64)."""
    from monai.transforms import Spacing

    out = Spacing(pixdim=tuple(spacing), mode=mode, padding_mode="border", dtype=np.float32)(
        _meta_tensor(channels, affine), output_spatial_shape=spatial_shape)
    return (np.asarray(out.as_tensor().numpy(), dtype=np.float32),
            np.asarray(out.affine.numpy(), dtype=np.float64))


def _resample_to_grid(array: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray,
                      dst_shape: Sequence[int], mode: str) -> np.ndarray:
    """MONAI SpatialResample of one 3D array from one grid onto another (the inverse of Spacing)."""
    import torch
    from monai.transforms import SpatialResample

    out = SpatialResample(mode=mode, padding_mode="border", dtype=np.float32)(
        _meta_tensor(array[None], src_affine), dst_affine=torch.as_tensor(dst_affine, dtype=torch.float64),
        spatial_size=tuple(int(s) for s in dst_shape))
    return np.asarray(out.as_tensor().numpy()[0], dtype=np.float32)


# ----------------------------------------------------------------------------------------- npz writing
def _write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez-compatible, uncompressed, but byte-reproducible (np.savez stamps the current time
    into every zip entry) and atomic."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED,
                                                   allowZip64=True) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)


def _check_seg(seg: np.ndarray, source: Path) -> None:
    if np.issubdtype(seg.dtype, np.floating) and not np.array_equal(seg, np.round(seg)):
        raise InputError("segmentation holds non-integer labels", source)
    if seg.size and (seg.min() < 0 or seg.max() > 255):
        raise InputError(f"segmentation labels must lie in 0..255, got {seg.min()}..{seg.max()}", source)


# ------------------------------------------------------------------------------------------ preprocess
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
    ornt = _orientation_transform(native_affine, cfg.orientation)
    from nibabel.orientations import inv_ornt_aff

    reor_affine = native_affine @ inv_ornt_aff(ornt, native_shape)
    arrays = {m: _reorient(v.array, ornt) for m, v in vols.items()}
    seg = _reorient(seg_vol.array, ornt) if seg_vol is not None else None
    reor_shape = tuple(int(s) for s in arrays[available[0]].shape)

    # 2. optional resampling: all modalities in one MONAI call, the segmentation nearest-neighbour.
    grid_affine, grid_shape = reor_affine, reor_shape
    if cfg.spacing is not None:
        stacked, grid_affine = _resample_to_spacing(np.stack([arrays[m] for m in available]), reor_affine,
                                                    cfg.spacing, "bilinear")
        arrays = dict(zip(available, stacked))
        grid_shape = tuple(int(s) for s in stacked.shape[1:])
        if seg is not None:
            seg, _ = _resample_to_spacing(seg[None], reor_affine, cfg.spacing, "nearest", grid_shape)
            seg = seg[0]
    if seg is not None:
        seg = np.rint(seg).astype(np.uint8) if seg.dtype != np.uint8 else seg

    # 3. brain mask. The union is taken in the arrays' own memory order (before reorientation, which is
    # only a view) because comparing flipped/transposed views into a C-ordered mask is ~10x slower.
    if cfg.spacing is None:
        raw = _reorient(_union_mask([vols[m].array for m in available], cfg.mask_threshold), ornt)
    else:
        raw = _union_mask([arrays[m] for m in available], cfg.mask_threshold)
    if not raw.any():
        raise InputError(f"case {case.case_id}: no voxel above mask_threshold={cfg.mask_threshold} in any "
                         "modality", case.folder)
    b0, b1 = _bbox(raw)
    bbox = tuple(slice(int(s), int(e)) for s, e in zip(b0, b1))
    # Hole filling only needs the bounding box: outside it everything is background connected to the
    # border, so a background component touching the box face is not a hole.
    mask_b = _fill_holes(np.ascontiguousarray(raw[bbox]))
    del raw

    # 6 (geometry). Window of cfg.shape centred on the bounding box; may extend past the volume (padding).
    out_shape = np.array(cfg.shape)
    start = (b0 + b1 - out_shape) // 2
    stop = start + out_shape
    bbox_in_win = _overlap(b0, b1, start, stop)  # (slices in bbox coords, slices in window coords)
    if bbox_in_win is None:  # cannot happen: the window contains the bbox centre
        raise AssertionError("crop window misses the brain")
    src_b, dst_w = bbox_in_win

    image = np.zeros((len(MODALITIES), *cfg.shape), dtype=np.float32)
    mask_out = np.zeros(cfg.shape, dtype=np.uint8)
    mask_out[dst_w] = mask_b[src_b]
    mask_win = mask_out[dst_w].astype(bool)
    spacing = tuple(float(s) for s in np.sqrt((grid_affine[:3, :3] ** 2).sum(axis=0)))

    scaling: dict[str, dict[str, float]] = {}
    p_lo, p_hi = cfg.clip_percentiles
    for m in available:
        region = np.asarray(arrays[m][bbox], dtype=np.float32)
        if cfg.n4:
            region = _n4(region, mask_b, spacing, case.files[m])
        lo, hi = (float(v) for v in np.percentile(region[mask_b], [p_lo, p_hi]))
        if not hi > lo:  # flat modality: keep the map invertible
            hi = lo + 1.0
        scaling[m] = {"lo": lo, "hi": hi}
        # 4/5. scale in place inside the destination slice of the output: no extra full-size copies.
        dst = image[MODALITIES.index(m)][dst_w]
        np.subtract(region[src_b], np.float32(lo), out=dst)
        dst *= np.float32(1.0 / (hi - lo))
        np.clip(dst, 0.0, 1.0, out=dst)
        dst[~mask_win] = 0.0
        del region

    outputs: dict[str, np.ndarray] = {"image": image, "mask": mask_out}
    seg_counts = None
    if seg is not None:
        seg_out = np.zeros(cfg.shape, dtype=np.uint8)
        win_in_grid = _overlap(start, stop, np.zeros(3, int), np.array(grid_shape))
        if win_in_grid is not None:
            seg_out[win_in_grid[0]] = seg[win_in_grid[1]]
        outputs["seg"] = seg_out
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
        # Window of the output inside the (resampled) grid; negative start / stop past the grid = padding.
        "crop": {
            "start": start.tolist(),
            "stop": stop.tolist(),
            "pad_before": np.maximum(-start, 0).tolist(),
            "pad_after": np.maximum(stop - np.array(grid_shape), 0).tolist(),
            "brain_cropped": bool(np.any(b0 < start) or np.any(b1 > stop)),
        },
        "shape": list(cfg.shape),
        "scaling": scaling,
        "mask_voxels": int(mask_b.sum()),
        "seg_voxels": seg_counts,
        "n4": cfg.n4,
        "config": cfg.to_dict(),
        "npz": npz_path.name,
    }
    # npz first: a sidecar on disk implies its arrays are complete.
    _write_npz(npz_path, outputs)
    write_json_atomic(npz_path.with_suffix(".json"), sidecar)
    return sidecar


def load_preprocessed(npz_path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of ``<case>.npz`` (read fully, no pickle) and its ``<case>.json`` sidecar."""
    npz_path = Path(npz_path)
    json_path = npz_path.with_suffix(".json")
    for p in (npz_path, json_path):
        if not p.is_file():
            raise InputError("preprocessed file not found", p)
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as err:  # BadZipFile, ValueError (pickled object), EOFError...
        raise InputError(f"cannot read preprocessed arrays ({type(err).__name__}: {err})", npz_path) from None
    try:
        sidecar = json.loads(json_path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read sidecar ({err})", json_path) from None
    for key in ("image", "mask"):
        if key not in arrays:
            raise InputError(f"missing array {key!r}", npz_path)
    if not isinstance(sidecar, dict) or sidecar.get("version") != SIDECAR_VERSION:
        raise InputError(f"not a medsci preprocessing sidecar (version {SIDECAR_VERSION})", json_path)
    return arrays, sidecar


# ---------------------------------------------------------------------------------------- back to native
def _reference_header(sidecar: Mapping) -> Any:
    """Header of the reference NIfTI (read lazily, no voxel data); None if it is gone or not NIfTI."""
    import nibabel as nib

    path = Path(sidecar["reference"]["path"])
    if not path.name.lower().endswith((".nii", ".nii.gz")) or not path.is_file():
        return None
    try:
        return nib.load(str(path)).header.copy()
    except Exception:
        return None


def to_native(array: np.ndarray, sidecar: Mapping, modality: str | None = None, *,
              mask: np.ndarray | None = None, interpolation: str | None = None) -> Volume:
    """Map an array of the preprocessed shape back onto the case's native grid.

    Undoes crop/pad, resampling and reorientation. If ``modality`` was available for this case its
    intensity scaling is undone (x*(hi-lo)+lo); a synthesized (missing) modality keeps the [0, 1] scale.
    ``mask`` (the preprocessed mask) zeroes voxels outside the brain after unscaling, as in the input.
    ``interpolation`` ("linear"/"nearest") only matters with resampling; default: nearest for integer
    arrays (labels), linear otherwise.
    """
    arr = np.asarray(array)
    shape = tuple(sidecar["shape"])
    if arr.shape != shape:
        raise InputError(f"array shape {arr.shape} does not match the preprocessed shape {shape}",
                         sidecar.get("npz"))
    is_label = interpolation == "nearest" or (interpolation is None and arr.dtype.kind in "biu")
    work_dtype = arr.dtype if is_label else np.float32

    # Intensity first: linear interpolation commutes with an affine intensity map.
    if not is_label:
        arr = arr.astype(np.float32, copy=True)
        if modality is not None and modality in sidecar["scaling"]:
            lo, hi = sidecar["scaling"][modality]["lo"], sidecar["scaling"][modality]["hi"]
            arr *= np.float32(hi - lo)
            arr += np.float32(lo)
        if mask is not None:
            if np.shape(mask) != shape:
                raise InputError(f"mask shape {np.shape(mask)} does not match {shape}", sidecar.get("npz"))
            arr[~np.asarray(mask, dtype=bool)] = 0.0

    # Undo crop/pad: paste the window into the (resampled) grid, zeros elsewhere.
    grid_shape = tuple(sidecar["resampled"]["shape"])
    start = np.array(sidecar["crop"]["start"])
    grid = np.zeros(grid_shape, dtype=work_dtype)
    ov = _overlap(start, start + np.array(shape), np.zeros(3, int), np.array(grid_shape))
    if ov is not None:
        grid[ov[1]] = arr[ov[0]]

    # Undo resampling.
    reor = sidecar["reoriented"]
    if sidecar["resampled"]["applied"]:
        out = _resample_to_grid(grid.astype(np.float32, copy=False), np.array(sidecar["resampled"]["affine"]),
                                np.array(reor["affine"]), reor["shape"], "nearest" if is_label else "bilinear")
        grid = np.rint(out).astype(work_dtype) if is_label else out

    # Undo reorientation (exact permutation/flips).
    native = np.ascontiguousarray(_reorient(grid, _invert_ornt(np.array(reor["ornt"]))))
    if native.shape != tuple(sidecar["native"]["shape"]):  # the sidecar does not belong to this pipeline
        raise InputError(f"restored shape {native.shape} != native {tuple(sidecar['native']['shape'])}",
                         sidecar.get("npz"))
    return Volume(array=native, affine=np.array(sidecar["native"]["affine"], dtype=np.float64), source=None,
                  header=_reference_header(sidecar),
                  meta={"format": "nifti", "dtype": str(native.dtype), "modality": modality,
                        "reference": sidecar["reference"]["path"]})


def save_native(array: np.ndarray, sidecar: Mapping, path: str | Path, modality: str | None = None, *,
                mask: np.ndarray | None = None, interpolation: str | None = None,
                dtype: Any = None) -> Path:
    """:func:`to_native` then an atomic NIfTI write with the native affine and the reference header."""
    path = Path(path)
    inputs = set(sidecar.get("sources", {}).values()) | {sidecar.get("seg_source")}
    if str(path.resolve()) in inputs:
        raise InputError("refusing to overwrite an input volume", path)
    vol = to_native(array, sidecar, modality, mask=mask, interpolation=interpolation)
    if dtype is None:
        dtype = np.uint8 if vol.array.dtype.kind in "biu" else np.float32
    return write_nifti(path, vol.array, vol.affine, vol.header, dtype=dtype)


# ------------------------------------------------------------------------------------------- summarize
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


# ------------------------------------------------------------------------------------------------ bench
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

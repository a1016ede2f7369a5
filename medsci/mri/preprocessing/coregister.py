"""Bring the contrasts of one clinical case onto its reference contrast and check that they line up.

Series of one session share a scanner frame of reference, but a patient moves between series and a header can
be wrong (a shifted origin, a left-right flip). Each contrast is optionally registered rigidly onto the
reference (Mattes mutual information, :func:`medsci.preprocessing.registration.register_to` on copies
block-averaged to about :data:`REGISTRATION_MM` so a case takes seconds on one CPU thread; fixed sampling seed,
so reruns give the same bytes), then resampled onto the reference grid with one interpolation. Whatever was
done, the result must pass :func:`check_alignment`: normalised mutual information with the reference over the
reference's brain, and a mirror test for left-right flips. Thresholds: docs/clinical.md.
"""

from __future__ import annotations

import numpy as np

from medsci.errors import InputError
from medsci.io.voxels import Volume

# Similarity is normalised mutual information (H(a) + H(b)) / H(a, b) over the reference's brain (dilated 2
# voxels), 32 bins: 2 for identical images, 1 for independent ones. Three tests, measured on demo cases
# (docs/clinical.md: aligned pairs 1.21-1.30, 40 mm shifts 1.02-1.04, flips 1.11-1.13):
MIN_NMI = 1.05  # below: nothing of the reference's anatomy in the contrast (4 degrees of motion at 2 mm: 1.07)
# The contrast moved so its brain centre lies on the reference's (no rotation) matches better by more than this:
# it is shifted (aligned: 0, 3 degrees + 3 mm of motion: <= 0.04, 40 mm: >= 0.18).
SHIFT_MARGIN = 0.10
# Its mirror image (left-right, centred the same way) matches better by more than this: it is flipped (aligned or
# moved a few degrees: the mirror is >= 0.04 worse; flipped: >= 0.08 better).
FLIP_MARGIN = 0.03
# A registration that moved a contrast by more than this is reported as a warning (patient motion).
MOVED_DEG, MOVED_MM = 1.0, 1.0
# The registration works on block means of about this voxel size, with a looser stop than the longitudinal
# default (100 iterations a level, steps down to 0.01 voxel): a 1 mm case registers at 4 mm in seconds, and a
# 4.1-degree, 2.7 mm motion of a 2 mm phantom was recovered as 4.09 degrees, 2.78 mm (docs/clinical.md).
REGISTRATION_MM = 4.0
_BINS = 32


def nmi(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised mutual information (H(a) + H(b)) / H(a, b) of two arrays over ``mask``: 1 (independent) .. 2."""
    x, y = np.asarray(a, dtype=np.float64)[mask], np.asarray(b, dtype=np.float64)[mask]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 1.0
    joint, _, _ = np.histogram2d(x, y, bins=_BINS)
    p = joint / joint.sum()

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    return (entropy(p.sum(1)) + entropy(p.sum(0))) / max(entropy(p), 1e-12)


def _coarse(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block means of ``array`` with blocks of about REGISTRATION_MM, and the affine of the coarse grid."""
    from medsci.preprocessing.geometry import voxel_spacing

    f = np.maximum(1, np.round(REGISTRATION_MM / np.asarray(voxel_spacing(affine)))).astype(int)
    if (f == 1).all():
        return np.asarray(array, dtype=np.float32), affine
    n = np.array(array.shape) // f
    a = np.asarray(array, dtype=np.float32)[:n[0] * f[0], :n[1] * f[1], :n[2] * f[2]]
    a = a.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).mean(axis=(1, 3, 5))
    out = affine.copy()
    out[:3, :3] = affine[:3, :3] * f
    out[:3, 3] = affine[:3, :3] @ ((f - 1) / 2.0) + affine[:3, 3]  # centre of the first block
    return a, out


def _centre(array: np.ndarray, affine: np.ndarray, threshold: float) -> np.ndarray:
    """World position of the centre of mass of the voxels above ``threshold`` (the grid's centre if none)."""
    ijk = np.argwhere(np.asarray(array) > threshold)
    return affine[:3, :3] @ (ijk.mean(axis=0) if len(ijk) else (np.array(array.shape) - 1) / 2.0) + affine[:3, 3]


def _centred(affine: np.ndarray, centre: np.ndarray, target: np.ndarray, mirror: bool) -> np.ndarray:
    """``affine`` mirrored left-right (world x -> -x) about ``centre`` when asked, then moved so that
    ``centre`` lands on ``target``: the moments start of a registration, done to both a contrast and its
    mirror image so the flip test compares like with like."""
    move = np.eye(4)
    if mirror:
        move[0, 0], move[0, 3] = -1.0, 2.0 * centre[0]
    move[:3, 3] += target - centre
    return move @ affine


def _register(ref: Volume, array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(RAS matrix fixed world -> moving world, the moving affine expressed in the reference's world)."""
    from medsci.preprocessing.registration import register_to, transform_to_ras

    fixed, fixed_affine = _coarse(ref.array, ref.affine)
    moving, moving_affine = _coarse(array, affine)
    result = register_to(fixed, fixed_affine, moving, moving_affine, kind="rigid", metric="mattes", seed=0,
                         threads=1, iterations=100, min_step=1e-2)
    matrix = transform_to_ras(result.transform)
    return matrix, np.linalg.inv(matrix) @ affine


def _onto(ref: Volume, array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    from medsci.preprocessing.geometry import resample_to_grid

    return resample_to_grid(np.asarray(array, dtype=np.float32), affine, ref.affine, ref.array.shape, "bilinear",
                            padding_mode="zeros")


def _motion(matrix: np.ndarray, centre: np.ndarray) -> dict:
    """Rotation angle (degrees) and the shift of the reference's brain centre (mm) of a rigid RAS matrix."""
    angle = np.degrees(np.arccos(np.clip((np.trace(matrix[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)))
    shift = matrix[:3, :3] @ centre + matrix[:3, 3] - centre
    return {"rotation_deg": round(float(angle), 3), "shift_mm": [round(float(v), 3) for v in shift],
            "matrix_ras": [[round(float(v), 6) for v in row] for row in matrix]}


def brain_region(ref: Volume, threshold: float) -> np.ndarray:
    """Where similarity is measured: the reference's voxels above ``threshold``, dilated by 2 voxels (the
    brain's outline counts: a shifted contrast puts background where the reference has brain)."""
    from scipy import ndimage

    return ndimage.binary_dilation(np.asarray(ref.array) > threshold, iterations=2)


def coregister(vols: dict[str, Volume], reference: str, *, register: bool, threshold: float = 0.0
               ) -> tuple[dict[str, Volume], dict]:
    """Every volume on the reference grid (registered when ``register``) and what was done, per contrast:
    ``{"reference": ..., "registered": bool, "contrasts": {name: {nmi_before, nmi_after, rotation_deg, ...}}}``.
    Raises InputError naming the contrast's file when it does not line up with the reference or is flipped."""
    ref = vols[reference]
    region = brain_region(ref, threshold)
    target = _centre(ref.array, ref.affine, threshold)
    out, report = {reference: ref}, {"reference": reference, "registered": register, "contrasts": {}}
    for name, vol in vols.items():
        if name == reference:
            continue
        same = vol.array.shape == ref.array.shape and np.allclose(vol.affine, ref.affine, atol=1e-3, rtol=0)
        scanner = np.asarray(vol.array, dtype=np.float32) if same else _onto(ref, vol.array, vol.affine)
        before = nmi(ref.array, scanner, region)
        entry: dict = {"nmi_before": round(before, 4)}
        moved, after = scanner, before
        if register:
            matrix, reg_affine = _register(ref, vol.array, vol.affine)
            candidate = _onto(ref, vol.array, reg_affine)
            score = nmi(ref.array, candidate, region)
            entry.update(_motion(matrix, target))
            entry["applied"] = score > before  # a registration that does not improve the match is not kept
            if entry["applied"]:
                moved, after = candidate, score
        entry["nmi_after"] = round(after, 4)
        centre = _centre(vol.array, vol.affine, threshold)
        as_is, mirror = (nmi(ref.array, _onto(ref, vol.array, _centred(vol.affine, centre, target, m)), region)
                         for m in (False, True))
        entry["nmi_centred"], entry["nmi_mirrored"] = round(as_is, 4), round(mirror, 4)
        report["contrasts"][name] = entry
        entry["centre_offset_mm"] = round(float(np.linalg.norm(centre - target)), 2)
        check_alignment(name, reference, entry, register, vol.source)
        out[name] = Volume(array=moved, affine=ref.affine.copy(), source=vol.source, header=vol.header,
                           meta={**vol.meta, "resampled_onto": reference})
    return out, report


def check_alignment(name: str, reference: str, entry: dict, registered: bool, where) -> None:
    """Refuse a contrast that does not line up with the reference or is flipped left-right against it, from
    the NMIs of :func:`coregister`'s ``entry`` (thresholds measured: docs/clinical.md)."""
    got, centred, mirrored = entry["nmi_after"], entry["nmi_centred"], entry["nmi_mirrored"]
    how = "after rigid registration" if registered else "in scanner coordinates"
    fix = ("check its header and that it is this patient's series" if registered else
           "check its header, or rerun with --register to co-register the contrasts")
    if mirrored > max(centred, got) + FLIP_MARGIN:
        raise InputError(f"{name} looks left-right flipped against {reference} (its mirror image matches better: "
                         f"NMI {mirrored:.3f} vs {max(centred, got):.3f}); check the orientation in its header", where)
    if centred > got + SHIFT_MARGIN:
        raise InputError(f"{name} does not line up with {reference} {how}: moved onto it by its brain centre "
                         f"({entry['centre_offset_mm']:.0f} mm away) it matches better (NMI {centred:.3f} vs "
                         f"{got:.3f}); {fix}", where)
    if not got >= MIN_NMI:
        raise InputError(f"{name} does not line up with {reference} {how} (normalised mutual information {got:.3f} "
                         f"< {MIN_NMI:g}); {fix}", where)

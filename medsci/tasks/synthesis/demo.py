"""Deterministic synthetic BraTS-like brain MRI: four contrasts plus a tumour segmentation.

Real BraTS data cannot be redistributed, so demos and tests run on volumes drawn here. Each case is a
skull-stripped head in BraTS geometry (240 x 240 x 155 mm field of view, LPS orientation, background
exactly 0) with white matter, a folded cortical ribbon, deep grey nuclei, sulcal CSF, two lateral
ventricles and a glioma (oedema, enhancing rim, necrotic core). Intensities come from MR signal equations
applied to per-voxel proton density, T1 and T2 (plus gadolinium for t1c), so the four contrasts are a
*nonlinear* function of tissue: FLAIR nulls CSF that T2 shows brightest, which is what makes t2f worth
synthesising rather than a linear mix of the other three. The enhancing rim has oedema-like relaxation
times, as in real gliomas: only gadolinium (t1c) tells it apart, so a voxelwise map from the other contrasts
cannot find it, the ring around the necrotic core can. Anatomy and signals are drawn on a grid twice as fine
and averaged over each voxel (partial volume: cortex, sulci and the tumour's edges mix tissues in proportions
only the neighbourhood reveals). Then a small point-spread blur, a smooth bias field per modality, Rician
noise and a per-case scanner gain, stored as int16 like scanner output.

Case ``i`` is drawn from its own generator seeded by ``(seed, i)``: it does not depend on how many cases
are written, and the same seed gives the same bytes (gzip header without name or time).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

from medsci.errors import InputError
from medsci.io.atomic import safe_join, write_bytes_atomic, write_json_atomic

MODALITIES: tuple[str, ...] = ("t1n", "t1c", "t2w", "t2f")
LABELS: dict[int, str] = {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}
BRATS_FOV_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)
DEFAULT_SHAPE: tuple[int, int, int] = (68, 76, 60)
GENERATOR = "medsci demo-data synthesis"
DESCRIP = "medsci synthetic demo data"
MIN_SIDE = 8  # below this there is no room for a brain with ventricles and a tumour
# Anatomy and signals are drawn on a grid this much finer per axis, then averaged over each voxel: the
# partial volume of a real acquisition (a voxel of cortex and sulcal CSF mixes their signals, which no
# voxelwise function of the other contrasts undoes, but the fold pattern around it tells).
SUPERSAMPLE = 2

# Internal tissue classes (finer than the segmentation: the tests and the lookup baseline use them).
BG, WM, GM, DGM, CSF, VENT, ED, ET, NCR = range(9)
TISSUES: dict[int, str] = {
    BG: "background",
    WM: "white matter",
    GM: "cortical grey matter",
    DGM: "deep grey matter",
    CSF: "sulcal csf",
    VENT: "ventricle",
    ED: "oedema",
    ET: "enhancing tumour",
    NCR: "necrotic core",
}
SEG_OF_TISSUE = np.array([0, 0, 0, 0, 0, 0, 2, 3, 1], dtype=np.uint8)

# Proton density (relative), T1 (ms), T2 (ms) near 3 T; tumour compartments after typical glioma reports:
# vasogenic oedema has more free water (long T1/T2), necrosis is nearly fluid.
_TISSUE_PARAMS = np.array(
    [
        [0.00, 1000.0, 100.0],  # background (never used: masked out)
        [0.69, 830.0, 80.0],  # white matter
        [0.80, 1330.0, 110.0],  # cortical grey matter
        [0.76, 1100.0, 90.0],  # deep grey matter
        [1.00, 4000.0, 1500.0],  # sulcal csf
        [1.00, 4000.0, 1500.0],  # ventricle
        [0.86, 1500.0, 220.0],  # oedema
        [0.85, 1480.0, 190.0],  # enhancing tumour: oedema-like on T1/T2/FLAIR, told apart by gadolinium only
        [0.92, 2500.0, 400.0],  # necrotic core
    ]
)
_R1_GD = 4.0e-3  # gadolinium relaxivity, 1/(mM ms)
# Scanner units per unit signal, chosen so white matter lands near 700..1100 and the brightest tissue
# of each contrast near 1500..3000, like typical BraTS int16 volumes.
_MODALITY_SCALE = {"t1n": 3500.0, "t1c": 3500.0, "t2w": 4200.0, "t2f": 5000.0}


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case: int16 images per modality, uint8 BraTS labels, internal tissue classes."""

    case_id: str
    images: dict[str, np.ndarray]
    seg: np.ndarray
    tissue: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray


def case_id(index: int) -> str:
    """BraTS-style identifier of case ``index`` (``BraTS-DEMO-00003-000``)."""
    return f"BraTS-DEMO-{index:05d}-000"


def default_spacing(shape: Sequence[int]) -> tuple[float, float, float]:
    """Voxel size (mm) that makes ``shape`` span the BraTS field of view, so the head fills it alike."""
    return tuple(float(f) / int(n) for f, n in zip(BRATS_FOV_MM, shape))  # type: ignore[return-value]


def brats_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """LPS voxel-to-world affine diag(-sx, -sy, sz) with the volume centred on world (0, 0, 0)."""
    sx, sy, sz = (float(s) for s in spacing)
    affine = np.diag([-sx, -sy, sz, 1.0])
    centre = (np.asarray(shape, dtype=float) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _check_args(out: Path, cases: int, seed: int, shape: Sequence[int], spacing) -> None:
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise InputError(f"number of cases must be a positive integer, got {cases!r}", out)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}", out)
    if len(shape) != 3 or any(int(n) != n or n < MIN_SIDE for n in shape):
        raise InputError(f"shape must be three integers >= {MIN_SIDE}, got {tuple(shape)!r}", out)
    if spacing is not None and (len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing)):
        raise InputError(f"spacing must be three positive numbers (mm), got {tuple(spacing)!r}", out)


def write_brats_dataset(
    out_dir: str | Path,
    cases: int = 16,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] | None = None,
) -> list[Path]:
    """Write ``cases`` synthetic cases as ``out_dir/<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``.

    Also writes ``out_dir/dataset.json`` describing the set (marked synthetic). Existing files of the
    same names are replaced atomically; nothing is written outside ``out_dir``. Returns the case folders.
    """
    out = Path(out_dir)
    _check_args(out, cases, seed, shape, spacing)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    shape_t = tuple(int(n) for n in shape)
    spacing_t = default_spacing(shape_t) if spacing is None else tuple(float(s) for s in spacing)
    out.mkdir(parents=True, exist_ok=True)

    case_dirs: list[Path] = []
    ids: list[str] = []
    for index in range(int(cases)):
        case = synthesize_case(seed, index, shape_t, spacing_t)
        case_dir = safe_join(out, case.case_id)
        for name in MODALITIES:
            _write_nifti(case_dir / f"{case.case_id}-{name}.nii.gz", case.images[name], case.affine)
        _write_nifti(case_dir / f"{case.case_id}-seg.nii.gz", case.seg, case.affine)
        case_dirs.append(case_dir)
        ids.append(case.case_id)

    write_json_atomic(
        safe_join(out, "dataset.json"),
        {
            "synthetic": True,
            "generator": GENERATOR,
            "seed": int(seed),
            "shape": list(shape_t),
            "spacing": list(spacing_t),
            "cases": ids,
            "labels": {str(k): v for k, v in LABELS.items()},
            "modalities": list(MODALITIES),
            "orientation": "LPS",
            "description": "Synthetic BraTS-like brain MRI with glioma labels; not patient data.",
        },
    )
    return case_dirs


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_data_dtype(data.dtype)
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr["descrip"] = DESCRIP
    # Our own gzip with mtime 0 and no file name in the header: identical bytes on every run.
    write_bytes_atomic(path, gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


# --------------------------------------------------------------------------------------------------
# Random fields


def _gaussian_field(
    rng: np.random.Generator, axes: Sequence[np.ndarray], sigma_mm: float
) -> np.ndarray:
    """Smooth Gaussian random field with unit variance at every voxel, float32 on the grid ``axes``.

    White noise convolved with a Gaussian of width ``sigma_mm``, by whichever of two routes is cheaper:
    fine fields (a few voxels wide) filter full-resolution white noise; coarse fields put the noise on a
    lattice of spacing 0.75 sigma and evaluate the separable kernel sum at the voxel centres as three
    matrix products, which costs the same for any smoothness. Kernels are normalised to unit L2 norm,
    so the variance is exactly 1 everywhere.
    """
    spacing = [float(ax[1] - ax[0]) if ax.size > 1 else 1.0 for ax in axes]
    if sigma_mm < 4.0 * min(spacing):
        noise = rng.standard_normal(tuple(ax.size for ax in axes), dtype=np.float32)
        for axis, s in enumerate(spacing):
            sig = sigma_mm / s
            x = np.arange(-max(1, int(np.ceil(3.0 * sig))), max(1, int(np.ceil(3.0 * sig))) + 1)
            k = np.exp(-0.5 * (x / sig) ** 2)
            # Wrap keeps the variance exactly 1 up to the edges; the wrapped correlation is invisible.
            noise = ndimage.correlate1d(noise, (k / np.linalg.norm(k)).astype(np.float32), axis, mode="wrap")
        return noise

    step = 0.75 * sigma_mm
    mats = []
    for ax in axes:
        nodes = np.arange(ax.min() - 3 * sigma_mm, ax.max() + 3 * sigma_mm + step, step)
        m = np.exp(-0.5 * ((ax[:, None] - nodes[None, :]) / sigma_mm) ** 2)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        mats.append(m)
    # float64 products, then float32: BLAS kernels that sum in another order (other CPUs, threads)
    # still round to the same float32 values, keeping outputs byte-identical almost surely.
    weights = rng.standard_normal(tuple(m.shape[1] for m in mats))
    field = weights @ mats[2].T  # (ci, cj, nk)
    field = np.matmul(mats[1], field)  # (ci, nj, nk)
    return np.tensordot(mats[0], field, axes=(1, 0)).astype(np.float32)  # (ni, nj, nk)


def _ellipsoid_radius(parts: Sequence[np.ndarray], radii: Sequence[float | np.ndarray]) -> np.ndarray:
    """Normalised ellipsoidal radius sqrt(sum (p_i / r_i)^2), broadcasting 1-D axis coordinates."""
    total = None
    for p, r in zip(parts, radii):
        term = np.square(p / r, dtype=np.float32)
        total = term if total is None else total + term
    return np.sqrt(total)


# --------------------------------------------------------------------------------------------------
# Anatomy


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
    """Tissue class map (uint8, classes of ``TISSUES``) and the axis coordinates it was drawn on."""
    # Axis coordinates in mm about the volume centre, along i (left), j (posterior), k (superior).
    axes = [(np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    coarse = max(spacing)

    def field(sigma: float) -> np.ndarray:
        return _gaussian_field(rng, axes, sigma)

    # Brain size and position jitter; semi-axes (mm) of an adult brain, about 136 x 168 x 120 mm.
    centre = rng.uniform(-4.0, 4.0, size=3) + np.array([0.0, 0.0, -3.0])
    scale = rng.uniform(0.92, 1.05)
    semi = np.array([68.0, 84.0, 60.0]) * scale * rng.uniform(0.96, 1.04, size=3)
    X = (axes[0] - centre[0]).astype(np.float32)[:, None, None]
    Y = (axes[1] - centre[1]).astype(np.float32)[None, :, None]
    Z = (axes[2] - centre[2]).astype(np.float32)[None, None, :]

    # Wider at the back (parietal/occipital), flatter underneath; plus a random low-frequency bulging.
    semi_x = semi[0] * (1.0 + 0.07 * Y / semi[1])
    semi_z = np.where(Z < 0, semi[2] * 0.88, semi[2]).astype(np.float32)
    r = _ellipsoid_radius((X, Y, Z), (semi_x, semi[1], semi_z))
    r *= 1.0 - 0.045 * field(28.0)
    brain = r < 1.0
    mean_semi = float(np.cbrt(np.prod(semi)))
    depth = (1.0 - r) * mean_semi  # approximate distance (mm) below the brain surface

    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[brain] = WM

    # Cortical folding: a random field on the surface, extended radially inwards by sampling it at the
    # surface point above each voxel, so sulci run perpendicular to the surface as in real cortex.
    fold_sigma = 4.0 * rng.uniform(0.9, 1.1)
    fold = field(fold_sigma)
    sulc_depth = np.clip(16.0 + 5.0 * field(15.0), 6.0, 28.0)
    thick = np.clip(2.8 + 0.5 * field(12.0), 2.0, 3.8)
    thick = np.maximum(thick, 0.5 * coarse)  # keep the ribbon visible on coarse grids
    shell = brain & (depth < sulc_depth + thick + 1.0)
    idx = np.nonzero(shell)
    inv_r = 1.0 / np.maximum(r[idx], 0.3)
    # Surface point above each shell voxel, in voxel index coordinates for map_coordinates.
    coords = []
    for a, (ix, c, s, n) in enumerate(zip(idx, centre, spacing, shape)):
        rel = axes[a][ix] - c  # mm from brain centre along this axis
        coords.append((rel * inv_r + c) / s + (n - 1) / 2.0)
    fold_s = ndimage.map_coordinates(fold, np.stack(coords), order=1, mode="nearest")
    csf_w = rng.uniform(0.08, 0.18)  # sulcal widening varies between subjects (atrophy)
    gm_w = csf_w + rng.uniform(0.5, 0.7)
    d_s, sd_s, th_s = depth[idx], sulc_depth[idx], thick[idx]
    af = np.abs(fold_s)
    is_gm = (d_s < th_s) | ((d_s < sd_s + th_s) & (af < gm_w))
    is_csf = (d_s < sd_s) & (af < csf_w)
    tissue[tuple(ix[is_gm] for ix in idx)] = GM
    tissue[tuple(ix[is_csf] for ix in idx)] = CSF
    del fold, fold_s, coords, idx

    # Interhemispheric fissure: a slightly wavy mid-sagittal CSF sheet above the corpus callosum and at
    # the frontal and occipital poles, lined with grey matter.
    mid = 1.5 * field(30.0)
    fis_region = brain & ((Z > 12.0 * scale) | (np.abs(Y) > 0.55 * semi[1]))
    off = np.abs(X - mid)
    fis_w = max(1.0, 0.35 * spacing[0])
    tissue[fis_region & (off < fis_w + 3.0)] = GM
    tissue[fis_region & (off < fis_w)] = CSF
    del mid, off, fis_region

    # Deep grey nuclei (thalamus / basal ganglia), one deformed ellipsoid per hemisphere.
    dgm_wobble = 1.0 + 0.1 * field(8.0)
    for side in (-1.0, 1.0):
        rd = _ellipsoid_radius(
            (X - side * 16.0 * scale, Y, Z + 6.0 * scale),
            np.array([8.0, 14.0, 8.0]) * scale,
        )
        tissue[brain & (rd * dgm_wobble < 1.0)] = DGM
    del dgm_wobble

    # Lateral ventricles: bent, frontally wider ellipsoids; size varies a lot between subjects.
    vs = rng.uniform(0.85, 1.35) * scale
    vent_wobble = 1.0 + 0.12 * field(10.0)
    for side in (-1.0, 1.0):
        vy = Y + 2.0 * scale
        zc = 9.0 * scale - 9.0 * vs * np.square(vy / (24.0 * vs))
        ax = np.maximum(5.0 * vs * (1.0 - 0.35 * vy / (24.0 * vs)), 0.6 * spacing[0])
        rv = _ellipsoid_radius(
            (X - side * (7.5 * vs + rng.uniform(-1.0, 1.0)), vy, Z - zc),
            (ax, 24.0 * vs, max(6.0 * vs, 0.6 * spacing[2])),
        )
        tissue[brain & (rv * vent_wobble < 1.0)] = VENT
    del vent_wobble

    _add_tumour(rng, tissue, brain, (X, Y, Z), semi, coarse, field)
    return tissue, axes


def _add_tumour(
    rng: np.random.Generator,
    tissue: np.ndarray,
    brain: np.ndarray,
    XYZ: tuple[np.ndarray, np.ndarray, np.ndarray],
    semi: np.ndarray,
    coarse: float,
    field: Callable[[float], np.ndarray],
) -> None:
    """Glioma in one hemisphere: irregular oedema around an enhancing shell with a necrotic core."""
    X, Y, Z = XYZ
    side = rng.choice([-1.0, 1.0])
    # Draw a centre deep enough inside the brain for the whole core; the generator is seeded, so the
    # rejection loop is deterministic.
    for _ in range(64):
        t = np.array(
            [
                side * rng.uniform(18.0, 42.0) * semi[0] / 68.0,
                rng.uniform(-45.0, 45.0) * semi[1] / 84.0,
                rng.uniform(-12.0, 30.0) * semi[2] / 60.0,
            ]
        )
        if np.sqrt(np.sum(np.square(t / semi))) < 0.62:
            break
    rim = max(rng.uniform(2.5, 5.0), 1.1 * coarse)
    radius = max(rng.uniform(8.0, 16.0), rim + 1.3 * coarse)
    radii = radius * rng.uniform(0.85, 1.15, size=3)
    dX, dY, dZ = X - t[0], Y - t[1], Z - t[2]
    core_r = _ellipsoid_radius((dX, dY, dZ), radii) * (1.0 + 0.15 * field(6.0))
    necro_r = _ellipsoid_radius((dX, dY, dZ), radii) * (1.0 + 0.10 * field(4.0))
    core = brain & (core_r < 1.0)
    necro = core & (necro_r < 1.0 - rim / radius)
    ed_factor = rng.uniform(1.5, 2.4)
    ed_r = _ellipsoid_radius((dX, dY, dZ), radii * ed_factor) * np.maximum(1.0 + 0.28 * field(10.0), 0.8)
    # Vasogenic oedema spreads through white matter and largely spares cortex and CSF spaces.
    spread = (tissue == WM) | (tissue == DGM) | ((tissue == GM) & (ed_r < 0.7))
    oedema = brain & (ed_r < 1.0) & spread & ~core
    tissue[oedema] = ED
    tissue[core] = ET
    tissue[necro] = NCR

    # Degenerate grids (very coarse spacing): make sure every label still exists, next to the centre.
    if not (np.any(tissue == NCR) and np.any(tissue == ET) and np.any(tissue == ED)):
        ci = [int(np.argmin(np.abs(a.ravel() - c))) for a, c in zip((X, Y, Z), t)]
        step = -1 if side > 0 else 1  # towards the midline, which the centre's limits keep inside
        for k, label in enumerate((NCR, ET, ED)):
            pos = (int(np.clip(ci[0] + step * k, 0, tissue.shape[0] - 1)), ci[1], ci[2])
            if brain[pos] and not np.any(tissue == label):
                tissue[pos] = label


# --------------------------------------------------------------------------------------------------
# Contrast


def _signals(rng: np.random.Generator, tissue: np.ndarray, axes: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Noise-free signal per modality from the spin-echo / inversion-recovery equations, float32."""

    def field(sigma: float) -> np.ndarray:
        return _gaussian_field(rng, axes, sigma)

    params = _TISSUE_PARAMS * rng.uniform(0.96, 1.04, size=_TISSUE_PARAMS.shape)
    params[CSF] = params[VENT]  # both are the same fluid
    tumour = tissue >= ED
    # Microstructural texture: shared and per-parameter parts, stronger in the heterogeneous tumour.
    amp = np.where(tumour, np.float32(3.0), np.float32(1.0))
    shared = field(2.0)
    pd = params[tissue, 0].astype(np.float32) * (1.0 + amp * 0.02 * (0.6 * shared + 0.8 * field(2.5)))
    t1 = params[tissue, 1].astype(np.float32) * (1.0 + amp * 0.03 * (0.6 * shared + 0.8 * field(2.5)))
    t2 = params[tissue, 2].astype(np.float32) * (1.0 + amp * 0.03 * (0.6 * shared + 0.8 * field(2.5)))
    del shared, amp
    # Gadolinium leaks through the broken blood-brain barrier of the enhancing rim, a little into oedema.
    gd = np.zeros(tissue.shape, dtype=np.float32)
    gd_et = rng.uniform(0.25, 0.45)
    et = tissue == ET
    gd[et] = gd_et * np.clip(1.0 + 0.3 * field(3.0)[et], 0.3, 2.0)
    gd[tissue == ED] = 0.02

    jit = lambda v: v * rng.uniform(0.95, 1.05)  # noqa: E731  (per-case protocol variation)
    tr1, te1 = jit(500.0), jit(10.0)
    tr2, te2 = jit(5000.0), jit(100.0)
    trf, tef = jit(9000.0), jit(120.0)
    ti = np.log(2.0) * params[CSF, 1] * rng.uniform(0.93, 1.03)  # near the CSF null point

    e2_1 = np.exp(-te1 / t2)
    out = {
        "t1n": pd * (1.0 - np.exp(-tr1 / t1)) * e2_1,
        "t1c": pd * (1.0 - np.exp(-tr1 * (1.0 / t1 + _R1_GD * gd))) * e2_1,
        "t2w": pd * (1.0 - np.exp(-tr2 / t1)) * np.exp(-te2 / t2),
        "t2f": pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-trf / t1)) * np.exp(-tef / t2),
    }
    return {k: v.astype(np.float32, copy=False) for k, v in out.items()}


def _block_sum(values: np.ndarray, f: int) -> np.ndarray:
    """Sum over each f x f x f block of a fine grid: (f*n0, f*n1, f*n2) -> (n0, n1, n2)."""
    n0, n1, n2 = (n // f for n in values.shape)
    return values.reshape(n0, f, n1, f, n2, f).sum(axis=(1, 3, 5), dtype=np.float32)


def _voxel_labels(fine_tissue: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Tissue class per voxel of the coarse grid, and how many fine brain voxels each holds.

    A voxel is brain when at least half of it is; its class is the most frequent brain class in it (ties
    to the lower class). A tumour label present on the fine grid but in no voxel's majority (tiny grids)
    goes to the voxel holding most of it, so every case keeps all three labels.
    """
    counts = np.stack([_block_sum((fine_tissue == c).astype(np.float32), f) for c in range(len(TISSUES))])
    brain = counts[0] <= 0.5 * f**3
    tissue = np.where(brain, 1 + np.argmax(counts[1:], axis=0), 0).astype(np.uint8)
    for label in (NCR, ET, ED):
        if not np.any(tissue == label) and np.any(counts[label] > 0):
            pos = np.unravel_index(int(np.argmax(np.where(brain, counts[label], -1.0))), tissue.shape)
            tissue[pos] = label
    return tissue, np.float32(f**3) - counts[0]


def synthesize_case(
    seed: int,
    index: int,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] | None = None,
) -> SyntheticCase:
    """Generate case ``index`` of the set drawn with ``seed`` (in memory; see ``write_brats_dataset``)."""
    shape_t = tuple(int(n) for n in shape)
    spacing_t = default_spacing(shape_t) if spacing is None else tuple(float(s) for s in spacing)
    rng = np.random.default_rng([int(seed), int(index)])
    f = SUPERSAMPLE
    fine_tissue, fine_axes = _anatomy(
        rng, tuple(n * f for n in shape_t), tuple(sp / f for sp in spacing_t)  # type: ignore[arg-type]
    )
    fine_signals = _signals(rng, fine_tissue, fine_axes)
    tissue, brain_count = _voxel_labels(fine_tissue, f)
    fine_brain = fine_tissue > 0
    brain = tissue > 0
    axes = [(np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * sp for n, sp in zip(shape_t, spacing_t)]
    # Partial volume: each voxel holds the mean signal of the brain it contains (skull-stripped edge).
    count = np.maximum(brain_count, np.float32(1.0))
    signals = {k: _block_sum(np.where(fine_brain, v, np.float32(0.0)), f) / count for k, v in fine_signals.items()}
    del fine_signals, fine_tissue, fine_brain

    # Point-spread function: a little blur within the brain only (normalised convolution), so the
    # skull-stripped edge stays sharp and background stays exactly zero.
    sigma_vox = 0.35
    weight = ndimage.gaussian_filter(brain.astype(np.float32), sigma_vox, mode="constant")
    weight = np.where(brain, weight, np.float32(1.0))

    images: dict[str, np.ndarray] = {}
    for name in MODALITIES:
        s = signals.pop(name)
        s = ndimage.gaussian_filter(np.where(brain, s, np.float32(0.0)), sigma_vox, mode="constant") / weight
        # Receive-coil bias: smooth multiplicative field, different per sequence.
        s *= np.exp(rng.uniform(0.08, 0.2) * _gaussian_field(rng, axes, 70.0))
        # Rician magnitude noise relative to this contrast's white-matter signal.
        ref = float(np.median(s[tissue == WM])) if np.any(tissue == WM) else float(np.median(s[brain]))
        sd = np.float32(rng.uniform(0.02, 0.04) * ref)
        n1 = rng.standard_normal(s.shape, dtype=np.float32)
        n2 = rng.standard_normal(s.shape, dtype=np.float32)
        s = np.sqrt(np.square(s + sd * n1) + np.square(sd * n2))
        del n1, n2
        gain = _MODALITY_SCALE[name] * np.exp(rng.normal(0.0, 0.15))
        # In-brain voxels are >= 1 so "nonzero" is the brain mask in every modality, as in BraTS.
        vals = np.clip(np.rint(s * gain), 1, np.iinfo(np.int16).max)
        images[name] = np.where(brain, vals, 0).astype(np.int16)

    return SyntheticCase(
        case_id=case_id(index),
        images=images,
        seg=SEG_OF_TISSUE[tissue],
        tissue=tissue,
        spacing=spacing_t,  # type: ignore[arg-type]
        affine=brats_affine(shape_t, spacing_t),
    )

"""Deterministic synthetic longitudinal brain MRI (T1-like), for the longitudinal-prediction demo.

Real follow-up scans cannot be shipped with the project, so demos and tests use sequences drawn here.
Each subject is a simplified adult head whose proportions and rates of change are drawn from its seed;
it is scanned 3 to 7 times at irregular intervals and its anatomy changes smoothly and monotonically
with time between the scans.

Anatomy (T1-like intensities, roughly 0..1000)
----------------------------------------------
* an ellipsoidal head: scalp (700, bright fat) over a dark skull (140) over a layer of extra-axial CSF
  (120) in air (0);
* the brain: a grey-matter cortex ribbon (520) about 6.5 to 8.5 mm thick (about two voxels at the
  default 4 mm) over white matter (780); the white-matter surface is folded by a smooth "gyral" field
  (the cortex crowns touch the CSF layer, the sulci between them are CSF-filled);
* two lateral ventricles (CSF, 120): ellipsoids either side of the midline, frontal horns diverging;
* one lesion in the white matter: a small ellipsoid, bright (950) or dark (330);
* a smooth tissue texture (+-2 %) and a smooth multiplicative bias field (+-5 %), both fixed to the
  head; Rician noise (sigma 15, about 2 % of the white-matter intensity) drawn independently per scan.

Change with time ``t`` (days since the first session; ``ty = t / 365.25`` years)
------------------------------------------------------------------------------
Per-subject rates (``rates``) are drawn from the seed and are deliberately faster than real ageing so
that the change is visible at 4 mm:

* ``ventricle_growth``: 6 to 15 % per year; the ventricles' semi-axes scale by ``1 + rate * ty``;
* ``cortical_thinning``: 2 to 6 % per year; the ribbon's thickness scales by ``1 - rate * ty`` (the
  white-matter surface stays, the pial surface recedes and the CSF over it widens);
* ``lesion_growth``: -30 to -12 % or +20 to +50 % volume per year, compounding: the lesion's volume is
  ``V0 * (1 + rate) ** ty``.

Everything else is identical across the sessions of one subject, except that every session after the
first is scanned with the head moved rigidly (a rotation of up to 3 degrees about a random axis
through the grid centre, then a translation of up to 4 mm), so registration has something to do. The
first session defines the subject's frame: ``changed`` and :func:`render` without a ``pose`` use it.

Sessions are planned at a per-subject interval (150 to 260 days); each acquired interval is the planned
one (or twice it, when the visit in between was missed) with +-20 % jitter, rounded to whole days and
kept within 90..540 days. About 40 % of the subjects miss one planned visit (never the first or the
last): session ids ``ses-YY`` number the *planned* visits, so a missed visit shows as a skipped number.

Geometry and conventions
------------------------
As in :mod:`medsci.tasks.rotation.demo`: world space is RAS+ millimetres, the array axes are
``(x, y, z)`` = nibabel's ``(i, j, k)``, the affine is ``diag(spacing)`` with the grid centre (index
``(shape - 1) / 2``) at world ``(0, 0, 0)``, every size is in millimetres (the same seed on another grid
is the same subject) and edges are partial-volume ramps about one voxel wide. The defaults (48 x 56 x 48
voxels of 4 mm, 192 x 224 x 192 mm) hold the whole head with room for the misalignment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medsci.demo_args import check_grid, check_seed
from medsci.errors import InputError
from medsci.io.atomic import write_text_atomic
from medsci.io.volume import write_nifti

DESCRIP = "medsci synthetic T1-like brain MRI - not patient data"
MIN_SESSIONS, MAX_SESSIONS = 2, 7  # accepted for ``n_sessions``; drawn sequences have 3..7
GAP_MIN_DAYS, GAP_MAX_DAYS = 90.0, 540.0
DAYS_PER_YEAR = 365.25
# The longest possible sequence (see _draw_schedule): the lesion is placed so that it stays inside the
# white matter and away from the ventricles over this span, whatever the schedule.
MAX_SPAN_YEARS = 1.2 * 4.5
MAX_ROTATION_DEG, MAX_TRANSLATION_MM = 3.0, 4.0

# T1-like intensities of each tissue.
AIR, SCALP, SKULL, CSF, GM, WM = 0.0, 700.0, 140.0, 120.0, 520.0, 780.0
LESION_BRIGHT, LESION_DARK = 950.0, 330.0
BRAIN_RANGE = WM - CSF  # "the brain intensity range" that `changed` is measured against
CHANGE_FRACTION = 0.05
NOISE_SIGMA = 15.0
TEXTURE_AMPLITUDE, BIAS_AMPLITUDE = 0.02, 0.05
N_GYRAL_WAVES, N_TEXTURE_WAVES, N_BIAS_WAVES = 8, 6, 3


@dataclass(frozen=True)
class Anatomy:
    """All random anatomy and rates of one subject, in mm (subject frame) and fractions per year."""

    head_r: tuple[float, float, float]  # outer surface of the scalp, semi-axes
    scalp: float  # thicknesses, outside in
    skull: float
    csf: float  # extra-axial CSF between the skull and the gyral crowns
    cortex: float  # grey-matter ribbon thickness at t = 0
    gyri: float  # depth of the sulci: the white-matter surface lies 0..gyri deeper than at the crowns
    gyral_waves: np.ndarray  # (N, 5): direction xyz, wavenumber (rad/mm), phase
    vent_c: tuple[float, float, float]  # right ventricle centre; the left one is mirrored in x
    vent_r: tuple[float, float, float]  # ventricle semi-axes at t = 0
    vent_yaw: float  # radians; frontal horns diverge
    lesion_c: tuple[float, float, float]
    lesion_r: tuple[float, float, float]  # semi-axes at t = 0
    lesion_bright: bool
    ventricle_growth: float  # fraction of the semi-axes per year
    cortical_thinning: float  # fraction of the ribbon thickness per year
    lesion_growth: float  # fraction of the volume per year (compounding), negative when shrinking
    age: float  # years at the first session
    texture_waves: np.ndarray
    bias_waves: np.ndarray

    @property
    def rates(self) -> dict[str, float]:
        return {"ventricle_growth": self.ventricle_growth, "cortical_thinning": self.cortical_thinning,
                "lesion_growth": self.lesion_growth}

    @property
    def depth_wm(self) -> float:
        """Depth (mm) of the white-matter surface below the outer head surface at a gyral crown."""
        return self.scalp + self.skull + self.csf + self.cortex

    def ventricle_scale(self, t_days: float) -> float:
        return 1.0 + self.ventricle_growth * float(t_days) / DAYS_PER_YEAR

    def cortex_thickness(self, t_days: float) -> float:
        return self.cortex * (1.0 - self.cortical_thinning * float(t_days) / DAYS_PER_YEAR)

    def lesion_scale(self, t_days: float) -> float:
        """Factor on the lesion's semi-axes at ``t_days`` (the cube root of its volume factor)."""
        return float((1.0 + self.lesion_growth) ** (float(t_days) / DAYS_PER_YEAR / 3.0))

    def ventricle_volume(self, t_days: float) -> float:
        """Analytic volume (mm^3) of both ventricles at ``t_days``."""
        return 2.0 * 4.0 / 3.0 * np.pi * float(np.prod(self.vent_r)) * self.ventricle_scale(t_days) ** 3

    def lesion_volume(self, t_days: float) -> float:
        """Analytic volume (mm^3) of the lesion at ``t_days``."""
        return 4.0 / 3.0 * np.pi * float(np.prod(self.lesion_r)) * self.lesion_scale(t_days) ** 3


# --------------------------------------------------------------------------------------------------
# Geometry helpers


def _ellipsoid_distance(u, v, w, ra: float, rb: float, rc: float):
    """First-order signed distance (mm) to the ellipsoid (u/ra)^2 + (v/rb)^2 + (w/rc)^2 = 1 (exact for spheres).

    Decreases monotonically when the ellipsoid is scaled up about its centre; the centre itself gets
    ``-min(ra, rb, rc)`` instead of the formula's 0/0.
    """
    s = np.sqrt((u / ra) ** 2 + (v / rb) ** 2 + (w / rc) ** 2)
    g = np.sqrt((u / ra**2) ** 2 + (v / rb**2) ** 2 + (w / rc**2) ** 2)
    safe = g > 1e-12
    return np.where(safe, (s - 1.0) * s / np.where(safe, g, 1.0), -min(ra, rb, rc))


def _soft(d, h: float):
    """Partial-volume weight of a point at signed distance ``d`` (mm, negative inside) from a surface."""
    return np.clip(0.5 - d / h, 0.0, 1.0)


def _waves(rng: np.random.Generator, n: int, wavelength: tuple[float, float]) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    out = np.empty((n, 5))
    out[:, :3] = d / np.linalg.norm(d, axis=1, keepdims=True)
    out[:, 3] = 2.0 * np.pi / rng.uniform(*wavelength, size=n)
    out[:, 4] = rng.uniform(0.0, 2.0 * np.pi, size=n)
    return out


def _wave_field(waves: np.ndarray, shape, spacing, pose: np.ndarray | None = None) -> np.ndarray:
    """Sum of plane waves (subject frame) on the scan grid, normalised to unit standard deviation and
    clipped to [-1, 1].

    A rigidly moved plane wave is a plane wave: ``d . R^T (p - t) = (R d) . (p - t)``, so each wave is
    evaluated separably on the grid axes (an outer product of 1D complex exponentials) instead of taking
    a cosine at every voxel.
    """
    rot, trans = (np.eye(3), np.zeros(3)) if pose is None else (np.asarray(pose)[:3, :3], np.asarray(pose)[:3, 3])
    x1, y1, z1 = _grid(shape, spacing)
    acc = np.zeros(tuple(shape))
    for dx, dy, dz, k, phase in waves:
        d = rot @ np.array([dx, dy, dz])
        ex = np.exp(1j * (k * d[0] * x1))
        ey = np.exp(1j * (k * d[1] * y1))
        ez = np.exp(1j * (k * d[2] * z1 + phase - k * float(d @ trans)))
        exy = ex[:, None] * ey[None, :]
        acc += exy.real[:, :, None] * ez.real - exy.imag[:, :, None] * ez.imag
    return np.clip(acc / np.sqrt(len(waves) / 2.0), -1.0, 1.0)


def _rotate_z(x, y, angle: float):
    c, s = np.cos(angle), np.sin(angle)
    return c * x - s * y, s * x + c * y


def _ventricle_distance(a: Anatomy, side: int, x, y, z, scale: float):
    cx, cy, cz = a.vent_c
    u, v = _rotate_z(x - side * cx, y - cy, -side * a.vent_yaw)
    ra, rb, rc = (r * scale for r in a.vent_r)
    return _ellipsoid_distance(u, v, z - cz, ra, rb, rc)


def _wm_distance(a: Anatomy, shape, spacing):
    """Signed distance (mm, subject frame) to the white-matter surface: an offset of the head surface,
    folded by the gyral field (0 at the crowns, ``a.gyri`` deeper at the fundi)."""
    x, y, z = _subject_coordinates(shape, spacing, None)
    d_head = _ellipsoid_distance(x, y, z, *a.head_r)
    return d_head + a.depth_wm + a.gyri * 0.5 * (1.0 + _wave_field(a.gyral_waves, shape, spacing))


def _grid(shape: Sequence[int], spacing: Sequence[float]):
    return [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]


def _subject_coordinates(shape, spacing, pose: np.ndarray | None):
    """Subject-frame (x, y, z) of every voxel centre of a scan taken with the head at ``pose``.

    ``pose`` (4x4) maps subject-frame mm to scanner world mm; ``None`` is the identity.
    """
    x1, y1, z1 = _grid(shape, spacing)
    if pose is None:
        return x1[:, None, None], y1[None, :, None], z1[None, None, :]
    pose = np.asarray(pose, dtype=np.float64)
    rot, trans = pose[:3, :3], pose[:3, 3]
    X, Y, Z = np.meshgrid(x1 - trans[0], y1 - trans[1], z1 - trans[2], indexing="ij")
    # q = R^T (p - t)
    return (rot[0, 0] * X + rot[1, 0] * Y + rot[2, 0] * Z,
            rot[0, 1] * X + rot[1, 1] * Y + rot[2, 1] * Z,
            rot[0, 2] * X + rot[1, 2] * Y + rot[2, 2] * Z)


# --------------------------------------------------------------------------------------------------
# Drawing a subject


def draw_anatomy(seed: int) -> Anatomy:
    """The anatomy and rates of the subject drawn with ``seed`` (independent of grid and schedule)."""
    seed = check_seed(seed, None)
    rng = _stream(seed, 0)
    u = rng.uniform
    head_r = (u(70.0, 77.0), u(88.0, 97.0), u(74.0, 82.0))
    scalp, skull, csf = u(4.0, 6.0), u(4.0, 6.0), u(2.0, 3.0)
    cortex = u(6.5, 8.5)
    gyri = u(2.5, 4.0)
    gyral_waves = _waves(rng, N_GYRAL_WAVES, (22.0, 36.0))
    vent_c = (u(9.0, 12.0), u(-4.0, 6.0), u(4.0, 12.0))
    vent_r = (u(5.0, 7.5), u(20.0, 26.0), u(8.0, 11.0))
    vent_yaw = np.deg2rad(u(4.0, 10.0))
    ventricle_growth = u(0.06, 0.15)
    cortical_thinning = u(0.02, 0.06)
    shrinking = rng.random() < 1.0 / 3.0
    lesion_growth = -u(0.12, 0.30) if shrinking else u(0.20, 0.50)
    lesion_bright = bool(rng.random() < 0.5)
    age = u(55.0, 85.0)
    texture_waves = _waves(rng, N_TEXTURE_WAVES, (12.0, 30.0))
    bias_waves = _waves(rng, N_BIAS_WAVES, (250.0, 450.0))
    a = Anatomy(head_r=head_r, scalp=scalp, skull=skull, csf=csf, cortex=cortex, gyri=gyri,
                gyral_waves=gyral_waves, vent_c=vent_c, vent_r=vent_r, vent_yaw=vent_yaw,
                lesion_c=(0.0, 0.0, 0.0), lesion_r=(1.0, 1.0, 1.0), lesion_bright=lesion_bright,
                ventricle_growth=ventricle_growth, cortical_thinning=cortical_thinning,
                lesion_growth=lesion_growth, age=age, texture_waves=texture_waves, bias_waves=bias_waves)
    lesion_c, lesion_r = _place_lesion(a, rng)
    return dataclasses.replace(a, lesion_c=lesion_c, lesion_r=lesion_r)


def _place_lesion(a: Anatomy, rng: np.random.Generator):
    """A lesion centre and semi-axes that keep it, at its largest over any schedule, at least 8 mm inside
    the white matter (at a sulcal fundus) and 8 mm away from the ventricles at their largest."""
    margin = 8.0
    grow = max(1.0, (1.0 + a.lesion_growth) ** (MAX_SPAN_YEARS / 3.0))
    v_scale = 1.0 + a.ventricle_growth * MAX_SPAN_YEARS
    extent = np.subtract(a.head_r, a.depth_wm)
    for attempt in range(1200):
        r0 = rng.uniform(4.0, 6.5) * 0.97 ** (attempt // 40)
        radii = (r0, r0 * rng.uniform(0.7, 1.0), r0 * rng.uniform(0.7, 1.0))
        c = rng.uniform(-extent, extent)
        reach = max(radii) * grow
        d_wm = _ellipsoid_distance(*c, *a.head_r) + a.depth_wm + a.gyri
        if d_wm > -(reach + margin):
            continue
        if min(float(_ventricle_distance(a, side, *c, v_scale)) for side in (1, -1)) < reach + margin:
            continue
        return tuple(float(v) for v in c), tuple(float(v) for v in radii)
    raise RuntimeError("no room for the lesion")  # pragma: no cover - the ranges above always leave room


def _draw_schedule(seed: int, n_sessions: int | None):
    """(times in days, planned-visit index of each session, number of missed visits)."""
    rng = _stream(seed, 1)
    n_drawn = int(rng.integers(3, MAX_SESSIONS + 1))
    n = n_drawn if n_sessions is None else int(n_sessions)
    n_missing = int(rng.random() < 0.4)
    if n < 3:
        n_missing = 0  # a missed visit needs a visit on either side of it
    planned = n + n_missing
    target = rng.uniform(1.5, 4.5) * DAYS_PER_YEAR
    interval = float(np.clip(target / (planned - 1), 150.0, 260.0))
    missed = set((1 + rng.permutation(max(planned - 2, 1))[:n_missing]).tolist())
    visits = [k for k in range(planned) if k not in missed]
    jitter = rng.uniform(-0.2, 0.2, size=MAX_SESSIONS + 2)
    times = [0.0]
    for i in range(1, n):
        steps = visits[i] - visits[i - 1]
        gap = np.clip(round(steps * interval * (1.0 + jitter[i])), GAP_MIN_DAYS, GAP_MAX_DAYS)
        times.append(times[-1] + float(gap))
    return np.asarray(times, dtype=np.float64), visits, n_missing


def _draw_pose(seed: int, index: int) -> np.ndarray:
    """Rigid head pose of session ``index`` (identity for the first): subject frame -> scanner world."""
    pose = np.eye(4)
    if index == 0:
        return pose
    rng = _stream(seed, 2, index)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.5, MAX_ROTATION_DEG))
    k = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    pose[:3, :3] = np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)  # Rodrigues
    direction = rng.normal(size=3)
    pose[:3, 3] = direction / np.linalg.norm(direction) * rng.uniform(0.5, MAX_TRANSLATION_MM)
    return pose


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *key]))


# --------------------------------------------------------------------------------------------------
# Rendering


def render(anatomy: Anatomy, t_days: float, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0), *,
           pose: np.ndarray | None = None, noise_seed: int | None = None) -> np.ndarray:
    """The subject at ``t_days`` as a float32 (x, y, z) volume on the centred grid of ``shape``/``spacing``.

    ``pose`` (4x4, subject frame -> scanner world) moves the head; ``noise_seed`` adds Rician noise drawn
    from it. Without either this is the clean, aligned anatomy that the tests measure.
    """
    _, shape, spacing = check_grid(0, shape, spacing, None)
    h = float(np.prod(spacing) ** (1.0 / 3.0))  # partial-volume ramp width
    x, y, z = _subject_coordinates(shape, spacing, pose)
    a = anatomy
    vol = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape))

    def paint(w, value):
        vol[...] += w * (value - vol)

    d_head = _ellipsoid_distance(x, y, z, *a.head_r)
    paint(_soft(d_head, h), SCALP)
    paint(_soft(d_head + a.scalp, h), SKULL)
    paint(_soft(d_head + a.scalp + a.skull, h), CSF)
    d_wm = d_head + a.depth_wm + a.gyri * 0.5 * (1.0 + _wave_field(a.gyral_waves, shape, spacing, pose))
    paint(_soft(d_wm - a.cortex_thickness(t_days), h), GM)
    paint(_soft(d_wm, h), WM)
    s = a.lesion_scale(t_days)
    lx, ly, lz = a.lesion_c
    d_lesion = _ellipsoid_distance(x - lx, y - ly, z - lz, *(r * s for r in a.lesion_r))
    paint(_soft(d_lesion, h), LESION_BRIGHT if a.lesion_bright else LESION_DARK)
    for side in (1, -1):
        paint(_soft(_ventricle_distance(a, side, x, y, z, a.ventricle_scale(t_days)), h), CSF)
    vol *= 1.0 + TEXTURE_AMPLITUDE * _wave_field(a.texture_waves, shape, spacing, pose)
    vol *= 1.0 + BIAS_AMPLITUDE * _wave_field(a.bias_waves, shape, spacing, pose)
    vol = np.broadcast_to(vol, shape)
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        n_re = rng.standard_normal(shape) * NOISE_SIGMA
        n_im = rng.standard_normal(shape) * NOISE_SIGMA
        vol = np.sqrt((vol + n_re) ** 2 + n_im**2)
    return np.ascontiguousarray(vol, dtype=np.float32)


def deep_brain_mask(anatomy: Anatomy, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0)) -> np.ndarray:
    """Voxels (subject frame) at least one ramp inside the white-matter surface at every time.

    Only white matter, the ventricles and the lesion are there: no cortex and no extra-axial CSF.
    """
    _, shape, spacing = check_grid(0, shape, spacing, None)
    h = float(np.prod(spacing) ** (1.0 / 3.0))
    return _wm_distance(anatomy, shape, spacing) < -h


def brain_mask(anatomy: Anatomy, t_days: float, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0)) -> np.ndarray:
    """Voxels (subject frame) inside the pial surface at ``t_days``: cortex, white matter, ventricles, lesion."""
    _, shape, spacing = check_grid(0, shape, spacing, None)
    return _wm_distance(anatomy, shape, spacing) < anatomy.cortex_thickness(t_days)


def centred_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """``diag(spacing)`` with the grid centre, index ``(shape - 1) / 2``, at world (0, 0, 0)."""
    sp = np.asarray(spacing, dtype=np.float64)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -sp * (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    return affine


def subject_sequence(seed: int, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0),
                     n_sessions: int | None = None) -> dict:
    """One subject's scans: a dict with

    * ``times``: float64 days since the first session (0, strictly increasing, gaps 90..540 days);
    * ``volumes``: one float32 (x, y, z) array per session (moved and noisy);
    * ``affine``: the 4x4 voxel -> RAS+ affine shared by all sessions (grid centred at the origin);
    * ``rates``: ``ventricle_growth``, ``cortical_thinning`` (fractions per year) and ``lesion_growth``
      (fraction of volume per year, negative when the lesion shrinks);
    * ``age``: years at the first session;
    * ``changed``: bool array of the voxels (first session's frame) whose clean intensity changes by more
      than 5 % of the brain intensity range (white matter - CSF) between the first and last session;
    * ``session_ids`` (``ses-YY``, YY the planned visit), ``missing`` (planned visits not acquired),
      ``poses`` (4x4 subject frame -> scanner world per session) and ``anatomy`` (for :func:`render`).

    The anatomy depends only on ``seed``; ``n_sessions`` (2..7, default: drawn 3..7) fixes the sequence
    length. Same arguments, same bytes.
    """
    seed, shape, spacing = check_grid(seed, shape, spacing, None)
    if n_sessions is not None and (isinstance(n_sessions, bool) or not isinstance(n_sessions, (int, np.integer))
                                   or not MIN_SESSIONS <= n_sessions <= MAX_SESSIONS):
        raise InputError(f"n_sessions must be an integer in [{MIN_SESSIONS}, {MAX_SESSIONS}] or None, "
                         f"got {n_sessions!r}")
    anatomy = draw_anatomy(seed)
    times, visits, n_missing = _draw_schedule(seed, n_sessions)
    poses = [_draw_pose(seed, k) for k in range(len(times))]
    volumes = [render(anatomy, t, shape, spacing, pose=None if k == 0 else poses[k],
                      noise_seed=int(np.random.SeedSequence([seed, 3, k]).generate_state(1)[0]))
               for k, t in enumerate(times)]
    first = render(anatomy, times[0], shape, spacing)
    last = render(anatomy, times[-1], shape, spacing)
    changed = np.abs(last - first) > CHANGE_FRACTION * BRAIN_RANGE
    return {
        "times": times,
        "volumes": volumes,
        "affine": centred_affine(shape, spacing),
        "rates": anatomy.rates,
        "age": float(anatomy.age),
        "changed": changed,
        "session_ids": [f"ses-{v:02d}" for v in visits],
        "missing": n_missing,
        "poses": poses,
        "anatomy": anatomy,
    }


def subject_seed(seed: int, index: int) -> int:
    """The ``subject_sequence`` seed of subject ``index`` in a set drawn with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0])


def sessions_tsv(times: Sequence[float], session_ids: Sequence[str], age: float) -> str:
    """The ``sessions.tsv`` text: header ``session_id time_days age``, one row per session."""
    rows = ["session_id\ttime_days\tage"]
    for sid, t in zip(session_ids, times):
        t_text = str(int(t)) if float(t).is_integer() else repr(float(t))
        rows.append(f"{sid}\t{t_text}\t{age + float(t) / DAYS_PER_YEAR:.2f}")
    return "\n".join(rows) + "\n"


def acquisition_grid(index: int, shape=(48, 56, 48), spacing=(4.0, 4.0, 4.0), spacings=()):
    """(shape, spacing) of subject ``index``'s scans: ``spacing`` on ``shape`` without ``spacings``; else the
    voxel size ``spacings[index % len(spacings)]`` on the grid that keeps the field of view ``shape * spacing``
    (each side rounded to whole voxels)."""
    if not spacings:
        return tuple(shape), tuple(spacing)
    sp = tuple(float(v) for v in spacings[int(index) % len(spacings)])
    fov = np.asarray(shape, np.float64) * np.asarray(spacing, np.float64)
    return tuple(int(v) for v in np.maximum(np.round(fov / np.asarray(sp)), 1)), sp


def check_spacings(spacings, path=None) -> tuple[tuple[float, float, float], ...]:
    """``spacings`` as a tuple of three-float tuples (positive, finite); refused with one line otherwise."""
    try:
        out = tuple(tuple(float(v) for v in s) for s in (spacings or ()))
    except (TypeError, ValueError):
        raise InputError(f"spacings must be a list of three positive numbers (mm) each, got {spacings!r}",
                         path) from None
    if any(len(s) != 3 or not all(np.isfinite(v) and v > 0 for v in s) for s in out):
        raise InputError(f"spacings must be a list of three positive numbers (mm) each, got {spacings!r}", path)
    return out


def write_demo_subjects(out_dir, n: int = 12, seed: int = 0, shape=(48, 56, 48),
                        spacing=(4.0, 4.0, 4.0), spacings=()) -> list[Path]:
    """Writes ``sub-000/``, ``sub-001/``, ... each with ``ses-YY.nii.gz`` per session and ``sessions.tsv``.

    Subject ``i`` is ``subject_sequence(subject_seed(seed, i), *acquisition_grid(i, shape, spacing, spacings))``:
    the same anatomy and schedule whatever the voxel size (``spacings``: the acquisition voxel sizes the subjects
    cycle through, each on the field of view ``shape * spacing``). It does not depend on
    ``n``, and the same arguments give the same bytes. Returns the subject folders. Like the project's
    other demo writers, existing files of the same names are replaced (atomically) and other files are
    left alone (``sessions.tsv``, written last, lists the sequence; a stale ``ses-YY.nii.gz`` from an
    earlier run with other arguments is not listed and so not read).
    """
    out = Path(out_dir)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 1000:
        raise InputError(f"number of subjects must be an integer in [1, 1000], got {n!r}", out)
    seed, shape_t, spacing_t = check_grid(seed, shape, spacing, out)
    spacings_t = check_spacings(spacings, out)
    grids = [check_grid(seed, *acquisition_grid(i, shape_t, spacing_t, spacings_t), out)[1:] for i in range(int(n))]
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    folders: list[Path] = []
    for i in range(int(n)):
        seq = subject_sequence(subject_seed(seed, i), *grids[i])
        folder = out / f"sub-{i:03d}"
        if folder.exists() and not folder.is_dir():
            raise InputError("output path exists and is not a folder", folder)
        for sid, volume in zip(seq["session_ids"], seq["volumes"]):
            write_nifti(folder / f"{sid}.nii.gz", volume, seq["affine"], description=DESCRIP)
        write_text_atomic(folder / "sessions.tsv", sessions_tsv(seq["times"], seq["session_ids"], seq["age"]))
        folders.append(folder)
    return folders

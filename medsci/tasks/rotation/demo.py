"""Deterministic synthetic chest CT volumes in Hounsfield units, for the radiograph-rotation demo.

Real chest CTs cannot be shipped with the project, so demos and tests render digitally reconstructed
radiographs (DRRs) from volumes drawn here. Each subject is a simplified adult thorax whose proportions
are varied by its seed (``numpy.random.default_rng``): an elliptic-cylinder body of soft tissue (40 HU)
under a subcutaneous fat layer (-100 HU) in air (-1000 HU); two lungs (-850 HU with faint vessel
texture up to about -500 HU and denser hila) cut below by the diaphragm domes, the right lung the
larger; the heart (myocardium 50 HU, blood 40 HU) anterior and left of the midline, the aortic knob,
descending aorta, trachea and main bronchi; the liver (60 HU) under the right dome and the stomach
under the left one, its gas anterior (the subject lies supine); the spine (vertebral bodies of
cancellous bone, 250 HU, in an 800 HU cortical shell, intervertebral discs of 80 HU, posterior arch,
spinous and transverse processes, spinal canal of 20 HU); twelve pairs of ribs (700 HU) sloping down
anteriorly and ending in costal cartilage (120 HU); the sternum, clavicles and scapulae; and Gaussian
noise (10 HU).

Geometry and conventions
------------------------
* World space is nibabel's RAS+ in millimetres: +x points to the subject's **Right**, +y to
  **Anterior**, +z to **Superior**. The subject's left is therefore -x (the heart sits at x < 0, the
  liver at x > 0).
* The volume array has axes ``(x, y, z)`` = nibabel's voxel indices ``(i, j, k)``: index 0 along
  axis 0 is the subject's left side (-x), the last index the right side (+x); axis 1 runs from
  posterior to anterior; axis 2 from inferior to superior.
* The affine is ``diag(spacing)`` with the origin chosen so that the centre of the grid, index
  ``(shape - 1) / 2``, is world ``(0, 0, 0)``; the body's long axis is the z axis through that centre.
* Every anatomical size and position is defined in millimetres, so the same seed with another
  ``shape``/``spacing`` gives the same subject sampled on another grid. Structure edges are
  partial-volume (linear over about one voxel), so thin bones and edges are not all-or-nothing
  voxels and projections change little with the grid.
* An AP projection (sum along axis 1) is an ``(x, z)`` image that looks like a chest radiograph: dark
  lungs, bright spine, ribs, heart and diaphragm. Shown the radiographic way (head up, subject's right
  on the viewer's left) it is ``projection.T[::-1, ::-1]``.

The defaults (64^3 voxels of 5 mm, a 320 mm field of view) hold the whole body cross-section (264 to
300 mm wide). Everything is vectorised numpy: about 0.01 s for 64^3 and 0.1 s for 128^3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medsci.demo_args import check_grid
from medsci.errors import InputError
from medsci.io.volume import write_nifti

DESCRIP = "medsci synthetic chest CT (HU) - not patient data"
NOISE_HU = 10.0

# Hounsfield units of each tissue.
AIR, FAT, SOFT, LUNG, BLOOD, MYOCARDIUM, LIVER, STOMACH = -1000.0, -100.0, 40.0, -850.0, 40.0, 50.0, 60.0, 30.0
GAS, CANCELLOUS, CORTICAL, DISC, CANAL, RIB, CARTILAGE = -950.0, 250.0, 800.0, 80.0, 20.0, 700.0, 120.0
ARCH_BONE, STERNUM, CLAVICLE, SCAPULA = 600.0, 450.0, 650.0, 450.0
N_RIBS = 12
N_WAVES = 5  # plane waves per lung-texture field


@dataclass(frozen=True)
class _Subject:
    """All random anatomy of one subject, in mm (world coordinates); independent of the grid."""

    a: float  # body semi-axis, left-right
    b: float  # body semi-axis, antero-posterior
    fat: float  # subcutaneous fat thickness
    muscle: float  # chest-wall muscle between fat and ribs
    rib_t: float  # rib radial thickness
    rib_h: float  # rib height (z)
    period: float  # vertebral level height = rib spacing along z
    z_apex: float  # top of the lungs
    z_rib1: float  # posterior end of the first rib
    rib_drop: float  # how much lower a rib's anterior end is than its posterior end
    dome_r: float  # top of the right diaphragm dome
    dome_l: float  # top of the left diaphragm dome
    dome_k: float  # dome curvature (mm drop per mm^2 off its top)
    mediastinum: float  # half-width of the mediastinum (lungs stay at |x| > this)
    left_lung_scale: float  # left lung width relative to the right (< 1)
    heart_c: tuple[float, float, float]
    heart_r: tuple[float, float, float]
    heart_rot: float  # radians, long axis towards left-anterior
    knob_c: tuple[float, float, float]
    aorta_x: float
    aorta_r: float
    trachea_r: float
    carina_drop: float
    vb_r: tuple[float, float]  # vertebral body semi-axes (x, y)
    disc: float  # disc thickness
    canal_r: float
    canal_depth: float  # canal centre, mm in front of the back's skin
    sternum_w: float  # sternum half-width
    clavicle_drop: float  # z_apex - clavicle height at the sternum
    clavicle_r: float
    xiphoid_drop: float  # heart centre z - sternum bottom
    liver_r: tuple[float, float, float]
    stomach_r: float
    waves: np.ndarray  # (2, N_WAVES, 5): direction xyz, wavenumber (rad/mm), phase


def _draw_subject(rng: np.random.Generator) -> _Subject:
    """Draw one subject; a fixed number of draws, so the noise that follows never depends on the grid."""
    u = rng.uniform
    a, b = u(132.0, 150.0), u(95.0, 118.0)
    fat, muscle = u(8.0, 15.0), u(8.0, 14.0)
    z_apex = u(110.0, 130.0)
    dome_r = u(-35.0, -20.0)
    dome_l = dome_r - u(10.0, 20.0)
    b_cav = b - fat - muscle - 8.0  # the thoracic cavity for a typical rib thickness
    heart_r = (u(55.0, 68.0), u(42.0, 52.0), u(45.0, 55.0))
    heart_c = (-u(18.0, 30.0), b_cav * u(0.15, 0.3), dome_l + u(45.0, 55.0))
    knob_c = (-u(25.0, 35.0), u(-5.0, 10.0), heart_c[2] + u(75.0, 90.0))
    waves = np.empty((2, N_WAVES, 5))
    for f in range(2):
        d = rng.normal(size=(N_WAVES, 3))
        waves[f, :, :3] = d / np.linalg.norm(d, axis=1, keepdims=True)
        waves[f, :, 3] = 2.0 * np.pi / rng.uniform(40.0, 90.0, size=N_WAVES)
        waves[f, :, 4] = rng.uniform(0.0, 2.0 * np.pi, size=N_WAVES)
    return _Subject(
        a=a, b=b, fat=fat, muscle=muscle, rib_t=u(7.0, 9.0), rib_h=u(9.0, 12.0), period=u(25.0, 28.0),
        z_apex=z_apex, z_rib1=z_apex + u(0.0, 10.0), rib_drop=u(70.0, 95.0),
        dome_r=dome_r, dome_l=dome_l, dome_k=u(0.006, 0.009), mediastinum=u(16.0, 22.0),
        left_lung_scale=u(0.9, 0.95), heart_c=heart_c, heart_r=heart_r, heart_rot=np.deg2rad(u(20.0, 40.0)),
        knob_c=knob_c, aorta_x=-u(24.0, 30.0), aorta_r=u(10.0, 13.0), trachea_r=u(8.0, 10.0),
        carina_drop=u(10.0, 20.0), vb_r=(u(18.0, 22.0), u(14.0, 17.0)), disc=u(5.0, 7.0),
        canal_r=u(8.0, 10.0), canal_depth=u(35.0, 45.0), sternum_w=u(14.0, 18.0),
        clavicle_drop=u(15.0, 30.0), clavicle_r=u(6.0, 8.0), xiphoid_drop=u(35.0, 50.0),
        liver_r=(u(0.7, 0.8), u(0.8, 0.9), u(80.0, 100.0)), stomach_r=u(30.0, 40.0), waves=waves,
    )


class _Grid:
    """World coordinates of voxel centres (float32, ascending) and sub-box lookup."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
        self.shape = shape
        self.axes = [((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32) for n, s in zip(shape, spacing)]
        self.h = float(np.prod(spacing) ** (1.0 / 3.0))  # partial-volume ramp width

    def box(self, lo: Sequence[float], hi: Sequence[float]):
        """Slices and broadcastable (x, y, z) coordinates of voxels within one ramp of [lo, hi]; None if empty."""
        slices, coords = [], []
        for axis, (c, l, u) in enumerate(zip(self.axes, lo, hi)):
            i0 = int(np.searchsorted(c, l - self.h, side="left"))
            i1 = int(np.searchsorted(c, u + self.h, side="right"))
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
            shp = [1, 1, 1]
            shp[axis] = i1 - i0
            coords.append(c[i0:i1].reshape(shp))
        return tuple(slices), coords


def _soft(d, h: float):
    """Partial-volume weight of a point at signed distance ``d`` (mm, negative inside) from a surface."""
    return np.clip(0.5 - np.asarray(d, dtype=np.float32) / np.float32(h), 0.0, 1.0)


def _ellipsoid_distance(u, v, w, ra: float, rb: float, rc: float):
    """First-order signed distance (mm) to the ellipsoid (u/ra)^2 + (v/rb)^2 + (w/rc)^2 = 1 (exact for spheres)."""
    q = (u / ra) ** 2 + (v / rb) ** 2 + (w / rc) ** 2
    g = np.sqrt((u / ra**2) ** 2 + (v / rb**2) ** 2 + (w / rc**2) ** 2)
    s = np.sqrt(q)
    return (s - 1.0) * s / np.maximum(g, 1e-6)


def _segment_distance(x, y, z, p0: Sequence[float], p1: Sequence[float]):
    """Distance (mm) from points to the segment p0-p1."""
    d = np.subtract(p1, p0, dtype=np.float64)
    rx, ry, rz = x - p0[0], y - p0[1], z - p0[2]
    t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / float(d @ d), 0.0, 1.0)
    return np.sqrt((rx - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rz - t * d[2]) ** 2)


def _paint(vol: np.ndarray, sl, w, hu) -> None:
    """Blend ``hu`` (scalar or array) into ``vol[sl]`` with partial-volume weight ``w``."""
    view = vol[sl]
    view += (w * (hu - view)).astype(np.float32, copy=False)


def _dome(s: _Subject, x, y, side: int):
    """z of the diaphragm surface on one side (+1 right, -1 left): a paraboloid, lower posteriorly."""
    top = s.dome_r if side > 0 else s.dome_l
    xc = side * 0.5 * (s.a - s.fat - s.muscle - s.rib_t)
    return top - s.dome_k * ((x - xc) ** 2 + ((y - 20.0) / 0.8) ** 2)


def _lung_texture(s: _Subject, x, y, z, hila: list[tuple[float, float, float]]):
    """HU of lung parenchyma at the points (x, y, z) (1-D arrays): vessels where two smooth fields cross zero."""
    fields = []
    for f in range(2):
        acc = np.zeros_like(x)
        for dx, dy, dz, k, ph in s.waves[f]:
            acc += np.cos(np.float32(k) * (np.float32(dx) * x + np.float32(dy) * y + np.float32(dz) * z)
                          + np.float32(ph))
        fields.append(acc)
    near = np.zeros_like(x)
    for hx, hy, hz in hila:
        near = np.maximum(near, np.exp(-((x - hx) ** 2 + (y - hy) ** 2 + (z - hz) ** 2) / (2.0 * 35.0**2)))
    sigma = 0.3 + 0.3 * near  # vessels thicken towards the hila
    vessels = np.exp(-(fields[0] ** 2 + fields[1] ** 2) / (2.0 * sigma**2))
    y_back = -(s.b - s.fat)
    dependent = 30.0 * np.clip(1.0 - (y - y_back) / 120.0, 0.0, 1.0)  # denser posteriorly (gravity)
    return LUNG + (250.0 + 100.0 * near) * vessels + 60.0 * near + dependent


def _chest_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """``diag(spacing)`` with the grid centre, index ``(shape - 1) / 2``, at world (0, 0, 0)."""
    sp = np.asarray(spacing, dtype=np.float64)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -sp * (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    return affine


def chest_ct(seed: int, shape: tuple[int, int, int] = (64, 64, 64),
             spacing: tuple[float, float, float] = (5.0, 5.0, 5.0)) -> tuple[np.ndarray, np.ndarray]:
    """(volume float32 HU with array axes (x, y, z) = nibabel's (i, j, k), affine 4x4 float64).

    The subject depends only on ``seed``; ``shape`` and ``spacing`` (mm) choose how it is sampled (see
    the module docstring for the RAS+ convention). Same arguments, same bytes.
    """
    seed, shape, spacing = check_grid(seed, shape, spacing, None)
    rng = np.random.default_rng(seed)
    s = _draw_subject(rng)
    g = _Grid(shape, spacing)
    h = g.h
    x1, y1, z1 = g.axes
    X, Y = x1[:, None, None], y1[None, :, None]

    # Body cross-section (z-invariant): air, fat, soft tissue; filled column-wise.
    w_body = _soft(_ellipsoid_distance(X, Y, 0.0, s.a, s.b, 1.0), h)
    w_inner = _soft(_ellipsoid_distance(X, Y, 0.0, s.a - s.fat, s.b - s.fat, 1.0), h)
    col = AIR + w_body * (FAT - AIR)
    col += w_inner * (SOFT - col)
    vol = np.empty(shape, dtype=np.float32)
    vol[...] = col.astype(np.float32)

    wall = s.fat + s.muscle + s.rib_t
    a_cav, b_cav = s.a - wall, s.b - wall  # the thoracic cavity, just inside the ribs
    y_back = -(s.b - s.fat)  # posterior fat/muscle boundary
    y_canal = -s.b + s.canal_depth
    y_vb = y_canal + s.canal_r + 4.0 + s.vb_r[1]  # vertebral body centre
    z_bottom = float(z1[0]) - h

    # Liver under the right dome, stomach (with its gas bubble) under the left one.
    liver_c = (0.3 * a_cav, 0.0, s.dome_r - 0.8 * s.liver_r[2])
    liver_r = (s.liver_r[0] * a_cav, s.liver_r[1] * b_cav, s.liver_r[2])
    box = g.box(np.subtract(liver_c, liver_r), np.add(liver_c, liver_r))
    if box is not None:
        sl, (x, y, z) = box
        w = _soft(_ellipsoid_distance(x - liver_c[0], y - liver_c[1], z - liver_c[2], *liver_r), h)
        w = w * _soft(z - (_dome(s, x, y, +1) - 4.0), h) * _soft(_ellipsoid_distance(x, y, 0.0, a_cav, b_cav, 1.0), h)
        _paint(vol, sl, w, LIVER)
    st_c = (-0.55 * a_cav, 0.15 * b_cav, s.dome_l - s.stomach_r - 5.0)
    r = s.stomach_r
    box = g.box(np.subtract(st_c, r), np.add(st_c, r))
    if box is not None:
        sl, (x, y, z) = box
        w = _soft(_ellipsoid_distance(x - st_c[0], y - st_c[1], z - st_c[2], r, r, r), h)
        w = w * _soft(z - (_dome(s, x, y, -1) - 4.0), h)
        _paint(vol, sl, w, STOMACH)
        _paint(vol, sl, w * _soft(st_c[1] + 0.4 * r - y, h), GAS)  # supine: gas rises anteriorly

    # Lungs: ellipsoid tops, inside the rib cage, outside the mediastinum, above the domes.
    z_knob = s.knob_c[2]
    z_carina = z_knob - s.carina_drop
    y_trachea = y_vb + s.vb_r[1] + 22.0
    hila = [(side * (s.mediastinum + 25.0), y_trachea - 10.0, z_carina - 35.0) for side in (1, -1)]
    for side in (1, -1):
        rx = 0.55 * a_cav * (1.0 if side > 0 else s.left_lung_scale)
        rz = 150.0
        c = (side * 0.5 * a_cav, -0.05 * b_cav, s.z_apex - rz)
        lo = (min(side * s.mediastinum, c[0] - rx), -b_cav, z_bottom)
        hi = (max(side * s.mediastinum, c[0] + rx), b_cav, s.z_apex)
        box = g.box(lo, hi)
        if box is None:
            continue
        sl, (x, y, z) = box
        w = _soft(_ellipsoid_distance(x - c[0], y - c[1], z - c[2], rx, b_cav, rz), h)
        w = w * _soft(_ellipsoid_distance(x, y, 0.0, a_cav, b_cav, 1.0), h)
        w = w * _soft(s.mediastinum - side * x, h) * _soft(_dome(s, x, y, side) - z, h)
        idx = np.nonzero(w > 0)
        if idx[0].size == 0:
            continue
        xs = np.broadcast_to(x, w.shape)[idx]
        ys = np.broadcast_to(y, w.shape)[idx]
        zs = np.broadcast_to(z, w.shape)[idx]
        view = vol[sl]
        wv = w[idx]
        view[idx] += wv * (_lung_texture(s, xs, ys, zs, hila).astype(np.float32) - view[idx])

    # Heart (rotated ellipsoid: myocardium around a blood pool), aortic knob and descending aorta.
    hc, hr = s.heart_c, s.heart_r
    ext = max(hr)
    box = g.box(np.subtract(hc, ext), np.add(hc, ext))
    if box is not None:
        sl, (x, y, z) = box
        cr, sr = np.cos(s.heart_rot), np.sin(s.heart_rot)
        dx, dy, dz = x - hc[0], y - hc[1], z - hc[2]
        u = -cr * dx + sr * dy  # along the long axis (towards left-anterior)
        v = sr * dx + cr * dy
        _paint(vol, sl, _soft(_ellipsoid_distance(u, v, dz, *hr), h), MYOCARDIUM)
        inner = tuple(r_ - 10.0 for r_ in hr)
        _paint(vol, sl, _soft(_ellipsoid_distance(u, v, dz, *inner), h), BLOOD)
    knob_r = (18.0, 25.0, 18.0)
    box = g.box(np.subtract(s.knob_c, knob_r), np.add(s.knob_c, knob_r))
    if box is not None:
        sl, (x, y, z) = box
        dist = _ellipsoid_distance(x - s.knob_c[0], y - s.knob_c[1], z - s.knob_c[2], *knob_r)
        _paint(vol, sl, _soft(dist, h), BLOOD)
    y_aorta = y_vb + 8.0
    box = g.box((s.aorta_x - s.aorta_r, y_aorta - s.aorta_r, z_bottom), (s.aorta_x + s.aorta_r,
                y_aorta + s.aorta_r, z_knob))
    if box is not None:
        sl, (x, y, z) = box
        dist = np.sqrt((x - s.aorta_x) ** 2 + (y - y_aorta) ** 2) - s.aorta_r
        _paint(vol, sl, _soft(dist, h) * _soft(z - z_knob, h), BLOOD)

    # Trachea down to the carina, then the two main bronchi.
    z_top = float(z1[-1]) + h
    tr = s.trachea_r
    box = g.box((-tr, y_trachea - tr, z_carina), (tr, y_trachea + tr, z_top))
    if box is not None:
        sl, (x, y, z) = box
        dist = np.sqrt(x**2 + (y - y_trachea) ** 2) - tr
        _paint(vol, sl, _soft(dist, h) * _soft(z_carina - z, h), GAS)
    for hx, hy, hz in hila:
        p0, p1 = (0.0, y_trachea, z_carina), (0.6 * hx, hy, hz + 10.0)
        rb = 0.7 * tr
        box = g.box(np.minimum(p0, p1) - rb, np.maximum(p0, p1) + rb)
        if box is not None:
            sl, (x, y, z) = box
            _paint(vol, sl, _soft(_segment_distance(x, y, z, p0, p1) - rb, h), GAS)

    # Spine: periodic along z (levels every `period` mm, discs between bodies), over the whole FOV.
    def level_distance(z):
        """Distance (mm) from the middle of the nearest vertebral body, along z."""
        t = (z - s.z_rib1) / s.period
        return np.abs(t - np.round(t)) * s.period

    half_body = (s.period - s.disc) / 2.0
    shell = 3.0
    vbx, vby = s.vb_r
    box = g.box((-vbx, y_vb - vby, z_bottom), (vbx, y_vb + vby, z_top))
    if box is not None:
        sl, (x, y, z) = box
        d_xy = _ellipsoid_distance(x, y - y_vb, 0.0, vbx, vby, 1.0)
        d_z = level_distance(z) - half_body
        w_xy = _soft(d_xy, h)
        _paint(vol, sl, w_xy, DISC)
        _paint(vol, sl, w_xy * _soft(d_z, h), CORTICAL)
        _paint(vol, sl, _soft(d_xy + shell, h) * _soft(d_z + shell, h), CANCELLOUS)
    # Posterior arch around the canal, spinous process (backwards) and transverse processes (sideways).
    rc = s.canal_r
    arch_out = rc + 6.0
    box = g.box((-60.0, y_back, z_bottom), (60.0, y_vb, z_top))
    if box is not None:
        sl, (x, y, z) = box
        w_z = _soft(level_distance(z) - (half_body - 2.0), h)
        ring = np.sqrt(x**2 + (y - y_canal) ** 2)
        w_arch = _soft(ring - arch_out, h)
        w_spin = _soft(np.abs(x) - 4.0, h) * _soft(y_back + 5.0 - y, h) * _soft(y - y_canal, h)
        w_trans = (_soft(np.abs(y - (y_canal + 3.0)) - 5.0, h) * _soft(np.abs(x) - (s.vb_r[0] + 25.0), h))
        w_post = np.maximum(np.maximum(w_arch, w_spin), w_trans)
        _paint(vol, sl, w_post * w_z, ARCH_BONE)
        _paint(vol, sl, _soft(ring - rc, h), CANAL)

    # Ribs: 12 pairs on a ring just inside the chest-wall muscle, sloping down anteriorly; the anterior
    # ends are costal cartilage. Computed only on the (x, y) columns the ring passes through.
    a_rib, b_rib = s.a - s.fat - s.muscle - s.rib_t / 2.0, s.b - s.fat - s.muscle - s.rib_t / 2.0
    d_ring = np.abs(_ellipsoid_distance(X, Y, 0.0, a_rib, b_rib, 1.0)) - s.rib_t / 2.0
    w_ring = (_soft(d_ring, h) * _soft(20.0 - np.abs(X), h))[..., 0]  # no ribs over spine / sternum
    ix, iy = np.nonzero(w_ring > 0)
    if ix.size:
        xs, ys = x1[ix][:, None], y1[iy][:, None]
        drop = s.rib_drop * (ys + s.b) / (2.0 * s.b)
        t = (s.z_rib1 - drop - z1[None, :]) / s.period
        k = np.round(t)
        w_z = _soft(np.abs(t - k) * s.period - s.rib_h / 2.0, h) * ((k >= 0) & (k < N_RIBS))
        w = w_ring[ix, iy][:, None] * w_z
        cart = _soft(0.35 * a_rib - np.abs(xs), h) * _soft(-ys, h)  # anterior and near the midline
        cols = vol[ix, iy, :]
        cols += w * (RIB - cols)
        cols += (w * cart) * (CARTILAGE - cols)
        vol[ix, iy, :] = cols

    # Sternum, clavicles, scapulae.
    z_clav = s.z_apex - s.clavicle_drop
    z_xiph = hc[2] - s.xiphoid_drop
    y_st = s.b - s.fat - 9.0
    box = g.box((-s.sternum_w - 10.0, y_st - 6.0, z_xiph), (s.sternum_w + 10.0, y_st + 6.0, z_clav + 5.0))
    if box is not None:
        sl, (x, y, z) = box
        half_w = s.sternum_w + 10.0 * np.clip((z - (z_clav - 40.0)) / 40.0, 0.0, 1.0)  # wider manubrium
        w = _soft(np.abs(x) - half_w, h) * _soft(np.abs(y - y_st) - 6.0, h)
        w = w * _soft(z - (z_clav + 5.0), h) * _soft(z_xiph - z, h)
        _paint(vol, sl, w, STERNUM)
    for side in (1, -1):
        p0 = (side * 20.0, y_st - 2.0, z_clav)
        p1 = (side * 0.85 * s.a, -0.1 * s.b, z_clav + 22.0)
        rcl = s.clavicle_r
        box = g.box(np.minimum(p0, p1) - rcl, np.maximum(p0, p1) + rcl)
        if box is not None:
            sl, (x, y, z) = box
            _paint(vol, sl, _soft(_segment_distance(x, y, z, p0, p1) - rcl, h), CLAVICLE)
        # Scapula: a thin plate in the posterior chest-wall muscle, a triangle narrowing downwards.
        z_hi, z_lo = s.z_apex + 15.0, s.z_apex - 140.0
        a_sc, b_sc = s.a - s.fat - s.muscle / 2.0, s.b - s.fat - s.muscle / 2.0
        box = g.box((min(side * 0.25 * s.a, side * 0.9 * s.a), -s.b, z_lo),
                    (max(side * 0.25 * s.a, side * 0.9 * s.a), 0.0, z_hi))
        if box is not None:
            sl, (x, y, z) = box
            frac = np.clip((z - z_lo) / (z_hi - z_lo), 0.0, 1.0)
            x_med, x_lat = 0.3 * s.a + 0.05 * s.a * frac, 0.4 * s.a + 0.45 * s.a * frac
            w = _soft(np.abs(_ellipsoid_distance(x, y, 0.0, a_sc, b_sc, 1.0)) - 2.5, h)
            w = w * _soft(x_med - side * x, h) * _soft(side * x - x_lat, h) * _soft(y, h)
            w = w * _soft(z - z_hi, h) * _soft(z_lo - z, h)
            _paint(vol, sl, w, SCAPULA)

    vol += rng.standard_normal(shape, dtype=np.float32) * np.float32(NOISE_HU)
    return vol, _chest_affine(shape, spacing)


# ---------------------------------------------------------------------------------------------------------------
# CTs unlike the generator's: each change acts on a volume in HU and its affine, with a strength. The demo set
# draws them at random (``variety``) so the model trains on scans of other extent, size and noise; the evaluation
# script of docs/radiograph-rotation.md applies them at fixed strengths to held-out CTs.


def _head_foot_axis(affine: np.ndarray) -> int:
    return int(np.argmax(np.abs(np.asarray(affine)[2, :3])))


def add_noise(hu, affine, rng: np.random.Generator, sigma_hu: float = 40.0):
    """Quantum-noise-like Gaussian noise of ``sigma_hu``."""
    return (hu + rng.normal(0.0, sigma_hu, hu.shape)).astype(np.float32), affine


def enhance_mediastinum(hu, affine, rng, plus_hu: float = 250.0):
    """Contrast enhancement: soft tissue (-100 to 150 HU) in the central third of the cross-section + ``plus_hu``."""
    x, y = np.meshgrid(*(np.linspace(-1, 1, n) for n in hu.shape[:2]), indexing="ij")
    centre = (np.hypot(x, y * 1.3) < 0.3)[:, :, None] & (hu > -100) & (hu < 150)
    return np.where(centre, hu + plus_hu, hu).astype(np.float32), affine


def crop_apices(hu, affine, rng, fraction: float = 0.25):
    """A scan that stops below the lung apices: its top ``fraction`` along the head-foot axis is air."""
    axis = _head_foot_axis(affine)
    out = np.moveaxis(hu.copy(), axis, 0)
    k = int(round(out.shape[0] * fraction))
    if k:  # superior is the high index where the affine's z grows with it
        out[(slice(out.shape[0] - k, None) if affine[2, axis] > 0 else slice(0, k))] = -1000.0
    return np.moveaxis(out, 0, axis).astype(np.float32), affine


def broaden(hu, affine, rng, factor: float = 1.2):
    """Another body habitus: the cross-section stretched by ``factor`` (centred, same grid)."""
    from scipy import ndimage

    axis = _head_foot_axis(affine)
    zoom = [1.0 if a == axis else factor for a in range(3)]
    wide = ndimage.zoom(hu, zoom, order=1, mode="nearest")
    pad = [((n - m) // 2, n - m - (n - m) // 2) if n >= m else (0, 0) for n, m in zip(hu.shape, wide.shape)]
    crop = tuple(slice((m - n) // 2, (m - n) // 2 + n) if m > n else slice(None) for n, m in zip(hu.shape, wide.shape))
    return np.pad(wide[crop], pad, constant_values=-1000.0).astype(np.float32), affine


def rescale_voxels(hu, affine, rng, factor: float = 0.8):
    """Another patient size: every voxel ``factor`` times as large (about the grid's centre)."""
    out = np.asarray(affine, dtype=np.float64).copy()
    centre = out[:3, :3] @ ((np.asarray(hu.shape, np.float64) - 1) / 2) + out[:3, 3]
    out[:3, :3] *= factor
    out[:3, 3] = centre - out[:3, :3] @ ((np.asarray(hu.shape, np.float64) - 1) / 2)
    return hu, out


# The random ranges of `vary_ct`, per change: (function, low strength, high strength).
VARIATIONS = {
    "noise": (add_noise, 10.0, 40.0),
    "contrast": (enhance_mediastinum, 150.0, 300.0),
    "apices cropped": (crop_apices, 0.1, 0.3),
    "habitus": (broaden, 0.9, 1.25),
    "voxel size": (rescale_voxels, 0.8, 1.1),
}


def vary_ct(hu: np.ndarray, affine: np.ndarray, rng: np.random.Generator, probability: float
            ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Each change of :data:`VARIATIONS` with ``probability``, at a strength drawn from its range; returns the
    volume, its affine and the changes made (name -> strength). The draws do not depend on ``probability``."""
    draws = {name: (rng.random() < probability, float(rng.uniform(lo, hi))) for name, (_, lo, hi) in VARIATIONS.items()}
    noise_rng = np.random.default_rng(rng.integers(2**63))
    made = {}
    for name, (apply, strength) in draws.items():
        if apply:
            hu, affine = VARIATIONS[name][0](hu, affine, noise_rng, strength)
            made[name] = round(strength, 3)
    return hu, affine, made


def _case_seed(seed: int, index: int) -> int:
    """The ``chest_ct`` seed of case ``index`` in a set drawn with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0])


def write_demo_cts(out_dir, n: int = 8, seed: int = 0, shape=(64, 64, 64), spacing=(5.0, 5.0, 5.0),
                   variety: float = 0.0) -> list[Path]:
    """Writes ct_000.nii.gz, ct_001.nii.gz, ... (CT i uses a seed derived from (seed, i)); returns the paths.

    CT ``i`` is ``chest_ct(_case_seed(seed, i), shape, spacing)``, changed by :func:`vary_ct` with
    probability ``variety`` per change (0: as generated): it does not depend on ``n``, and the
    same arguments give the same bytes. Like the project's other demo writers, existing files of the same
    names are replaced (atomically) and other files in ``out_dir`` are left alone.
    """
    out = Path(out_dir)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of CTs must be a positive integer, got {n!r}", out)
    seed, shape_t, spacing_t = check_grid(seed, shape, spacing, out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i in range(int(n)):
        volume, affine = chest_ct(_case_seed(seed, i), shape_t, spacing_t)
        if variety > 0:
            rng = np.random.default_rng([_case_seed(seed, i), 1])
            volume, affine, _ = vary_ct(volume, affine, rng, float(variety))
        paths.append(write_nifti(out / f"ct_{i:03d}.nii.gz", volume, affine, description=DESCRIP))
    return paths

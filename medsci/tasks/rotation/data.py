"""Training and evaluation pairs: a CT's PA view and the view of the same CT turned by a rotation.

A pair file (``<ct>.npz``) holds the source view, ``K`` rotated views and their angles, all rendered with one
detector geometry and shown through one display window (the source's ``window_percentile`` of line
integrals -> 1, clipped to [0, 1]), so source and target are on one intensity scale.

Model space: images times 2 (the [0, 1] display range becomes [0, 2]); with ``residual`` the diffused quantity
is ``2 * (target - first guess)``, the first guess being the source view or its projective warp. The rotation reaches the network as a vector: per axis ``sin(a)`` and ``cos(a)``
with ``a = angle / max_angle * pi / 2`` (the trained range spans a quarter turn of the features).
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsci.diffusion.conditioning import Conditions
from medsci.diffusion.training import TrainingBatch
from medsci.errors import InputError
from medsci.tasks.rotation.drr import DetectorGeometry, check_ct, render_ct

MODEL_SCALE = 2.0
MIRROR = np.array([1.0, -1.0, -1.0])  # a left-right mirror negates the angles about y and z (not about x)


def geometry_of(drr_cfg) -> DetectorGeometry:
    return DetectorGeometry(sdd=drr_cfg.sdd, sid=drr_cfg.sid, pixels=tuple(drr_cfg.pixels),
                            spacing=tuple(drr_cfg.spacing), samples=drr_cfg.samples, step=drr_cfg.step)


def display(line_integrals: np.ndarray, divisor: float) -> np.ndarray:
    return np.clip(np.asarray(line_integrals, dtype=np.float32) / np.float32(divisor), 0.0, 1.0)


def window_divisor(source_line_integral: np.ndarray, percentile: float) -> float:
    value = float(np.percentile(source_line_integral, percentile))
    return value if value > 0 else 1.0


def random_angles(rng: np.random.Generator, n: int, max_angle, single_axis: float = 0.0) -> np.ndarray:
    """(n, 3) angles uniform in [-max, max] about each axis (float64 degrees); a ``single_axis`` fraction of them
    (the first ones) turn about one axis only, each axis in turn. The uniform draws come first, so the fraction
    changes which angles are zeroed, not the others."""
    m = np.asarray(max_angle, dtype=np.float64)
    angles = rng.uniform(-1.0, 1.0, size=(n, 3)) * m
    for k in range(int(round(n * single_axis))):
        keep = k % 3
        angles[k, [a for a in range(3) if a != keep]] = 0.0
    return angles


@dataclass
class Pairs:
    source: np.ndarray  # (H, W) float32 in [0, 1]
    targets: np.ndarray  # (K, H, W) float32 in [0, 1]
    angles: np.ndarray  # (K, 3) degrees
    divisor: float  # line integral that maps to 1


def render_pairs(hu: np.ndarray, affine: np.ndarray, geometry: DetectorGeometry, angles: np.ndarray,
                 mu_water: float, window_percentile: float, device: str = "cpu") -> Pairs:
    views = render_ct(hu, affine, geometry, np.concatenate([np.zeros((1, 3)), angles]), mu_water, device=device)
    divisor = window_divisor(views[0], window_percentile)
    return Pairs(display(views[0], divisor), display(views[1:], divisor), np.asarray(angles, np.float64), divisor)


def load_ct(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(HU volume float32, affine) of a CT file, refused with a reason when it is not a CT in HU."""
    from medsci.io.volume import read_volume

    vol = read_volume(path)
    data = np.asarray(vol.array, dtype=np.float32)
    check_ct(data, str(path))
    return data, np.asarray(vol.affine, dtype=np.float64)


def save_pairs(path: str | Path, pairs: Pairs) -> None:
    from medsci.io.atomic import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, source=pairs.source, targets=pairs.targets, angles=pairs.angles,
                     divisor=np.float64(pairs.divisor))


def save_refusal(path: str | Path, reason: str) -> None:
    """A pair (or prediction) file that records why its CT was refused, so a workflow's other CTs go on."""
    from medsci.io.atomic import atomic_path

    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, refused=np.frombuffer(reason.encode("utf-8"), dtype=np.uint8))


def refusal_of(path: str | Path) -> str | None:
    """The recorded reason if ``path`` is a refusal marker, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return bytes(z["refused"]).decode("utf-8") if "refused" in z.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # not readable: load_pairs says why
        return None


def load_pairs(path: str | Path) -> Pairs:
    from medsci.preprocessing.store import read_npz

    z = read_npz(path, what="rotation pairs")
    if "refused" in z:
        raise InputError(f"CT was refused: {bytes(z['refused']).decode('utf-8', 'replace')}", path)
    missing = [k for k in ("source", "targets", "angles", "divisor") if k not in z]
    if missing:
        raise InputError(f"not a rotation pair file (no array {missing[0]!r})", path)
    return Pairs(z["source"], z["targets"], z["angles"], float(z["divisor"]))


def angle_features(angles, max_angle) -> torch.Tensor:
    """(B, 3) degrees -> (B, 6) float32 [sin, cos] per axis of angle / max_angle * pi / 2."""
    a = torch.as_tensor(np.asarray(angles, dtype=np.float64)).reshape(-1, 3)
    m = torch.as_tensor(np.maximum(np.asarray(max_angle, dtype=np.float64), 1e-3))
    x = a / m * (math.pi / 2)
    return torch.stack([torch.sin(x), torch.cos(x)], -1).reshape(a.shape[0], 6).float()


def model_inputs(source: torch.Tensor, angles, max_angle, residual: bool, first_guess: str = "source",
                 geometry: DetectorGeometry | None = None) -> tuple[Conditions, torch.Tensor | None]:
    """Conditions of a (B, 1, H, W) batch of [0, 1] source views and the offset (residual) in model space.

    ``first_guess``: ``source`` (the input view itself) or ``warp`` (its projective warp by the rotation, see
    medsci.tasks.rotation.baselines; exact for in-plane rotations): with ``warp`` the condition channels are
    (source, warp) and the residual is taken over the warp.
    """
    src = source.float() * MODEL_SCALE
    guess = src
    if first_guess == "warp":
        from medsci.tasks.rotation.baselines import homography_warp

        ang = np.asarray(angles, dtype=np.float64).reshape(-1, 3)
        warped = [homography_warp(s[0].numpy(), a, geometry) for s, a in zip(source.float().cpu(), ang)]
        guess = torch.from_numpy(np.stack(warped))[:, None] * MODEL_SCALE
        condition = torch.cat([src, guess], 1)
    elif first_guess == "source":
        condition = src
    else:
        raise ValueError(f"first_guess must be source or warp, got {first_guess!r}")
    return Conditions(condition=condition, vector=angle_features(angles, max_angle)), (guess if residual else None)


class RotationTrainingTask:
    """Batches of (source, rotated view, rotation) from cached pair files, with augmentation.

    Per item: a random CT and one of its rotated views; with ``flip_augment`` a left-right mirror of both
    views half of the time (the angles about y and z change sign: the mirrored CT turned by the mirrored
    rotation gives exactly the mirrored views); with probability ``histogram_shift_prob`` MONAI's
    ``RandHistogramShift`` remaps the intensities of source and target together (one random monotone curve per
    item: RadRotator's histogram randomisation, so the network learns the rotation, not one display curve).
    Every random number comes from the engine's per-step generator: batches are reproducible.
    """

    def __init__(self, pairs: list[Pairs], model_cfg, max_angle, geometry: DetectorGeometry | None = None):
        if not pairs:
            raise InputError("no training pairs")
        self.sources = [torch.from_numpy(p.source) for p in pairs]
        self.targets = [torch.from_numpy(p.targets) for p in pairs]
        self.angles = [p.angles for p in pairs]
        self.max_angle = tuple(float(a) for a in max_angle)
        self.cfg = model_cfg
        self.geometry = geometry
        from monai.transforms import RandHistogramShift

        self.shift = RandHistogramShift(num_control_points=tuple(model_cfg.histogram_control_points), prob=1.0)

    def _histogram_shift(self, stack: np.ndarray, seed: int) -> np.ndarray:
        self.shift.set_random_state(seed=seed)  # per item, from the step's generator: reproducible batches
        return np.asarray(self.shift(stack), dtype=np.float32)

    def batch(self, generator: torch.Generator, batch_size: int) -> TrainingBatch:
        srcs, tgts, angles = [], [], []
        for _ in range(batch_size):
            ct = int(torch.randint(0, len(self.sources), (1,), generator=generator))
            k = int(torch.randint(0, self.targets[ct].shape[0], (1,), generator=generator))
            src, tgt, ang = self.sources[ct], self.targets[ct][k], self.angles[ct][k].copy()
            flip, shift = (torch.rand(2, generator=generator)).tolist()
            seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator))
            if self.cfg.flip_augment and flip < 0.5:
                src, tgt, ang = src.flip(-1), tgt.flip(-1), ang * MIRROR
            if shift < self.cfg.histogram_shift_prob:
                stack = self._histogram_shift(torch.stack([src, tgt]).numpy(), seed)
                src, tgt = torch.from_numpy(stack[0]), torch.from_numpy(stack[1])
            srcs.append(src)
            tgts.append(tgt)
            angles.append(ang)
        source = torch.stack(srcs).unsqueeze(1)
        target = torch.stack(tgts).unsqueeze(1) * MODEL_SCALE
        conditions, offset = model_inputs(source, np.stack(angles), self.max_angle, self.cfg.residual,
                                          self.cfg.first_guess, self.geometry)
        x0 = target - offset if offset is not None else target
        return TrainingBatch(x0=x0.contiguous(), conditions=conditions)

"""Classical baselines of radiograph rotation: the identity and the projective warp of the plane at the isocentre.

Projective warp: treat the anatomy as a flat sheet through the isocentre, perpendicular to the beam. Turned by
``R`` about the isocentre, the sheet becomes a tilted plane; each target pixel's ray (source -> pixel) meets that
plane at ``P``; the same sheet point before the rotation is ``c + R^T (P - c)``, and its projection is where the
source image is read (bilinear). This homography is exact for rotations about the beam axis (y): a cone
symmetric about its central ray turns with the anatomy. For rotations out of the image plane it is only a
first-order approximation (parallax of structures away from the isocentre is lost).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from medsci.tasks.rotation.drr import BEAM, DetectorGeometry, project_points, rotation_matrix, source_and_pixels


def identity(source: np.ndarray, angles) -> np.ndarray:
    return np.asarray(source, dtype=np.float32).copy()


def homography_warp(source: np.ndarray, angles, geometry: DetectorGeometry) -> np.ndarray:
    """The (H, W) source view as seen after rotating the isocentre plane by ``angles`` (degrees)."""
    img = torch.as_tensor(np.asarray(source, dtype=np.float32))
    h, w = img.shape
    if (h, w) != tuple(geometry.pixels):
        geometry = replace(geometry, pixels=(h, w))
    centre = torch.zeros(3, dtype=torch.float64)
    src, pixels = source_and_pixels(geometry, centre)
    rot = rotation_matrix(angles).reshape(3, 3)
    normal = rot @ torch.tensor(BEAM, dtype=torch.float64)
    dirs = pixels - src
    t = ((centre - src) @ normal) / (dirs @ normal)
    hit = src + dirs * t[..., None]
    before = centre + (hit - centre) @ rot  # R^T (P - c), row-vector form
    rc = project_points(before, geometry, centre)  # (H, W, 2) fractional (row, column)
    grid = torch.stack([2 * rc[..., 1] / max(w - 1, 1) - 1, 2 * rc[..., 0] / max(h - 1, 1) - 1], -1)
    out = torch.nn.functional.grid_sample(img[None, None], grid[None].float(), mode="bilinear",
                                          padding_mode="border", align_corners=True)
    return out[0, 0].numpy()


BASELINES = {"identity": identity, "warp": homography_warp}

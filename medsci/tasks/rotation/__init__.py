"""Radiograph rotation: a radiograph seen from a rotated viewpoint, trained on DRRs rendered from CTs (RadRotator)."""

from medsci.registry import register_package
from medsci.tasks.rotation.config import RotationConfig

TASK = register_package(__name__, "radiograph rotation: the view of a radiograph's anatomy turned in 3D (trained on "
                        "CT DRRs)", RotationConfig, bench={"rotation": "bench_rotation_item"})

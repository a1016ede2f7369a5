"""Radiograph rotation: a radiograph seen from a rotated viewpoint, trained on DRRs rendered from CTs (RadRotator)."""

from medsci.registry import Task, register
from medsci.tasks.rotation.config import RotationConfig

TASK = register(Task(
    name="rotation",
    title="radiograph rotation: the view of a radiograph's anatomy turned in 3D (trained on CT DRRs)",
    config=RotationConfig,
    commands="medsci.tasks.rotation.commands",
    rules="rotation.smk",
    schema="schema.yaml",
    bench_items={"rotation": "medsci.tasks.rotation.bench:bench_rotation_item"},
    default_bench=("rotation",),
))

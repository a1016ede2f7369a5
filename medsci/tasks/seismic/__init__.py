"""Seismic trace interpolation: missing traces of 3D post-stack cubes, observed traces enforced while sampling."""

from medsci.registry import Task, register
from medsci.tasks.seismic.config import SeismicConfig

TASK = register(Task(
    name="seismic",
    title="seismic trace interpolation of 3D post-stack cubes (SEG-Y)",
    config=SeismicConfig,
    commands="medsci.tasks.seismic.commands",
    rules="seismic.smk",
    schema="schema.yaml",
    bench_items={"seismic": "medsci.tasks.seismic.bench:bench_seismic_item"},
    default_bench=("seismic",),
))

"""Longitudinal sequences: the 3D image of a subject at a requested time from its earlier, timestamped, gappy
sessions (SADM-like), with autoregressive forecasts."""

from medsci.registry import Task, register
from medsci.tasks.longitudinal.config import LongitudinalConfig

TASK = register(Task(
    name="longitudinal",
    title="longitudinal sequences: a subject's volume at a requested time from its earlier sessions",
    config=LongitudinalConfig,
    commands="medsci.tasks.longitudinal.commands",
    rules="longitudinal.smk",
    schema="schema.yaml",
    bench_items={"longitudinal": "medsci.tasks.longitudinal.bench:bench_longitudinal_item"},
    default_bench=("longitudinal",),
))

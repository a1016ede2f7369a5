"""Longitudinal sequences: the 3D image of a subject at a requested time from its earlier, timestamped, gappy
sessions (SADM-like), with autoregressive forecasts."""

from medsci.registry import register_package
from medsci.tasks.longitudinal.config import LongitudinalConfig

TASK = register_package(__name__, "longitudinal sequences: a subject's volume at a requested time from its earlier "
                        "sessions", LongitudinalConfig, bench={"longitudinal": "bench_longitudinal_item"})

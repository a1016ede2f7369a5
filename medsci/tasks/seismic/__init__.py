"""Seismic trace interpolation: missing traces of 3D post-stack cubes, observed traces enforced while sampling."""

from medsci.registry import register_package
from medsci.tasks.seismic.config import SeismicConfig

TASK = register_package(__name__, "seismic trace interpolation of 3D post-stack cubes (SEG-Y)", SeismicConfig,
                        bench={"seismic": "bench_seismic_item"})

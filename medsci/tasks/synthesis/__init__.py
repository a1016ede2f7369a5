"""MRI modality synthesis: a missing brain-MRI contrast from the other three (cWDM-style, 3D Haar domain)."""

from medsci.registry import register_package
from medsci.tasks.synthesis.config import SynthesisConfig

TASK = register_package(__name__, "MRI modality synthesis: a missing contrast from the other three", SynthesisConfig,
                        bench={"preprocessing": "bench_preprocessing_item", "synthesis-demo": "bench_demo_item",
                               "synthesis-brats": "bench_brats_item",
                               "load": "bench_load:bench_load_item",
                               "synthesis-fullres": "bench_fullres:bench_fullres_item"},
                        default_bench=("preprocessing", "synthesis-demo"))

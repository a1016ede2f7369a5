"""MRI modality synthesis: a missing brain-MRI contrast from the other three (cWDM-style, 3D Haar domain)."""

from medsci.registry import Task, register
from medsci.tasks.synthesis.config import SynthesisConfig

TASK = register(Task(
    name="synthesis",
    title="MRI modality synthesis: a missing contrast from the other three",
    config=SynthesisConfig,
    commands="medsci.tasks.synthesis.commands",
    rules="synthesis.smk",
    schema="schema.yaml",
    bench_items={"preprocessing": "medsci.tasks.synthesis.bench:bench_preprocessing_item",
                 "synthesis-demo": "medsci.tasks.synthesis.bench:bench_demo_item",
                 "synthesis-brats": "medsci.tasks.synthesis.bench:bench_brats_item",
                 "load": "medsci.tasks.synthesis.bench_load:bench_load_item"},
    default_bench=("preprocessing", "synthesis-demo"),
))

# Helpers shared by every generator's rules: the typed config, result folders, case lists, target lists.
# Rules live in the other .smk files; this file holds no rules.

import os
from pathlib import Path

from medsci.config import config_from_dict, dump_config, write_config

CFG = config_from_dict(config, "config")  # the one typed object; refuses unknown keys
RESULTS = CFG.result_dir
RESOLVED_CONFIG = str(RESULTS / "config.yaml")
ENV = "envs/medsci.yaml"  # used with --sdm conda; relative to this folder


def log_path(*parts):
    return str(RESULTS / "logs" / Path(*parts))


def parent(path_attr):
    """A params function giving the folder of one of the rule's outputs (lint-clean, no hard-coded prefix)."""
    return lambda wildcards, output: os.path.dirname(getattr(output, path_attr))


def uses_gpu():
    return 1 if CFG.device.startswith("cuda") else 0


# ----------------------------------------------------------------------------------------- MRI synthesis
SYN = CFG.synthesis
SYN_DIR = RESULTS / "synthesis"
SYN_RAW = Path(SYN.data.raw_dir) if SYN.data.raw_dir else SYN_DIR / "demo_data"
SYN_PREP = SYN_DIR / "preprocessed"
SYN_MODEL = SYN_DIR / "model"
SYN_SAMPLES = SYN_DIR / "samples"
SYN_CURVES = SYN_DIR / "steps_curve"
SYN_EVAL = SYN_DIR / "evaluation"
MODS = ("t1n", "t1c", "t2w", "t2f")


def synthesis_case_ids():
    if not SYN.enabled:
        return []
    if SYN.data.raw_dir:
        return sorted(p.name for p in SYN_RAW.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [f"BraTS-DEMO-{i:05d}-000" for i in range(SYN.data.demo.cases)]


SYN_CASES = synthesis_case_ids()
SYN_HELDOUT = SYN_CASES[len(SYN_CASES) - SYN.data.heldout :] if SYN.data.heldout else []
SYN_TRAIN = [c for c in SYN_CASES if c not in SYN_HELDOUT]
SYN_CURVE_CASES = SYN_HELDOUT[: SYN.evaluation.curve_cases]


def synthesis_outputs():
    if not SYN.enabled:
        return []
    return [str(SYN_PREP / "summary.json"), str(SYN_EVAL / "summary.json")]


def synthesis_raw_inputs(wildcards):
    folder = SYN_RAW / wildcards.case
    if SYN.data.raw_dir:
        return [str(p) for p in sorted(folder.glob("*.nii*"))]
    return [str(folder / f"{wildcards.case}-{m}.nii.gz") for m in (*MODS, "seg")]

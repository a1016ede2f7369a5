# Helpers shared by every generator's rules: the validated typed config, result folders, logs, targets.
# Rules live in the generators' .smk files; this file holds no rules. The Snakefile includes a generator's file
# only when the preset enables its section; the file reads that section (CFG.<name>) and adds its final outputs
# to TARGETS.

import os
import sys
from pathlib import Path

from medsci import registry
from medsci.config import config_from_dict, dump_config, workflow_settings, write_config
from medsci.errors import ConfigError

# The presets of this run (each with the `defaults:` chain it declares) and the --config overrides, coerced to
# the schema's types: Snakemake's own merge is not used, so nothing is merged under a preset that it does not name.
PRESETS = list(workflow.config_settings.configfiles) or [DEFAULT_PRESET]
_SOURCE = " + ".join(str(p) for p in PRESETS) + (" + --config" if workflow.config_settings.config else "")
config.clear()
config.update(workflow_settings(PRESETS, workflow.config_settings.config))
CFG = config_from_dict(config, _SOURCE)  # schema-validated; the one typed object; refuses unknown keys
RESULTS = CFG.result_dir
RESOLVED_CONFIG = str(RESULTS / "config.yaml")
ENV = "envs/medsci.yaml"  # used with --sdm conda; relative to this folder
TASKS = {name: task for name, task in registry.tasks().items() if CFG.section(name).enabled}  # what this run runs
if not TASKS:
    raise ConfigError(f"no generator is enabled; name one with a section such as `{next(iter(registry.tasks()))}: "
                      f"{{enabled: true}}` (installed: {', '.join(registry.tasks())})", _SOURCE)
TARGETS = {}  # generator name -> its final outputs (what `rule all` asks for)


def all_targets():
    return [path for name in TASKS for path in TARGETS.get(name, [])]


def task_dir(name):
    """results/<run>/<generator>/"""
    return RESULTS / name


def log_path(*parts):
    return str(RESULTS / "logs" / Path(*parts))


def parent(path_attr):
    """A params function giving the folder of one of the rule's outputs (lint-clean, no hard-coded prefix)."""
    return lambda wildcards, output: os.path.dirname(getattr(output, path_attr))


def uses_gpu():
    return 1 if CFG.device.startswith("cuda") else 0


def train_gpus():
    """GPUs a training job asks for: the top-level `train_gpus` when the device is CUDA, else none."""
    return CFG.train_gpus if uses_gpu() else 0


def train_threads(section):
    """CPU threads of a training job: the section's `train.threads`, else 2. On a small CPU machine 1 is faster
    overall: two 1-thread trainings side by side beat the same two one after the other with 2 threads each (a
    second thread speeds a step up only ~1.3x; measured on 2 cores, configs/demo.yaml)."""
    return CFG.section(section).train.threads or 2


def train_launcher():
    """`medsci`, or torchrun with one process per GPU (DistributedDataParallel) when a job has more than one."""
    n = train_gpus()
    return "medsci" if n <= 1 else f"torchrun --standalone --nproc_per_node {n} -m medsci"


def sample_parts(ids):
    """Held-out items (cases, cubes, subjects, CTs) scattered over sampling jobs: (part name, ids) pairs.

    `sample_jobs: 0` gives one job per item, named after it; N > 0 gives N jobs of consecutive items
    ("part-1-of-N", ...), each loading the model once. Outputs are per item either way, so the evaluation
    gathers the same files and the tables do not depend on N.
    """
    n = CFG.sample_jobs
    if n <= 0 or n >= len(ids):
        return [(i, [i]) for i in ids]
    bounds = [round(k * len(ids) / n) for k in range(n + 1)]
    return [(f"part-{k + 1}-of-{n}", ids[bounds[k] : bounds[k + 1]]) for k in range(n)]


def part_rule_name(prefix, index):
    """Rule names must be identifiers; item ids need not be."""
    return f"{prefix}_{index + 1}"


def heldout_split(ids, heldout, key, what):
    """The last `heldout` ids (sorted) are held out; returns (training ids, held-out ids). At least one id is
    left to train on; `key` (the setting, "<generator>.data.heldout") and `what` (the items) word the refusal."""
    if heldout < 1:
        raise ConfigError(f"{key}: {heldout}; the evaluation needs at least one held-out item", _SOURCE)
    if heldout >= len(ids):
        raise ConfigError(f"{key}: {heldout} to hold out, but there are only {len(ids)} {what} in all; it must be "
                          "smaller, to leave some to train on", _SOURCE)
    held = ids[len(ids) - heldout :]
    return [i for i in ids if i not in held], held


def first(ids, count, key, what):
    """The first `count` of `ids`, refused with the numbers when there are fewer (a slice would shrink silently)."""
    if count > len(ids):
        raise ConfigError(f"{key}: {count} asked for, but there are only {len(ids)} {what}", _SOURCE)
    return ids[:count]


def _resource_values(name):
    """The raw values of one resource in --default-resources and every --set-resources rule."""
    settings = workflow.resource_settings
    found = set()
    for mapping in [settings.default_resources or {}, *(settings.overwrite_resources or {}).values()]:
        res = mapping.get(name) if hasattr(mapping, "get") else None
        raw = getattr(res, "raw", res)
        if raw not in (None, ""):
            found.add(str(raw).strip("'\""))
    return found


onstart:
    # Before the first submission: a missing partition or more GPUs than a node has stop the run with the reason.
    if workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        from medsci.hpc import slurm_problems

        problems = slurm_problems(_resource_values("slurm_partition"), train_gpus())
        if problems:
            for line in problems:
                print(f"medsci: {line}", file=sys.stderr)
            raise SystemExit(1)

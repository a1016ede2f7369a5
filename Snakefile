# medsci workflow: demo data -> preprocessing -> training -> sampling -> evaluation, per generator.
# `snakemake --cores 2` runs the embedded demo preset end to end. `--configfile PRESET` runs that preset instead
# (see configs/): a preset runs exactly the generators it names, and builds on another one only where it says
# so (`defaults: demo.yaml`). Use a profile in configs/profiles/ for SLURM.
# Every registered generator (medsci.registry) brings its own rule file; this file names none of them.

import sys

from snakemake.utils import min_version

from medsci.errors import MedsciError

min_version("9.0")

DEFAULT_PRESET = "configs/demo.yaml"

if not workflow.config_settings.configfiles:

    configfile: DEFAULT_PRESET


# A problem with the settings or the data they name stops the run with one line naming it, not a traceback.
try:

    include: "workflows/common.smk"

    # Under --sdm apptainer every rule runs in this image (set before any rule is defined, so all get it).
    if CFG.container:

        container: CFG.container

    include: "workflows/config.smk"

    # The makers of the rules every generator repeats (demo data, train, per-part sampling, evaluation).
    include: "workflows/templates.smk"

    for _task in TASKS.values():

        include: _task.rules_path(Path(workflow.basedir) / "workflows")

except MedsciError as err:
    print(f"medsci: {err}", file=sys.stderr)
    raise SystemExit(1)


rule all:
    input:
        all_targets(),
    default_target: True

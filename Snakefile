# medsci workflow: demo data -> preprocessing -> training -> sampling -> evaluation, per generator.
# `snakemake --cores 2` runs the embedded demo configuration end to end; point --configfile at your own
# config (see configs/) for real data, and use a profile in configs/profiles/ for SLURM.
# Every registered generator (medsci.registry) brings its own rule file; this file names none of them.

from snakemake.utils import min_version

min_version("9.0")


configfile: "configs/demo.yaml"


include: "workflows/common.smk"


# Under --sdm apptainer every rule runs in this image (set before any rule is defined, so all get it).
if CFG.container:

    container: CFG.container


include: "workflows/config.smk"
# The makers of the rules every generator repeats (demo data, train, per-part sampling, evaluation).
include: "workflows/templates.smk"


for _task in TASKS.values():

    include: _task.rules_path(Path(workflow.basedir) / "workflows")


rule all:
    input:
        all_targets(),
    default_target: True

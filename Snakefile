# medsci workflow: demo data -> preprocessing -> training -> sampling -> evaluation, per generator.
# `snakemake --cores 2` runs the embedded demo configuration end to end; point --configfile at your own
# config (see configs/) for real data, and use a profile in configs/profiles/ for SLURM.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "configs/demo.yaml"


validate(config, "configs/schema.yaml")


include: "workflows/common.smk"
include: "workflows/config.smk"
include: "workflows/synthesis.smk"
include: "workflows/seismic.smk"


rule all:
    input:
        synthesis_outputs(),
        seismic_outputs(),
    default_target: True

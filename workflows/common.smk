# Helpers shared by every generator's rules: result folders, the resolved config, case lists.

from pathlib import Path

from medsci.config import config_from_dict, dump_config, write_config

CFG = config_from_dict(config, "config")  # the one typed object; refuses unknown keys
RESULTS = CFG.result_dir
RESOLVED_CONFIG = str(RESULTS / "config.yaml")


def log_path(*parts):
    return str(RESULTS / "logs" / Path(*parts))


rule resolved_config:
    """The validated configuration every job reads, so --config overrides reach the CLI too."""
    output:
        RESOLVED_CONFIG,
    params:
        text=dump_config(CFG),
    log:
        log_path("resolved_config.log"),
    threads: 1
    resources:
        mem_mb=200,
        runtime=2,
    run:
        write_config(CFG, output[0])

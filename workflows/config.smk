# Writing one small file: never worth a cluster job.
localrules:
    resolved_config,


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
    conda:
        ENV
    run:
        write_config(CFG, output[0])

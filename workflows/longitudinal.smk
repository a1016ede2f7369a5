# Longitudinal sequences: demo subjects -> register every session to the subject's first (one job per subject)
# -> train (sequence-aware transformer context + 3D diffusion UNet) -> predict each held-out subject's last
# session (model, copy-last, linear and deformation extrapolation; autoregressive forecasts) -> evaluation.


import medsci.tasks.longitudinal.workflow as lon_workflow

LON = CFG.longitudinal
LON_ENABLED = LON.enabled
LON_DIR = task_dir("longitudinal")
LON_RAW = Path(LON.data.raw_dir) if LON_ENABLED and LON.data.raw_dir else LON_DIR / "demo_data"
LON_FOLDERS = lon_workflow.subject_folders(LON, LON_RAW)
LON_TRAIN, LON_HELDOUT = heldout_split(list(LON_FOLDERS), LON.data.heldout if LON_ENABLED else 0, "longitudinal.data.heldout", "subjects")
LON_PREP = LON_DIR / "preprocessed"
LON_MODEL = LON_DIR / "model"
LON_PRED = LON_DIR / "predictions"
LON_EVAL = LON_DIR / "evaluation"


TARGETS["longitudinal"] = [str(LON_EVAL / "summary.json")] if LON_ENABLED else []


if LON_ENABLED:

    if not LON.data.raw_dir:

        rule longitudinal_demo_data:
            """Synthetic subjects: ventricles enlarge, cortex thins, a lesion grows or shrinks; irregular times."""
            output:
                tables=[str(Path(f) / "sessions.tsv") for f in LON_FOLDERS.values()],
            params:
                folder=lambda wc, output: os.path.dirname(os.path.dirname(output.tables[0])),
                subjects=LON.data.demo.subjects,
                seed=LON.data.demo.seed,
                shape=" ".join(str(s) for s in LON.data.demo.shape),
                spacing=" ".join(str(s) for s in LON.data.demo.spacing),
            log:
                log_path("longitudinal", "demo_data.log"),
            threads: 1
            resources:
                mem_mb=2000,
                runtime=10,
            conda:
                ENV
            shell:
                "medsci demo-data longitudinal {params.folder} --subjects {params.subjects} --seed {params.seed} "
                "--shape {params.shape} --spacing {params.spacing} > {log} 2>&1"

    rule longitudinal_preprocess:
        """Every session of one subject registered (SimpleITK) onto its first session's model-grid image."""
        input:
            table=lambda wc: str(Path(LON_FOLDERS[wc.subject]) / "sessions.tsv"),
            cfg=RESOLVED_CONFIG,
        output:
            str(LON_PREP / "{subject}.npz"),
            str(LON_PREP / "{subject}.json"),
        params:
            folder=lambda wc: LON_FOLDERS[wc.subject],
            out=lambda wc, output: os.path.dirname(output[0]),
        log:
            log_path("longitudinal", "preprocess", "{subject}.log"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            ENV
        shell:
            "medsci preprocess longitudinal --config {input.cfg} --subjects {params.folder} --out {params.out} "
            "--threads 1 > {log} 2>&1"

    rule longitudinal_train:
        """Sequence-aware transformer over earlier frames (cross-attention context) + 3D diffusion UNet."""
        input:
            subjects=expand(str(LON_PREP / "{subject}.npz"), subject=LON_TRAIN),
            cfg=RESOLVED_CONFIG,
        output:
            config=str(LON_MODEL / "config.json"),
            ema=str(LON_MODEL / "ema.safetensors"),
            loss=report(str(LON_MODEL / "loss.csv"), category="Longitudinal", subcategory="training"),
        params:
            model=parent("config"),
        log:
            log_path("longitudinal", "train.log"),
        threads: train_threads("longitudinal")
        resources:
            mem_mb=4000,
            runtime=24 * 60,
            gpu=train_gpus(),
        conda:
            ENV
        shell:
            train_launcher() + " train longitudinal --config {input.cfg} --subjects {input.subjects} --out {params.model} "
            "--threads {threads} --no-progress 2> {log}"

    for _i, (_part, _subjects) in enumerate(sample_parts(LON_HELDOUT)):

        rule:
            """Held-out subjects' last sessions: model (mean and std of samples), baselines, forecasts."""
            name:
                part_rule_name("longitudinal_sample", _i)
            input:
                model=rules.longitudinal_train.output.config,
                subjects=expand(str(LON_PREP / "{subject}.npz"), subject=_subjects),
                cfg=RESOLVED_CONFIG,
            output:
                expand(str(LON_PRED / "{subject}.{ext}"), subject=_subjects, ext=("npz", "json")),
            params:
                model=lambda wc, input: os.path.dirname(input.model),
                out=lambda wc, output: os.path.dirname(output[0]),
            log:
                log_path("longitudinal", "sample", f"{_part}.log"),
            threads: 1
            resources:
                mem_mb=3000,
                runtime=60 * len(_subjects),
                gpu=uses_gpu(),
            conda:
                ENV
            shell:
                "medsci sample longitudinal --config {input.cfg} --checkpoint {params.model} "
                "--subjects {input.subjects} --out {params.out} --threads {threads} > {log} 2>&1"

    rule longitudinal_evaluate:
        """SSIM / PSNR / MAE over the brain and in the changed region, by horizon; forecast uncertainty; figures."""
        input:
            subjects=expand(str(LON_PREP / "{subject}.npz"), subject=LON_HELDOUT),
            predictions=expand(str(LON_PRED / "{subject}.npz"), subject=LON_HELDOUT),
            cfg=RESOLVED_CONFIG,
        output:
            summary=report(str(LON_EVAL / "summary.json"), category="Longitudinal", subcategory="evaluation"),
            table=report(str(LON_EVAL / "metrics.csv"), category="Longitudinal", subcategory="evaluation"),
            markdown=str(LON_EVAL / "summary.md"),
            figures=report(
                directory(str(LON_EVAL / "figures")),
                patterns=["{name}.png"],
                category="Longitudinal",
                subcategory="figures",
            ),
        params:
            predictions=lambda wc, input: os.path.dirname(input.predictions[0]),
            out=parent("summary"),
        log:
            log_path("longitudinal", "evaluate.log"),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
        conda:
            ENV
        shell:
            "medsci evaluate longitudinal --config {input.cfg} --subjects {input.subjects} "
            "--predictions {params.predictions} --out {params.out} > {log} 2>&1"

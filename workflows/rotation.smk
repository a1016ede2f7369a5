# Radiograph rotation: demo chest CTs -> DRR pairs (random rotations for training CTs, the evaluation angles for
# held-out CTs) -> train (2D conditional diffusion, classifier-free guidance over the rotation) -> rotate the
# held-out views with the model and the baselines -> evaluation (tables by axis and magnitude, remapped
# histograms, guidance, figures).


import medsci.tasks.rotation.workflow as rot_workflow

ROT = CFG.rotation
ROT_ENABLED = ROT.enabled
ROT_DIR = task_dir("rotation")
ROT_RAW = Path(ROT.data.raw_dir) if ROT_ENABLED and ROT.data.raw_dir else ROT_DIR / "demo_data"
ROT_FILES = rot_workflow.ct_files(ROT, ROT_RAW)
ROT_TRAIN, ROT_HELDOUT = heldout_split(list(ROT_FILES), ROT.data.heldout if ROT_ENABLED else 0, "rotation.data.heldout", "CTs")
ROT_PAIRS = ROT_DIR / "pairs"
ROT_MODEL = ROT_DIR / "model"
ROT_PRED = ROT_DIR / "predictions"
ROT_EVAL = ROT_DIR / "evaluation"


TARGETS["rotation"] = [str(ROT_EVAL / "summary.json")] if ROT_ENABLED else []


if ROT_ENABLED:

    if not ROT.data.raw_dir:

        rule rotation_demo_data:
            """Deterministic synthetic chest CTs in HU (body, lungs, heart, liver, spine, ribs), NIfTI."""
            output:
                cts=list(ROT_FILES.values()),
            params:
                folder=lambda wc, output: os.path.dirname(output.cts[0]),
                cts=ROT.data.demo.cts,
                seed=ROT.data.demo.seed,
                shape=" ".join(str(s) for s in ROT.data.demo.shape),
                spacing=" ".join(str(s) for s in ROT.data.demo.spacing),
            log:
                log_path("rotation", "demo_data.log"),
            threads: 1
            resources:
                mem_mb=2000,
                runtime=10,
            conda:
                ENV
            shell:
                "medsci demo-data rotation {params.folder} --cts {params.cts} --seed {params.seed} "
                "--shape {params.shape} --spacing {params.spacing} > {log} 2>&1"

    rule rotation_pairs:
        """DRRs of one CT: random rotations for a training CT, the evaluation angles for a held-out one."""
        input:
            ct=lambda wc: ROT_FILES[wc.ct],
            cfg=RESOLVED_CONFIG,
        output:
            str(ROT_PAIRS / "{split}" / "{ct}.npz"),
        wildcard_constraints:
            split="train|heldout",
        params:
            out=lambda wc, output: os.path.dirname(output[0]),
            evaluation=lambda wc: "--evaluation" if wc.split == "heldout" else "",
            index=lambda wc: list(ROT_FILES).index(wc.ct),
        log:
            log_path("rotation", "pairs", "{split}-{ct}.log"),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
        conda:
            ENV
        shell:
            "medsci preprocess rotation --config {input.cfg} --cts {input.ct} --out {params.out} --index {params.index} "
            "{params.evaluation} --record-refusals --threads 1 > {log} 2>&1"

    rule rotation_train:
        """2D conditional diffusion: source view as channels, rotation as a vector with a learned null (CFG)."""
        input:
            pairs=expand(str(ROT_PAIRS / "train" / "{ct}.npz"), ct=ROT_TRAIN),
            cfg=RESOLVED_CONFIG,
        output:
            config=str(ROT_MODEL / "config.json"),
            ema=str(ROT_MODEL / "ema.safetensors"),
            loss=report(str(ROT_MODEL / "loss.csv"), category="Radiograph rotation", subcategory="training"),
        params:
            model=parent("config"),
        log:
            log_path("rotation", "train.log"),
        threads: train_threads("rotation")
        resources:
            mem_mb=4000,
            runtime=24 * 60,
            gpu=train_gpus(),
        conda:
            ENV
        shell:
            train_launcher() + " train rotation --config {input.cfg} --pairs {input.pairs} --out {params.model} "
            "--threads {threads} --no-progress 2> {log}"

    for _i, (_part, _cts) in enumerate(sample_parts(ROT_HELDOUT)):

        rule:
            """Held-out CTs' views rotated by the model (guidance variants, remapped inputs) and the baselines."""
            name:
                part_rule_name("rotation_sample", _i)
            input:
                model=rules.rotation_train.output.config,
                pairs=expand(str(ROT_PAIRS / "heldout" / "{ct}.npz"), ct=_cts),
                cfg=RESOLVED_CONFIG,
            output:
                expand(str(ROT_PRED / "{ct}.npz"), ct=_cts),
            params:
                model=lambda wc, input: os.path.dirname(input.model),
                out=lambda wc, output: os.path.dirname(output[0]),
            log:
                log_path("rotation", "sample", f"{_part}.log"),
            threads: 1
            resources:
                mem_mb=3000,
                runtime=60 * len(_cts),
                gpu=uses_gpu(),
            conda:
                ENV
            shell:
                "medsci sample rotation --config {input.cfg} --checkpoint {params.model} --pairs {input.pairs} "
                "--out {params.out} --threads {threads} > {log} 2>&1"

    rule rotation_evaluate:
        """SSIM / PSNR / MAE by axis and magnitude beside identity and warp; remaps; guidance; figures."""
        input:
            pairs=expand(str(ROT_PAIRS / "heldout" / "{ct}.npz"), ct=ROT_HELDOUT),
            predictions=expand(str(ROT_PRED / "{ct}.npz"), ct=ROT_HELDOUT),
            cfg=RESOLVED_CONFIG,
        output:
            summary=report(str(ROT_EVAL / "summary.json"), category="Radiograph rotation", subcategory="evaluation"),
            table=report(str(ROT_EVAL / "metrics.csv"), category="Radiograph rotation", subcategory="evaluation"),
            markdown=str(ROT_EVAL / "summary.md"),
            figures=report(
                directory(str(ROT_EVAL / "figures")),
                patterns=["{name}.png"],
                category="Radiograph rotation",
                subcategory="figures",
            ),
        params:
            predictions=lambda wc, input: os.path.dirname(input.predictions[0]),
            out=parent("summary"),
        log:
            log_path("rotation", "evaluate.log"),
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
        conda:
            ENV
        shell:
            "medsci evaluate rotation --config {input.cfg} --pairs {input.pairs} --predictions {params.predictions} "
            "--out {params.out} > {log} 2>&1"

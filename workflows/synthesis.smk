# MRI modality synthesis: demo data -> preprocess (one job per case) -> summary -> train -> sample held-out
# cases (one job per case) -> SSIM-vs-steps curve -> evaluation beside the baselines.

import medsci.tasks.synthesis.workflow as syn_workflow

SYN = CFG.synthesis
SYN_DIR = task_dir("synthesis")
SYN_RAW = Path(SYN.data.raw_dir) if SYN.data.raw_dir else SYN_DIR / "demo_data"
SYN_PREP = SYN_DIR / "preprocessed"
SYN_MODEL = SYN_DIR / "model"
SYN_SAMPLES = SYN_DIR / "samples"
SYN_CURVES = SYN_DIR / "steps_curve"
SYN_EVAL = SYN_DIR / "evaluation"
SYN_CATEGORY = "MRI synthesis"  # of the report
# The tumour segmenter of the downstream (BraSyn) test: trained on the training cases unless
# segmentation.weights names a segmenter folder of one's own; none when segmentation is disabled.
SYN_SEG = SYN.segmentation
SYN_SEGMENTER = Path(SYN_SEG.weights) if SYN_SEG.weights else SYN_DIR / "segmenter"
SYN_SEG_INPUT = {"segmenter": str(SYN_SEGMENTER / "config.json")} if SYN_SEG.enabled else {}
MODS = syn_workflow.MODS


SYN_CASES = syn_workflow.case_ids(SYN, SYN_RAW)
SYN_TRAIN, SYN_HELDOUT = heldout_split(SYN_CASES, SYN.data.heldout, "synthesis.data.heldout", "cases")
SYN_CURVE_CASES = first(
    SYN_HELDOUT, SYN.evaluation.curve_cases, "synthesis.evaluation.curve_cases", "held-out cases"
)


TARGETS["synthesis"] = [str(SYN_PREP / "summary.json"), str(SYN_EVAL / "summary.json")]


if not SYN.data.raw_dir:

    demo_data_rule(
        "synthesis",
        "Deterministic synthetic BraTS-layout cases (brain, tumour, four contrasts, labels).",
        Files(
            expand(str(SYN_RAW / "{case}" / "{case}-{mod}.nii.gz"), case=SYN_CASES, mod=(*MODS, "seg")),
            dataset=str(SYN_RAW / "dataset.json"),
        ),
        folder=parent("dataset"),
        options=("cases", "seed", "shape"),
        runtime=20,
    )


rule synthesis_preprocess:
    """Reorient, mask, scale inside the brain, crop/pad; writes tensors + a sidecar to map results back."""
    input:
        lambda wc: syn_workflow.raw_inputs(SYN, SYN_RAW, wc.case),
        cfg=RESOLVED_CONFIG,
    output:
        npz=str(SYN_PREP / "{case}.npz"),
        sidecar=str(SYN_PREP / "{case}.json"),
    params:
        folder=lambda wc, input: os.path.dirname(input[0]),
        layout=SYN.data.layout,
        out=parent("npz"),
    log:
        log_path("synthesis", "preprocess", "{case}.log"),
    threads: 1
    priority: 40  # data preparation before any training
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        ENV
    shell:
        "medsci preprocess synthesis --case-dir {params.folder} --layout {params.layout} --out {params.out} "
        "--config {input.cfg} > {log} 2>&1"


rule synthesis_summary:
    input:
        expand(str(SYN_PREP / "{case}.npz"), case=SYN_CASES),
    output:
        summary=report(str(SYN_PREP / "summary.json"), category=SYN_CATEGORY, subcategory="data"),
    params:
        folder=parent("summary"),
    log:
        log_path("synthesis", "summary.log"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "medsci summarize {params.folder} --out {output.summary} > {log} 2>&1"


train_rule(
    "synthesis",
    "One wavelet-domain conditional diffusion model for any single missing contrast.",
    SYN_MODEL,
    SYN_CATEGORY,
    inputs={"cases": expand(str(SYN_PREP / "{case}.npz"), case=SYN_TRAIN)},
    args="--data {params.data} --cases {params.cases}",
    params={"cases": " ".join(SYN_TRAIN), "data": lambda wc, input: os.path.dirname(input.cases[0])},
    mem_mb=8000,
    log_to="> {log} 2>&1",
    priority=25,
)


if SYN_SEG.enabled and not SYN_SEG.weights:

    rule synthesis_segmenter:
        """SegResNet tumour segmenter (WT/TC/ET) on the training cases' real contrasts: scores syntheses
        by the segmentation they allow (BraSyn)."""
        input:
            cases=expand(str(SYN_PREP / "{case}.npz"), case=SYN_TRAIN),
            cfg=RESOLVED_CONFIG,
        output:
            config=str(SYN_SEGMENTER / "config.json"),
            weights=str(SYN_SEGMENTER / "model.safetensors"),
            loss=report(str(SYN_SEGMENTER / "loss.csv"), category=SYN_CATEGORY, subcategory="segmenter"),
        params:
            cases=" ".join(SYN_TRAIN),
            data=lambda wc, input: os.path.dirname(input.cases[0]),
            out=parent("config"),
        log:
            log_path("synthesis", "segmenter.log"),
        threads: 1
        resources:
            mem_mb=4000,
            runtime=12 * 60,
            gpu=uses_gpu(),
        conda:
            ENV
        shell:
            "medsci train-segmenter --config {input.cfg} --data {params.data} --cases {params.cases} "
            "--out {params.out} --threads {threads} --no-progress > {log} 2>&1"


sample_rules(
    "synthesis",
    "sample",
    SYN_HELDOUT,
    "Synthesise every target contrast of held-out cases from the other three (one model load per job).",
    inputs=lambda cases: {"cases": expand(str(SYN_PREP / "{case}.npz"), case=cases)},
    outputs=lambda cases: {
        "timing": expand(str(SYN_SAMPLES / "{case}" / "{case}-timing.json"), case=cases),
        "npz": expand(str(SYN_SAMPLES / "{case}" / "{case}-{mod}.npz"), case=cases, mod=SYN.evaluation.targets),
        "nifti": expand(
            str(SYN_SAMPLES / "{case}" / "{case}-{mod}.nii.gz"), case=cases, mod=SYN.evaluation.targets
        ),
    },
    params=lambda cases: {
        "cases": " ".join(cases),
        "targets": " ".join(SYN.evaluation.targets),
        "data": lambda wc, input: os.path.dirname(input.cases[0]),
        "out": lambda wc, output: os.path.dirname(os.path.dirname(output.timing[0])),
    },
    command="medsci sample synthesis --config {input.cfg} --checkpoint {params.model} --data {params.data} "
    "--case {params.cases} --targets {params.targets} --out {params.out} --threads {threads} "
    "--no-progress > {log} 2>&1",
    mem_mb=4000,
)


rule synthesis_steps_curve:
    """Held-out SSIM against the number of sampling steps (1000 = the DDPM reference sampler)."""
    input:
        model=rules.synthesis_train.output.config,
        case=str(SYN_PREP / "{case}.npz"),
        cfg=RESOLVED_CONFIG,
    output:
        curve=str(SYN_CURVES / "{case}-curve.json"),
    params:
        steps=" ".join(str(s) for s in SYN.evaluation.steps_curve),
        targets=" ".join(SYN.evaluation.curve_targets),
        data=lambda wc, input: os.path.dirname(input.case),
        model=lambda wc, input: os.path.dirname(input.model),
        out=parent("curve"),
    log:
        log_path("synthesis", "steps_curve", "{case}.log"),
    threads: 2  # the 1000-step reference sampler is the longest single job of the default run
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=uses_gpu(),
    conda:
        ENV
    shell:
        "medsci sample synthesis --config {input.cfg} --checkpoint {params.model} --data {params.data} "
        "--case {wildcards.case} --targets {params.targets} --steps-curve {params.steps} --out {params.out} "
        "--threads {threads} --no-progress > {log} 2>&1"


evaluate_rule(
    "synthesis",
    "Model, voxelwise linear regression and mean-of-inputs, side by side, on held-out cases.",
    SYN_EVAL,
    SYN_CATEGORY,
    "montages",
    inputs={
        "samples": expand(str(SYN_SAMPLES / "{case}" / "{case}-timing.json"), case=SYN_HELDOUT),
        "curves": expand(str(SYN_CURVES / "{case}-curve.json"), case=SYN_CURVE_CASES),
        "data": expand(str(SYN_PREP / "{case}.npz"), case=SYN_CASES),
        "model": str(SYN_MODEL / "config.json"),
        **SYN_SEG_INPUT,
    },
    extra_outputs={
        "curve": report(
            str(SYN_EVAL / "steps_curve.png"),
            caption="report/steps_curve.rst",
            category=SYN_CATEGORY,
            subcategory="sampling steps",
        )
    }
    if SYN_CURVE_CASES
    else {},
    params={
        "train": " ".join(SYN_TRAIN),
        "heldout": " ".join(SYN_HELDOUT),
        "targets": " ".join(SYN.evaluation.targets),
        "data": lambda wc, input: os.path.dirname(input.data[0]),
        "samples": lambda wc, input: os.path.dirname(os.path.dirname(input.samples[0])),
        "model": lambda wc, input: os.path.dirname(input.model),
        "segmenter": lambda wc, input: f"--segmenter {os.path.dirname(input.segmenter)}" if SYN_SEG.enabled else "",
    },
    command="medsci evaluate synthesis --data {params.data} --train-cases {params.train} --cases {params.heldout} "
    "--checkpoint {params.model} {params.segmenter} "
    "--samples {params.samples} --targets {params.targets} --curves {input.curves} --out {params.out} "
    "--threads {threads} > {log} 2>&1",
    mem_mb=4000,
    runtime=30 if not SYN_SEG.enabled else 4 * 60,
    gpu=uses_gpu() if SYN_SEG.enabled else 0,  # the segmenter runs 1 + 5 x targets times per case
)


# A folder of new cases (synthesis.batch.input): one `medsci synthesize --case` job per case, so a cluster
# profile spreads them over nodes, then one job for the batch summary and HTML page. Refused cases are
# recorded with their reason and do not fail the run. With batch.checkpoint null the model trained above is used.
SYN_BATCH = SYN.batch
if SYN_BATCH.input:
    SYN_BATCH_OUT = Path(SYN_BATCH.output) if SYN_BATCH.output else SYN_DIR / "batch"
    SYN_BATCH_MODEL = Path(SYN_BATCH.checkpoint) if SYN_BATCH.checkpoint else SYN_MODEL
    SYN_BATCH_CASES = syn_workflow.batch_cases(SYN_BATCH.input)
    SYN_BATCH_ARGS = f"--checkpoint {SYN_BATCH_MODEL} --input {SYN_BATCH.input} --output {SYN_BATCH_OUT}" + (
        f" --dicom-mapping {SYN_BATCH.dicom_mapping}" if SYN_BATCH.dicom_mapping else ""
    ) + {True: " --register", False: " --no-register", None: ""}[SYN_BATCH.register]
    TARGETS["synthesis"] = [str(SYN_BATCH_OUT / "summary.csv")]

    rule synthesis_batch_case:
        """The missing contrast of one new case, on its own grid (NIfTI, DICOM for DICOM input, QC figure)."""
        input:
            model=str(SYN_BATCH_MODEL / "config.json"),
        output:
            record=str(SYN_BATCH_OUT / "{bcase}" / "{bcase}.json"),
        params:
            args=SYN_BATCH_ARGS,
        wildcard_constraints:
            bcase="[A-Za-z0-9._-]+",
        log:
            log_path("synthesis", "batch", "{bcase}.log"),
        threads: 1
        resources:
            mem_mb=8000,
            runtime=60,
            gpu=uses_gpu(),
        conda:
            ENV
        shell:
            "medsci synthesize {params.args} --case {wildcards.bcase} --record-refusals --threads {threads} "
            "--no-progress > {log} 2>&1"

    rule synthesis_batch_report:
        """summary.csv and a self-contained report.html of the whole batch."""
        input:
            expand(str(SYN_BATCH_OUT / "{bcase}" / "{bcase}.json"), bcase=SYN_BATCH_CASES),
        output:
            csv=report(str(SYN_BATCH_OUT / "summary.csv"), category=SYN_CATEGORY, subcategory="batch"),
            html=str(SYN_BATCH_OUT / "report.html"),
        params:
            args=SYN_BATCH_ARGS,
        log:
            log_path("synthesis", "batch_report.log"),
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        conda:
            ENV
        shell:
            "medsci synthesize {params.args} --report-only --record-refusals > {log} 2>&1"

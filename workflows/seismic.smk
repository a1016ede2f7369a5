# Seismic trace interpolation: demo cubes -> held-out masks -> train -> reconstruct every held-out cube for
# every mask pattern, with and without input guidance (one job per cube) -> sampling benchmark (steps, jumps)
# -> evaluation beside linear interpolation and POCS (tables, section figures, benchmark figure).


import medsci.tasks.seismic.workflow as seis_workflow

SEIS = CFG.seismic
SEIS_DIR = task_dir("seismic")
SEIS_RAW = Path(SEIS.data.raw_dir) if SEIS.data.raw_dir else SEIS_DIR / "demo_data"
SEIS_MASKS = SEIS_DIR / "masks"
SEIS_MODEL = SEIS_DIR / "model"
SEIS_RECON = SEIS_DIR / "reconstructions"
SEIS_BENCH = SEIS_DIR / "benchmark"
SEIS_EVAL = SEIS_DIR / "evaluation"
SEIS_CATEGORY = "Seismic interpolation"  # of the report


SEIS_SURVEY = SEIS.data.survey
if SEIS_SURVEY:  # one real survey: the workflow cuts it into a training and a held-out block
    SEIS_RAW = SEIS_DIR / "survey_split"
SEIS_FILES = seis_workflow.cube_files(SEIS, SEIS_RAW)
SEIS_CUBES = list(SEIS_FILES)
SEIS_ALL_SEGY = all(f.lower().endswith((".segy", ".sgy")) for f in SEIS_FILES.values())
SEIS_TRAIN, SEIS_HELDOUT = (
    (["train"], ["heldout"])
    if SEIS_SURVEY
    else heldout_split(SEIS_CUBES, SEIS.data.heldout, "seismic.data.heldout", "cubes")
)
SEIS_PATTERNS = list(SEIS.evaluation.patterns)
SEIS_METHODS = ["model", "model_unguided"] if SEIS.evaluation.unguided else ["model"]
SEIS_BENCH_CUBES = (
    first(SEIS_HELDOUT, SEIS.evaluation.benchmark_cubes, "seismic.evaluation.benchmark_cubes", "held-out cubes")
    if SEIS.evaluation.benchmark
    else []
)


TARGETS["seismic"] = [str(SEIS_EVAL / "summary.json")]
if SEIS_SURVEY:  # and the survey itself with its dead traces filled
    TARGETS["seismic"].append(str(SEIS_DIR / "survey_filled.segy"))


if SEIS_SURVEY:

    rule seismic_split_survey:
        """The survey cut into a training block and a held-out block (line numbers kept), gap between."""
        input:
            survey=SEIS_SURVEY,
            cfg=RESOLVED_CONFIG,
        output:
            cubes=[SEIS_FILES[c] for c in SEIS_CUBES],
            split=str(SEIS_RAW / "split.json"),
        params:
            out=parent("split"),
        log:
            log_path("seismic", "split_survey.log"),
        threads: 1
        resources:
            mem_mb=4000,
            runtime=10,
        conda:
            ENV
        shell:
            "medsci split-survey {input.survey} --config {input.cfg} --out {params.out} > {log} 2>&1"

    rule seismic_fill_survey:
        """The survey's own gaps (dead traces) filled by the model trained on its live traces."""
        input:
            survey=SEIS_SURVEY,
            model=str(SEIS_MODEL / "config.json"),
            cfg=RESOLVED_CONFIG,
        output:
            segy=str(SEIS_DIR / "survey_filled.segy"),
            report=str(SEIS_DIR / "survey_filled.json"),
        params:
            model=lambda wc, input: os.path.dirname(input.model),
            bytes=f"--iline-byte {SEIS.data.iline_byte} --xline-byte {SEIS.data.xline_byte}",
        log:
            log_path("seismic", "fill_survey.log"),
        threads: 2
        resources:
            mem_mb=4000,
            runtime=60,
            gpu=uses_gpu(),
        conda:
            ENV
        shell:
            "medsci interpolate --config {input.cfg} --checkpoint {params.model} --input {input.survey} "
            "--output {output.segy} --report {output.report} {params.bytes} --threads {threads} > {log} 2>&1"

elif not SEIS.data.raw_dir:

    demo_data_rule(
        "seismic",
        "Deterministic synthetic post-stack cubes (folds, faults, Ricker wavelet), written as SEG-Y.",
        {"cubes": [SEIS_FILES[c] for c in SEIS_CUBES], "dataset": str(SEIS_RAW / "dataset.json")},
        folder=parent("dataset"),
        options=("cubes", "seed", "shape"),
        mem_mb=1000,
    )


rule seismic_masks:
    """Held-out missing-trace masks, one per (cube, pattern); seeded by the config's mask_seed and the cube id."""
    input:
        cubes=[SEIS_FILES[c] for c in SEIS_HELDOUT],
        cfg=RESOLVED_CONFIG,
    output:
        masks=expand(str(SEIS_MASKS / "{cube}-{pattern}.npy"), cube=SEIS_HELDOUT, pattern=SEIS_PATTERNS),
    params:
        cubes=" ".join(SEIS_HELDOUT),
        data=lambda wc, input: os.path.dirname(input.cubes[0]),
        out=lambda wc, output: os.path.dirname(output.masks[0]),
    log:
        log_path("seismic", "masks.log"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    shell:
        "medsci sample seismic --config {input.cfg} --data {params.data} --cubes {params.cubes} --make-masks "
        "--out {params.out} > {log} 2>&1"


train_rule(
    "seismic",
    "3D conditional diffusion model on patches (observation + mask as condition), random masks of all patterns.",
    SEIS_MODEL,
    SEIS_CATEGORY,
    inputs={"cubes": [SEIS_FILES[c] for c in SEIS_TRAIN]},
    args="--data {params.data} --cubes {params.cubes}",
    params={"cubes": " ".join(SEIS_TRAIN), "data": lambda wc, input: os.path.dirname(input.cubes[0])},
)


sample_rules(
    "seismic",
    "reconstruct",
    SEIS_HELDOUT,
    "Every mask pattern of held-out cubes, with and without input guidance (sliding-window sampling).",
    inputs=lambda cubes: {
        "cubes": [SEIS_FILES[c] for c in cubes],
        "masks": expand(str(SEIS_MASKS / "{cube}-{pattern}.npy"), cube=cubes, pattern=SEIS_PATTERNS),
    },
    outputs=lambda cubes: {
        "timing": expand(str(SEIS_RECON / "{cube}" / "{cube}-timing.json"), cube=cubes),
        "cubes": expand(
            str(SEIS_RECON / "{cube}" / "{cube}-{pattern}-{method}.npy"),
            cube=cubes,
            pattern=SEIS_PATTERNS,
            method=SEIS_METHODS,
        ),
        # SEG-Y cubes also get the guided reconstruction as SEG-Y (the input's headers, filled samples).
        "segy": expand(
            str(SEIS_RECON / "{cube}" / "{cube}-{pattern}-model.segy"), cube=cubes, pattern=SEIS_PATTERNS
        )
        if SEIS_ALL_SEGY
        else [],
    },
    params=lambda cubes: {
        "cubes": " ".join(cubes),
        "data": lambda wc, input: os.path.dirname(input.cubes[0]),
        "masks": lambda wc, input: os.path.dirname(input.masks[0]),
        "out": lambda wc, output: os.path.dirname(os.path.dirname(output.timing[0])),
    },
    command="medsci sample seismic --config {input.cfg} --checkpoint {params.model} --data {params.data} "
    "--cubes {params.cubes} --masks {params.masks} --out {params.out} --threads {threads} > {log} 2>&1",
)


rule seismic_benchmark:
    """SNR on the missing traces against network evaluations and time: the config's [steps, jumps] runs."""
    input:
        model=rules.seismic_train.output.config,
        cube=lambda wc: SEIS_FILES[wc.cube],
        masks=expand(str(SEIS_MASKS / "{{cube}}-{pattern}.npy"), pattern=SEIS_PATTERNS),
        cfg=RESOLVED_CONFIG,
    output:
        str(SEIS_BENCH / "{cube}-benchmark.json"),
    params:
        data=lambda wc, input: os.path.dirname(input.cube),
        masks=lambda wc, input: os.path.dirname(input.masks[0]),
        model=lambda wc, input: os.path.dirname(input.model),
        out=lambda wc, output: os.path.dirname(output[0]),
    log:
        log_path("seismic", "benchmark", "{cube}.log"),
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
        gpu=uses_gpu(),
    conda:
        ENV
    shell:
        "medsci sample seismic --config {input.cfg} --checkpoint {params.model} --data {params.data} "
        "--cubes {wildcards.cube} --masks {params.masks} --benchmark --out {params.out} --threads {threads} "
        "> {log} 2>&1"


evaluate_rule(
    "seismic",
    "Model (with / without input guidance), linear interpolation and POCS side by side on held-out cubes.",
    SEIS_EVAL,
    SEIS_CATEGORY,
    "sections",
    inputs={
        "cubes": [SEIS_FILES[c] for c in SEIS_HELDOUT],
        "timings": expand(str(SEIS_RECON / "{cube}" / "{cube}-timing.json"), cube=SEIS_HELDOUT),
        "benchmark": expand(str(SEIS_BENCH / "{cube}-benchmark.json"), cube=SEIS_BENCH_CUBES),
        "masks": expand(str(SEIS_MASKS / "{cube}-{pattern}.npy"), cube=SEIS_HELDOUT, pattern=SEIS_PATTERNS),
        "cfg": RESOLVED_CONFIG,
    },
    extra_outputs={
        "benchmark": report(str(SEIS_EVAL / "benchmark.png"), category=SEIS_CATEGORY, subcategory="benchmark")
    }
    if SEIS_BENCH_CUBES
    else {},
    params={
        "data": lambda wc, input: os.path.dirname(input.cubes[0]),
        "heldout": " ".join(SEIS_HELDOUT),
        "train": " ".join(SEIS_TRAIN),
        "masks": lambda wc, input: os.path.dirname(input.masks[0]),
        "samples": lambda wc, input: os.path.dirname(os.path.dirname(input.timings[0])),
    },
    command="medsci evaluate seismic --config {input.cfg} --data {params.data} --cubes {params.heldout} "
    "--train-cubes {params.train} --masks {params.masks} --samples {params.samples} "
    "--benchmark {input.benchmark} --out {params.out} > {log} 2>&1",
)
